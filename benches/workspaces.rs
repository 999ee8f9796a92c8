//! Many workspaces on one server, side by side with raw DDL in one run: W
//! workspace databases on one Postgres server (each its own database and
//! owner role, as CloudNativePG's `Database` makes them), C connections
//! attached to every one of them.
//!
//! 1. Raw DDL: the attach transaction for every attachment, issued directly
//!    by 32 clients (the operator's default per-server budget), each taking
//!    the next database from a queue, connecting, attaching its C, and
//!    closing: the speed of Postgres under the same number of sessions.
//! 2. The operator, from its start to all Ready: the sessions it holds to
//!    the server at the peak (Postgres's own `pg_stat_activity`, sampled
//!    every 200 ms), its peak RSS.
//! 3. At rest: the sessions it holds over 10 s, once idle sessions closed.
//! 4. A restart: a new operator process, until it has seen everything
//!    Ready and one resync interval passed: the DDL it sends (0 expected)
//!    and its apiserver writes.
//!
//!   cargo bench --bench workspaces                  1,000 workspaces × 5 = 5,000 attachments
//!   MANIFOLD_BENCH_W=300 cargo bench --bench workspaces
//!
//! Under `cargo test` (no --bench) every step runs in a quick mode.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use manifold::api::conditions;
use manifold_test_support as support;
use support::cpu::{parts_cpu, postmaster, statement_profile, status_kib};
use support::objects;
use support::world::{World, world_without_operator};
use support::{Operator, control_plane, stdout_ok};

const CLIENTS: usize = 32;
const TABLES: usize = 5;

fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let (w, c) = if quick() { (20, 2) } else { (env("MANIFOLD_BENCH_W", 1000), env("MANIFOLD_BENCH_C", 5)) };
    if quick() {
        println!("workspaces benchmark, quick mode (cargo bench --bench workspaces for the figures)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(w, c));
}

/// Writes the apiserver has served so far (every request that is not a read).
fn apiserver_writes() -> f64 {
    let text = stdout_ok(&control_plane().kubectl(&["get", "--raw", "/metrics"]));
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| !["\"GET\"", "\"LIST\"", "\"WATCH\"", "\"CONNECT\""].iter().any(|v| l.contains(&format!("verb={v}"))))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn sessions(admin: &tokio_postgres::Client) -> i64 {
    admin.query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'manifold'", &[]).await.map(|r| r.get(0)).unwrap_or(0)
}

/// DDL statements run in the workspace databases since the last reset.
async fn ddl(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
              WHERE d.datname LIKE 'bench_mws%' AND s.query ~* '^\\s*(CREATE|DROP|ALTER|IMPORT|COMMENT|GRANT|REVOKE|DO)'",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1)
}

/// Waits, through one watch, until `n` attachments are Ready; samples `each`
/// every 200 ms meanwhile.
async fn all_ready<F: Future<Output = ()>>(w: &World, n: usize, limit: Duration, mut each: impl FnMut() -> F) {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let mut ready = std::collections::HashSet::new();
    let stream = watcher(w.attachments(), watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    while ready.len() < n {
        tokio::select! {
            _ = tick.tick() => each().await,
            event = tokio::time::timeout_at(deadline, stream.next()) => {
                match event.unwrap_or_else(|_| panic!("{} of {n} Ready after {limit:?}", ready.len())) {
                    Some(Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a))) => {
                        let name = kube::ResourceExt::name_any(&a);
                        if a.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions)) {
                            ready.insert(name);
                        } else {
                            ready.remove(&name);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => eprintln!("watch: {e}"),
                    None => panic!("the watch ended"),
                }
            }
        }
    }
}

/// The attach transaction of `c` attachments into every database, by
/// `CLIENTS` clients taking the databases in turn.
async fn raw_ddl(w: &World, dbs: &[String], c: usize) -> Duration {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(dbs.to_vec()));
    let include: Vec<String> = (0..TABLES).map(|t| format!("t{t}")).collect();
    let include = include.join(", ");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let queue = queue.clone();
        let (pg, src) = (w.pg, (w.src.user.clone(), w.src.password.clone(), w.src.db.clone()));
        let include = include.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(db) = queue.lock().unwrap().pop() else { return };
                let (client, conn) = tokio_postgres::connect(&pg.owner_uri(&db), tokio_postgres::NoTls).await.unwrap();
                let task = tokio::spawn(conn);
                for i in 0..c {
                    client
                        .batch_execute(&format!(
                            "BEGIN;
                             SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('manifold.dev/r{i}'));
                             CREATE SERVER r{i} FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '{}', dbname '{}');
                             COMMENT ON SERVER r{i} IS 'raw';
                             CREATE USER MAPPING FOR CURRENT_USER SERVER r{i} OPTIONS (user '{}', password '{}');
                             CREATE SCHEMA r{i};
                             IMPORT FOREIGN SCHEMA public LIMIT TO ({include}) FROM SERVER r{i} INTO r{i};
                             SELECT * FROM r{i}.t0 LIMIT 1;
                             COMMENT ON SCHEMA r{i} IS 'raw';
                             COMMIT;
                             SELECT public.postgres_fdw_disconnect_all();",
                            pg.port, src.2, src.0, src.1
                        ))
                        .await
                        .unwrap();
                }
                drop(client);
                let _ = task.await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

async fn bench(ws_count: usize, c: usize) {
    let n = ws_count * c;
    let w = world_without_operator("bench-mws").await;
    let source = w.pg.connect(&w.src.db).await;
    let mut tables = String::new();
    for t in 0..TABLES {
        tables.push_str(&format!("CREATE TABLE t{t} (id int PRIMARY KEY, a text, b numeric); INSERT INTO t{t} VALUES (1, 'x', 1);"));
    }
    tables.push_str(&format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {};", w.src.user));
    source.batch_execute(&tables).await.unwrap();
    let admin = w.pg.connect("postgres").await;
    let _ = admin.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await;
    let _ = admin.batch_execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on").await;
    let _ = admin.batch_execute("SELECT pg_reload_conf()").await;
    let max_connections: String = admin.query_one("SHOW max_connections", &[]).await.unwrap().get(0);

    // The workspace databases, each with an owner of its own.
    let made = Instant::now();
    let mut dbs = Vec::new();
    for i in 0..ws_count {
        let name = format!("bench_mws{i}");
        w.pg.database_named(&name).await;
        dbs.push(name);
    }
    println!("{ws_count} workspace databases made in {:?}", made.elapsed());

    // 1. Raw DDL, then what it made goes.
    let sessions_total = || async {
        admin
            .query_one("SELECT coalesce(sum(sessions), 0)::bigint FROM pg_stat_database WHERE datname LIKE 'bench_mws%'", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    let raw_sessions = sessions_total().await;
    let raw_pg = support::cpu::tree_cpu_seconds(postmaster(w.pg));
    let raw = raw_ddl(&w, &dbs, c).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let raw_sessions = sessions_total().await - raw_sessions;
    let raw_pg = support::cpu::tree_cpu_seconds(postmaster(w.pg)) - raw_pg;
    for db in &dbs {
        let client = w.pg.connect(db).await;
        let mut drop = String::new();
        for i in 0..c {
            drop.push_str(&format!("DROP SCHEMA r{i} CASCADE; DROP SERVER r{i} CASCADE;"));
        }
        client.batch_execute(&drop).await.unwrap();
    }

    // 2. The operator, for the same attachments, applied before it starts.
    let include: Vec<String> = (0..TABLES).map(|t| format!("t{t}")).collect();
    w.credentials("shared", &w.src.password);
    let mut yaml = String::new();
    for k in 0..c {
        let mut conn = objects::postgres_connection(&format!("c{k}"), "127.0.0.1", w.pg.port, &w.src.db, "shared-creds");
        conn.spec.tables = Some(manifold::api::TablesSpec { include: include.clone(), exclude: Vec::new() });
        conn.spec.test = Some(manifold::api::TestSpec { interval: Some("0".into()), workspace: None });
        yaml.push_str(&format!("---\n{}", objects::yaml(&conn)));
    }
    for (i, db) in dbs.iter().enumerate() {
        yaml.push_str(&format!("---\n{}", objects::yaml(&objects::secret(&format!("ws{i}-db"), &[("uri", &w.pg.owner_uri(db))]))));
        yaml.push_str(&format!("---\n{}", objects::yaml(&objects::workspace(&format!("ws{i}"), &format!("ws{i}-db")))));
        for k in 0..c {
            yaml.push_str(&format!(
                "---\n{}",
                objects::yaml(&objects::attachment(&format!("ws{i}-c{k}"), &format!("ws{i}"), &format!("c{k}")))
            ));
        }
    }
    stdout_ok(&control_plane().kubectl_stdin(&["-n", &w.t.ns, "apply", "--server-side", "-f", "-"], &yaml));
    let resync = if quick() { "10s" } else { "60s" };
    let args = ["--namespaces", w.t.ns.as_str(), "--resync", resync, "--session-idle", "5s"];
    let postmaster = postmaster(w.pg);
    let _ = admin.batch_execute("SELECT pg_stat_statements_reset()").await;
    let backends_before = sessions_total().await;
    let started = Instant::now();
    let op = Operator::start(&control_plane().kubeconfig, &args);
    let cpu_before = parts_cpu(op.pid(), postmaster);
    let peak = Cell::new(0i64);
    // Every session seen to a workspace database, by application: those
    // shorter than the 200 ms between samples can be missed.
    let seen: std::cell::RefCell<std::collections::BTreeSet<(String, i32, String)>> = Default::default();
    all_ready(&w, n, Duration::from_secs(3600), || async {
        peak.set(peak.get().max(sessions(&admin).await));
        let rows = admin
            .query(
                "SELECT coalesce(application_name, ''), pid, backend_start::text FROM pg_stat_activity WHERE datname LIKE 'bench_mws%'",
                &[],
            )
            .await
            .unwrap_or_default();
        seen.borrow_mut().extend(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
    })
    .await;
    let mut seen_by_app: BTreeMap<String, usize> = BTreeMap::new();
    for (app, _, _) in seen.borrow().iter() {
        *seen_by_app.entry(app.clone()).or_default() += 1;
    }
    let operator = started.elapsed();
    let cpu: Vec<String> =
        cpu_before.iter().zip(parts_cpu(op.pid(), postmaster)).map(|((name, b), (_, a))| format!("{name} {:.1} s", a - b)).collect();
    let bulk_rss = status_kib(op.pid(), "VmHWM:");
    let bulk_backends = sessions_total().await - backends_before;
    let bulk_statements = statement_profile(&admin).await;
    let opened_by_pool: Vec<String> = op
        .admin_get("/metrics")
        .1
        .lines()
        .filter_map(|l| l.strip_prefix("manifold_sessions_opened_total{pool=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(pool, n)| format!("{pool} {n}"))
        .collect();

    // 3. At rest, once idle sessions closed.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut at_rest = Vec::new();
    for _ in 0..50 {
        at_rest.push(sessions(&admin).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rest_max = at_rest.iter().copied().max().unwrap_or(0);
    let rest_mean = at_rest.iter().sum::<i64>() as f64 / at_rest.len() as f64;
    let rest_rss = status_kib(op.pid(), "VmRSS:");

    // 4. A restart: what the new process sends and writes.
    op.terminate();
    while !op.exited() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = admin.batch_execute("SELECT pg_stat_statements_reset()").await;
    let writes_before = apiserver_writes();
    let restarted = Instant::now();
    let op = Operator::start(&control_plane().kubeconfig, &args);
    let settle = if quick() { Duration::from_secs(12) } else { Duration::from_secs(65) };
    tokio::time::sleep(settle).await;
    let restart_writes = apiserver_writes() - writes_before;
    let restart_ddl = ddl(&admin).await;
    let restart_rss = status_kib(op.pid(), "VmHWM:");
    let (_, metrics) = op.admin_get("/metrics");
    let counters: BTreeMap<&str, &str> = metrics
        .lines()
        .filter(|l| l.starts_with("manifold_sql_statements_total") || l.starts_with("manifold_session"))
        .filter_map(|l| l.rsplit_once(' '))
        .collect();

    println!(
        "bench: {ws_count} workspace databases on one Postgres server (max_connections {max_connections}), {c} connections each = {n} attachments, 2 cores"
    );
    println!(
        "raw DDL, {CLIENTS} clients taking the databases in turn: {raw:>9.2?}  {:>7.1} attaches/s; Postgres CPU {raw_pg:.1} s",
        n as f64 / raw.as_secs_f64()
    );
    println!(
        "operator, start to all Ready:                {operator:>9.2?}  {:>7.1} attaches/s, {:.2} of raw",
        n as f64 / operator.as_secs_f64(),
        raw.as_secs_f64() / operator.as_secs_f64()
    );
    println!("CPU while the operator attached ({:.0} s available on 2 cores): {}", operator.as_secs_f64() * 2.0, cpu.join(", "));
    println!(
        "sessions the operator opened to the workspace databases during the bulk: {bulk_backends} (raw DDL: {raw_sessions}); by pool: {}",
        opened_by_pool.join(", ")
    );
    println!("sessions seen in pg_stat_activity during the bulk, by application_name: {seen_by_app:?}");
    let (plan, exec): (f64, f64) = bulk_statements.iter().fold((0.0, 0.0), |(p, e), s| (p + s.1, e + s.2));
    println!("statements during the bulk, every database: {:.1} s planning, {:.1} s executing; the largest:", plan / 1000.0, exec / 1000.0);
    for (query, plan, exec, calls) in bulk_statements.iter().take(10) {
        println!("  plan {:>6.1} s exec {:>6.1} s {calls:>7} calls  {query}", plan / 1000.0, exec / 1000.0);
    }
    println!("operator sessions to the server at the peak: {} (budget 32, per-workspace pools of 4+2+1)", peak.get());
    println!("operator sessions at rest over 10 s: max {rest_max}, mean {rest_mean:.1}");
    println!("operator RSS: peak {} MiB during the bulk, {} MiB at rest", bulk_rss / 1024, rest_rss / 1024);
    println!(
        "restart, the first {:?}: {restart_ddl} DDL statements in the workspace databases, {restart_writes:.0} apiserver writes, \
         peak RSS {} MiB; the new process's counters {counters:?}",
        restarted.elapsed(),
        restart_rss / 1024
    );
    assert_eq!(restart_ddl, 0, "a restart sends no DDL");
}
