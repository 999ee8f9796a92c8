//! Attach at scale, side by side with raw DDL, in one run against the
//! project's real control plane and Postgres (2 cores):
//!
//! 1. bulk attach of C connections × W workspaces (a 20-table source): the
//!    attach transaction issued directly by 4 clients per workspace
//!    database, plain and with the reads the safety rules ask for; the
//!    apiserver writes that any controller of this design makes per
//!    attachment, alone and at once with the safe raw DDL (the best any
//!    operator can do on these cores); then the operator with a pool of 4
//!    per workspace, from its start to all Ready;
//! 2. change latency at rest: one new attachment, 50 times; then one Secret
//!    shared by 100 connections rotated;
//!
//! Under `cargo test` (no `--bench`) every step runs in a quick mode, tens
//! of objects, so that the suite fails when a step breaks.
//! 3. cost at rest over several resync intervals: statements per workspace,
//!    apiserver writes, operator CPU;
//! 4. apiserver writes per new attachment;
//! 5. the operator's peak memory; and the resync query at 3,000 schemas.
//!
//!   cargo bench --bench attach                 400 × 5 = 2,000 attachments
//!   cargo bench --bench attach -- --large      1,200 × 10 = 12,000
//!   MANIFOLD_BENCH_C=100 MANIFOLD_BENCH_W=2 cargo bench --bench attach

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use manifold::api::conditions;
use manifold_test_support as support;
use support::cpu::{cpu_seconds, parts_cpu, statement_profile, status_kib, tree_cpu_seconds};
use support::objects;
use support::world::{World, world_without_operator};
use support::{Operator, control_plane, stdout_ok, unique, wait_for};

const TABLES: usize = 20;
const POOL: usize = 4;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// How big one run is.
#[derive(Clone, Copy, Debug)]
struct Scale {
    /// Connections, and workspaces each is attached to.
    c: usize,
    w: usize,
    /// New attachments timed one at a time among the idle ones.
    late: usize,
    /// Connections sharing the Secret that is rotated.
    rotate: usize,
    /// The operator's resync, and how many intervals at rest are measured.
    resync: Duration,
    intervals: u32,
    /// Managed schemas in the database the resync query is timed on.
    schemas: usize,
}

fn main() {
    // `cargo test --all-targets` builds and runs bench targets too: there
    // the benchmark runs every step in a quick mode (tens of objects,
    // seconds), so that a change that breaks one fails the suite; its
    // figures mean nothing. `cargo bench` passes --bench: the real run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let large = std::env::args().any(|a| a == "--large");
    let (c, w) = if quick {
        (10, 2)
    } else if large {
        (1200, 10)
    } else {
        (400, 5)
    };
    let scale = if quick {
        Scale { c, w, late: 5, rotate: 10, resync: Duration::from_secs(5), intervals: 1, schemas: 200 }
    } else {
        let (c, w) = (env("MANIFOLD_BENCH_C", c), env("MANIFOLD_BENCH_W", w));
        Scale { c, w: w.max(2), late: 50, rotate: 100, resync: Duration::from_secs(15), intervals: 3, schemas: 3000 }
    };
    if quick {
        println!("attach benchmark, quick mode (every step, tens of objects; cargo bench --bench attach for the figures)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bench(scale));
}

/// Writes the apiserver has served so far, by resource: every request that
/// is not a read (the apiserver's own `apiserver_request_total`).
fn apiserver_writes() -> BTreeMap<String, f64> {
    apiserver_requests("apiserver_request_total{", true)
}

/// Seconds the apiserver spent serving requests so far, by verb and
/// resource (watches left out): where its time goes.
fn apiserver_seconds() -> BTreeMap<String, f64> {
    apiserver_requests("apiserver_request_duration_seconds_sum{", false)
}

fn apiserver_requests(metric: &str, writes_only: bool) -> BTreeMap<String, f64> {
    let text = stdout_ok(&control_plane().kubectl(&["get", "--raw", "/metrics"]));
    let mut writes = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(metric)) {
        let label = |name: &str| line.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_owned();
        let verb = label("verb");
        let read = ["GET", "LIST", "WATCH", "CONNECT"].contains(&verb.as_str());
        if (writes_only && read) || verb == "WATCH" {
            continue;
        }
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let sub = label("subresource");
        let mut key = if sub.is_empty() { label("resource") } else { format!("{}/{sub}", label("resource")) };
        if !writes_only {
            key = format!("{verb} {key}");
        }
        let code = label("code");
        if writes_only && !code.starts_with('2') {
            key = format!("{key} [{code}]");
        }
        *writes.entry(key).or_default() += value;
    }
    writes
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0))).filter(|(_, v)| *v > 0.0).collect()
}

/// A Connection of the bench: the source's 20 tables, tested only once.
fn connection(w: &World, name: &str, creds: &str, include: &[String]) -> manifold::api::Connection {
    let mut conn = objects::postgres_connection(name, "127.0.0.1", w.pg.port, &w.src.db, creds);
    conn.spec.tables = Some(manifold::api::TablesSpec { include: include.to_vec(), exclude: Vec::new() });
    conn.spec.test = Some(manifold::api::TestSpec { interval: Some("0".into()), workspace: None });
    conn
}

/// Waits until `n` attachments are Ready, through one watch: polling with
/// lists of thousands of objects would load the apiserver that the
/// operator is measured against.
async fn all_ready(w: &World, n: usize, limit: Duration) {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let mut ready = std::collections::HashSet::new();
    let stream = watcher(w.attachments(), watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let deadline = tokio::time::Instant::now() + limit;
    while ready.len() < n {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} Ready after {limit:?}", ready.len()));
        let mut note = |a: manifold::api::WorkspaceConnection| {
            let name = kube::ResourceExt::name_any(&a);
            if a.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions)) {
                ready.insert(name);
            } else {
                ready.remove(&name);
            }
        };
        match event {
            Some(Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a))) => note(a),
            Some(Ok(watcher::Event::Delete(a))) => {
                ready.remove(&kube::ResourceExt::name_any(&a));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => eprintln!("watch: {e}"),
            None => panic!("the watch ended"),
        }
    }
}

/// The objects of the apiserver's floor: one WorkspaceConnection per
/// attachment, in a namespace of their own, applied before the clock runs.
struct Floor {
    ns: support::TestNs,
    api: kube::Api<manifold::api::WorkspaceConnection>,
    n: usize,
}

async fn floor_objects(n: usize) -> Floor {
    let ns = support::namespace("bench-floor").await;
    let mut yaml = String::new();
    for i in 0..n {
        yaml.push_str("---\n");
        yaml.push_str(&objects::yaml(&objects::attachment(&format!("a{i}"), "ws", &format!("c{i}"))));
    }
    stdout_ok(&control_plane().kubectl_stdin(&["-n", &ns.ns, "apply", "--server-side", "-f", "-"], &yaml));
    let api = ns.api();
    Floor { ns, api, n }
}

impl Floor {
    /// Gone before the operator starts, so that its deletion is not
    /// measured with it.
    fn remove(self) {
        self.ns.kubectl(&["delete", "namespace", &self.ns.ns, "--timeout=300s"]);
    }
}

/// The writes of step 1b, what any controller of this design makes per
/// attachment at the least, the cheapest way: a metadata patch (as the
/// finalizer is), the status with its three conditions in one JSON patch,
/// and an Event, by 64 clients at once; and one watch that reads every
/// write back, as a controller's does. Returns the time and the CPU seconds
/// the apiserver and etcd spent. `profile`: where to write a CPU profile of
/// the apiserver meanwhile.
async fn floor_writes(w: &World, floor: &Floor, profile: Option<String>) -> (Duration, f64) {
    use futures::StreamExt;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let n = floor.n;
    let recorder = Recorder::new(w.t.client.clone(), Reporter { controller: "bench".into(), instance: None });
    let cpu = || parts_cpu(0, 0)[..2].iter().map(|(_, s)| s).sum::<f64>();
    let watcher = {
        let api = floor.api.clone();
        tokio::spawn(async move {
            let mut stream = api.watch(&kube::api::WatchParams::default(), "0").await.unwrap().boxed();
            while let Some(event) = stream.next().await {
                event.unwrap();
            }
        })
    };
    let before = cpu();
    let started = Instant::now();
    let pprof = profile.map(|file| {
        let seconds = (n / 400).clamp(2, 20);
        std::thread::spawn(move || {
            let out = control_plane().kubectl(&["get", "--raw", &format!("/debug/pprof/profile?seconds={seconds}")]);
            std::fs::write(file, &out.stdout).unwrap();
        })
    });
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let (api, recorder) = (floor.api.clone(), recorder.clone());
            async move {
                let name = format!("a{i}");
                let meta = serde_json::json!({ "metadata": { "annotations": { "bench.manifold.dev/floor": "1" } } });
                let params = PatchParams { field_manager: Some("bench".into()), ..Default::default() };
                let obj = api.patch(&name, &params, &Patch::Merge(&meta)).await.unwrap();
                let condition = |type_: &str, status: &str, message: &str| {
                    serde_json::json!({
                        "type": type_, "status": status, "reason": "Attached", "observedGeneration": 1,
                        "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z",
                    })
                };
                let message = format!("schema \"c{i}\" holds 20 tables");
                let status = serde_json::json!({
                    "observedGeneration": 1,
                    "schema": format!("c{i}"),
                    "tables": 20,
                    "conditions": [condition("Ready", "True", &message), condition("Reconciling", "False", ""), condition("Stalled", "False", "")],
                });
                let patch: json_patch::Patch =
                    serde_json::from_value(serde_json::json!([{ "op": "add", "path": "/status", "value": status }])).unwrap();
                api.patch_status(&name, &params, &Patch::<()>::Json(patch)).await.unwrap();
                let event = Event {
                    type_: EventType::Normal,
                    reason: "Attached".into(),
                    note: Some(message),
                    action: "Reconcile".into(),
                    secondary: None,
                };
                recorder.publish(&event, &kube::Resource::object_ref(&obj, &())).await.unwrap();
            }
        })
        .await;
    let elapsed = started.elapsed();
    let spent = cpu() - before;
    watcher.abort();
    if let Some(pprof) = pprof {
        pprof.join().unwrap();
    }
    (elapsed, spent)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Raw {
    /// The attach's DDL and nothing else.
    Plain,
    /// The DDL with the lock, the read under it, the server's marker and the
    /// row read that an attach which follows the safety rules needs.
    Safe,
}

/// New workspace databases for the raw DDL.
async fn raw_databases(w: &World, prefix: &str, count: usize) -> Vec<String> {
    let mut dbs = Vec::new();
    for i in 0..count {
        dbs.push(w.pg.database(&format!("{prefix}{i}")).await);
    }
    dbs
}

async fn drop_databases(admin: &tokio_postgres::Client, dbs: &[String]) {
    for db in dbs {
        admin.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)")).await.unwrap();
    }
}

/// The attach transaction of `c` attachments issued directly into each of
/// `dbs`, `POOL` clients per database: how long, and Postgres's CPU.
async fn raw_ddl(w: &World, postmaster: u64, dbs: &[String], c: usize, include: &[String], kind: Raw) -> (Duration, f64) {
    let pg_before = tree_cpu_seconds(postmaster);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for db in dbs {
        for client in 0..POOL {
            let uri = w.pg.owner_uri(db);
            let (user, password, port, src_db) = (w.src.user.clone(), w.src.password.clone(), w.pg.port, w.src.db.clone());
            let include = include.join(", ");
            let first = include.split(", ").next().unwrap_or_default().to_owned();
            tasks.push(tokio::spawn(async move {
                let (db, conn) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                for i in (client..c).step_by(POOL) {
                    let (lock, read, marker, row) = match kind {
                        Raw::Plain => Default::default(),
                        Raw::Safe => (
                            format!("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('manifold.dev/s{i}'));"),
                            format!(
                                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 's{i}')
                                     OR EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server WHERE srvname = 's{i}');"
                            ),
                            format!("COMMENT ON SERVER s{i} IS 'manifold.dev/owner=bench/s{i}';"),
                            format!("SELECT * FROM s{i}.{first} LIMIT 1;"),
                        ),
                    };
                    db.batch_execute(&format!(
                        "BEGIN;
                         {lock}
                         {read}
                         CREATE SERVER s{i} FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '{port}', dbname '{src_db}');
                         {marker}
                         CREATE USER MAPPING FOR CURRENT_USER SERVER s{i} OPTIONS (user '{user}', password '{password}');
                         CREATE SCHEMA s{i};
                         IMPORT FOREIGN SCHEMA public LIMIT TO ({include}) FROM SERVER s{i} INTO s{i};
                         {row}
                         COMMENT ON SCHEMA s{i} IS 'raw';
                         COMMIT;
                         SELECT public.postgres_fdw_disconnect_all();"
                    ))
                    .await
                    .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    (started.elapsed(), tree_cpu_seconds(postmaster) - pg_before)
}

async fn bench(scale: Scale) {
    let (c, ws_count) = (scale.c, scale.w);
    let n = c * ws_count;
    let w = world_without_operator("bench").await;
    let source = w.pg.connect(&w.src.db).await;
    let mut ddl = String::new();
    for t in 0..TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE t{t:02} (id int PRIMARY KEY, a text, b numeric, c timestamptz); INSERT INTO t{t:02} VALUES (1, 'x', 1, now());"
        ));
    }
    ddl.push_str(&format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {};", w.src.user));
    source.batch_execute(&ddl).await.unwrap();
    let include: Vec<String> = (0..TABLES).map(|t| format!("t{t:02}")).collect();
    let admin = w.pg.connect("postgres").await;
    let _ = admin.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await;
    // Planning time too, by statement (this instance is the benchmark's own).
    let _ = admin.batch_execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on").await;
    let _ = admin.batch_execute("SELECT pg_reload_conf()").await;

    // 1a. Raw DDL: the attach transaction, 4 clients per workspace database,
    // the operator's parallelism.
    let postmaster: u64 = std::fs::read_to_string(w.pg.data_dir().join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        .expect("the postmaster's pid");
    let _ = admin.batch_execute("SELECT pg_stat_statements_reset()").await;
    let src_db = w.src.db.clone();
    let fold = move |db: &str| {
        if db.starts_with("bench_ws") || db.starts_with("bench_raw") {
            "workspace backends".to_owned()
        } else if db == src_db {
            "source backends".to_owned()
        } else {
            format!("backends of {db}")
        }
    };
    let dbs = raw_databases(&w, "bench-raw", ws_count).await;
    let raw_sampler = PgSampler::start(postmaster, fold.clone());
    let (raw, raw_pg) = raw_ddl(&w, postmaster, &dbs, c, &include, Raw::Plain).await;
    let raw_statements = statement_profile(&admin).await;
    let raw_pg_parts = raw_sampler.finish();
    let raw_rate = n as f64 / raw.as_secs_f64();
    drop_databases(&admin, &dbs).await;
    // 1a'. The same, with what the safety rules ask of any attach on top:
    // the schema's lock, a read of the catalog under it, the server's
    // ownership marker, and a row read back through the new server to prove
    // it (what answers a new Connection's test without a second import).
    let dbs = raw_databases(&w, "bench-safe", ws_count).await;
    let (safe, safe_pg) = raw_ddl(&w, postmaster, &dbs, c, &include, Raw::Safe).await;
    drop_databases(&admin, &dbs).await;

    // 1b. The apiserver alone: the same number of attachments, each given
    // the three writes that an attach needs at the least (a metadata patch,
    // as the finalizer is; a status patch; an Event) by 64 clients at once,
    // and read back by one watch, with nothing else running. What it costs
    // is what Kubernetes adds to the raw DDL, whoever makes the writes.
    let profile = std::env::var("MANIFOLD_BENCH_PPROF").ok();
    let objects = floor_objects(n).await;
    let (floor, floor_cpu) = floor_writes(&w, &objects, profile.as_ref().map(|f| format!("{f}.floor"))).await;
    objects.remove();

    // 1b'. The best any operator can do here: the safe raw DDL and the
    // apiserver's writes at once, sharing the two cores as they must.
    let objects = floor_objects(n).await;
    let dbs = raw_databases(&w, "bench-both", ws_count).await;
    let started = Instant::now();
    let ((_, both_api), (_, both_pg)) =
        tokio::join!(floor_writes(&w, &objects, None), raw_ddl(&w, postmaster, &dbs, c, &include, Raw::Safe));
    let both = started.elapsed();
    drop_databases(&admin, &dbs).await;
    objects.remove();

    // 1c. The operator, for the same attachments. Everything is applied
    // first, with no operator running, so that what is timed is the
    // operator and not kubectl: from its start to all Ready.
    let mut workspaces = Vec::new();
    for i in 0..ws_count {
        let db = w.pg.database(&format!("bench-ws{i}")).await;
        w.workspace_on(&format!("ws{i}"), w.pg, &db);
        workspaces.push(db);
    }
    w.credentials("shared", &w.src.password);
    let mut yaml = String::new();
    for k in 0..c {
        yaml.push_str("---\n");
        yaml.push_str(&objects::yaml(&connection(&w, &format!("c{k}"), "shared-creds", &include)));
        for i in 0..ws_count {
            yaml.push_str("---\n");
            yaml.push_str(&objects::yaml(&objects::attachment(&format!("ws{i}-c{k}"), &format!("ws{i}"), &format!("c{k}"))));
        }
    }
    let apply = stdout_ok(&control_plane().kubectl_stdin(&["-n", &w.t.ns, "apply", "--server-side", "-f", "-"], &yaml));
    assert!(apply.lines().count() >= c * (ws_count + 1));
    let _ = admin.batch_execute("SELECT pg_stat_statements_reset()").await;
    let resync = scale.resync;
    let resync_flag = format!("{}s", resync.as_secs());
    let writes_before_bulk = apiserver_writes();
    let seconds_before_bulk = apiserver_seconds();
    let started = Instant::now();
    let op = Operator::start(
        &control_plane().kubeconfig,
        &["--namespaces", &w.t.ns, "--pool-size", &POOL.to_string(), "--resync", &resync_flag, "--concurrency", "64"],
    );
    let cpu_before = parts_cpu(op.pid(), postmaster);
    let bulk_sampler = PgSampler::start(postmaster, fold);
    // MANIFOLD_BENCH_PPROF=<file>: a 20 s CPU profile of the apiserver
    // during the bulk attach (go tool pprof -top <file>).
    let pprof = std::env::var("MANIFOLD_BENCH_PPROF").ok().map(|file| {
        std::thread::spawn(move || {
            let out = control_plane().kubectl(&["get", "--raw", "/debug/pprof/profile?seconds=20"]);
            std::fs::write(&file, &out.stdout).unwrap();
        })
    });
    all_ready(&w, n, Duration::from_secs(3600)).await;
    let operator = started.elapsed();
    let operator_rate = n as f64 / operator.as_secs_f64();
    let bulk_cpu = cpu_seconds(op.pid());
    let cpu_after = parts_cpu(op.pid(), postmaster);
    if let Some(profile) = pprof {
        profile.join().unwrap();
    }
    let parts: Vec<String> = cpu_before.iter().zip(&cpu_after).map(|((name, b), (_, a))| format!("{name} {:.1} s", a - b)).collect();
    let bulk_writes = delta(&apiserver_writes(), &writes_before_bulk);
    let mut bulk_seconds: Vec<(String, f64)> = delta(&apiserver_seconds(), &seconds_before_bulk).into_iter().collect();
    bulk_seconds.sort_by(|a, b| b.1.total_cmp(&a.1));
    let bulk_seconds: Vec<String> = bulk_seconds.iter().take(8).map(|(k, v)| format!("{k} {v:.1} s")).collect();
    let bulk_rss = status_kib(op.pid(), "VmHWM:");
    let bulk_statements = statement_profile(&admin).await;
    let bulk_pg_parts = bulk_sampler.finish();
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    let event_api: kube::Api<k8s_openapi::api::core::v1::Event> = kube::Api::namespaced(w.t.client.clone(), &w.t.ns);
    for e in event_api.list(&Default::default()).await.unwrap().items {
        let kind = e.involved_object.kind.unwrap_or_default();
        *events.entry(format!("{kind}/{}", e.reason.unwrap_or_default())).or_default() += e.count.unwrap_or(1).max(1) as usize;
    }
    wait_for("every connection tested", Duration::from_secs(600), || async {
        let list = w.connections().list(&Default::default()).await.map_err(|e| e.to_string())?;
        let passed =
            list.items.iter().filter(|c| c.status.as_ref().and_then(|s| s.test.as_ref()).is_some_and(|t| t.reason == "Passed")).count();
        if passed == c { Ok(passed) } else { Err(format!("{passed} of {c}")) }
    })
    .await;
    let (_, metrics) = op.admin_get("/metrics");
    let reconciles: Vec<String> = metrics
        .lines()
        .filter(|l| {
            [
                "manifold_reconciles_total",
                "manifold_connection_tests_total",
                "manifold_sql_statements_total",
                "manifold_reconcile_errors_total",
            ]
            .iter()
            .any(|m| l.starts_with(m))
        })
        .map(str::to_owned)
        .collect();

    // 2a. One new attachment among the idle ones, 50 times: its connection
    // exists and has been reconciled (attached nowhere, it cannot be tested:
    // a test runs only where a connection is attached), then the attachment
    // is created and its status polled every 5 ms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut latencies = Vec::new();
    let mut writes_per_attach = Vec::new();
    for k in 0..scale.late {
        let name = format!("late{k}");
        w.apply_object(&connection(&w, &name, "shared-creds", &include));
        w.wait_test_or_status(&name, |c| c.status.as_ref().is_some_and(|s| !s.conditions.is_empty())).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = apiserver_writes();
        let api = w.attachments();
        let started = Instant::now();
        api.create(&Default::default(), &objects::attachment(&name, "ws0", &name)).await.unwrap();
        loop {
            let a = api.get(&name).await.unwrap();
            if a.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(started.elapsed());
        if k < 5 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let writes = delta(&apiserver_writes(), &before);
            // The create itself is the bench's, not the operator's.
            writes_per_attach.push(writes.values().sum::<f64>() - 1.0);
            if k == 0 {
                println!("apiserver writes for one new attachment: {writes:?} (the create included)");
            }
        }
    }
    latencies.sort();

    // 2b. One Secret shared by 100 connections, rotated: from the Secret's
    // update until every user mapping holds the new password.
    let rotator = unique("rotator").replace('-', "_");
    let old = format!("old-{}", support::secret_marker());
    admin.batch_execute(&format!("CREATE ROLE {rotator} LOGIN PASSWORD '{old}'")).await.unwrap();
    source.batch_execute(&format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {rotator}")).await.unwrap();
    w.apply_object(&objects::secret("rot-creds", &[("user", &rotator), ("password", &old)]));
    let mut rot = String::new();
    for k in 0..scale.rotate {
        rot.push_str("---\n");
        rot.push_str(&objects::yaml(&connection(&w, &format!("rot{k}"), "rot-creds", &include[..2])));
        rot.push_str("---\n");
        rot.push_str(&objects::yaml(&objects::attachment(&format!("rot{k}"), "ws1", &format!("rot{k}"))));
    }
    stdout_ok(&control_plane().kubectl_stdin(&["-n", &w.t.ns, "apply", "--server-side", "-f", "-"], &rot));
    all_ready(&w, n + scale.late + scale.rotate, Duration::from_secs(300)).await;
    let new = format!("new-{}", support::secret_marker());
    admin.batch_execute(&format!("ALTER ROLE {rotator} PASSWORD '{new}'")).await.unwrap();
    let ws1 = w.pg.connect(&workspaces[1]).await;
    let started = Instant::now();
    w.apply_object(&objects::secret("rot-creds", &[("user", &rotator), ("password", &new)]));
    wait_for("every mapping rotated", Duration::from_secs(300), || async {
        let n: i64 = ws1
            .query_one("SELECT count(*) FROM pg_user_mappings WHERE $1 = ANY(umoptions)", &[&format!("password={new}")])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if n == scale.rotate as i64 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let rotation = started.elapsed();

    // 3. At rest, over three resync intervals: the statements each
    // workspace database ran, the apiserver's writes, the operator's CPU.
    tokio::time::sleep(resync).await;
    let _ = admin.batch_execute("SELECT pg_stat_statements_reset()").await;
    let (writes_before, cpu_before) = (apiserver_writes(), cpu_seconds(op.pid()));
    let intervals = scale.intervals;
    tokio::time::sleep(resync * intervals).await;
    let at_rest_writes = delta(&apiserver_writes(), &writes_before);
    let at_rest_cpu = cpu_seconds(op.pid()) - cpu_before;
    let rows = admin
        .query(
            "SELECT sum(s.calls)::bigint, sum(s.calls) FILTER (WHERE s.query ~* '^\\s*(CREATE|DROP|ALTER|IMPORT|COMMENT|GRANT|REVOKE)')::bigint
               FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = ANY($1)",
            &[&workspaces],
        )
        .await
        .unwrap();
    let (statements, ddl): (Option<i64>, Option<i64>) = (rows[0].get(0), rows[0].get(1));
    let per_interval = statements.unwrap_or(0) as f64 / (ws_count as f64 * f64::from(intervals));

    // 5. The resync query over 3,000 schemas of 2 tables, made directly in
    // one workspace database beside the operator's.
    let ws0 = w.pg.connect(&workspaces[0]).await;
    let existing: i64 = ws0.query_one("SELECT count(*) FROM pg_namespace", &[]).await.unwrap().get(0);
    let password = postgres_protocol::escape::escape_literal(&w.src.password);
    for i in existing as usize..scale.schemas {
        ws0.batch_execute(&format!(
            "BEGIN;
             CREATE SERVER x{i} FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', port '{}', dbname '{}');
             COMMENT ON SERVER x{i} IS 'manifold.dev/owner=bench/x{i} uid=x';
             CREATE USER MAPPING FOR CURRENT_USER SERVER x{i} OPTIONS (user '{}', password {password});
             CREATE SCHEMA x{i};
             IMPORT FOREIGN SCHEMA public LIMIT TO (t00, t01) FROM SERVER x{i} INTO x{i};
             COMMENT ON SCHEMA x{i} IS 'manifold.dev/owner=bench/x{i} uid=x fingerprint=server:a,mapping:b,import:c tables=2';
             COMMIT;
             SELECT public.postgres_fdw_disconnect_all();",
            w.pg.port, w.src.db, w.src.user
        ))
        .await
        .unwrap();
    }
    let schemas: i64 = ws0
        .query_one("SELECT count(*) FROM pg_namespace WHERE obj_description(oid, 'pg_namespace') LIKE 'manifold.dev/owner=%'", &[])
        .await
        .unwrap()
        .get(0);
    let mut times = Vec::new();
    let no_readers: Vec<String> = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        ws0.query_one(manifold::postgres::sql::OBSERVE_ALL, &[&no_readers]).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    let peak = status_kib(op.pid(), "VmHWM:");

    println!("bench: {c} connections × {ws_count} workspaces = {n} attachments of a {TABLES}-table source, 2 cores");
    println!("raw DDL, {POOL} clients per database:     {raw:>10.2?}  {raw_rate:>7.1} attaches/s");
    println!("  Postgres CPU for the raw DDL:      {raw_pg:.1} s");
    println!(
        "apiserver alone, 3 writes each:     {floor:>10.2?}  {:>7.1} attachments/s; kube-apiserver and etcd CPU {floor_cpu:.1} s",
        n as f64 / floor.as_secs_f64()
    );
    let bound = (raw_pg + floor_cpu) / 2.0;
    println!(
        "  the two together on 2 cores need at least {bound:.1} s of CPU time each: at most {:.1} attaches/s, {:.2} of raw",
        n as f64 / bound,
        n as f64 / bound / raw_rate
    );
    println!(
        "raw DDL with the safety rules' reads: {safe:>10.2?}  {:>7.1} attaches/s ({:.2} of raw); Postgres CPU {safe_pg:.1} s",
        n as f64 / safe.as_secs_f64(),
        raw.as_secs_f64() / safe.as_secs_f64()
    );
    println!(
        "the two at once, the best possible:   {both:>10.2?}  {:>7.1} attaches/s, {:.2} of raw (Postgres CPU {both_pg:.1} s, kube-apiserver and etcd {both_api:.1} s)",
        n as f64 / both.as_secs_f64(),
        raw.as_secs_f64() / both.as_secs_f64()
    );
    println!("operator, start to all Ready:        {operator:>10.2?}  {operator_rate:>7.1} attaches/s");
    println!(
        "ratio operator/raw:                  {:.2}; to the best possible {:.2}",
        operator_rate / raw_rate,
        both.as_secs_f64() / operator.as_secs_f64()
    );
    println!("operator CPU for the bulk attach:    {bulk_cpu:.1} s; peak RSS {} MiB", bulk_rss / 1024);
    println!("CPU during the bulk attach (2 cores, {:.0} s available): {}", 2.0 * operator.as_secs_f64(), parts.join(", "));
    println!(
        "apiserver writes during the bulk attach: {:.0} ({:.2} per attachment): {bulk_writes:?}",
        bulk_writes.values().sum::<f64>(),
        bulk_writes.values().sum::<f64>() / n as f64
    );
    println!("apiserver time serving requests during the bulk attach, the largest: {}", bulk_seconds.join(", "));
    println!("Events during the bulk attach, by object and reason: {events:?}");
    println!("Postgres CPU by process, raw DDL: {raw_pg_parts}");
    println!("Postgres CPU by process, the operator's bulk attach: {bulk_pg_parts}");
    for (what, profile) in [("raw DDL", &raw_statements), ("the operator's bulk attach", &bulk_statements)] {
        let plan: f64 = profile.iter().map(|p| p.1).sum::<f64>() / 1000.0;
        let exec: f64 = profile.iter().map(|p| p.2).sum::<f64>() / 1000.0;
        println!("statements during {what}, every database: {plan:.1} s planning, {exec:.1} s executing; the largest:");
        for (query, plan, exec, calls) in profile.iter().take(12) {
            println!("  plan {:>6.1} s exec {:>6.1} s {calls:>7} calls  {query}", plan / 1000.0, exec / 1000.0);
        }
    }
    println!("the operator's counters after the bulk attach and the connections' first tests:");
    for line in &reconciles {
        println!("  {line}");
    }
    println!(
        "one new attachment among {n} idle: p50 {:?}, p99 {:?} ({} samples, create to Ready)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len()
    );
    println!("apiserver writes per new attachment: {writes_per_attach:?}");
    println!("one Secret shared by {} connections rotated: every mapping holds the new password after {rotation:?}", scale.rotate);
    println!(
        "at rest over {intervals} intervals of {resync:?}: {per_interval:.2} statements per workspace per interval, {} DDL, \
         apiserver writes {at_rest_writes:?}, operator CPU {at_rest_cpu:.2} s",
        ddl.unwrap_or(0)
    );
    println!("resync query over {schemas} managed schemas: p50 {:?}, p99 {:?}", percentile(&times, 0.5), percentile(&times, 0.99));
    println!("operator peak RSS: {} MiB", peak / 1024);
}

/// CPU of a postmaster's processes by what they serve, sampled every
/// 100 ms until `stop`: a backend counts under its database (folded by
/// `fold`), an auxiliary process under its title. A backend that exits
/// loses at most its last 100 ms.
struct PgSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<String, f64>>,
}

impl PgSampler {
    fn start(postmaster: u64, fold: impl Fn(&str) -> String + Send + 'static) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last: BTreeMap<u64, (String, f64)> = BTreeMap::new();
            let sample = |last: &mut BTreeMap<u64, (String, f64)>| {
                let children = std::fs::read_to_string(format!("/proc/{postmaster}/task/{postmaster}/children")).unwrap_or_default();
                for pid in children.split_whitespace().filter_map(|c| c.parse::<u64>().ok()) {
                    let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ");
                    let title = title.trim().strip_prefix("postgres: ").unwrap_or(title.trim()).to_owned();
                    let what = match title.split_whitespace().collect::<Vec<_>>()[..] {
                        // "<user> <database> <host(port)> <activity>"
                        [_, db, host, ..] if host.contains('(') => fold(db),
                        [] => "exited".to_owned(),
                        _ => title.split_whitespace().take(2).collect::<Vec<_>>().join(" "),
                    };
                    let cpu = cpu_seconds(pid);
                    last.insert(pid, (what, cpu));
                }
            };
            sample(&mut last);
            // Processes alive at the start count from there.
            let mut base: BTreeMap<u64, f64> = last.iter().map(|(pid, (_, cpu))| (*pid, *cpu)).collect();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                sample(&mut last);
            }
            let mut by: BTreeMap<String, f64> = BTreeMap::new();
            for (pid, (what, cpu)) in last {
                // A process first seen later started after the first sample.
                let from = base.remove(&pid).unwrap_or(0.0);
                *by.entry(what).or_default() += cpu - from;
            }
            by
        });
        PgSampler { stop, thread }
    }

    fn finish(self) -> String {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let by = self.thread.join().unwrap();
        let mut by: Vec<(String, f64)> = by.into_iter().filter(|(_, cpu)| *cpu >= 0.05).collect();
        by.sort_by(|a, b| b.1.total_cmp(&a.1));
        by.iter().map(|(what, cpu)| format!("{what} {cpu:.1} s")).collect::<Vec<_>>().join(", ")
    }
}
