//! Attach by label: a Workspace's `connectionSelectors` attach every
//! Connection whose labels match, now and later, and detach one that stops
//! matching, through WorkspaceConnections the Workspace owns. Setting them
//! takes `attach` on every Connection of the namespace.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use manifold::api::{Connection, Workspace};

use crate::attach::{World, world};
use crate::support::world::{as_is, schema_exists};
use crate::support::{control_plane, stdout_ok, wait_for};

fn team(team: &'static str) -> impl FnOnce(&mut Connection) {
    move |c| c.metadata.labels = Some([("team".to_string(), team.to_string())].into())
}

fn selecting(team: &'static str) -> impl FnOnce(&mut Workspace) {
    move |ws| {
        ws.spec.connection_selectors = vec![serde_json::from_value(serde_json::json!({ "matchLabels": { "team": team } })).unwrap()];
    }
}

/// The attachments of `ws`'s selectors, by name, once they are as `want`.
async fn selected(w: &World, ws: &str, want: &[&str]) -> Workspace {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    w.wait_workspace(ws, &format!("selected {want:?}, all Ready"), |w| {
        let selected = w.status.as_ref().map(|s| s.selected.clone()).unwrap_or_default();
        selected.iter().map(|s| s.name.clone()).collect::<Vec<_>>() == want && selected.iter().all(|s| s.state == "Ready")
    })
    .await
}

pub async fn a_selector_attaches_matching_connections_now_and_later() {
    let w = world("select").await;
    w.connection("a", team("payments"));
    w.connection("b", team("payments"));
    w.connection("c", team("search"));
    w.workspace_with("ws", selecting("payments"));

    let ws = selected(&w, "ws", &["a", "b"]).await;
    let owner = ws.metadata.uid.clone().unwrap();
    for att in ["ws-a", "ws-b"] {
        let made = w.wait_ready(att).await;
        assert!(made.owner_references().iter().any(|o| o.uid == owner && o.controller == Some(true)), "{att} is owned by the Workspace");
    }
    assert!(w.attachments().get_opt("ws-c").await.unwrap().is_none(), "c is not selected");
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["get", "mws", "ws", "-n", &w.t.ns])
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("Selected:    2 connections by label"), "{shown}");
    assert!(shown.lines().any(|l| l.trim_start().starts_with("a ") && l.contains("ws-a") && l.contains("Ready")), "{shown}");
    let db = w.ws().await;
    assert!(schema_exists(&db, "a").await && schema_exists(&db, "b").await && !schema_exists(&db, "c").await);

    // A label change detaches one; a new matching connection joins.
    stdout_ok(&w.t.kubectl(&["label", "conn", "b", "team=search", "--overwrite"]));
    w.connection("d", team("payments"));
    selected(&w, "ws", &["a", "d"]).await;
    w.wait_gone("ws-b").await;
    w.wait_ready("ws-d").await;
    let db = w.ws().await;
    assert!(!schema_exists(&db, "b").await, "the connection that stopped matching was detached");
    assert!(schema_exists(&db, "d").await);

    // An attachment made by hand counts, and is never the selector's to
    // delete; one of the selector's deleted by hand comes back.
    w.attach("mine", "ws", "c", as_is);
    w.wait_ready("mine").await;
    stdout_ok(&w.t.kubectl(&["label", "conn", "c", "team=payments", "--overwrite"]));
    let ws = selected(&w, "ws", &["a", "c", "d"]).await;
    let c = ws.status.unwrap().selected.into_iter().find(|s| s.name == "c").unwrap();
    assert_eq!(c.attachment, "mine");
    assert!(w.attachments().get_opt("ws-c").await.unwrap().is_none());
    w.attachments().delete("ws-a", &DeleteParams::default()).await.unwrap();
    wait_for("ws-a made again", Duration::from_secs(60), || async {
        match w.attachments().get_opt("ws-a").await.map_err(|e| e.to_string())? {
            Some(a) if a.metadata.deletion_timestamp.is_none() => Ok(()),
            other => Err(format!("{:?}", other.map(|a| a.metadata.deletion_timestamp))),
        }
    })
    .await;
    w.wait_ready("ws-a").await;

    // Without selectors, what they made goes; what was made by hand stays.
    w.workspace_with("ws", as_is);
    w.wait_gone("ws-a").await;
    w.wait_gone("ws-d").await;
    w.wait_ready("mine").await;
    let db = w.ws().await;
    assert!(!schema_exists(&db, "a").await && !schema_exists(&db, "d").await && schema_exists(&db, "c").await);

    // Selected again, then the Workspace deleted: its attachments go with it.
    w.workspace_with("ws", selecting("payments"));
    selected(&w, "ws", &["a", "c", "d"]).await;
    let workspaces: Api<Workspace> = w.t.api();
    workspaces.delete("ws", &DeleteParams::default()).await.unwrap();
    for att in ["ws-a", "ws-d"] {
        w.wait_gone(att).await;
    }
    assert!(w.attachments().get_opt("mine").await.unwrap().is_some(), "an attachment made by hand is not the Workspace's to delete");
}

pub async fn a_selector_needs_attach_on_every_connection() {
    let cp = control_plane();
    let w = world("select-rbac").await;
    w.connection("a", team("payments"));
    w.workspace("plain");
    // May write the kinds and attach `a` by name, but not every Connection.
    w.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: tenant }\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: { name: tenant }\nrules:\n\
         - apiGroups: [manifold.dev]\n  resources: [connections, workspaces, workspaceconnections]\n  verbs: [get, list, watch, create, update, patch, delete]\n\
         - apiGroups: [manifold.dev]\n  resources: [connections]\n  resourceNames: [a]\n  verbs: [attach]\n\
         - apiGroups: [\"\"]\n  resources: [secrets]\n  resourceNames: [tenant-db]\n  verbs: [get]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: { name: tenant }\n\
         roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: tenant }\nsubjects: [{ kind: ServiceAccount, name: tenant }]\n",
    );
    w.apply(&crate::support::secret_yaml("tenant-db", &[("uri", &w.pg.owner_uri(&w.ws_db))]));
    let kubeconfig = cp.token_kubeconfig(&w.t.ns, "tenant");
    let workspace = |selectors: &str| {
        format!(
            "apiVersion: manifold.dev/v1alpha1\nkind: Workspace\nmetadata: {{ name: mine }}\n\
             spec: {{ database: {{ secretRef: {{ name: tenant-db }} }}{selectors} }}\n"
        )
    };
    let as_tenant = |yaml: &str| cp.kubectl_stdin(&["--kubeconfig", kubeconfig.to_str().unwrap(), "-n", &w.t.ns, "apply", "-f", "-"], yaml);
    // A Workspace without selectors is the tenant's to make.
    stdout_ok(&as_tenant(&workspace("")));
    // Selectors would attach Connections the tenant may not attach.
    let out = as_tenant(&workspace(", connectionSelectors: [{ matchLabels: { team: payments } }]"));
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a selector was admitted for a tenant that may attach only a");
    assert!(said.contains("may not set connectionSelectors on Workspace mine") && said.contains("without resourceNames"), "{said}");
    // Given attach on every Connection of the namespace, it may.
    w.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: { name: attach-all }\nrules:\n\
         - apiGroups: [manifold.dev]\n  resources: [connections]\n  verbs: [attach]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: { name: attach-all }\n\
         roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: attach-all }\nsubjects: [{ kind: ServiceAccount, name: tenant }]\n",
    );
    wait_for("the selector admitted", Duration::from_secs(20), || async {
        let out = as_tenant(&workspace(", connectionSelectors: [{ matchLabels: { team: payments } }]"));
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    })
    .await;
    selected(&w, "mine", &["a"]).await;
    assert!(w.attachments().get("mine-a").await.unwrap().name_any() == "mine-a");
}
