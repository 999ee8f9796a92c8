//! Attach by label: a Workspace's `connectionSelectors` (Turbot Pipes'
//! connection folders). Each selected Connection gets a WorkspaceConnection
//! owned by the Workspace, so that every rule of a hand-made attachment
//! (finalizer, markers, detach, deletion policy, status) holds for it too,
//! and one that stops matching has its attachment deleted, which detaches
//! it. The admission policy let the Workspace's author set the selectors
//! only if they may attach every Connection of the namespace, so nothing is
//! attached that its author could not attach by hand.
//!
//! `members` is pure: what is selected, what exists, and what to create and
//! delete. `reconcile` carries it out with the API.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Resource, ResourceExt};
use tracing::info;

use super::aggregates::selects;
use super::context::{Context, MANAGER};
use super::status;
use crate::api::{Connection, SelectedConnection, Workspace, WorkspaceConnection, WorkspaceConnectionSpec};

/// What the selectors ask for, against what exists.
#[derive(Debug, Default, PartialEq)]
pub struct Members {
    /// Each selected Connection and its attachment's name (empty until one
    /// exists), sorted by Connection.
    pub selected: Vec<(String, String)>,
    /// Attachments to create: (name, connection).
    pub create: Vec<(String, String)>,
    /// Attachments this Workspace made that no selector selects any more.
    pub delete: Vec<String>,
    /// Selected Connections whose attachment's name another object holds.
    pub taken: Vec<String>,
}

/// The name of the attachment a selector makes, as `kubectl manifold
/// attach` names one: `<workspace>-<connection>`, shortened with a hash
/// when longer than an object name may be.
pub fn attachment_name(workspace: &str, connection: &str) -> String {
    let name = format!("{workspace}-{connection}");
    if name.len() <= 253 {
        return name;
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(name.as_bytes());
    let suffix: String = hash.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let mut head = name[..242].trim_end_matches(['-', '.']).to_string();
    head.push('-');
    head.push_str(&suffix);
    head
}

/// Whether this Workspace made the attachment (it owns it).
pub fn made_by(att: &WorkspaceConnection, ws: &Workspace) -> bool {
    let uid = ws.metadata.uid.as_deref();
    uid.is_some() && att.owner_references().iter().any(|o| o.kind == "Workspace" && Some(o.uid.as_str()) == uid)
}

/// Pure: the members of `ws`'s selectors among `connections`, given the
/// workspace's attachments (`live`, made by hand or not) and `holder`, which
/// finds the namespace's attachment of a name.
pub fn members(
    ws: &Workspace,
    connections: &[Arc<Connection>],
    live: &[Arc<WorkspaceConnection>],
    holder: impl Fn(&str) -> Option<Arc<WorkspaceConnection>>,
) -> Members {
    let name = ws.name_any();
    let wanted: Vec<String> = {
        let mut names: Vec<String> = connections
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none() && !crate::api::is_draft(c))
            .filter(|c| ws.spec.connection_selectors.iter().any(|s| selects(s, c.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))))
            .map(|c| c.name_any())
            .collect();
        names.sort();
        names
    };
    let live: Vec<&Arc<WorkspaceConnection>> = live.iter().filter(|a| a.spec.workspace == name).collect();
    let mut out = Members::default();
    for conn in &wanted {
        // One attachment of the connection in this workspace is enough,
        // whoever made it: a second would want the same schema.
        let existing = live.iter().find(|a| &a.spec.connection == conn && a.metadata.deletion_timestamp.is_none());
        match existing {
            Some(a) => out.selected.push((conn.clone(), a.name_any())),
            None => {
                let att = attachment_name(&name, conn);
                match holder(&att) {
                    // Being deleted (a detach on its way): made again once it is gone.
                    Some(a) if a.spec.workspace == name && a.spec.connection == *conn => out.selected.push((conn.clone(), String::new())),
                    Some(_) => {
                        out.taken.push(conn.clone());
                        out.selected.push((conn.clone(), String::new()));
                    }
                    None => {
                        out.create.push((att, conn.clone()));
                        out.selected.push((conn.clone(), String::new()));
                    }
                }
            }
        }
    }
    for a in live {
        if made_by(a, ws) && a.metadata.deletion_timestamp.is_none() && !wanted.contains(&a.spec.connection) {
            out.delete.push(a.name_any());
        }
    }
    out
}

/// Creates and deletes the selectors' attachments, and says for each
/// selected Connection where it stands.
pub async fn reconcile(ws: &Workspace, ctx: &Context) -> Vec<SelectedConnection> {
    let ns = ws.namespace().unwrap_or_default();
    // Every workspace reconcile passes here: one without selectors that
    // made nothing costs one index lookup, not a walk of the stores.
    let live = ctx.stores.attachments_of_workspace(&ns, &ws.name_any());
    if ws.spec.connection_selectors.is_empty() && !live.iter().any(|a| made_by(a, ws)) {
        return Vec::new();
    }
    let connections: Vec<_> = match ws.spec.connection_selectors.is_empty() {
        true => Vec::new(),
        false => ctx.stores.connections.state().into_iter().filter(|c| c.namespace().as_deref() == Some(ns.as_str())).collect(),
    };
    let plan = members(ws, &connections, &live, |name| ctx.stores.attachment(&ns, name));
    let api: Api<WorkspaceConnection> = Api::namespaced(ctx.client.clone(), &ns);
    let mut failed = create(&api, ws, &plan.create).await;
    delete(&api, ws, &plan.delete).await;
    plan.selected
        .into_iter()
        .map(|(conn, attachment)| {
            let found = (!attachment.is_empty()).then(|| ctx.stores.attachment(&ns, &attachment)).flatten();
            let (state, message) = if let Some(message) = failed.remove(&conn) {
                ("CreateFailed".to_string(), message)
            } else if plan.taken.contains(&conn) {
                let name = attachment_name(&ws.name_any(), &conn);
                ("NameTaken".to_string(), format!("another WorkspaceConnection is named {name}: rename it, or attach {conn} by hand"))
            } else {
                match &found {
                    Some(a) => (status::attachment_state(a), String::new()),
                    None => ("Pending".to_string(), "its WorkspaceConnection is being made".to_string()),
                }
            };
            SelectedConnection { name: conn, attachment, state, message }
        })
        .collect()
}

/// Creates the attachments a selector asks for, owned by the Workspace
/// (so that they go with it). Why each one that could not be made failed,
/// by connection.
async fn create(api: &Api<WorkspaceConnection>, ws: &Workspace, create: &[(String, String)]) -> BTreeMap<String, String> {
    let mut failed = BTreeMap::new();
    let owner = OwnerReference {
        api_version: Workspace::api_version(&()).into_owned(),
        kind: Workspace::kind(&()).into_owned(),
        name: ws.name_any(),
        uid: ws.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let ns = ws.namespace().unwrap_or_default();
    for (name, connection) in create {
        let mut att = WorkspaceConnection::new(
            name,
            WorkspaceConnectionSpec { workspace: ws.name_any(), connection: connection.clone(), deletion_policy: Default::default() },
        );
        att.metadata.owner_references = Some(vec![owner.clone()]);
        let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match api.create(&params, &att).await {
            Ok(_) => {
                info!(workspace = %ws.name_any(), namespace = %ns, connection = %connection, attachment = %name, "selected: attaching")
            }
            // Made meanwhile: the next reconcile sees it.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                failed.insert(connection.clone(), format!("could not create WorkspaceConnection {name}: {e}"));
            }
        }
    }
    failed
}

/// Deletes the attachments this Workspace made that no selector selects.
async fn delete(api: &Api<WorkspaceConnection>, ws: &Workspace, names: &[String]) {
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                info!(workspace = %ws.name_any(), namespace = %ws.namespace().unwrap_or_default(), attachment = %name, "no longer selected: detaching")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(attachment = %name, error = %e, "could not delete an attachment no selector selects"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DatabaseSpec, SecretKeyRef, WorkspaceSpec};

    fn workspace(selectors: &[(&str, &str)]) -> Workspace {
        let mut ws = Workspace::new(
            "ws",
            WorkspaceSpec {
                database: DatabaseSpec { secret_ref: SecretKeyRef { name: "s".into(), key: "uri".into() }, ca_secret_ref: None },
                readers: vec![],
                search_path: None,
                deletion_policy: Default::default(),
                connection_selectors: selectors
                    .iter()
                    .map(|(k, v)| serde_json::from_value(serde_json::json!({ "matchLabels": { *k: *v } })).unwrap())
                    .collect(),
            },
        );
        ws.metadata.uid = Some("ws-uid".into());
        ws
    }

    fn connection(name: &str, team: &str) -> Arc<Connection> {
        let mut c: Connection = serde_json::from_value(serde_json::json!({
            "apiVersion": "manifold.dev/v1alpha1", "kind": "Connection",
            "metadata": { "name": name, "labels": { "team": team } },
            "spec": { "aggregator": { "connections": ["x"] } }
        }))
        .unwrap();
        c.metadata.namespace = Some("ns".into());
        Arc::new(c)
    }

    fn attachment(name: &str, ws: &str, conn: &str, owner: Option<&str>) -> Arc<WorkspaceConnection> {
        let mut a = WorkspaceConnection::new(
            name,
            WorkspaceConnectionSpec { workspace: ws.into(), connection: conn.into(), deletion_policy: Default::default() },
        );
        if let Some(uid) = owner {
            a.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "manifold.dev/v1alpha1".into(),
                kind: "Workspace".into(),
                name: ws.into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]);
        }
        Arc::new(a)
    }

    fn plan(ws: &Workspace, conns: &[Arc<Connection>], atts: &[Arc<WorkspaceConnection>]) -> Members {
        members(ws, conns, atts, |name| atts.iter().find(|a| a.name_any() == name).cloned())
    }

    #[test]
    fn selected_connections_get_an_attachment_and_unselected_ones_lose_theirs() {
        let ws = workspace(&[("team", "payments")]);
        let conns = [connection("a", "payments"), connection("b", "payments"), connection("c", "search"), connection("d", "search")];
        let atts = [
            attachment("ws-b", "ws", "b", Some("ws-uid")), // made by the selector, still selected
            attachment("ws-c", "ws", "c", Some("ws-uid")), // made by the selector, no longer selected
            attachment("by-hand", "ws", "d", None),        // made by hand: never deleted
            attachment("other-ws-a", "other", "a", None),  // another workspace's
        ];
        let m = plan(&ws, &conns, &atts);
        assert_eq!(m.create, [("ws-a".to_string(), "a".to_string())]);
        assert_eq!(m.delete, ["ws-c"]);
        assert_eq!(m.selected, [("a".to_string(), String::new()), ("b".to_string(), "ws-b".to_string())]);
        assert!(m.taken.is_empty());
    }

    #[test]
    fn an_attachment_made_by_hand_counts_and_a_taken_name_is_reported() {
        let ws = workspace(&[("team", "payments")]);
        let conns = [connection("a", "payments"), connection("b", "payments")];
        let atts = [attachment("mine", "ws", "a", None), attachment("ws-b", "elsewhere", "zzz", None)];
        let m = plan(&ws, &conns, &atts);
        assert!(m.create.is_empty(), "{m:?}");
        assert_eq!(m.selected[0], ("a".to_string(), "mine".to_string()));
        assert_eq!(m.taken, ["b"]);
    }

    #[test]
    fn without_selectors_the_workspace_deletes_only_what_it_made() {
        let ws = workspace(&[]);
        let conns = [connection("a", "payments")];
        let atts = [attachment("ws-a", "ws", "a", Some("ws-uid")), attachment("hand", "ws", "a", None)];
        let m = plan(&ws, &conns, &atts);
        assert_eq!(m.delete, ["ws-a"]);
        assert!(m.create.is_empty() && m.selected.is_empty());
    }

    #[test]
    fn a_draft_is_selected_once_it_is_created() {
        let ws = workspace(&[("team", "payments")]);
        let mut draft = (*connection("a", "payments")).clone();
        draft.metadata.annotations = Some([(crate::api::DRAFT_ANNOTATION.to_string(), "true".to_string())].into());
        let m = plan(&ws, &[Arc::new(draft.clone())], &[]);
        assert!(m.create.is_empty() && m.selected.is_empty(), "{m:?}");
        draft.metadata.annotations = None;
        let m = plan(&ws, &[Arc::new(draft)], &[]);
        assert_eq!(m.create, [("ws-a".to_string(), "a".to_string())]);
    }

    #[test]
    fn long_names_are_shortened_predictably() {
        let name = attachment_name(&"w".repeat(200), &"c".repeat(100));
        assert!(name.len() <= 253, "{}", name.len());
        assert_eq!(name, attachment_name(&"w".repeat(200), &"c".repeat(100)));
        assert_ne!(name, attachment_name(&"w".repeat(200), &"c".repeat(101)));
        assert_eq!(attachment_name("analytics", "sales"), "analytics-sales");
    }
}
