//! Attach by label against attach by name, side by side in one run: 50
//! connections selected by a Workspace's `connectionSelectors`, and 50
//! attached by hand-written WorkspaceConnections, in two workspaces of one
//! database server. Then, for each, a member leaving (a label change, or the
//! attachment deleted) until its schema is gone, a member coming back (the
//! label again, or the attachment written again) until Ready, and a new
//! connection joining until Ready.
//!
//!   cargo bench --bench selector

use std::time::{Duration, Instant};

use manifold::api::{Connection, Workspace};
use manifold_test_support as support;
use support::objects;
use support::world::{World, schema_exists, world_without_operator};
use support::{Operator, control_plane, stdout_ok, wait_for};

fn members() -> usize {
    if quick() { 8 } else { 50 }
}
fn samples() -> usize {
    if quick() { 2 } else { 10 }
}

/// Run by `cargo test` rather than `cargo bench`.
fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn main() {
    // Under `cargo test` (no --bench): every step in a quick mode, so that
    // the suite fails when one breaks; the figures mean nothing there.
    if quick() {
        println!("selector benchmark, quick mode (cargo bench --bench selector for the figures)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench());
}

fn connection(w: &World, name: &str, team: Option<&str>) -> Connection {
    let mut conn = objects::postgres_connection(name, "127.0.0.1", w.pg.port, &w.src.db, "shared-creds");
    conn.spec.test = Some(manifold::api::TestSpec { interval: Some("0".into()), workspace: None });
    conn.metadata.labels = team.map(|t| [("team".to_string(), t.to_string())].into());
    conn
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn line(what: &str, selector: &mut [Duration], by_name: &mut [Duration]) {
    selector.sort();
    by_name.sort();
    let (s, n) = (percentile(selector, 0.5), percentile(by_name, 0.5));
    println!(
        "  {what:<32} by label p50 {s:>10.1?} p99 {:>10.1?} | by name p50 {n:>10.1?} p99 {:>10.1?} | ratio {:.2}",
        percentile(selector, 0.99),
        percentile(by_name, 0.99),
        s.as_secs_f64() / n.as_secs_f64()
    );
}

async fn wait_schema(db: &tokio_postgres::Client, schema: &str, present: bool) {
    wait_for(&format!("schema {schema} present={present}"), Duration::from_secs(60), || async {
        if schema_exists(db, schema).await == present { Ok(()) } else { Err(String::new()) }
    })
    .await;
}

async fn bench() {
    let w = world_without_operator("selbench").await;
    let by_name_db = w.pg.database("selbench-byname").await;
    let _op = Operator::start(&control_plane().kubeconfig, &["--namespaces", &w.t.ns, "--resync", "5m"]);
    w.credentials("shared", &w.src.password);
    w.workspace("sel");
    w.workspace_on("byname", w.pg, &by_name_db);
    w.wait_workspace_ready("sel").await;
    w.wait_workspace_ready("byname").await;
    let sel_db = w.ws().await;
    let name_db = w.pg.connect(&by_name_db).await;

    // 50 by name: connections and their attachments in one apply.
    let mut yaml = String::new();
    for i in 0..members() {
        yaml.push_str(&format!(
            "---\n{}---\n{}",
            objects::yaml(&connection(&w, &format!("n{i}"), None)),
            objects::yaml(&objects::attachment(&format!("byname-n{i}"), "byname", &format!("n{i}")))
        ));
    }
    let started = Instant::now();
    w.apply(&yaml);
    wait_for("all attached by name", Duration::from_secs(300), || async {
        let n = w.ready_count().await;
        if n == members() { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let by_name_bulk = started.elapsed();

    // 50 by label: the connections first, then the selector.
    let yaml: String = (0..members()).map(|i| format!("---\n{}", objects::yaml(&connection(&w, &format!("s{i}"), Some("s"))))).collect();
    w.apply(&yaml);
    let started = Instant::now();
    let mut ws = objects::workspace("sel", "sel-db");
    ws.spec.connection_selectors = vec![serde_json::from_value(serde_json::json!({ "matchLabels": { "team": "s" } })).unwrap()];
    w.apply_object(&ws);
    w.wait_workspace("sel", "50 selected and Ready", |ws: &Workspace| {
        let selected = ws.status.as_ref().map(|s| s.selected.clone()).unwrap_or_default();
        selected.len() == members() && selected.iter().all(|s| s.state == "Ready")
    })
    .await;
    let by_label_bulk = started.elapsed();

    let (mut leave_s, mut leave_n, mut back_s, mut back_n, mut join_s, mut join_n) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for k in 0..samples() {
        // Leave: a label change, or the attachment deleted; until the schema is gone.
        let started = Instant::now();
        stdout_ok(&w.t.kubectl(&["label", "conn", &format!("s{k}"), "team=other", "--overwrite"]));
        wait_schema(&sel_db, &format!("s{k}"), false).await;
        leave_s.push(started.elapsed());
        let started = Instant::now();
        stdout_ok(&w.t.kubectl(&["delete", "wsconn", &format!("byname-n{k}"), "--wait=false"]));
        wait_schema(&name_db, &format!("n{k}"), false).await;
        leave_n.push(started.elapsed());
        // Back: the label again, or the attachment again; until Ready.
        let started = Instant::now();
        stdout_ok(&w.t.kubectl(&["label", "conn", &format!("s{k}"), "team=s", "--overwrite"]));
        w.wait_ready(&format!("sel-s{k}")).await;
        back_s.push(started.elapsed());
        w.wait_gone(&format!("byname-n{k}")).await;
        let started = Instant::now();
        w.apply_object(&objects::attachment(&format!("byname-n{k}"), "byname", &format!("n{k}")));
        w.wait_ready(&format!("byname-n{k}")).await;
        back_n.push(started.elapsed());
        // Join: a new connection, labelled, or with its attachment.
        let started = Instant::now();
        w.apply_object(&connection(&w, &format!("s{}", members() + k), Some("s")));
        w.wait_ready(&format!("sel-s{}", members() + k)).await;
        join_s.push(started.elapsed());
        let started = Instant::now();
        let name = format!("n{}", members() + k);
        w.apply(&format!(
            "---\n{}---\n{}",
            objects::yaml(&connection(&w, &name, None)),
            objects::yaml(&objects::attachment(&format!("byname-{name}"), "byname", &name))
        ));
        w.wait_ready(&format!("byname-{name}")).await;
        join_n.push(started.elapsed());
    }

    println!("attach by label ({} connections, then {} samples of each change), side by side with attach by name:", members(), samples());
    println!(
        "  {:<32} by label {:>10.1?} | by name {:>10.1?} | ratio {:.2}",
        format!("{} attached, to all Ready", members()),
        by_label_bulk,
        by_name_bulk,
        by_label_bulk.as_secs_f64() / by_name_bulk.as_secs_f64()
    );
    line("a member leaves, schema gone", &mut leave_s, &mut leave_n);
    line("it comes back, Ready", &mut back_s, &mut back_n);
    line("a new connection joins, Ready", &mut join_s, &mut join_n);
}
