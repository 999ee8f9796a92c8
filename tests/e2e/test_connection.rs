//! Test Connection, end to end: each way a connection can fail is reported
//! with the reason that tells a person what to fix, no secret leaks, nothing
//! is left in the workspace, and `manifold test` is the command-line button.

use std::process::Command;
use std::time::Duration;

use kube::api::DeleteParams;
use manifold::api::{Connection, TestOutcome, conditions};

use crate::attach::{World, world};
use crate::support::world::{as_is, interval};
use crate::support::{control_plane, operator, secret_yaml, stdout_ok};

/// No leftover of a test in the workspace database.
async fn assert_no_leftovers(w: &World) {
    let ws = w.ws().await;
    for (what, sql) in [
        ("servers", "SELECT count(*) FROM pg_foreign_server WHERE srvname LIKE 'manifold_test_%'"),
        ("schemas", "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'manifold_test_%'"),
        ("user mappings", "SELECT count(*) FROM pg_user_mappings WHERE srvname LIKE 'manifold_test_%'"),
        ("foreign tables", "SELECT count(*) FROM pg_foreign_table"),
    ] {
        let n: i64 = ws.query_one(sql, &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "the test left {what} behind");
    }
}

fn condition(conn: &Connection, type_: &str) -> (String, String) {
    let c = conditions::find(&conn.status.as_ref().unwrap().conditions, type_).unwrap();
    (c.status.clone(), c.reason.clone())
}

pub async fn good_credentials_pass_and_leave_nothing_behind() {
    let w = world("test-good").await;
    w.workspace("ws");
    w.connection("sales", as_is);
    let conn = w.wait_test("sales", "Passed", |t| t.result == TestOutcome::Passed).await;
    let test = conn.status.as_ref().unwrap().test.clone().unwrap();
    assert_eq!(test.tables, Some(2));
    // Attached nowhere, it is tested in the cluster admin's test database,
    // never in a Workspace it is not attached to.
    assert_eq!(test.workspace, None);
    assert_eq!(test.observed_generation, conn.metadata.generation);
    assert_eq!(condition(&conn, "Verified"), ("True".into(), "Passed".into()));
    assert_eq!(condition(&conn, "Ready"), ("True".into(), "Passed".into()));
    assert_no_leftovers(&w).await;
    let printed = stdout_ok(&w.t.kubectl(&["get", "conn", "sales"]));
    assert!(printed.lines().nth(1).unwrap().split_whitespace().nth(3) == Some("Passed"), "{printed}");
    let events = stdout_ok(&w.t.kubectl(&["get", "events", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"]));
    assert!(events.lines().any(|r| r == "TestPassed"), "{events}");
}

/// One bad connection per reason, all in one namespace with one workspace.
pub async fn each_failure_has_a_reason_that_says_what_to_fix_and_no_secret_leaks() {
    let w = world("test-bad").await;
    w.workspace("ws");
    let wrong_password = format!("wrong-{}-{}", crate::support::secret_marker(), crate::support::unique("secret"));

    // Wrong password.
    w.apply(&secret_yaml("badpw-creds", &[("user", &w.src.user), ("password", &wrong_password)]));
    w.connection_only("badpw", as_is);
    // Nothing listening on the port.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    w.credentials("nohost", &w.src.password);
    w.apply(&format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: nohost }}\nspec:\n\
         \x20 plugin:\n    postgres: {{ host: 127.0.0.1, port: {closed_port}, database: {} }}\n\
         \x20 credentials: {{ secretRef: {{ name: nohost-creds }} }}\n",
        w.src.db
    ));
    // A remote schema that does not exist.
    w.credentials("noschema", &w.src.password);
    w.apply(&format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: noschema }}\nspec:\n\
         \x20 plugin:\n    postgres: {{ host: 127.0.0.1, port: {}, database: {}, remoteSchema: nowhere }}\n\
         \x20 credentials: {{ secretRef: {{ name: noschema-creds }} }}\n",
        w.pg.port, w.src.db
    ));
    // A missing Secret.
    w.connection_only("nosecret", as_is);
    // A steampipe plugin whose extension is not installed.
    w.apply(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: { name: aws }\n\
         spec: { plugin: { steampipe: { name: aws, config: 'regions = [\"*\"]' } } }\n",
    );

    for (name, reason) in [
        ("badpw", "AuthenticationFailed"),
        ("nohost", "HostUnreachable"),
        ("noschema", "RemoteSchemaMissing"),
        ("nosecret", "SecretNotFound"),
        ("aws", "ExtensionMissing"),
    ] {
        let conn = w.wait_test_reason(name, reason).await;
        let test = conn.status.as_ref().unwrap().test.clone().unwrap();
        assert_eq!(test.result, TestOutcome::Failed, "{name}");
        assert!(!test.message.is_empty(), "{name}: a message for a person");
        let (verified, verified_reason) = condition(&conn, "Verified");
        assert_eq!((verified.as_str(), verified_reason.as_str()), ("False", reason), "{name}");
        let (ready, ready_reason) = condition(&conn, "Ready");
        if name == "nosecret" {
            assert_eq!((ready.as_str(), ready_reason.as_str()), ("False", "SecretNotFound"));
        } else {
            assert_eq!((ready.as_str(), ready_reason.as_str()), ("False", "TestFailed"), "{name}");
        }
    }
    assert_no_leftovers(&w).await;
    let events = stdout_ok(&w.t.kubectl(&["get", "events", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"]));
    assert!(events.lines().any(|r| r == "TestFailed"), "{events}");

    // A source table with SELECT revoked (on a source of its own).
    let other = w.pg.source("test-revoked").await;
    w.pg.connect(&other.db)
        .await
        .batch_execute(&format!("REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM {}", other.user))
        .await
        .unwrap();
    w.apply(&secret_yaml("revoked-creds", &[("user", &other.user), ("password", &other.password)]));
    w.apply(&format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: revoked }}\nspec:\n\
         \x20 plugin:\n    postgres: {{ host: 127.0.0.1, port: {}, database: {} }}\n\
         \x20 credentials: {{ secretRef: {{ name: revoked-creds }} }}\n",
        w.pg.port, other.db
    ));
    w.wait_test_reason("revoked", "PermissionDenied").await;

    // No secret value anywhere a person or a log collector can see.
    let visible = w.everything_visible();
    let logs = operator().logs();
    for secret in [wrong_password.as_str(), w.src.password.as_str()] {
        assert!(!visible.contains(secret), "a secret leaked into a status or Event");
        assert!(!logs.contains(secret), "a secret leaked into the operator's log");
    }
    assert!(!visible.contains(&w.src.user), "the user name from the Secret is redacted too");

    // Fixing the Secret is enough: the new version is tested.
    w.credentials("badpw", &w.src.password);
    w.wait_test("badpw", "Passed after the fix", |t| t.result == TestOutcome::Passed).await;
}

/// A test sends the connection's credentials to the database it runs in,
/// so it runs only where the connection is attached (or in the admin's
/// test database): `spec.test.workspace` naming a Workspace it is not
/// attached to is `NoWorkspace`, however Ready that Workspace is, until the
/// connection is attached there.
pub async fn a_test_runs_only_where_the_connection_is_attached() {
    let w = world("test-nows").await;
    let pinned = |c: &mut Connection| c.spec.test = Some(manifold::api::TestSpec { interval: None, workspace: Some("late".into()) });
    w.connection("lonely", pinned);
    let conn = w.wait_test_reason("lonely", "NoWorkspace").await;
    let test = conn.status.as_ref().unwrap().test.clone().unwrap();
    assert_eq!(test.result, TestOutcome::Unknown);
    assert!(test.message.contains("not a Workspace this connection is attached to"), "{}", test.message);
    assert_eq!(condition(&conn, "Verified"), ("Unknown".into(), "NoWorkspace".into()));
    w.workspace("late");
    w.wait_workspace_ready("late").await;
    stdout_ok(&w.t.kubectl(&["annotate", "--overwrite", "conn", "lonely", "manifold.dev/test-request=again"]));
    let conn = w.wait_test("lonely", "the requested test", |t| t.request.as_deref() == Some("again")).await;
    assert_eq!(conn.status.unwrap().test.unwrap().reason, "NoWorkspace", "Ready, but not attached there");
    w.attach("late-lonely", "late", "lonely", as_is);
    let conn = w.wait_test("lonely", "Passed once attached", |t| t.result == TestOutcome::Passed).await;
    assert_eq!(conn.status.unwrap().test.unwrap().workspace.as_deref(), Some("late"));
}

pub async fn a_periodic_test_runs_again_after_its_interval() {
    let w = world("test-periodic").await;
    w.workspace("ws");
    w.connection("ticking", interval("2s"));
    let first = w.wait_test("ticking", "Passed", |t| t.result == TestOutcome::Passed).await;
    let first_at = first.status.unwrap().test.unwrap().tested_at;
    w.wait_test("ticking", "tested again", |t| t.tested_at > first_at).await;

    // interval 0 turns it off.
    w.connection_only("ticking", interval("0"));
    let off = w.wait_test("ticking", "the new generation", |t| t.observed_generation == Some(2)).await;
    let at = off.status.unwrap().test.unwrap().tested_at;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = w.connections().get("ticking").await.unwrap().status.unwrap().test.unwrap().tested_at;
    assert_eq!(later, at, "no periodic test with interval 0");
}

pub async fn manifold_test_is_the_test_connection_button() {
    let w = world("test-cli").await;
    w.workspace("ws");
    w.connection("good", as_is);
    let not_the_password = format!("not-the-password-{}", crate::support::secret_marker());
    w.apply(&secret_yaml("bad-creds", &[("user", &w.src.user), ("password", &not_the_password)]));
    w.connection_only("bad", as_is);
    w.wait_test("good", "first", |_| true).await;
    w.wait_test("bad", "first", |_| true).await;

    let run = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_manifold"))
            .args(["test", name, "-n", &w.t.ns, "--timeout", "30s"])
            .env("KUBECONFIG", &control_plane().kubeconfig)
            .output()
            .unwrap()
    };
    let good = run("good");
    let printed = String::from_utf8_lossy(&good.stdout);
    assert_eq!(good.status.code(), Some(0), "{printed}{}", String::from_utf8_lossy(&good.stderr));
    assert!(printed.contains("Passed: 2 tables"), "{printed}");

    let bad = run("bad");
    let printed = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{printed}");
    assert!(printed.contains("Failed: AuthenticationFailed"), "{printed}");
    assert!(!printed.contains(&not_the_password));

    // Each press is answered by a new test.
    let conn = w.connections().get("good").await.unwrap();
    let request = conn.metadata.annotations.unwrap()["manifold.dev/test-request"].clone();
    assert_eq!(conn.status.unwrap().test.unwrap().request.as_deref(), Some(request.as_str()));

    w.connections().delete("bad", &DeleteParams::default()).await.unwrap();
    let missing = run("bad");
    assert_ne!(missing.status.code(), Some(0));
}
