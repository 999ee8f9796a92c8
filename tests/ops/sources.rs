//! What sources may be is the cluster admin's to decide: hosts fenced by
//! CIDRs and DNS patterns (`--source-hosts`), and the wrappers the `fdw`
//! plugin may use, with their options (`--wrappers`). A refusal is
//! InvalidSpec, before anything connects; what is allowed works.

use manifold::api::conditions;

use crate::support::world::as_is;
use crate::support::world::{count, world_without_operator};
use crate::support::{Operator, control_plane};

pub async fn the_admin_fences_sources_and_allows_wrappers() {
    let w = world_without_operator("fence").await;
    // `hostaddr` names the host too: the admin says so, and it is fenced.
    let wrappers = r#"[{"extension":"postgres_fdw","wrapper":"postgres_fdw","serverOptions":["host","hostaddr","port","dbname"],"userMappingOptions":["user","password"],"hostOptions":["host","hostaddr"]}]"#;
    let _op = Operator::start(
        &control_plane().kubeconfig,
        &["--namespaces", &w.t.ns, "--resync", "3s", "--source-hosts", "127.0.0.1/32,*.db.internal", "--wrappers", wrappers],
    );
    w.workspace("ws");
    w.credentials("shared", &w.src.password);
    let postgres = |name: &str, host: &str| {
        w.apply(&format!(
            "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: {name} }}\nspec:\n\
             \x20 plugin: {{ postgres: {{ host: {host}, port: {}, database: {} }} }}\n\
             \x20 credentials: {{ secretRef: {{ name: shared-creds }} }}\n",
            w.pg.port, w.src.db
        ));
        w.attach(&format!("ws-{name}"), "ws", name, as_is);
    };
    postgres("inside", "127.0.0.1");
    postgres("by-address", "127.0.0.2");
    postgres("by-name", "localhost");
    let generic = |name: &str, hosts: &str, options: &str| {
        w.apply(&format!(
            "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: {name} }}\nspec:\n\
             \x20 plugin: {{ fdw: {{ extension: postgres_fdw, wrapper: postgres_fdw, remoteSchema: public,\n\
             \x20   serverOptions: {{ {hosts}port: \"{}\", dbname: {}{options} }} }} }}\n\
             \x20 credentials: {{ secretRef: {{ name: shared-creds }} }}\n",
            w.pg.port, w.src.db
        ));
        w.attach(&format!("ws-{name}"), "ws", name, as_is);
    };
    let inside = "host: 127.0.0.1, ";
    generic("generic", inside, "");
    generic("generic-extra", inside, ", passfile: /etc/passwd");
    generic("generic-hostaddr", "host: 127.0.0.1, hostaddr: 10.9.9.9, ", "");
    generic("generic-no-host", "", "");

    w.wait_ready("ws-inside").await;
    w.wait_ready("ws-generic").await;
    assert_eq!(count(&w.ws().await, "SELECT count(*) FROM generic.orders").await, 3, "an allowed wrapper works");
    for (name, expected) in [
        ("by-address", "outside the sources the cluster admin allows"),
        ("by-name", "outside the sources the cluster admin allows"),
        ("generic-extra", "may not set \"passfile\""),
        ("generic-hostaddr", "outside the sources the cluster admin allows"),
        ("generic-no-host", "must set the source's host (host or hostaddr)"),
    ] {
        let att = w.wait_reason(&format!("ws-{name}"), "InvalidSpec").await;
        let message = conditions::find(&att.status.unwrap().conditions, "Ready").unwrap().message.clone();
        assert!(message.contains(expected), "{name}: {message}");
        w.wait_test_reason(name, "InvalidSpec").await;
    }
}
