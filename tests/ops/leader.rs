//! Two operator processes with leader election: only the leader reconciles;
//! when it is killed, the standby takes over and new work still converges.

use std::time::{Duration, Instant};

use crate::support::world::as_is;
use crate::support::world::{WAIT, world_without_operator};
use crate::support::{Operator, control_plane, stdout_ok, wait_for};

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
