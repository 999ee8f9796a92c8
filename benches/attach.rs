//! Bulk attach, side by side with raw DDL, in one run: the same attach
//! transaction issued directly by 4 clients, then by the operator for the
//! same number of attachments; plus the latency of one new attachment among
//! idle ones, the cost of a resync at rest, and the operator's memory.
//!
//!   cargo bench --bench attach              (N=300 attachments of a 20-table source)
//!   MANIFOLD_BENCH_N=1000 cargo bench --bench attach

use manifold_test_support as support;

use std::time::{Duration, Instant};

use manifold::api::conditions;
use support::world::world_without_operator;
use support::{Operator, control_plane};
use support::world::{interval};

const TABLES: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // `cargo test --all-targets` builds and runs bench targets too; the
    // benchmark runs only under `cargo bench`, which passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("attach benchmark: skipped (run it with cargo bench --bench attach)");
        return;
    }
    let n: usize = std::env::var("MANIFOLD_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(n));
}

async fn bench(n: usize) {
    let w = world_without_operator("bench").await;
    // A source of 20 tables.
    let src = w.pg.connect(&w.src.db).await;
    let mut ddl = String::new();
    for t in 0..TABLES {
        ddl.push_str(&format!("CREATE TABLE t{t:02} (id int PRIMARY KEY, a text, b numeric, c timestamptz);"));
    }
    ddl.push_str(&format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {};", w.src.user));
    src.batch_execute(&ddl).await.unwrap();
    let include: Vec<String> = (0..TABLES).map(|t| format!("t{t:02}")).collect();

    // 1. Raw DDL: the attach transaction, from 4 clients.
    let raw_db = w.pg.database("bench-raw").await;
    let admin = w.pg.connect("postgres").await;
    let _ = admin.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await;
    admin.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();
    let clients = 4;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let uri = w.pg.admin_uri(&raw_db);
        let (user, password, port, db) = (w.src.user.clone(), w.src.password.clone(), w.pg.port, w.src.db.clone());
        let include = include.join(", ");
        tasks.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.batch_execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw").await.ok();
            for i in (c..n).step_by(clients) {
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         CREATE SERVER s{i} FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '{port}', dbname '{db}');
                         CREATE USER MAPPING FOR CURRENT_USER SERVER s{i} OPTIONS (user '{user}', password '{password}');
                         CREATE SCHEMA s{i};
                         IMPORT FOREIGN SCHEMA public LIMIT TO ({include}) FROM SERVER s{i} INTO s{i};
                         COMMENT ON SCHEMA s{i} IS 'raw';
                         COMMIT;"
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let raw = started.elapsed();
    let raw_rate = n as f64 / raw.as_secs_f64();

    // 2. The operator, for the same number of attachments in one workspace.
    // Everything is applied first, with no operator running, so that what
    // is timed is the operator and not kubectl: from its start to all Ready.
    w.workspace("ws");
    w.credentials("shared", &w.src.password);
    let yaml = w.bulk_yaml(n, w.pg.port, |_| "ws".to_owned(), |c| c.spec.tables = Some(manifold::api::TablesSpec { include: include.clone(), exclude: Vec::new() }));
    w.apply(&yaml);
    let started = Instant::now();
    let op = Operator::start(
        &control_plane().kubeconfig,
        &["--namespaces", &w.t.ns, "--pool-size", &std::env::var("MANIFOLD_BENCH_POOL").unwrap_or_else(|_| "4".into()), "--resync", "60s", "--concurrency", "64"],
    );
    let ready = || w.ready_count();
    loop {
        let r = ready().await;
        if r == n {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1800), "{r} of {n} after 30 minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let operator = started.elapsed();
    let operator_rate = n as f64 / operator.as_secs_f64();
    let cpu = cpu_seconds(op.pid());
    println!("bench: {n} attachments of a {TABLES}-table source, 2 cores");
    println!("raw DDL, {clients} clients:               {raw:>10.2?}  {raw_rate:>7.1} attaches/s");
    println!("operator, start to all Ready:    {operator:>10.2?}  {operator_rate:>7.1} attaches/s (with a test of each connection)");
    println!("ratio operator/raw:              {:.2}", operator_rate / raw_rate);
    println!("operator CPU for the bulk attach: {cpu:.2} s");
    // Where the database time went, per database (raw vs the operator's).
    let rows = admin
        .query(
            "SELECT d.datname::text, split_part(ltrim(s.query), ' ', 1) || ' ' || split_part(ltrim(s.query), ' ', 2) AS stmt,
                    sum(s.calls)::bigint, round(sum(s.total_exec_time)::numeric / 1000, 2)::text AS seconds,
                    round((sum(s.total_exec_time) / sum(s.calls))::numeric, 2)::text AS mean_ms
               FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
              WHERE d.datname IN ($1, $2) GROUP BY 1, 2 HAVING sum(s.total_exec_time) > 100 ORDER BY 1, 4 DESC",
            &[&raw_db, &w.ws_db],
        )
        .await
        .unwrap();
    for r in rows {
        let (db, stmt, calls, seconds, mean): (String, String, i64, String, String) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        println!("  db {}: {stmt:<28} calls {calls:>5}  total {seconds:>7} s  mean {mean:>7} ms", if db == raw_db { "raw" } else { "operator" });
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 3. One new attachment among the idle ones: created through the API,
    // its status polled every 5 ms.
    let mut latencies = Vec::new();
    for k in 0..20 {
        w.connection(&format!("late{k}"), interval("0"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let att: manifold::api::WorkspaceConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "manifold.dev/v1alpha1", "kind": "WorkspaceConnection",
            "metadata": { "name": format!("late{k}") },
            "spec": { "workspace": "ws", "connection": format!("late{k}") }
        }))
        .unwrap();
        let api = w.attachments();
        let started = Instant::now();
        api.create(&Default::default(), &att).await.unwrap();
        loop {
            let a = api.get(&format!("late{k}")).await.unwrap();
            if a.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();

    // 4. A resync at rest: the one catalog query, timed in the database.
    let ws = w.ws().await;
    let query = manifold::postgres::sql::OBSERVE_ALL;
    let mut resync = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        ws.query_one(query, &[]).await.unwrap();
        resync.push(started.elapsed());
    }
    resync.sort();
    // 5. Optionally, the same query at a larger scale: managed schemas of 2
    // tables made directly, up to MANIFOLD_BENCH_RESYNC_SCHEMAS.
    let scale: usize = std::env::var("MANIFOLD_BENCH_RESYNC_SCHEMAS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut at_scale = None;
    if scale > n + 20 {
        let password = postgres_protocol::escape::escape_literal(&w.src.password);
        for i in n + 20..scale {
            ws.batch_execute(&format!(
                "BEGIN;
                 CREATE SERVER x{i} FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '{}', dbname '{}');
                 COMMENT ON SERVER x{i} IS 'manifold.dev/owner=bench/x{i} uid=x';
                 CREATE USER MAPPING FOR CURRENT_USER SERVER x{i} OPTIONS (user '{}', password {password});
                 CREATE SCHEMA x{i};
                 IMPORT FOREIGN SCHEMA public LIMIT TO (t00, t01) FROM SERVER x{i} INTO x{i};
                 COMMENT ON SCHEMA x{i} IS 'manifold.dev/owner=bench/x{i} uid=x fingerprint=a.b.c tables=2';
                 COMMIT;
                 SELECT postgres_fdw_disconnect_all();",
                w.pg.port, w.src.db, w.src.user
            ))
            .await
            .unwrap();
        }
        let mut times = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            ws.query_one(query, &[]).await.unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        at_scale = Some(percentile(&times, 0.5));
    }
    let rss = std::fs::read_to_string(format!("/proc/{}/status", op.pid())).unwrap_or_default();
    let rss = rss.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: ?").to_owned();

    println!(
        "one new attachment among {n} idle: p50 {:?}, p99 {:?} (20 samples, create to Ready)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!(
        "resync at rest, one catalog query over {} schemas: p50 {:?}",
        n + 20,
        percentile(&resync, 0.5)
    );
    if let Some(p50) = at_scale {
        println!("resync at rest, one catalog query over {scale} schemas: p50 {p50:?}");
    }
    println!("operator {rss}");
    let (_, metrics) = op.admin_get("/metrics");
    for line in metrics.lines().filter(|l| {
        l.starts_with("manifold_reconciles_total")
            || l.starts_with("manifold_reconcile_duration_seconds_sum")
            || l.starts_with("manifold_sql_statements_total")
            || l.starts_with("manifold_reconcile_errors_total")
    }) {
        println!("  {line}");
    }
}

/// User plus system CPU seconds of a process so far.
fn cpu_seconds(pid: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0) + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}
