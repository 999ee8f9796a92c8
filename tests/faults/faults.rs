use std::time::{Duration, Instant};

use manifold::api::TestOutcome;

use crate::support::objects;
use crate::support::world::{WAIT, World, count, foreign_tables, schema_exists, server_exists, world_without_operator};
use crate::support::world::{as_is, include, interval};
use crate::support::{Operator, Postgres, Proxy, control_plane, wait_for};

/// One fault at a time: some of them disturb everything around them. A
/// tokio mutex: its guard is held across the whole test, awaits and all.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An operator of its own for `w`'s namespace.
pub fn operator_for(w: &World, extra: &[&str]) -> Operator {
    let mut args = vec!["--namespaces", w.t.ns.as_str(), "--resync", "3s", "--lock-timeout", "2s", "--statement-timeout", "20s"];
    args.extend_from_slice(extra);
    Operator::start(&control_plane().kubeconfig, &args)
}

/// A postgres Connection to `w`'s source through 127.0.0.1:`port`.
pub fn connection_via(w: &World, name: &str, port: u16, change: impl FnOnce(&mut manifold::api::Connection)) {
    w.credentials(name, &w.src.password);
    let mut conn = objects::postgres_connection(name, "127.0.0.1", port, &w.src.db, &format!("{name}-creds"));
    change(&mut conn);
    w.apply_object(&conn);
}

pub async fn postgres_killed_mid_attach_leaves_nothing_half_made() {
    let _serial = SERIAL.lock().await;
    let w = world_without_operator("kill-pg").await;
    let own = Postgres::start();
    let db = own.database("ws").await;
    let proxy = Proxy::start(w.pg.port).await;
    let _op = operator_for(&w, &[]);
    w.workspace_on("ws", &own, &db);
    w.wait_workspace_ready("ws").await;

    // The import will hang on its remote connection, inside the transaction
    // that already created the server, the mapping and the schema.
    proxy.pause(true);
    connection_via(&w, "src", proxy.port, interval("0"));
    w.attach("ws-src", "ws", "src", as_is);
    let ws = own.connect(&db).await;
    wait_for("an attach in flight", WAIT, || async {
        let n = count(
            &ws,
            // The batch that creates the server and imports begins with the
            // DO block that reads the options; the IMPORT further on may lie
            // past track_activity_query_size.
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'manifold' AND state = 'active' \
             AND (query LIKE '%IMPORT FOREIGN SCHEMA%' OR query LIKE 'DO $manifold$%')",
        )
        .await;
        if n > 0 { Ok(()) } else { Err("no attach running".into()) }
    })
    .await;
    // While it runs, the statement text that monitoring roles read holds no
    // password: the mapping's options travel as a bind parameter.
    let shown = ws
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND strpos(query, $1) > 0", &[&w.src.password])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(shown, 0, "a statement in flight shows the source's password");
    drop(ws);
    own.devenv.command("kill");
    own.devenv.command("start");

    let ws = own.connect(&db).await;
    assert!(!schema_exists(&ws, "src").await, "no half-made schema");
    assert!(!server_exists(&ws, "src").await, "no half-made server");
    assert_eq!(count(&ws, "SELECT count(*) FROM pg_user_mappings").await, 0, "no half-made mapping");

    proxy.pause(false);
    w.wait_ready("ws-src").await;
    assert_eq!(foreign_tables(&own.connect(&db).await, "src").await, ["customers", "orders"]);
}

pub async fn operator_killed_mid_batch_converges_without_duplicates() {
    let _serial = SERIAL.lock().await;
    let w = world_without_operator("kill-op").await;
    let proxy = Proxy::start(w.pg.port).await;
    // Slow imports and one connection per workspace: a batch that takes a
    // few seconds, so that the kill lands in its middle.
    proxy.delay(Duration::from_millis(150));
    let op = operator_for(&w, &["--pool-size", "1"]);
    w.workspace("ws");
    let n = 30;
    let yaml = w.bulk_yaml(n, proxy.port, |_| "ws".to_owned(), interval("0"));
    w.credentials("shared", &w.src.password);
    w.apply(&yaml);
    let ready = || w.ready_count();
    wait_for("a few attached", WAIT, || async {
        let r = ready().await;
        if r >= 3 { Ok(()) } else { Err(r.to_string()) }
    })
    .await;
    op.kill();
    let at_kill = ready().await;
    println!("killed with {at_kill} of {n} attached");
    assert!(at_kill < n, "the kill landed after the batch; nothing was proven");
    op.devenv.command("start");
    wait_for("all attached after the restart", Duration::from_secs(120), || async {
        let r = ready().await;
        if r == n { Ok(()) } else { Err(format!("{r} of {n}")) }
    })
    .await;

    let ws = w.ws().await;
    let schemas =
        count(&ws, "SELECT count(*) FROM pg_namespace WHERE obj_description(oid, 'pg_namespace') LIKE 'manifold.dev/owner=%'").await;
    let servers = count(&ws, "SELECT count(*) FROM pg_foreign_server").await;
    let mappings = count(&ws, "SELECT count(*) FROM pg_user_mappings").await;
    let tables = count(&ws, "SELECT count(*) FROM pg_foreign_table").await;
    assert_eq!((schemas, servers, mappings, tables), (n as i64, n as i64, n as i64, 2 * n as i64));
    let orphans =
        count(&ws, "SELECT count(*) FROM pg_foreign_server s WHERE NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = s.srvname)")
            .await;
    assert_eq!(orphans, 0, "no server without its schema");
}

pub async fn watches_resume_after_an_apiserver_restart() {
    let _serial = SERIAL.lock().await;
    let w = world_without_operator("restart-api").await;
    let op = operator_for(&w, &[]);
    w.workspace("ws");
    w.connection("before", as_is);
    w.attach("ws-before", "ws", "before", as_is);
    w.wait_ready("ws-before").await;

    let started = Instant::now();
    control_plane().devenv.command("restart-apiserver");
    println!("apiserver restarted in {:?}", started.elapsed());
    // A change made after the restart is reconciled by the same process.
    w.connection("after", as_is);
    w.attach("ws-after", "ws", "after", as_is);
    w.wait_ready("ws-after").await;
    assert_eq!(count(&w.ws().await, "SELECT count(*) FROM after.orders").await, 3);
    assert_eq!(op.try_admin_get("/healthz").map(|r| r.0), Some(200), "the operator is still the same process");
}

pub async fn a_source_that_goes_away_and_comes_back() {
    let _serial = SERIAL.lock().await;
    let w = world_without_operator("source-away").await;
    let _op = operator_for(&w, &[]);
    let remote = Postgres::start();
    let src = remote.source("away").await;
    w.workspace("ws");
    // One connection to the source that goes away, one to another.
    w.apply(&crate::support::secret_yaml("away-creds", &[("user", &src.user), ("password", &src.password)]));
    w.apply(&format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: away }}\nspec:\n\
         \x20 plugin:\n    postgres: {{ host: 127.0.0.1, port: {}, database: {} }}\n\
         \x20 credentials: {{ secretRef: {{ name: away-creds }} }}\n  test: {{ interval: 2s }}\n",
        remote.port, src.db
    ));
    w.connection("stays", as_is);
    w.attach("ws-away", "ws", "away", as_is);
    w.attach("ws-stays", "ws", "stays", as_is);
    w.wait_ready("ws-away").await;
    w.wait_ready("ws-stays").await;
    w.wait_test("away", "Passed", |t| t.result == TestOutcome::Passed).await;

    remote.devenv.command("stop");
    w.wait_test("away", "Failed while the source is down", |t| t.result == TestOutcome::Failed && t.reason == "HostUnreachable").await;
    let ws = w.ws().await;
    assert_eq!(count(&ws, "SELECT count(*) FROM stays.orders").await, 3, "other schemas still answer");

    remote.devenv.command("start");
    w.wait_test("away", "Passed once it is back", |t| t.result == TestOutcome::Passed).await;
    assert_eq!(count(&w.ws().await, "SELECT count(*) FROM away.orders").await, 3);
}

pub async fn a_slow_workspace_times_out_and_blocks_no_other() {
    let _serial = SERIAL.lock().await;
    let w = world_without_operator("slow-ws").await;
    let op = operator_for(&w, &[]);
    w.workspace("slow");
    w.connection("src", as_is);
    w.attach("slow-src", "slow", "src", as_is);
    w.wait_ready("slow-src").await;

    // Someone holds a lock on a table of the schema; the re-import that a
    // new `tables` asks for must wait for it.
    let holder = w.ws().await;
    // (A foreign table cannot be LOCKed; reading it in an open transaction
    // holds the lock that DROP must wait for.)
    holder.batch_execute("BEGIN; SELECT count(*) FROM src.orders").await.unwrap();
    w.connection_only("src", include(&["customers"]));
    let started = Instant::now();
    w.wait_reason("slow-src", "Timeout").await;
    println!("Timeout reported after {:?}", started.elapsed());

    // Another workspace is not held up meanwhile.
    let fast_db = w.pg.database("slow-ws-fast").await;
    w.workspace_on("fast", w.pg, &fast_db);
    w.attach("fast-src", "fast", "src", as_is);
    let fast_started = Instant::now();
    w.wait_ready("fast-src").await;
    let fast = fast_started.elapsed();
    println!("the other workspace attached in {fast:?} while the slow one waited");
    assert!(fast < Duration::from_secs(15));

    // Retries back off: a few attempts, not a loop.
    let sample = "manifold_reconcile_errors_total{kind=\"WorkspaceConnection\",reason=\"Timeout\"}";
    let before = op.metric(sample);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let attempts = op.metric(sample) - before;
    println!("{attempts} retries in 10 s");
    assert!((1.0..=5.0).contains(&attempts), "the slow attachment is retried with backoff: {attempts} attempts in 10 s");

    holder.batch_execute("ROLLBACK").await.unwrap();
    w.wait_attachment("slow-src", "re-imported", |a| {
        a.status.as_ref().is_some_and(|s| s.tables == Some(1) && manifold::api::conditions::is_ready(&s.conditions))
    })
    .await;
}
