//! An aggregator over 100 members, and what a change to one member costs
//! with it and without it, side by side in one run: 100 connections `c*`
//! under an aggregator and 100 connections `p*` under none, all of one
//! 5-table source, in two workspaces of one database server. A member's
//! change (a re-import, `tables` narrowed or widened) rebuilds the
//! aggregator's views in the member's own transaction.
//!
//!   cargo bench --bench aggregate

use std::time::{Duration, Instant};

use manifold_test_support as support;
use support::objects;
use support::world::{World, include, world_without_operator};
use support::{Operator, control_plane, wait_for};

fn member_count() -> usize {
    if quick() { 10 } else { 100 }
}
const TABLES: usize = 5;
fn samples() -> usize {
    if quick() { 2 } else { 10 }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Run by `cargo test` rather than `cargo bench`.
fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn main() {
    // Under `cargo test` (no --bench): every step in a quick mode, so that
    // the suite fails when one breaks; the figures mean nothing there.
    if quick() {
        println!("aggregate benchmark, quick mode (cargo bench --bench aggregate for the figures)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench());
}

fn members(w: &World, prefix: &str, workspace: &str, tables: &[String]) -> String {
    let mut yaml = String::new();
    for i in 0..member_count() {
        let mut conn = objects::postgres_connection(&format!("{prefix}{i}"), "127.0.0.1", w.pg.port, &w.src.db, "shared-creds");
        conn.spec.tables = Some(manifold::api::TablesSpec { include: tables.to_vec(), exclude: Vec::new() });
        conn.spec.test = Some(manifold::api::TestSpec { interval: Some("0".into()), workspace: None });
        yaml.push_str("---\n");
        yaml.push_str(&objects::yaml(&conn));
        yaml.push_str("---\n");
        yaml.push_str(&objects::yaml(&objects::attachment(&format!("{workspace}-{prefix}{i}"), workspace, &format!("{prefix}{i}"))));
    }
    yaml
}

/// Times `samples` changes of one member's tables, from apply to its
/// attachment Ready with that many tables.
async fn member_changes(w: &World, name: &str, attachment: &str, all: &[String]) -> Vec<Duration> {
    let mut took = Vec::new();
    for k in 0..samples() {
        let narrow = k % 2 == 0;
        let tables: Vec<&str> = if narrow { vec!["t00"] } else { all.iter().map(String::as_str).collect() };
        let started = Instant::now();
        let mut conn = objects::postgres_connection(name, "127.0.0.1", w.pg.port, &w.src.db, "shared-creds");
        include(&tables)(&mut conn);
        conn.spec.test = Some(manifold::api::TestSpec { interval: Some("0".into()), workspace: None });
        w.apply_object(&conn);
        let want = tables.len() as i32;
        w.wait_attachment(attachment, "re-imported", |a| a.status.as_ref().is_some_and(|s| s.tables == Some(want))).await;
        took.push(started.elapsed());
    }
    took.sort();
    took
}

async fn bench() {
    let w = world_without_operator("aggbench").await;
    let src = w.pg.connect(&w.src.db).await;
    let mut ddl = String::new();
    for t in 0..TABLES {
        ddl.push_str(&format!("CREATE TABLE t{t:02} (id int PRIMARY KEY, a text, b numeric);INSERT INTO t{t:02} VALUES (1, 'x', 1);"));
    }
    ddl.push_str(&format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {};", w.src.user));
    src.batch_execute(&ddl).await.unwrap();
    let all: Vec<String> = (0..TABLES).map(|t| format!("t{t:02}")).collect();
    let plain_db = w.pg.database("aggbench-plain").await;
    let _op = Operator::start(&control_plane().kubeconfig, &["--namespaces", &w.t.ns, "--resync", "5m"]);
    w.workspace("agg");
    w.workspace_on("plain", w.pg, &plain_db);
    w.credentials("shared", &w.src.password);
    w.apply(&members(&w, "c", "agg", &all));
    w.apply(&members(&w, "p", "plain", &all));
    wait_for("200 members Ready", Duration::from_secs(300), || async {
        let n = w.ready_count().await;
        if n == 2 * member_count() { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;

    let started = Instant::now();
    w.apply_object(&objects::aggregator("every", &["c*"]));
    w.attach("agg-every", "agg", "every", |_| {});
    let ws = w.ws().await;
    wait_for("the aggregate over 100 members", Duration::from_secs(120), || async {
        let n: i64 =
            ws.query_one("SELECT count(DISTINCT _manifold_connection) FROM every.t00", &[]).await.map_err(|e| e.to_string())?.get(0);
        if n == member_count() as i64 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let built = started.elapsed();
    let with_aggregate = member_changes(&w, "c0", "agg-c0", &all).await;
    let without = member_changes(&w, "p0", "plain-p0", &all).await;
    // The views still cover every member, with the member's last change.
    let n: i64 = ws.query_one("SELECT count(DISTINCT _manifold_connection) FROM every.t04", &[]).await.unwrap().get(0);
    assert_eq!(n, member_count() as i64, "every member is in the views after the changes");

    let (p50a, p99a) = (percentile(&with_aggregate, 0.5), percentile(&with_aggregate, 0.99));
    let (p50p, p99p) = (percentile(&without, 0.5), percentile(&without, 0.99));
    println!("aggregator over {} members of {TABLES} tables:", member_count());
    println!("  aggregator attached to its views over all members: {built:?}");
    println!("  a member's change, under the aggregator: p50 {p50a:?}, p99 {p99a:?} ({} samples)", samples());
    println!("  a member's change, under none:           p50 {p50p:?}, p99 {p99p:?}");
    println!("  ratio of p50s, aggregated / plain:       {:.2}", p50a.as_secs_f64() / p50p.as_secs_f64());
}
