//! One tenant's trouble stays its own: sources that never answer do not
//! stall a workspace, a deleted namespace takes everything it made with it
//! (and only that), and a database that is gone for good does not hold a
//! deletion forever.

use std::time::{Duration, Instant};

use super::faults::{SERIAL, connection_via, operator_for};
use crate::support::world::as_is;
use crate::support::world::{WAIT, count, world_without_operator};
use crate::support::{Operator, Postgres, control_plane, postgres, secret_yaml, silent_source, stdout_ok, unique, wait_for};

/// Six sources that accept TCP and never answer, attached to one workspace:
/// each reports Timeout or HostUnreachable within its connect timeout (10 s
/// by default), and a healthy attachment made meanwhile is Ready in
/// seconds.
pub async fn silent_sources_do_not_stall_a_workspace() {
    let _serial = SERIAL.lock().await;
    let w = world_without_operator("silent").await;
    let _op = operator_for(&w, &[]);
    w.workspace("ws");
    w.wait_workspace_ready("ws").await;
    let started = Instant::now();
    for i in 0..6 {
        let port = silent_source().await;
        connection_via(&w, &format!("mute{i}"), port, as_is);
        w.attach(&format!("ws-mute{i}"), "ws", &format!("mute{i}"), as_is);
    }
    let mut reported = Vec::new();
    for i in 0..6 {
        let att = w
            .wait_attachment(&format!("ws-mute{i}"), "Timeout or HostUnreachable", |a| {
                matches!(crate::support::world::ready_reason(a), Some("Timeout" | "HostUnreachable"))
            })
            .await;
        let message = manifold::api::conditions::find(&att.status.unwrap().conditions, "Ready").unwrap().message.clone();
        reported.push(started.elapsed());
        assert!(message.to_lowercase().contains("timeout") || message.contains("timed out"), "{message}");
    }
    println!("the six silent sources reported after {reported:?}");
    assert!(reported.iter().all(|t| *t < Duration::from_secs(40)), "each within its timeout, after a wait for a session");

    // They keep retrying, and keep failing; a healthy attachment is not
    // held behind them.
    let healthy = Instant::now();
    w.connection("healthy", as_is);
    w.attach("ws-healthy", "ws", "healthy", as_is);
    w.wait_ready("ws-healthy").await;
    let took = healthy.elapsed();
    println!("a healthy attachment beside them was Ready after {took:?}");
    assert!(took < Duration::from_secs(8), "Ready in seconds, not after the silent sources: {took:?}");
    assert_eq!(count(&w.ws().await, "SELECT count(*) FROM healthy.orders").await, 3);
}

/// A namespace deleted with 50 attachments in it leaves no schema, server
/// or user mapping behind, twenty times (five rounds of four namespaces
/// deleted at once), whatever order the namespace controller deletes things
/// in. Only what an Orphan attachment kept stays, marked as orphaned.
pub async fn a_deleted_namespace_leaves_nothing_behind() {
    let _serial = SERIAL.lock().await;
    let cp = control_plane();
    let pg = postgres();
    let src = pg.source("nsdel").await;
    let ws_db = pg.database("nsdel-ws").await;
    let (rounds, at_once) = (5, 4);
    let namespaces: Vec<Vec<String>> = (0..rounds).map(|_| (0..at_once).map(|_| unique("nsdel")).collect()).collect();
    let all = namespaces.iter().flatten().cloned().collect::<Vec<_>>().join(",");
    let op = Operator::start(&cp.kubeconfig, &["--namespaces", &all, "--resync", "30s"]);
    let admin = pg.connect(&ws_db).await;
    let marked = |clause: &'static str| {
        let admin = &admin;
        async move {
            count(
                admin,
                &format!(
                    "SELECT (SELECT count(*) FROM pg_namespace WHERE obj_description(oid, 'pg_namespace') LIKE 'manifold.dev/owner=%' {clause})
                          + (SELECT count(*) FROM pg_foreign_server WHERE obj_description(oid, 'pg_foreign_server') LIKE 'manifold.dev/owner=%')
                          + (SELECT count(*) FROM pg_user_mappings)"
                ),
            )
            .await
        }
    };
    for (round, group) in namespaces.iter().enumerate() {
        let started = Instant::now();
        for (k, ns) in group.iter().enumerate() {
            stdout_ok(&cp.kubectl(&["create", "namespace", ns]));
            stdout_ok(&cp.kubectl_stdin(&["-n", ns, "apply", "-f", "-"], &namespace_yaml(pg, &ws_db, &src, &format!("r{round}_{k}"))));
        }
        for ns in group {
            wait_for(&format!("round {round}: 51 attachments Ready in {ns}"), Duration::from_secs(120), || async {
                let ready = stdout_ok(&cp.kubectl(&[
                    "-n",
                    ns,
                    "get",
                    "wsconn",
                    "-o",
                    "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
                ]));
                let n = ready.lines().filter(|l| *l == "True").count();
                if n == 51 { Ok(()) } else { Err(format!("{n} Ready")) }
            })
            .await;
        }
        let attached = started.elapsed();
        let mut args = vec!["delete", "namespace", "--wait=false"];
        args.extend(group.iter().map(String::as_str));
        stdout_ok(&cp.kubectl(&args));
        for ns in group {
            wait_for(&format!("round {round}: namespace {ns} gone"), Duration::from_secs(120), || async {
                let out = cp.kubectl(&["get", "namespace", ns]);
                if !out.status.success() {
                    return Ok(());
                }
                // What holds it: the objects left, with their finalizers.
                let left = cp.kubectl(&[
                    "-n",
                    ns,
                    "get",
                    "wsconn,conn,mws",
                    "-o",
                    "jsonpath={range .items[*]}{.kind}/{.metadata.name} {.metadata.finalizers} {.status.conditions[?(@.type==\"Ready\")].reason}{\"\\n\"}{end}",
                ]);
                std::fs::write("/tmp/nsdel-operator.log", op.logs()).ok();
                Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&left.stdout)))
            })
            .await;
        }
        // What remains is only the Orphan attachments' schemas (one per
        // namespace so far), each with its server and mapping, and marked.
        let kept = ((round + 1) * at_once) as i64;
        let unmarked = marked("AND obj_description(oid, 'pg_namespace') NOT LIKE '%orphaned=true%'").await;
        if unmarked != 2 * kept {
            let left: Vec<String> = admin
                .query("SELECT nspname::text || ' ' || coalesce(obj_description(oid, 'pg_namespace'), '') FROM pg_namespace WHERE obj_description(oid, 'pg_namespace') LIKE 'manifold.dev/owner=%'", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let log: Vec<String> =
                op.logs().lines().filter(|l| group.iter().any(|ns| l.contains(ns.as_str()))).map(str::to_owned).collect();
            std::fs::write("/tmp/nsdel-operator.log", op.logs()).ok();
            panic!("round {round}: {unmarked} remain besides the orphaned schemas: {left:#?}\nthe operator said:\n{}", log.join("\n"));
        }
        assert_eq!(marked("").await, 3 * kept, "round {round}: every kept schema is marked orphaned");
        println!(
            "round {round}: {at_once} namespaces of 51 attachments each attached in {attached:?}, deleted at once after {:?}, nothing else left",
            started.elapsed() - attached
        );
    }
}

/// One namespace's objects: a Workspace, and 51 Connections attached to it
/// (the last with `deletionPolicy: Orphan`), their schemas named `prefix_cN`.
fn namespace_yaml(pg: &Postgres, ws_db: &str, src: &crate::support::Source, prefix: &str) -> String {
    let mut yaml = secret_yaml("ws-db", &[("uri", &pg.owner_uri(ws_db))]);
    yaml.push_str("---\napiVersion: manifold.dev/v1alpha1\nkind: Workspace\nmetadata: { name: ws }\nspec: { database: { secretRef: { name: ws-db } } }\n---\n");
    yaml.push_str(&secret_yaml("creds", &[("user", &src.user), ("password", &src.password)]));
    for i in 0..=50 {
        let policy = if i == 50 { "Orphan" } else { "Delete" };
        yaml.push_str(&format!(
            "---\napiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: c{i} }}\nspec:\n\
             \x20 schema: {prefix}_c{i}\n\
             \x20 plugin: {{ postgres: {{ host: 127.0.0.1, port: {}, database: {} }} }}\n\
             \x20 credentials: {{ secretRef: {{ name: creds }} }}\n\
             \x20 tables: {{ include: [customers] }}\n\
             ---\napiVersion: manifold.dev/v1alpha1\nkind: WorkspaceConnection\nmetadata: {{ name: a{i} }}\n\
             spec: {{ workspace: ws, connection: c{i}, deletionPolicy: {policy} }}\n",
            pg.port, src.db
        ));
    }
    yaml
}

/// A Workspace whose database is gone for good gives up after the cleanup
/// timeout, says so in a Warning Event with the way to release it by hand,
/// and does not hold its deletion forever.
pub async fn a_workspace_whose_database_is_gone_gives_up() {
    let _serial = SERIAL.lock().await;
    let w = world_without_operator("giveup").await;
    let own = Postgres::start();
    let db = own.database("ws").await;
    let _op = operator_for(&w, &["--cleanup-timeout", "6s"]);
    w.workspace_on("ws", &own, &db);
    w.connection("src", as_is);
    w.attach("ws-src", "ws", "src", as_is);
    w.wait_ready("ws-src").await;
    // The Workspace holds its finalizer once its first reconcile ran.
    w.wait_workspace_ready("ws").await;
    own.devenv.command("stop");
    let started = Instant::now();
    stdout_ok(&w.t.kubectl(&["delete", "mws", "ws", "--wait=false"]));
    wait_for("the Workspace gone", WAIT, || async {
        let out = w.t.kubectl(&["get", "mws", "ws"]);
        if out.status.success() { Err("still there".into()) } else { Ok(()) }
    })
    .await;
    println!("released after {:?}", started.elapsed());
    // deletionTimestamp has whole seconds: the timeout may end up to one
    // second early by this clock.
    assert!(started.elapsed() >= Duration::from_secs(5), "not before the timeout");
    let events = stdout_ok(&w.t.kubectl(&["get", "events", "-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}"]));
    let gave_up = events.lines().find(|l| l.starts_with("CleanupAbandoned")).unwrap_or_else(|| panic!("{events}"));
    assert!(gave_up.contains("kubectl patch mws ws"), "{gave_up}");
}
