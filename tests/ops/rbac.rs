//! The chart's RBAC is sufficient and no more: the operator runs with a token
//! of the chart's ServiceAccount, a whole attach/test/detach scenario passes,
//! and the same token is refused what the operator has no need for. The
//! metrics show the scenario.

use kube::api::DeleteParams;
use manifold::api::TestOutcome;

use crate::support::world::as_is;
use crate::support::world::{WAIT, schema_exists, world_without_operator};
use crate::support::{Operator, control_plane, namespace, repo_root, stdout_ok, wait_for};

pub async fn the_chart_rbac_is_enough_and_no_more() {
    let cp = control_plane();
    let w = world_without_operator("rbac-org").await;
    let sys = namespace("rbac-sys").await;
    let other = namespace("rbac-other").await;
    let chart = repo_root().join("charts/manifold");
    let rendered = stdout_ok(&cp.helm(&[
        "template",
        "mf",
        &chart.to_string_lossy(),
        "-n",
        &sys.ns,
        "--set",
        &format!("watchNamespaces={{{}}}", w.t.ns),
        // The cluster has the policy from admission/ already; a second copy
        // under this release's name would collide with helm_install's.
        "--set",
        "admissionPolicy.enabled=false",
        // The people's ClusterRoles are cluster-wide; helm_install's
        // release of the same name makes them.
        "--set",
        "userRoles.enabled=false",
    ]));
    stdout_ok(&cp.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &rendered));
    let kubeconfig = cp.token_kubeconfig(&sys.ns, "mf-manifold");

    let op = Operator::start(
        &kubeconfig,
        &["--namespaces", &w.t.ns, "--leader-elect", "--lease-namespace", &sys.ns, "--lease-name", "mf-manifold", "--resync", "3s"],
    );
    wait_for("the operator is ready", WAIT, || async {
        match op.try_admin_get("/readyz") {
            Some((200, _)) => Ok(()),
            other => Err(format!("{:?}", other.map(|(c, _)| c))),
        }
    })
    .await;

    // Attach, test, detach.
    w.workspace("ws");
    w.connection("sales", as_is);
    w.attach("ws-sales", "ws", "sales", as_is);
    w.connection("stays", as_is);
    w.attach("ws-stays", "ws", "stays", as_is);
    w.wait_ready("ws-sales").await;
    w.wait_ready("ws-stays").await;
    w.wait_test("sales", "Passed", |t| t.result == TestOutcome::Passed).await;
    w.attachments().delete("ws-sales", &DeleteParams::default()).await.unwrap();
    w.wait_gone("ws-sales").await;
    assert!(!schema_exists(&w.ws().await, "sales").await);
    // A connection selector: the operator makes and deletes the
    // Workspace's attachments with the chart's RBAC.
    w.connection("picked", |c| c.metadata.labels = Some([("team".to_string(), "x".to_string())].into()));
    w.workspace_with("ws", |ws| {
        ws.spec.connection_selectors = vec![serde_json::from_value(serde_json::json!({ "matchLabels": { "team": "x" } })).unwrap()];
    });
    w.wait_ready("ws-picked").await;
    w.workspace_with("ws", as_is);
    w.wait_gone("ws-picked").await;
    let logs = op.logs();
    assert!(!logs.to_lowercase().contains("forbidden"), "the operator was refused something it needs:\n{logs}");

    // The same token, for things the operator has no need of.
    let sa = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
        all.extend_from_slice(args);
        cp.kubectl(&all)
    };
    stdout_ok(&sa(&["get", "secrets", "-n", &w.t.ns]));
    for (what, args) in [
        ("Secrets of a namespace outside its list", vec!["get", "secrets", "-n", other.ns.as_str()]),
        ("Secrets of every namespace", vec!["get", "secrets", "-A"]),
        ("writing Secrets", vec!["create", "secret", "generic", "x", "-n", w.t.ns.as_str(), "--from-literal=a=b"]),
        ("deleting its own kinds", vec!["delete", "connection", "sales", "-n", w.t.ns.as_str()]),
        ("Pods", vec!["get", "pods", "-n", w.t.ns.as_str()]),
        ("ConfigMaps", vec!["get", "configmaps", "-n", sys.ns.as_str()]),
    ] {
        let out = sa(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.to_lowercase().contains("forbidden"), "{what} should be forbidden: {stderr}");
    }

    // The metrics moved with the scenario.
    for sample in [
        "manifold_reconciles_total{kind=\"WorkspaceConnection\"}",
        "manifold_reconciles_total{kind=\"Workspace\"}",
        "manifold_reconciles_total{kind=\"Connection\"}",
        "manifold_sql_statements_total{kind=\"ddl\"}",
        "manifold_sql_statements_total{kind=\"query\"}",
        "manifold_leader",
        "manifold_attachments{state=\"Ready\"}",
    ] {
        assert!(op.metric(sample) >= 1.0, "{sample} did not move:\n{}", op.admin_get("/metrics").1);
    }
    // A new connection's first test is either its own or the proof of the attach that imported it.
    let passed = op.metric("manifold_connection_tests_total{result=\"Passed\",reason=\"Passed\"}")
        + op.metric("manifold_connection_tests_total{result=\"Passed\",reason=\"ProvenByAttach\"}");
    assert!(passed >= 1.0, "no passed connection test was counted:\n{}", op.admin_get("/metrics").1);
    let (_, text) = op.admin_get("/metrics");
    assert!(text.contains("manifold_reconcile_duration_seconds_bucket"), "{text}");
    assert_eq!(op.admin_get("/healthz").0, 200);
}
