//! `manifold import steampipe`: `.spc` files as users write them (several
//! plugins, aggregators, comments, plugin blocks), round-tripped into the
//! apiserver: every connection appears, the Secrets hold the credentials
//! and the specs none. A Postgres connection of a `.spc` attaches for real.

use std::process::Command;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use manifold::api::Connection;

use crate::attach::world;
use crate::support::world::count;
use crate::support::{control_plane, repo_root, stdout_ok, unique};

fn manifold(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_manifold")).args(args).env("KUBECONFIG", &control_plane().kubeconfig).output().unwrap()
}

pub async fn steampipe_configs_round_trip_into_the_cluster() {
    let w = world("import").await;
    let ns = w.t.ns.clone();
    let fixtures = repo_root().join("tests/fixtures/spc");
    let files: Vec<String> =
        ["aws.spc", "gcp.spc", "github.spc", "plugins.spc"].iter().map(|f| fixtures.join(f).display().to_string()).collect();
    let mut args = vec!["-n", ns.as_str(), "import", "steampipe"];
    args.extend(files.iter().map(String::as_str));
    let out = manifold(&args);
    let yaml = stdout_ok(&out);
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(notes.contains("aws.spc:35") && notes.contains("import_schema"), "notes name file and line: {notes}");
    stdout_ok(&w.t.apply(&yaml));

    let connections = Api::<Connection>::namespaced(w.t.client.clone(), &ns).list(&ListParams::default()).await.unwrap().items;
    let mut names: Vec<String> = connections.iter().map(|c| c.name_any()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "all-aws",
            "aws-data-lake",
            "aws-dev",
            "aws-prod-01",
            "aws-prod-02",
            "gcp-all",
            "gcp-analytics",
            "gcp-billing",
            "github",
            "gitlab-ops",
            "slack-workspace"
        ],
    );
    let schema = |name: &str| connections.iter().find(|c| c.name_any() == name).unwrap().spec.schema.clone();
    assert_eq!(schema("aws-prod-01").as_deref(), Some("aws_prod_01"), "queries keep naming the Steampipe schema");

    let secrets = Api::<Secret>::namespaced(w.t.client.clone(), &ns)
        .list(&ListParams::default().labels("manifold.dev/credentials=true"))
        .await
        .unwrap()
        .items;
    let value = |secret: &str, key: &str| {
        let s = secrets.iter().find(|s| s.name_any() == secret).unwrap_or_else(|| panic!("no Secret {secret}"));
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    };
    assert_eq!(value("aws-prod-01-credentials", "secret_key"), "prod01/Secret+Key/wJalrXUtnFEMI");
    assert_eq!(value("github-credentials", "token"), "ghp_exampleTokenFor1234567890abcdEFGH");
    assert!(value("gcp-billing-credentials", "credentials").contains("BEGIN PRIVATE KEY"));
    // No credential in any spec.
    let specs: String = connections.iter().map(|c| serde_json::to_string(&c.spec).unwrap()).collect();
    for secret in &secrets {
        for v in secret.data.as_ref().unwrap().values() {
            let v = String::from_utf8_lossy(&v.0);
            assert!(!specs.contains(v.as_ref()), "a credential shows in a spec");
        }
    }
}

pub async fn a_postgres_connection_of_a_spc_file_attaches() {
    let w = world("import-pg").await;
    let ns = w.t.ns.clone();
    w.workspace("ws");
    let spc = std::env::temp_dir().join(format!("{}.spc", unique("shop")));
    std::fs::write(
        &spc,
        format!(
            "# the shop's database\nconnection \"shop_db\" {{\n  plugin   = \"postgres\"\n  host     = \"127.0.0.1\"\n  port     = {}\n  \
             database = \"{}\"\n  user     = \"{}\"\n  password = \"{}\"\n  schema   = \"public\"\n}}\n",
            w.pg.port, w.src.db, w.src.user, w.src.password
        ),
    )
    .unwrap();
    let out = manifold(&["-n", &ns, "import", "steampipe", spc.to_str().unwrap(), "--attach", "ws", "--apply"]);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("connection.manifold.dev/shop-db serverside-applied"), "{printed}");
    assert!(!printed.contains(&w.src.password) && !String::from_utf8_lossy(&out.stderr).contains(&w.src.password));
    let attached = w.wait_ready("ws-shop-db").await;
    assert_eq!(attached.status.unwrap().schema.as_deref(), Some("shop_db"));
    assert_eq!(count(&w.ws().await, "SELECT count(*) FROM shop_db.orders").await, 3);
    // Applied again, nothing changes (server-side apply).
    let again = manifold(&["-n", &ns, "import", "steampipe", spc.to_str().unwrap(), "--attach", "ws", "--apply"]);
    assert!(again.status.success());

    // A function call is an error with its file and line, and nothing is
    // printed or applied.
    let bad = std::env::temp_dir().join(format!("{}.spc", unique("bad")));
    std::fs::write(&bad, "connection \"x\" {\n  plugin = \"aws\"\n  secret_key = env(\"AWS_SECRET\")\n}\n").unwrap();
    let out = manifold(&["-n", &ns, "import", "steampipe", spc.to_str().unwrap(), bad.to_str().unwrap(), "--apply"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing printed half");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("{}:3", bad.display())) && said.contains("env()"), "{said}");
    assert!(w.connections().get_opt("x").await.unwrap().is_none());
    std::fs::remove_file(spc).ok();
    std::fs::remove_file(bad).ok();
}
