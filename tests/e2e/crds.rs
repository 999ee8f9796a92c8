//! The CRDs in a real apiserver: they install and become Established, valid
//! objects are accepted and printed with their columns, every validation rule
//! rejects a bad object with a clear message, and `kubectl explain` shows the
//! field docs.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

use crate::support::{self, control_plane, namespace, stdout_ok, wait_for};

const WORKSPACE: &str = r#"
apiVersion: manifold.dev/v1alpha1
kind: Workspace
metadata: { name: analytics }
spec:
  database:
    secretRef: { name: analytics-db }
"#;

const CONNECTION: &str = r#"
apiVersion: manifold.dev/v1alpha1
kind: Connection
metadata: { name: sales-db }
spec:
  plugin:
    postgres: { host: sales.db.svc, database: sales, options: { fetch_size: "1000" } }
  credentials:
    secretRef: { name: sales-readonly }
  tables: { include: [orders, customers], exclude: [] }
  test: { interval: 1h30m, workspace: analytics }
"#;

const ATTACHMENT: &str = r#"
apiVersion: manifold.dev/v1alpha1
kind: WorkspaceConnection
metadata: { name: analytics-sales }
spec:
  workspace: analytics
  connection: sales-db
"#;

/// Collapses runs of spaces, so that column layout does not matter.
fn words(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub async fn crds_install_and_become_established() {
    let cp = control_plane();
    // The support already installed them; a second apply must be clean too.
    let out = cp.kubectl(&["apply", "-f", &support::repo_root().join("crds").to_string_lossy()]);
    let printed = stdout_ok(&out);
    for name in support::CRD_NAMES {
        assert!(printed.contains(name.trim_start_matches("crd/")), "{printed}");
    }
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client().await);
    for name in ["workspaces.manifold.dev", "connections.manifold.dev", "workspaceconnections.manifold.dev"] {
        let crd = crds.get(name).await.unwrap();
        let established =
            crd.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not Established");
    }
}

pub async fn valid_objects_are_accepted_and_listed_with_their_columns() {
    let t = namespace("crd-valid").await;
    for doc in [WORKSPACE, CONNECTION, ATTACHMENT] {
        stdout_ok(&t.apply(doc));
    }
    // A connection without spec.schema whose name maps to a valid schema.
    stdout_ok(&t.apply(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: { name: github.main }\n\
         spec: { plugin: { steampipe: { name: github, config: 'token = \"x\"' } } }\n",
    ));

    let printed = stdout_ok(&t.kubectl(&["get", "conn,mws,wsconn"]));
    let headers: Vec<String> = printed.lines().filter(|l| l.starts_with("NAME")).map(words).collect();
    assert_eq!(
        headers,
        [
            "NAME PLUGIN SCHEMA TEST WORKSPACES AGE",
            "NAME READY CONNECTIONS POSTGRES AGE",
            "NAME WORKSPACE CONNECTION SCHEMA TABLES READY REASON AGE",
        ],
        "{printed}"
    );
    let row = printed.lines().find(|l| l.contains("workspaceconnection.manifold.dev/analytics-sales")).unwrap();
    assert!(words(row).contains("analytics sales-db"), "{row}");

    // The category and the short names reach the same objects.
    let by_category = stdout_ok(&t.kubectl(&["get", "manifold", "-o", "name"]));
    let mut names: Vec<&str> = by_category.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "connection.manifold.dev/github.main",
            "connection.manifold.dev/sales-db",
            "workspace.manifold.dev/analytics",
            "workspaceconnection.manifold.dev/analytics-sales",
        ]
    );

    // Defaults are applied by the apiserver.
    let conn = stdout_ok(&t.kubectl(&[
        "get",
        "conn",
        "sales-db",
        "-o",
        "jsonpath={.spec.plugin.postgres.port} {.spec.plugin.postgres.remoteSchema}",
    ]));
    assert_eq!(conn, "5432 public");
    let ws = stdout_ok(&t.kubectl(&["get", "mws", "analytics", "-o", "jsonpath={.spec.database.secretRef.key}"]));
    assert_eq!(ws, "uri");
    let policy = stdout_ok(&t.kubectl(&["get", "wsconn", "analytics-sales", "-o", "jsonpath={.spec.deletionPolicy}"]));
    assert_eq!(policy, "Delete");
}

fn connection(name: &str, spec: &str) -> String {
    format!("apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: {name} }}\nspec: {spec}\n")
}

fn pg_connection(name: &str, extra: &str) -> String {
    connection(
        name,
        &format!("{{ plugin: {{ postgres: {{ host: h, database: d }} }}, credentials: {{ secretRef: {{ name: s }} }}{extra} }}"),
    )
}

/// One bad object per rule. Each must be refused, with a message that says
/// what is wrong.
pub async fn each_validation_rule_rejects_a_bad_object() {
    let t = namespace("crd-invalid").await;
    let schema_msg = "schema must match ^[a-z_][a-z0-9_]*$, be at most 63 bytes, and not be public";
    let derived_msg = "spec.schema is unset and the default derived from metadata.name";
    let interval_msg = "interval must be a duration such as 90s, 15m or 1h30m (at most 4 parts of 6 digits), or 0";
    let host_msg = "host must be a DNS name or an IP address (not a socket path or a list of hosts)";
    let options_msg = "options may only set postgres_fdw's own options and the libpq options that name no file, socket or other host";
    let long_schema = "a".repeat(64);
    let cases: Vec<(&str, String, &str)> = vec![
        ("no plugin", connection("c", "{ plugin: {} }"), "exactly one of plugin.postgres, plugin.steampipe or plugin.fdw must be set"),
        (
            "two plugins",
            connection("c", "{ plugin: { postgres: { host: h, database: d }, steampipe: { name: aws } } }"),
            "exactly one of plugin.postgres, plugin.steampipe or plugin.fdw must be set",
        ),
        ("include and exclude", pg_connection("c", ", tables: { include: [a], exclude: [b] }"), "set at most one of tables.include and tables.exclude"),
        ("uppercase schema", pg_connection("c", ", schema: Sales"), schema_msg),
        ("schema with a quote", pg_connection("c", ", schema: \"sa'les\""), schema_msg),
        ("schema with a double quote", pg_connection("c", ", schema: 'sa\"les'"), schema_msg),
        ("schema with a dash", pg_connection("c", ", schema: sa-les"), schema_msg),
        ("schema starting with a digit", pg_connection("c", ", schema: 1sales"), schema_msg),
        ("unicode schema", pg_connection("c", ", schema: ventes_été"), schema_msg),
        ("schema over 63 bytes", pg_connection("c", &format!(", schema: {long_schema}")), schema_msg),
        ("schema public", pg_connection("c", ", schema: public"), schema_msg),
        ("schema information_schema", pg_connection("c", ", schema: information_schema"), schema_msg),
        ("schema manifold, where the pins are", pg_connection("c", ", schema: manifold"), schema_msg),
        ("schema pg_", pg_connection("c", ", schema: pg_sales"), schema_msg),
        ("name maps to pg_", pg_connection("pg-sales", ""), derived_msg),
        ("name maps to public", pg_connection("public", ""), derived_msg),
        ("name starts with a digit", pg_connection("1sales", ""), derived_msg),
        ("name maps to over 63 bytes", pg_connection(&"a".repeat(64), ""), derived_msg),
        ("port 0", connection("c", "{ plugin: { postgres: { host: h, database: d, port: 0 } } }"), "should be greater than or equal to 1"),
        ("port 65536", connection("c", "{ plugin: { postgres: { host: h, database: d, port: 65536 } } }"), "should be less than or equal to 65535"),
        (
            "host in options",
            connection("c", "{ plugin: { postgres: { host: h, database: d, options: { host: evil } } } }"),
            options_msg,
        ),
        // Sources are network endpoints: no socket directory (on a
        // superuser, postgres_fdw would skip its password checks there),
        // no list of hosts, no option that names a file.
        ("socket directory as host", connection("c", "{ plugin: { postgres: { host: /var/run/postgresql, database: d } } }"), host_msg),
        ("list of hosts", connection("c", "{ plugin: { postgres: { host: \"db,/tmp\", database: d } } }"), host_msg),
        ("passfile option", connection("c", "{ plugin: { postgres: { host: h, database: d, options: { passfile: /etc/passwd } } } }"), options_msg),
        ("service option", connection("c", "{ plugin: { postgres: { host: h, database: d, options: { service: admin } } } }"), options_msg),
        ("sslkey option", connection("c", "{ plugin: { postgres: { host: h, database: d, options: { sslkey: /k } } } }"), options_msg),
        ("hostaddr option", connection("c", "{ plugin: { postgres: { host: h, database: d, options: { hostaddr: 10.0.0.1 } } } }"), options_msg),
        ("postgres without credentials", connection("c", "{ plugin: { postgres: { host: h, database: d } } }"), "a postgres connection needs credentials.secretRef"),
        // A duration too long for anyone's clock: refused, not a panic.
        ("overflowing interval", pg_connection("c", ", test: { interval: 99999999999999999999h }"), interval_msg),
        ("too many parts", pg_connection("c", ", test: { interval: 1h1h1h1h1h }"), interval_msg),
        ("interval in words", pg_connection("c", ", test: { interval: 1 hour }"), interval_msg),
        ("interval without unit", pg_connection("c", ", test: { interval: \"30\" }"), interval_msg),
        ("negative interval", pg_connection("c", ", test: { interval: -1h }"), interval_msg),
        ("steampipe name", connection("c", "{ plugin: { steampipe: { name: \"aws; drop\" } } }"), "name must match ^[a-z0-9_]+$"),
        (
            "workspace without secret",
            "apiVersion: manifold.dev/v1alpha1\nkind: Workspace\nmetadata: { name: w }\nspec: { database: {} }\n".into(),
            "spec.database.secretRef: Required value",
        ),
        (
            "a reference into another namespace",
            "apiVersion: manifold.dev/v1alpha1\nkind: WorkspaceConnection\nmetadata: { name: a }\nspec: { workspace: other-ns/ws, connection: c }\n".into(),
            "spec.workspace in body should match",
        ),
        (
            "a Secret name that is not a name",
            connection("c", "{ plugin: { postgres: { host: h, database: d } }, credentials: { secretRef: { name: \"../x\" } } }"),
            "spec.credentials.secretRef.name in body should match",
        ),
        (
            "unknown deletion policy",
            "apiVersion: manifold.dev/v1alpha1\nkind: WorkspaceConnection\nmetadata: { name: a }\nspec: { workspace: w, connection: c, deletionPolicy: Destroy }\n".into(),
            "supported values: \"Delete\", \"Orphan\"",
        ),
    ];
    let mut failures = Vec::new();
    for (what, yaml, expected) in &cases {
        let out = t.apply(yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(expected) {
            failures.push(format!("{what}: success={} stderr={stderr}", out.status.success()));
        }
    }
    assert!(failures.is_empty(), "rules that did not reject as expected:\n{}", failures.join("\n"));
    // Nothing of the above was stored.
    let left = stdout_ok(&t.kubectl(&["get", "manifold", "-o", "name"]));
    assert_eq!(left, "");
}

pub async fn attachment_references_are_immutable() {
    let t = namespace("crd-immutable").await;
    stdout_ok(&t.apply(ATTACHMENT));
    for (field, message) in [
        ("workspace: other\n  connection: sales-db", "workspace is immutable"),
        ("workspace: analytics\n  connection: other", "connection is immutable"),
    ] {
        let changed = format!(
            "apiVersion: manifold.dev/v1alpha1\nkind: WorkspaceConnection\nmetadata: {{ name: analytics-sales }}\nspec:\n  {field}\n"
        );
        let out = t.apply(&changed);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(message), "{field}: {stderr}");
    }
    // deletionPolicy stays mutable.
    stdout_ok(&t.apply(&format!("{ATTACHMENT}  deletionPolicy: Orphan\n")));
}

pub async fn kubectl_explain_shows_the_field_docs() {
    let cp = control_plane();
    // Discovery of a new CRD reaches kubectl's OpenAPI view shortly after it
    // is Established.
    let explained = wait_for("kubectl explain connection.spec", Duration::from_secs(60), || async {
        let out = cp.kubectl(&["explain", "connection.spec"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() { Ok(text) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    })
    .await;
    for expected in ["plugin", "credentials", "tables", "test", "The schema that holds this connection's tables"] {
        assert!(explained.contains(expected), "missing {expected:?} in:\n{explained}");
    }
    let plugin = stdout_ok(&cp.kubectl(&["explain", "connection.spec.plugin"]));
    assert!(plugin.contains("exactly one of `postgres`"), "{plugin}");
    assert!(plugin.contains("postgres_fdw"), "{plugin}");
    let policy = stdout_ok(&cp.kubectl(&["explain", "workspaceconnection.spec.deletionPolicy"]));
    assert!(policy.contains("`Orphan` leaves them in place"), "{policy}");
}
