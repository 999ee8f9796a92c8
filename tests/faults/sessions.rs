//! Sessions are a budget: a hundred workspace databases on one Postgres
//! server whose `max_connections` is the stock 100 all come up, nobody
//! ever hears "too many clients", and at rest the operator holds fewer
//! sessions than its budget, not one per workspace.

use std::time::{Duration, Instant};

use super::faults::SERIAL;
use crate::support::objects::{self, yaml};
use crate::support::world::{count, world_without_operator};
use crate::support::{Operator, Postgres, control_plane, stdout_ok, wait_for};

const WORKSPACES: usize = 100;
const BUDGET: usize = 32;

pub async fn a_hundred_workspaces_share_a_server_of_a_hundred_connections() {
    let _serial = SERIAL.lock().await;
    // The source lives elsewhere: only the workspace databases are on the
    // server of 100 connections.
    let w = world_without_operator("budget").await;
    let server = Postgres::start();
    server.connect("postgres").await.batch_execute("ALTER SYSTEM SET max_connections = 100").await.unwrap();
    server.devenv.command("stop");
    server.devenv.command("start");
    let admin = server.connect("postgres").await;
    assert_eq!(admin.query_one("SHOW max_connections", &[]).await.unwrap().get::<_, String>(0), "100");
    let mut databases = Vec::new();
    for i in 0..WORKSPACES {
        databases.push(server.database(&format!("b{i}")).await);
    }
    let op = Operator::start(
        &control_plane().kubeconfig,
        &["--namespaces", &w.t.ns, "--resync", "10s", "--session-idle", "4s", "--server-sessions", &BUDGET.to_string()],
    );
    let mut all = String::new();
    w.credentials("src", &w.src.password);
    all.push_str(&format!("---\n{}", yaml(&objects::postgres_connection("src", "127.0.0.1", w.pg.port, &w.src.db, "src-creds"))));
    for (i, db) in databases.iter().enumerate() {
        all.push_str(&format!("---\n{}", yaml(&objects::secret(&format!("ws{i}-db"), &[("uri", &server.owner_uri(db))]))));
        all.push_str(&format!("---\n{}", yaml(&objects::workspace(&format!("ws{i}"), &format!("ws{i}-db")))));
        all.push_str(&format!("---\n{}", yaml(&objects::attachment(&format!("a{i}"), &format!("ws{i}"), "src"))));
    }
    let started = Instant::now();
    stdout_ok(&w.t.apply(&all));

    // Sampled while they come up: the operator's sessions, and the server's.
    let (peak_operator, peak_server) = (std::cell::Cell::new(0.0f64), std::cell::Cell::new(0i64));
    let ready = wait_for("every attachment Ready", Duration::from_secs(400), || async {
        peak_operator.set(peak_operator.get().max(op.metric("manifold_sessions")));
        let seen = count(&admin, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'manifold'").await;
        peak_server.set(peak_server.get().max(seen));
        let n = w.ready_count().await;
        if n == WORKSPACES { Ok(started.elapsed()) } else { Err(format!("{n} of {WORKSPACES} Ready")) }
    })
    .await;
    let (peak_operator, peak_server) = (peak_operator.get(), peak_server.get());
    println!(
        "{WORKSPACES} workspaces on a server of max_connections 100: all Ready in {ready:?}; the operator's sessions at the peak \
         {peak_operator} (its gauge), {peak_server} (the server's pg_stat_activity); budget {BUDGET}"
    );
    assert!(peak_operator <= BUDGET as f64, "the budget held: {peak_operator}");
    assert!(peak_server <= BUDGET as i64, "the server saw no more than the budget: {peak_server}");

    // At rest: idle sessions close; a resync opens one for a moment.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut at_rest = Vec::new();
    for _ in 0..10 {
        at_rest.push(count(&admin, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'manifold'").await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let most = *at_rest.iter().max().unwrap();
    println!("at rest, over 5 s: the operator's sessions on the server {at_rest:?}");
    assert!(most < BUDGET as i64, "at rest, fewer than the budget: {at_rest:?}");
    assert!(most < WORKSPACES as i64 / 4, "at rest, not one per workspace: {at_rest:?}");

    // Nobody heard "too many clients": not the operator, not the server,
    // not a status or an Event.
    assert!(!op.logs().contains("too many clients"), "the operator was refused a connection");
    assert!(!server.server_log().contains("too many clients"), "the server refused someone");
    let visible = w.everything_visible();
    assert!(!visible.contains("too many clients"), "a status or Event says too many clients");
}
