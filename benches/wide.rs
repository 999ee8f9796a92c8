//! Wide sources, as Steampipe's are (the AWS plugin has about 450 tables):
//! C connections of one source of T tables, all attached to one workspace
//! (C × T foreign tables), then an aggregator over all of them. Side by
//! side with raw DDL in one run:
//!
//! 1. Raw DDL: the C attach transactions, 4 clients (the operator's pool).
//! 2. The operator, from its start: the time to the first query (the first
//!    attachment Ready, and a query through it), and to all Ready.
//! 3. The resync at that catalog size: the operator's one catalog query,
//!    timed directly, 20 times.
//! 4. An aggregator over the C members: from its apply until a query of
//!    one of its views covers every member.
//!
//!   cargo bench --bench wide                 100 connections × 450 tables = 45,000 foreign tables
//!   MANIFOLD_BENCH_C=20 MANIFOLD_BENCH_T=450 cargo bench --bench wide
//!
//! Under `cargo test` (no --bench) every step runs in a quick mode.

use std::time::{Duration, Instant};

use manifold::api::conditions;
use manifold_test_support as support;
use support::objects;
use support::world::{World, world_without_operator};
use support::{Operator, control_plane, stdout_ok, wait_for};

const POOL: usize = 4;

fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let (c, t) = if quick() { (5, 30) } else { (env("MANIFOLD_BENCH_C", 100), env("MANIFOLD_BENCH_T", 450)) };
    if quick() {
        println!("wide benchmark, quick mode (cargo bench --bench wide for the figures)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(c, t));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The C attach transactions into `db`, by `POOL` clients.
async fn raw_ddl(w: &World, db: &str, c: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..POOL {
        let uri = w.pg.owner_uri(db);
        let (user, password, port, src) = (w.src.user.clone(), w.src.password.clone(), w.pg.port, w.src.db.clone());
        tasks.push(tokio::spawn(async move {
            let (db, conn) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            for i in (client..c).step_by(POOL) {
                db.batch_execute(&format!(
                    "BEGIN;
                     CREATE SERVER r{i} FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '{port}', dbname '{src}');
                     CREATE USER MAPPING FOR CURRENT_USER SERVER r{i} OPTIONS (user '{user}', password '{password}');
                     CREATE SCHEMA r{i};
                     IMPORT FOREIGN SCHEMA public FROM SERVER r{i} INTO r{i};
                     COMMENT ON SCHEMA r{i} IS 'raw';
                     COMMIT;
                     SELECT public.postgres_fdw_disconnect_all();"
                ))
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

async fn bench(c: usize, t: usize) {
    let w = world_without_operator("wide").await;
    let source = w.pg.connect(&w.src.db).await;
    // A wide source: T tables, as a Steampipe plugin's, a few columns each.
    source.batch_execute("DROP TABLE orders, customers; DROP SCHEMA archive CASCADE").await.unwrap();
    let mut ddl = String::new();
    for i in 0..t {
        ddl.push_str(&format!(
            "CREATE TABLE t{i:03} (id int PRIMARY KEY, name text, arn text, region text, tags jsonb, created timestamptz);
             INSERT INTO t{i:03} VALUES (1, 'x', 'arn:x', 'eu-west-1', '{{}}', now());"
        ));
    }
    ddl.push_str(&format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {};", w.src.user));
    source.batch_execute(&ddl).await.unwrap();

    // 1. Raw DDL into a database of its own.
    let raw_db = w.pg.database("wide-raw").await;
    let raw = raw_ddl(&w, &raw_db, c).await;
    w.pg.connect("postgres").await.batch_execute(&format!("DROP DATABASE {raw_db} WITH (FORCE)")).await.unwrap();

    // 2. The operator: the connections and their attachments first, then it starts.
    w.workspace("ws");
    w.credentials("shared", &w.src.password);
    let mut yaml = String::new();
    for k in 0..c {
        let mut conn = objects::postgres_connection(&format!("c{k:03}"), "127.0.0.1", w.pg.port, &w.src.db, "shared-creds");
        conn.spec.test = Some(manifold::api::TestSpec { interval: Some("0".into()), workspace: None });
        yaml.push_str(&format!("---\n{}", objects::yaml(&conn)));
        yaml.push_str(&format!("---\n{}", objects::yaml(&objects::attachment(&format!("ws-c{k:03}"), "ws", &format!("c{k:03}")))));
    }
    stdout_ok(&control_plane().kubectl_stdin(&["-n", &w.t.ns, "apply", "--server-side", "-f", "-"], &yaml));
    let started = Instant::now();
    let op = Operator::start(&control_plane().kubeconfig, &["--namespaces", &w.t.ns, "--resync", "10m"]);
    let list = || async {
        let items = w.attachments().list(&Default::default()).await.map_err(|e| e.to_string())?.items;
        Ok::<Vec<String>, String>(
            items
                .into_iter()
                .filter(|a| a.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions)))
                .filter_map(|a| a.status.and_then(|s| s.schema))
                .collect(),
        )
    };
    let first = wait_for("a first attachment Ready", Duration::from_secs(3600), || async {
        let ready = list().await?;
        ready.first().cloned().ok_or_else(|| "none yet".to_owned())
    })
    .await;
    let ws = w.ws().await;
    ws.query_one(&format!("SELECT count(*) FROM {first}.t000"), &[]).await.unwrap();
    let first_query = started.elapsed();
    wait_for("every attachment Ready", Duration::from_secs(3600), || async {
        let n = list().await?.len();
        if n == c { Ok(()) } else { Err(format!("{n} of {c}")) }
    })
    .await;
    let all = started.elapsed();
    let rss = std::fs::read_to_string(format!("/proc/{}/status", op.pid())).unwrap_or_default();
    let rss = rss.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().to_owned()).unwrap_or_default();

    // 3. The resync query at this catalog size.
    let foreign: i64 = ws.query_one("SELECT count(*) FROM pg_foreign_table", &[]).await.unwrap().get(0);
    let no_readers: Vec<String> = Vec::new();
    let mut resync = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        ws.query_one(manifold::postgres::sql::OBSERVE_ALL, &[&no_readers]).await.unwrap();
        resync.push(started.elapsed());
    }
    resync.sort();

    // 4. An aggregator over every member.
    let started = Instant::now();
    w.apply_object(&objects::aggregator("every", &["c*"]));
    w.attach("ws-every", "ws", "every", |_| {});
    wait_for("the aggregator over every member", Duration::from_secs(3600), || async {
        let n: i64 =
            ws.query_one("SELECT count(DISTINCT _manifold_connection) FROM every.t000", &[]).await.map_err(|e| e.to_string())?.get(0);
        if n == c as i64 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let aggregator = started.elapsed();
    let views: i64 = ws.query_one("SELECT count(*) FROM pg_views WHERE schemaname = 'every'", &[]).await.unwrap().get(0);

    println!("bench: {c} connections of a {t}-table source in one workspace, {foreign} foreign tables, 2 cores");
    println!("raw DDL, {POOL} clients:                {raw:>9.2?}  {:>6.2} attaches/s", c as f64 / raw.as_secs_f64());
    println!("operator, start to the first query:  {first_query:>9.2?}");
    println!(
        "operator, start to all Ready:        {all:>9.2?}  {:>6.2} attaches/s, {:.2} of raw; peak RSS {rss}",
        c as f64 / all.as_secs_f64(),
        raw.as_secs_f64() / all.as_secs_f64()
    );
    println!(
        "the resync's catalog query at {foreign} foreign tables: p50 {:?}, p99 {:?} (20 runs)",
        percentile(&resync, 0.5),
        percentile(&resync, 0.99)
    );
    println!("an aggregator over {c} members: {views} views, every member queryable after {aggregator:?}");
}
