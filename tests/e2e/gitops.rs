//! What GitOps tools see: the kustomize overlays apply to a real apiserver,
//! and real status objects follow the kstatus rules (Flux, `kubectl wait`)
//! and get the right health from the Argo CD health.lua, run in Lua 5.1 as
//! Argo CD's gopher-lua runs it.

use kube::api::{Patch, PatchParams};
use manifold::api::TestOutcome;
use serde_json::Value;

use crate::attach::{World, world};
use crate::support::world::WAIT;
use crate::support::world::as_is;
use crate::support::{control_plane, repo_root, secret_yaml, stdout_ok, wait_for};

/// kstatus's computation for a resource with standard conditions.
fn kstatus(obj: &Value) -> &'static str {
    let Some(status) = obj.get("status") else { return "InProgress" };
    let generation = obj["metadata"]["generation"].as_i64();
    if status["observedGeneration"].as_i64() < generation {
        return "InProgress";
    }
    let condition = |t: &str| {
        status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == t).map(|c| c["status"].as_str().unwrap_or(""))
    };
    if condition("Reconciling") == Some("True") {
        "InProgress"
    } else if condition("Stalled") == Some("True") {
        "Failed"
    } else if condition("Ready") == Some("True") {
        "Current"
    } else {
        "InProgress"
    }
}

/// Argo CD's health of `obj`, from examples/gitops/argocd/health.lua.
fn argo_health(obj: &Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    let lua = mlua::Lua::new();
    let script = std::fs::read_to_string(repo_root().join("examples/gitops/argocd/health.lua")).unwrap();
    let value = lua.to_value(obj).unwrap();
    lua.globals().set("obj", value).unwrap();
    let hs: mlua::Table = lua.load(&script).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

/// Every condition carries the status's observedGeneration.
fn assert_generations(obj: &Value) {
    let observed = &obj["status"]["observedGeneration"];
    for c in obj["status"]["conditions"].as_array().unwrap() {
        assert_eq!(&c["observedGeneration"], observed, "{c}");
    }
}

fn get(w: &World, kind: &str, name: &str) -> Value {
    serde_json::from_str(&stdout_ok(&w.t.kubectl(&["get", kind, name, "-o", "json"]))).unwrap()
}

pub async fn status_objects_follow_kstatus_and_argo_health() {
    let w = world("kstatus").await;
    w.workspace("ws");
    w.connection("good", as_is);
    w.attach("ws-good", "ws", "good", as_is);
    // A schema someone made by hand: the attachment is stalled.
    w.ws().await.batch_execute("CREATE SCHEMA taken").await.unwrap();
    w.connection("taken", as_is);
    w.attach("ws-taken", "ws", "taken", as_is);
    // A workspace that does not exist yet: in progress.
    w.attach("nowhere-good", "nowhere", "good", as_is);
    // A wrong password: the connection's test fails.
    let wrong = format!("wrong-{}", crate::support::secret_marker());
    w.apply(&secret_yaml("badpw-creds", &[("user", &w.src.user), ("password", &wrong)]));
    w.connection_only("badpw", as_is);
    // A workspace whose Secret is missing: waiting for it.
    w.apply(
        "apiVersion: manifold.dev/v1alpha1\nkind: Workspace\nmetadata: { name: nosecret }\n\
         spec: { database: { secretRef: { name: not-there } } }\n",
    );
    w.wait_ready("ws-good").await;
    w.wait_reason("ws-taken", "SchemaConflict").await;
    w.wait_reason("nowhere-good", "WorkspaceNotFound").await;
    w.wait_test("badpw", "Failed", |t| t.result == TestOutcome::Failed).await;
    w.wait_test("good", "Passed", |t| t.result == TestOutcome::Passed).await;

    for (kind, name, kstatus_want, argo_want) in [
        ("wsconn", "ws-good", "Current", "Healthy"),
        ("wsconn", "ws-taken", "Failed", "Degraded"),
        ("wsconn", "nowhere-good", "InProgress", "Progressing"),
        ("conn", "good", "Current", "Healthy"),
        ("conn", "badpw", "Failed", "Degraded"),
        ("mws", "ws", "Current", "Healthy"),
        ("mws", "nosecret", "InProgress", "Progressing"),
    ] {
        let obj = wait_for(&format!("{kind}/{name} settles"), WAIT, || async {
            let obj = get(&w, kind, name);
            if kstatus(&obj) == kstatus_want { Ok(obj) } else { Err(obj.to_string()) }
        })
        .await;
        assert_generations(&obj);
        let (health, message) = argo_health(&obj);
        assert_eq!(health, argo_want, "{kind}/{name}: {message}");
        assert!(!message.is_empty(), "{kind}/{name}: a message for a person");
        // A newer generation than the status describes is always progress.
        let mut newer = obj.clone();
        newer["metadata"]["generation"] = Value::from(obj["metadata"]["generation"].as_i64().unwrap() + 1);
        assert_eq!(kstatus(&newer), "InProgress");
        assert_eq!(argo_health(&newer).0, "Progressing");
    }

    // A real change: the new generation is observed, then Current again.
    w.attachments()
        .patch("ws-good", &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": { "deletionPolicy": "Orphan" } })))
        .await
        .unwrap();
    let obj = wait_for("generation 2 observed", WAIT, || async {
        let obj = get(&w, "wsconn", "ws-good");
        if obj["status"]["observedGeneration"] == 2 && kstatus(&obj) == "Current" { Ok(obj) } else { Err(obj.to_string()) }
    })
    .await;
    assert_generations(&obj);
    // kubectl wait, as a pipeline would use it.
    stdout_ok(&w.t.kubectl(&["wait", "--for=condition=Ready", "--timeout=30s", "wsconn/ws-good", "conn/good", "mws/ws"]));
}

pub async fn argocd_cm_carries_health_lua_for_each_kind() {
    let lua = std::fs::read_to_string(repo_root().join("examples/gitops/argocd/health.lua")).unwrap();
    let cm = std::fs::read_to_string(repo_root().join("examples/gitops/argocd/argocd-cm.yaml")).unwrap();
    let indented: String = lua.lines().map(|l| if l.is_empty() { "\n".to_owned() } else { format!("    {l}\n") }).collect();
    for kind in ["Workspace", "Connection", "WorkspaceConnection"] {
        let key = format!("  resource.customizations.health.manifold.dev_{kind}: |\n{indented}");
        assert!(cm.contains(&key), "argocd-cm.yaml lacks the current health.lua for {kind}");
    }
}

pub async fn the_overlays_apply_to_a_real_apiserver() {
    let cp = control_plane();
    for org in ["org-a", "org-b"] {
        let _ = cp.kubectl(&["create", "namespace", org]);
        let dir = repo_root().join("examples/gitops/overlays").join(org);
        stdout_ok(&cp.kubectl(&["apply", "--server-side", "-k", &dir.to_string_lossy()]));
    }
    let a = stdout_ok(&cp.kubectl(&["get", "manifold", "-n", "org-a", "-o", "name"]));
    assert_eq!(a.lines().count(), 3, "{a}");
    let b = stdout_ok(&cp.kubectl(&["get", "manifold", "-n", "org-b", "-o", "name"]));
    assert_eq!(b.lines().count(), 5, "{b}");
    let host = stdout_ok(&cp.kubectl(&[
        "get",
        "conn",
        "sales",
        "-n",
        "org-b",
        "-o",
        "jsonpath={.spec.plugin.postgres.host} {.spec.tables.include}",
    ]));
    assert_eq!(host, "sales-rw.org-b-data.svc [\"orders\",\"customers\"]");
}
