//! Two operator processes with leader election: only the leader reconciles;
//! when it is killed, the standby takes over and new work still converges.

use std::time::{Duration, Instant};

use crate::support::objects;
use crate::support::world::as_is;
use crate::support::world::{WAIT, World, count, world_without_operator};
use crate::support::{Operator, Proxy, control_plane, stdout_ok, wait_for};

fn leading(op: &Operator) -> bool {
    op.logs().contains("leading: controllers starting")
}

pub async fn one_leader_reconciles_and_a_standby_takes_over() {
    let cp = control_plane();
    let w = world_without_operator("leader").await;
    let ns = w.t.ns.clone();
    let args = ["--namespaces", &ns, "--leader-elect", "--lease-namespace", &ns, "--lease-name", "manifold", "--resync", "3s"];
    let first = Operator::start(&cp.kubeconfig, &args);
    wait_for("the first operator leads", WAIT, || async { if leading(&first) { Ok(()) } else { Err(first.logs()) } }).await;
    let second = Operator::start(&cp.kubeconfig, &args);
    wait_for("the second operator waits", WAIT, || async {
        if second.logs().contains("waiting for leadership") { Ok(()) } else { Err(second.logs()) }
    })
    .await;
    let holder = stdout_ok(&w.t.kubectl(&["get", "lease", "manifold", "-o", "jsonpath={.spec.holderIdentity}"]));
    assert!(holder.ends_with(&format!("-{}", first.pid())), "the first process holds the Lease, not {holder}");

    w.workspace("ws");
    w.connection("one", as_is);
    w.attach("ws-one", "ws", "one", as_is);
    w.wait_ready("ws-one").await;
    assert!(first.logs().contains("attached"));
    assert!(!leading(&second), "only one leader");
    for line in ["attached", "tested", "reconcile failed"] {
        assert!(!second.logs().contains(line), "the standby must not reconcile: {}", second.logs());
    }
    assert_eq!(second.admin_get("/readyz").0, 200, "a standby has warm caches and is ready");
    assert_eq!(second.metric("manifold_leader"), 0.0);

    // The leader dies without releasing its Lease.
    first.kill();
    let killed = Instant::now();
    wait_for("the standby takes over", Duration::from_secs(60), || async {
        if leading(&second) { Ok(()) } else { Err("still waiting".into()) }
    })
    .await;
    let takeover = killed.elapsed();
    println!("takeover after {takeover:?}");
    assert!(takeover < Duration::from_secs(30), "took {takeover:?}");
    w.connection("two", as_is);
    w.attach("ws-two", "ws", "two", as_is);
    w.wait_ready("ws-two").await;
    assert_eq!(second.metric("manifold_leader"), 1.0);
}

/// Two operators; the leader's attach is held in flight by a source behind
/// a paused proxy; returns them with the proxy and a session on the
/// workspace database. `first_args` are added to the first's flags.
async fn leader_with_an_attach_in_flight(w: &World, first_args: &[&str]) -> (Operator, Operator, Proxy, tokio_postgres::Client) {
    let cp = control_plane();
    let ns = w.t.ns.clone();
    let args = ["--namespaces", &ns, "--leader-elect", "--lease-namespace", &ns, "--lease-name", "manifold", "--resync", "3s"];
    let first = Operator::start(&cp.kubeconfig, &[&args[..], first_args].concat());
    wait_for("the first operator leads", WAIT, || async { if leading(&first) { Ok(()) } else { Err(first.logs()) } }).await;
    let second = Operator::start(&cp.kubeconfig, &args);
    wait_for("the second operator waits", WAIT, || async {
        if second.logs().contains("waiting for leadership") { Ok(()) } else { Err(second.logs()) }
    })
    .await;
    w.workspace("ws");
    w.wait_workspace_ready("ws").await;
    let proxy = Proxy::start(w.pg.port).await;
    proxy.pause(true);
    w.credentials("slow", &w.src.password);
    w.apply_object(&objects::postgres_connection("slow", "127.0.0.1", proxy.port, &w.src.db, "slow-creds"));
    w.attach("ws-slow", "ws", "slow", as_is);
    let admin = w.ws_admin().await;
    wait_for("the attach in flight", WAIT, || async {
        let n = in_flight(&admin).await;
        if n > 0 { Ok(()) } else { Err("no attach running".into()) }
    })
    .await;
    (first, second, proxy, admin)
}

/// The attaches running in the workspace database: the batch that creates
/// the server begins with the DO block that reads the options.
async fn in_flight(admin: &tokio_postgres::Client) -> i64 {
    count(
        admin,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'manifold' AND state = 'active' \
         AND (query LIKE '%IMPORT FOREIGN SCHEMA%' OR query LIKE 'DO $manifold$%')",
    )
    .await
}

fn holder(w: &World) -> String {
    stdout_ok(&w.t.kubectl(&["get", "lease", "manifold", "-o", "jsonpath={.spec.holderIdentity}"]))
}

/// SIGTERM to a leader with a reconcile still running: it keeps the Lease
/// until that reconcile has ended, so two replicas never reconcile at once;
/// then it releases it, and the standby takes over at once.
pub async fn a_leader_asked_to_stop_keeps_the_lease_until_its_reconciles_end() {
    let w = world_without_operator("leader-stop").await;
    let (first, second, proxy, admin) = leader_with_an_attach_in_flight(&w, &[]).await;
    let first_identity = holder(&w);
    first.terminate();
    let asked = Instant::now();
    // While the attach hangs on its source, the Lease stays the first's.
    while asked.elapsed() < Duration::from_secs(2) {
        assert_eq!(holder(&w), first_identity, "the Lease left a leader whose attach was still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(in_flight(&admin).await > 0, "the attach is still running");
    assert!(!leading(&second), "the standby leads while the leader's attach runs");
    // The source answers: the attach ends, then the controllers, then the
    // Lease goes.
    proxy.pause(false);
    let released = Instant::now();
    wait_for("the standby takes over", Duration::from_secs(30), || async { if leading(&second) { Ok(()) } else { Err(holder(&w)) } }).await;
    let took = released.elapsed();
    wait_for("the first operator exits", Duration::from_secs(10), || async { if first.exited() { Ok(()) } else { Err(first.logs()) } })
        .await;
    let logs = first.logs();
    let stopped = logs.find("controllers stopped").expect("the first stopped its controllers");
    assert!(logs.find("attached").is_some_and(|a| a < stopped), "the first finished its attach before it stopped: {logs}");
    w.wait_ready("ws-slow").await;
    println!("the standby led {took:?} after the source answered; the leader had kept the Lease for {:?}", released - asked);
}

/// A reconcile that does not end within --shutdown-timeout is abandoned
/// (its transaction rolls back), the Lease released, and the new leader
/// finishes the work: the stop is bounded, and nothing is half made.
pub async fn a_leader_abandons_what_does_not_end_within_the_shutdown_timeout() {
    let w = world_without_operator("leader-abandon").await;
    // The source's connect timeout would end the attach after 60 s.
    let (first, second, proxy, admin) =
        leader_with_an_attach_in_flight(&w, &["--shutdown-timeout", "2s", "--source-connect-timeout", "60s"]).await;
    first.terminate();
    let asked = Instant::now();
    wait_for("the standby takes over", Duration::from_secs(20), || async { if leading(&second) { Ok(()) } else { Err(holder(&w)) } }).await;
    let took = asked.elapsed();
    wait_for("the first operator exits", Duration::from_secs(10), || async { if first.exited() { Ok(()) } else { Err(first.logs()) } })
        .await;
    assert!(first.logs().contains("abandoned"), "{}", first.logs());
    assert!(took >= Duration::from_secs(2), "the Lease went before the shutdown timeout: {took:?}");
    // The abandoned transaction committed nothing; the new leader attaches.
    proxy.pause(false);
    w.wait_ready("ws-slow").await;
    assert_eq!(count(&admin, "SELECT count(*) FROM pg_namespace WHERE nspname = 'slow'").await, 1);
    println!("SIGTERM to the standby leading, with a reconcile abandoned at the 2 s shutdown timeout: {took:?}");
}

/// A leader that loses its Lease (another holder took it: a partition, a
/// stalled renewal) drops the reconciles still running at once, rather than
/// letting them end as it does when asked to stop: the Lease may already
/// be another's.
pub async fn a_leader_that_loses_the_lease_abandons_its_reconciles_at_once() {
    let w = world_without_operator("leader-lost").await;
    let (first, _second, _proxy, _admin) =
        leader_with_an_attach_in_flight(&w, &["--shutdown-timeout", "20s", "--source-connect-timeout", "60s"]).await;
    let now = stdout_ok(&std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.000000Z"]).output().unwrap());
    let patch = format!(r#"{{"spec":{{"holderIdentity":"someone-else","renewTime":"{}","leaseDurationSeconds":15}}}}"#, now.trim());
    stdout_ok(&w.t.kubectl(&["patch", "lease", "manifold", "--type", "merge", "-p", &patch]));
    // The leader sees it at its next renewal (within 10 s).
    wait_for("the leader sees the Lease lost", Duration::from_secs(20), || async {
        if first.logs().contains("leader Lease lost") { Ok(()) } else { Err(first.logs()) }
    })
    .await;
    let seen = Instant::now();
    wait_for("the leader exits", Duration::from_secs(10), || async { if first.exited() { Ok(()) } else { Err(first.logs()) } }).await;
    let took = seen.elapsed();
    // Asked to stop, it would have waited up to its 20 s shutdown timeout
    // for the attach, which the silent source holds for 60 s.
    assert!(took < Duration::from_secs(5), "the leader ran on for {took:?} after it lost the Lease");
    assert!(!first.logs().contains("controllers stopped"), "it waited for its controllers: {}", first.logs());
    println!("a leader that lost its Lease with an attach in flight exited {took:?} after it saw the loss");
}
