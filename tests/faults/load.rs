//! Load: a Secret shared by 200 connections is rotated, so 200 attachments
//! in four workspaces change at once.

use std::time::{Duration, Instant};

use super::faults::SERIAL;
use crate::support::world::as_is;
use crate::support::world::{count, world_without_operator};
use crate::support::{Operator, control_plane, secret_yaml, wait_for};

fn rss_kib(pid: u64, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub async fn two_hundred_attachments_changed_at_once() {
    let _serial = SERIAL.lock().await;
    let w = world_without_operator("load").await;
    let pool_size = 4;
    let op = Operator::start(
        &control_plane().kubeconfig,
        &["--namespaces", &w.t.ns, "--pool-size", "4", "--resync", "30s", "--lock-timeout", "2s"],
    );
    let (n, workspaces) = (200, 4);
    let mut dbs = Vec::new();
    for i in 0..workspaces {
        let db = w.pg.database(&format!("load-ws{i}")).await;
        w.workspace_on(&format!("ws{i}"), w.pg, &db);
        dbs.push(db);
    }
    w.credentials("shared", &w.src.password);
    let yaml = w.bulk_yaml(n, w.pg.port, |i| format!("ws{}", i % workspaces), as_is);
    let started = Instant::now();
    w.apply(&yaml);
    let ready = || w.ready_count();
    wait_for("200 attached", Duration::from_secs(180), || async {
        let r = ready().await;
        if r == n { Ok(()) } else { Err(format!("{r} of {n}; operator log ends with:\n{}", tail(&op.logs(), 15))) }
    })
    .await;
    let attach_time = started.elapsed();
    // Let the connection tests and the aggregates settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_before = rss_kib(op.pid(), "VmRSS:");
    let warnings_before = count_warnings(&w);

    // Rotate: the role gets a new password, then the shared Secret.
    let new_password = format!("rotated-{}-{}", crate::support::secret_marker(), std::process::id());
    w.pg.connect("postgres").await.batch_execute(&format!("ALTER ROLE {} PASSWORD '{new_password}'", w.src.user)).await.unwrap();
    let rotated = Instant::now();
    w.apply(&secret_yaml("shared-creds", &[("user", &w.src.user), ("password", &new_password)]));

    // Watch the connections per workspace database while it converges.
    let admin = w.pg.connect("postgres").await;
    let mut max_per_db = 0i64;
    let mut converged = None;
    while rotated.elapsed() < Duration::from_secs(180) {
        let per_db: i64 = admin
            .query_one(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM pg_stat_activity
                  WHERE application_name = 'manifold' AND datname = ANY($1) GROUP BY datname) c",
                &[&dbs],
            )
            .await
            .unwrap()
            .get(0);
        max_per_db = max_per_db.max(per_db);
        let mut updated = 0;
        for db in &dbs {
            let c = w.pg.connect(db).await;
            updated +=
                count(&c, &format!("SELECT count(*) FROM pg_user_mappings WHERE umoptions @> ARRAY['password={new_password}']")).await;
        }
        if updated == n as i64 && ready().await == n {
            converged = Some(rotated.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converged = converged.expect("all 200 attachments took the new password and are Ready");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = rss_kib(op.pid(), "VmRSS:");
    let rss_peak = rss_kib(op.pid(), "VmHWM:");
    let warnings = count_warnings(&w) - warnings_before;
    println!(
        "load: {n} attachments in {workspaces} workspaces attached in {attach_time:?}; rotation converged in {converged:?}; \
         at most {max_per_db} connections per workspace database (pools {pool_size} + 2 + 1); {warnings} Warning events during the rotation; \
         operator RSS {} MiB before, {} MiB after, peak {} MiB",
        rss_before / 1024,
        rss_after / 1024,
        rss_peak / 1024
    );
    // Attaches, tests (2 by default) and the resync (1) have pools of their own.
    let bound = pool_size + 2 + 1;
    assert!(max_per_db <= bound, "connections per workspace stay within the pools: {max_per_db} > {bound}");
    assert_eq!(warnings, 0, "no error storm");
    assert!(rss_after < rss_before + 64 * 1024, "memory stays flat: {rss_before} KiB -> {rss_after} KiB");
}

fn count_warnings(w: &crate::support::world::World) -> i64 {
    let out = crate::support::stdout_ok(&w.t.kubectl(&["get", "events", "--field-selector", "type=Warning", "-o", "name"]));
    out.lines().count() as i64
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
