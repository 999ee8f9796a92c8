//! Every deletion completes: in every order and combination that GitOps
//! tools and people delete in, every object is gone within a bound, and
//! nothing of it stays in the workspace database (no schema, server, user
//! mapping, grant or search path entry). A database that is gone for good
//! holds its namespace only for the terminating bound, and not at all
//! with `deletionPolicy: Orphan`.

use std::time::{Duration, Instant};

use manifold::api::{DeletionPolicy, SearchPathMode, SearchPathSpec};

use super::faults::SERIAL;
use crate::support::objects::{self, yaml};
use crate::support::world::{World, count, world_without_operator};
use crate::support::{Operator, Postgres, control_plane, stdout_ok, wait_for};

/// How long any deletion here may take before the test calls it stuck.
/// The measured times are printed; they are a few seconds.
const BOUND: Duration = Duration::from_secs(60);

/// One world's objects, as a GitOps repository holds them: a Workspace
/// with a reader and an Auto search path, two Connections attached, and
/// every Secret.
fn manifests(w: &World, ws_uri: &str, reader: &str, policy: DeletionPolicy) -> String {
    let mut out = String::new();
    let ws_db = objects::secret("ws-db", &[("uri", ws_uri)]);
    out.push_str(&format!("---\n{}", yaml(&ws_db)));
    let mut ws = objects::workspace("ws", "ws-db");
    ws.spec.readers = vec![reader.to_owned()];
    ws.spec.search_path = Some(SearchPathSpec { mode: SearchPathMode::Auto, ..Default::default() });
    ws.spec.deletion_policy = policy;
    out.push_str(&format!("---\n{}", yaml(&ws)));
    let creds = objects::secret("creds", &[("user", &w.src.user), ("password", &w.src.password)]);
    out.push_str(&format!("---\n{}", yaml(&creds)));
    for c in ["c1", "c2"] {
        let conn = objects::postgres_connection(c, "127.0.0.1", w.pg.port, &w.src.db, "creds");
        out.push_str(&format!("---\n{}", yaml(&conn)));
        let att = objects::attachment(&format!("a-{c}"), "ws", c);
        out.push_str(&format!("---\n{}", yaml(&att)));
    }
    out
}

/// Applies the world's manifests server-side, as Flux and Argo CD do, with
/// the workspace on `ws_uri`, and waits until both attachments are Ready
/// and on the search path (`admin`: a session on that database).
async fn apply_all(w: &World, ws_uri: &str, admin: &tokio_postgres::Client, reader: &str, policy: DeletionPolicy) {
    let args = ["-n", w.t.ns.as_str(), "apply", "--server-side", "--field-manager", "gitops", "-f", "-"];
    stdout_ok(&control_plane().kubectl_stdin(&args, &manifests(w, ws_uri, reader, policy)));
    w.wait_ready("a-c1").await;
    w.wait_ready("a-c2").await;
    wait_for("both schemas on the search path", BOUND, || async {
        let path = search_path(admin).await;
        if path.contains("c1") && path.contains("c2") { Ok(()) } else { Err(path) }
    })
    .await;
}

/// Deletes the named objects in one call, as a prune does.
fn delete(w: &World, objects: &[&str]) {
    let mut args = vec!["-n", w.t.ns.as_str(), "delete", "--wait=false"];
    args.extend_from_slice(objects);
    stdout_ok(&w.t.kubectl(&args));
}

/// Waits until none of `objects` exists; returns how long that took.
async fn gone(w: &World, what: &str, objects: &[&str]) -> Duration {
    let started = Instant::now();
    wait_for(&format!("{what}: {objects:?} gone"), BOUND, || async {
        let mut args = vec!["-n", w.t.ns.as_str(), "get", "--ignore-not-found", "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.finalizers} {.status.conditions[?(@.type==\"Ready\")].reason}: {.status.conditions[?(@.type==\"Ready\")].message}{\"\\n\"}{end}"];
        args.extend_from_slice(objects);
        let left = stdout_ok(&w.t.kubectl(&args));
        if left.trim().is_empty() { Ok(()) } else { Err(left) }
    })
    .await;
    started.elapsed()
}

/// The database's own `search_path` setting, as Manifold sets it.
async fn search_path(admin: &tokio_postgres::Client) -> String {
    let row = admin
        .query_opt(
            "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting
              WHERE setrole = 0 AND setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap();
    row.and_then(|r| r.get::<_, Option<String>>(0)).unwrap_or_default()
}

/// What the workspace database still holds of the schemas `schemas`, of
/// any server, user mapping and grant to `reader`, and of the search path:
/// empty when nothing is left.
async fn leftovers(w: &World, reader: &str, schemas: &[&str]) -> Vec<String> {
    let admin = w.ws_admin().await;
    let mut left = Vec::new();
    for schema in schemas {
        if count(&admin, &format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'")).await > 0 {
            left.push(format!("schema {schema}"));
        }
        if count(&admin, &format!("SELECT count(*) FROM pg_foreign_server WHERE srvname = '{schema}'")).await > 0 {
            left.push(format!("server {schema}"));
        }
        if search_path(&admin).await.split(',').any(|s| s.trim().trim_start_matches("search_path=").trim() == *schema) {
            left.push(format!("search path entry {schema}: {}", search_path(&admin).await));
        }
    }
    // Mappings and grants of what is gone: none may survive their server
    // or schema, and the reader may use nothing but what is still attached.
    let mappings: Vec<String> = admin
        .query("SELECT srvname::text || ' for ' || usename::text FROM pg_user_mappings", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .filter(|m: &String| schemas.iter().any(|s| m.starts_with(&format!("{s} for "))))
        .collect();
    left.extend(mappings.into_iter().map(|m| format!("user mapping {m}")));
    let granted: Vec<String> = admin
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE has_schema_privilege($1, oid, 'USAGE')
               AND nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%'",
            &[&reader],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .filter(|s: &String| schemas.contains(&s.as_str()))
        .collect();
    left.extend(granted.into_iter().map(|s| format!("USAGE for {reader} on {s}")));
    left
}

async fn reader_role(pg: &Postgres, name: &str) {
    pg.connect("postgres").await.batch_execute(&format!("CREATE ROLE \"{name}\" LOGIN PASSWORD 'reader'")).await.unwrap();
}

/// Each combination in its own namespace, one operator over all of them.
pub async fn every_deletion_order_converges() {
    let _serial = SERIAL.lock().await;
    let cases =
        ["connection-and-attachment", "workspace-and-attachments", "everything-with-secrets", "workspace-first", "workspace-secret-first"];
    let mut worlds = Vec::new();
    for i in 0..cases.len() {
        worlds.push(world_without_operator(&format!("del{i}")).await);
    }
    let namespaces: Vec<&str> = worlds.iter().map(|w| w.t.ns.as_str()).collect();
    let op = Operator::start(&control_plane().kubeconfig, &["--namespaces", &namespaces.join(","), "--resync", "5s"]);
    for (i, (case, w)) in cases.iter().zip(&worlds).enumerate() {
        let reader = format!("del_reader_{}_{i}", std::process::id());
        reader_role(w.pg, &reader).await;
        apply_all(w, &w.pg.owner_uri(&w.ws_db), &w.ws_admin().await, &reader, DeletionPolicy::Delete).await;
        let all = ["secret/ws-db", "secret/creds", "mws/ws", "conn/c1", "conn/c2", "wsconn/a-c1", "wsconn/a-c2"];
        let took = match *case {
            "connection-and-attachment" => {
                delete(w, &["conn/c1", "wsconn/a-c1"]);
                gone(w, case, &["conn/c1", "wsconn/a-c1"]).await
            }
            "workspace-and-attachments" => {
                delete(w, &["mws/ws", "wsconn/a-c1", "wsconn/a-c2"]);
                gone(w, case, &["mws/ws", "wsconn/a-c1", "wsconn/a-c2"]).await
            }
            "everything-with-secrets" => {
                delete(w, &all);
                gone(w, case, &all[2..]).await
            }
            "workspace-first" => {
                delete(w, &["mws/ws"]);
                let first = gone(w, case, &["mws/ws"]).await;
                delete(w, &["wsconn/a-c1", "wsconn/a-c2"]);
                first + gone(w, case, &["wsconn/a-c1", "wsconn/a-c2"]).await
            }
            "workspace-secret-first" => {
                delete(w, &["secret/ws-db"]);
                delete(w, &all[1..]);
                gone(w, case, &all[2..]).await
            }
            _ => unreachable!(),
        };
        // What is deleted leaves nothing; what stays is untouched.
        let deleted: &[&str] = if *case == "connection-and-attachment" { &["c1"] } else { &["c1", "c2"] };
        let admin = w.ws_admin().await;
        let left = wait_for(&format!("{case}: nothing left in the database"), BOUND, || async {
            let left = leftovers(w, &reader, deleted).await;
            if left.is_empty() { Ok(left) } else { Err(format!("{left:?}")) }
        })
        .await;
        assert!(left.is_empty());
        if *case == "connection-and-attachment" {
            assert_eq!(count(&w.ws().await, "SELECT count(*) FROM c2.orders").await, 3, "the other attachment still reads");
            assert!(search_path(&admin).await.contains("c2"), "the other attachment stays on the search path");
        } else {
            assert_eq!(search_path(&admin).await, "", "the search path the Workspace set is reset");
        }
        println!("{case}: every deleted object gone {took:?} after the delete, nothing left in the database");
    }
    drop(op);
}

/// A namespace whose workspace database was stopped before the namespace
/// was deleted (its database cluster went first) is gone within the
/// terminating bound, with a Warning Event in the operator's log; with
/// `deletionPolicy: Orphan` on the Workspace, at once.
pub async fn a_namespace_whose_database_is_gone_is_deleted_within_the_bound() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    for policy in [DeletionPolicy::Delete, DeletionPolicy::Orphan] {
        let own = Postgres::start();
        let db = own.database("ws").await;
        let w = world_without_operator(&format!("gone-{policy:?}").to_lowercase()).await;
        let op = Operator::start(
            &cp.kubeconfig,
            &["--namespaces", &w.t.ns, "--resync", "5s", "--terminating-cleanup-timeout", "8s", "--connect-timeout", "2s"],
        );
        let reader = format!("gone_reader_{}_{policy:?}", std::process::id()).to_lowercase();
        reader_role(&own, &reader).await;
        apply_all(&w, &own.owner_uri(&db), &own.connect(&db).await, &reader, policy).await;
        own.devenv.command("stop");
        let started = Instant::now();
        stdout_ok(&cp.kubectl(&["delete", "namespace", &w.t.ns, "--wait=false"]));
        wait_for(&format!("{policy:?}: namespace gone"), Duration::from_secs(90), || async {
            let out = cp.kubectl(&["get", "namespace", &w.t.ns]);
            if !out.status.success() {
                return Ok(());
            }
            let left = cp.kubectl(&[
                "-n",
                &w.t.ns,
                "get",
                "wsconn,conn,mws",
                "-o",
                "jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.finalizers} {.status.conditions[?(@.type==\"Ready\")].reason}{\"\\n\"}{end}",
            ]);
            Err(String::from_utf8_lossy(&left.stdout).into_owned())
        })
        .await;
        let took = started.elapsed();
        println!("{policy:?}: the namespace of a stopped database was gone after {took:?}");
        let log = op.logs();
        std::fs::write(format!("/tmp/gone-{policy:?}-operator.log"), &log).ok();
        match policy {
            DeletionPolicy::Delete => {
                assert!(took >= Duration::from_secs(7), "not before the terminating bound: {took:?}");
                assert!(log.contains("gave up"), "the operator says what it left: {log}");
            }
            DeletionPolicy::Orphan => {
                assert!(!log.contains("gave up"), "an Orphan workspace waits for nothing: {log}");
            }
        }
        own.devenv.command("start");
        drop(op);
    }
}
