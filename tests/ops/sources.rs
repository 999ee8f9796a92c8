//! What sources may be is the cluster admin's to decide: hosts fenced by
//! CIDRs and DNS patterns (`--source-hosts`), and the wrappers the `fdw`
//! plugin may use, with their options (`--wrappers`). A refusal is
//! InvalidSpec, before anything connects; what is allowed works. Drafts
//! are fenced as every test is, and the admin's test database may not log
//! in as a superuser.

use manifold::api::conditions;

use crate::support::world::as_is;
use crate::support::world::{count, world_without_operator};
use crate::support::{Operator, control_plane};

pub async fn the_admin_fences_sources_and_allows_wrappers() {
    let w = world_without_operator("fence").await;
    // `hostaddr` names the host too: the admin says so, and it is fenced.
    let wrappers = r#"[{"extension":"postgres_fdw","wrapper":"postgres_fdw","serverOptions":["host","hostaddr","port","dbname"],"userMappingOptions":["user","password"],"hostOptions":["host","hostaddr"]}]"#;
    // The admin's test database logs in as a superuser: refused, as a
    // superuser workspace role is warned about.
    let test_db = w.pg.bare_database("su-tests").await;
    let test_db_file = std::env::temp_dir().join(format!("{}.uri", crate::support::unique("su-test-database")));
    std::fs::write(&test_db_file, w.pg.admin_uri(&test_db)).unwrap();
    let _op = Operator::start(
        &control_plane().kubeconfig,
        &[
            "--namespaces",
            &w.t.ns,
            "--resync",
            "3s",
            "--source-hosts",
            "127.0.0.1/32,*.db.internal",
            "--wrappers",
            wrappers,
            "--test-database-uri-file",
            test_db_file.to_str().unwrap(),
        ],
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

    // A draft (the console's Test Connection before Create) is fenced as
    // every test is; one inside the fence, attached nowhere, goes to the
    // admin's test database, whose superuser role is refused.
    let draft = |name: &str, host: &str| {
        w.apply(&format!(
            "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: {name}, annotations: {{ manifold.dev/draft: \"true\" }} }}\nspec:\n\
             \x20 plugin: {{ postgres: {{ host: {host}, port: {}, database: {} }} }}\n\
             \x20 credentials: {{ secretRef: {{ name: shared-creds }} }}\n",
            w.pg.port, w.src.db
        ))
    };
    draft("draft-outside", "127.0.0.2");
    draft("draft-inside", "127.0.0.1");
    let outside = w.wait_test_reason("draft-outside", "InvalidSpec").await;
    assert!(outside.status.unwrap().test.unwrap().message.contains("outside the sources the cluster admin allows"));
    let inside = w.wait_test_reason("draft-inside", "SuperuserRole").await;
    let message = inside.status.unwrap().test.unwrap().message;
    assert!(message.contains(", a superuser:") && message.contains("nothing was tested"), "{message}");
    let servers = crate::support::world::count(&w.pg.connect(&test_db).await, "SELECT count(*) FROM pg_foreign_server").await;
    assert_eq!(servers, 0);

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
