//! cleanup: what an attachment's deletion does in the database (detach,
//! orphan, or leave), and the detach of an attachment whose Connection is
//! gone.

use std::collections::BTreeSet;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::{Step, WsKey};
use crate::api::{DeletionPolicy, Failure, Reason, WorkspaceConnection};
use crate::controller::context::{BackoffKey, Context, Error};
use crate::controller::deletion::{self, cleanup_database};
use crate::controller::resolve;
use crate::controller::status;
use crate::postgres::WorkspaceDb;

/// The schemas an attachment may own in a workspace: the one in its status,
/// `also` (the one its connection wants), and any other the observation
/// shows as its own.
async fn owned(
    ctx: &Context,
    ws_key: &WsKey,
    db: &dyn WorkspaceDb,
    readers: &[String],
    att: &WorkspaceConnection,
    also: Option<&str>,
) -> Result<BTreeSet<String>, Failure> {
    let owner = resolve::owner(att);
    let mut names: BTreeSet<String> =
        ctx.observations.with(ws_key, db, readers, ctx.settings.resync, |s, _| s.owned_by(&owner)).await?.into_iter().collect();
    names.extend(att.status.as_ref().and_then(|s| s.schema.clone()));
    names.extend(also.map(str::to_owned));
    Ok(names)
}

/// Drops whatever in the workspace carries this attachment's marker.
/// Returns the schemas dropped.
pub async fn detach(
    ctx: &Context,
    ws_key: &WsKey,
    db: &dyn WorkspaceDb,
    readers: &[String],
    att: &WorkspaceConnection,
    also: Option<&str>,
) -> Result<Vec<String>, Failure> {
    let owner = resolve::owner(att);
    let mut dropped = Vec::new();
    db.expect_work();
    for name in owned(ctx, ws_key, db, readers, att, also).await? {
        let done = db.detach(&owner, &name, readers).await?;
        ctx.observations.record(ws_key, &name, None);
        if done.schema {
            dropped.push(name);
        }
    }
    Ok(dropped)
}

/// Marks whatever in the workspace carries this attachment's marker as
/// orphaned, so that the workspace's own cleanup leaves it.
async fn orphan(ctx: &Context, ws_key: &WsKey, db: &dyn WorkspaceDb, att: &WorkspaceConnection) -> Result<(), Failure> {
    let owner = resolve::owner(att);
    for name in owned(ctx, ws_key, db, &[], att, None).await? {
        db.orphan(&owner, &name).await?;
        ctx.observations.forget(ws_key);
    }
    Ok(())
}

/// What an attachment's deletion does in the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Removal {
    /// Leave everything as it is: it goes with an `Orphan` Workspace.
    Leave,
    /// Mark what it owns as orphaned, so that nothing drops it later.
    Orphan,
    /// Drop what it owns; `workspace_going`: its Workspace is being
    /// deleted or gone, and its own removal drops whatever this cannot.
    Detach { workspace_going: bool },
}

/// The deletion policy that applies: the Workspace's `Orphan` when the
/// attachment goes with its Workspace, else the attachment's own.
fn removal(att: &WorkspaceConnection, workspace: Option<&crate::api::Workspace>) -> Removal {
    let workspace_going = workspace.is_none_or(|w| w.meta().deletion_timestamp.is_some());
    let workspace_orphans = workspace.is_some_and(|w| w.spec.deletion_policy == DeletionPolicy::Orphan);
    if workspace_going && workspace_orphans {
        Removal::Leave
    } else if att.spec.deletion_policy == DeletionPolicy::Orphan {
        Removal::Orphan
    } else {
        Removal::Detach { workspace_going }
    }
}

/// An attachment's deletion never waits for what cannot come back: with
/// its Workspace gone, the Workspace's own removal already dropped what
/// this attachment made (or gave up on that database, and said so); with
/// its Workspace going, that removal is on its way and drops it; with its
/// Connection gone, it drops what the catalog shows as its own.
pub async fn cleanup(att: &WorkspaceConnection, ctx: &Context) -> Result<Action, Error> {
    let ns = att.namespace().unwrap_or_default();
    // A Workspace made again under the same name is not this attachment's:
    // its own is gone, and took what this attachment made with it.
    let workspace = ctx.stores.workspace(&ns, &att.spec.workspace).filter(|ws| super::resolve::pinned_workspace(att, ws).is_ok());
    let how = removal(att, workspace.as_deref());
    match remove(att, ctx, how).await {
        Ok(dropped) => {
            if !dropped.is_empty() {
                let note = format!("dropped schema {} from Workspace {:?}", dropped.join(", "), att.spec.workspace);
                status::event(ctx, att, false, Reason::Detached.as_str(), "Detach", note).await;
            }
            match how {
                Removal::Leave => {
                    info!(attachment = %att.name_any(), namespace = %ns, "deleted with its Workspace, whose deletionPolicy is Orphan; schema left in place")
                }
                Removal::Orphan => {
                    info!(attachment = %att.name_any(), namespace = %ns, "deleted with deletionPolicy Orphan; schema left in place")
                }
                Removal::Detach { .. } => {}
            }
            ctx.backoff.succeeded(&BackoffKey::of(att));
            Ok(Action::await_change())
        }
        Err(e) => failed(att, ctx, e).await,
    }
}

/// The uid of the Workspace this attachment first saw.
fn pinned_uid(att: &WorkspaceConnection) -> Option<&str> {
    att.status.as_ref().and_then(|s| s.workspace_uid.as_deref())
}

/// Does what the removal says in the database; the schemas dropped.
async fn remove(att: &WorkspaceConnection, ctx: &Context, how: Removal) -> Result<Vec<String>, Failure> {
    let ns = att.namespace().unwrap_or_default();
    let ws_key = (ns.clone(), att.spec.workspace.clone());
    match how {
        Removal::Leave => Ok(Vec::new()),
        Removal::Orphan => match cleanup_database(ctx, &ns, &att.spec.workspace, pinned_uid(att)) {
            // Marked, so that a workspace deleted later (or with the
            // namespace) keeps the schema too.
            Some(db) => orphan(ctx, &ws_key, &db, att).await.map(|_| Vec::new()),
            None => Ok(Vec::new()),
        },
        // The Workspace's own removal finds in the catalog whatever any
        // attachment of its namespace made, whether the attachment is still
        // around or not, and drops it before the Workspace goes (or says
        // what it left, if the database is gone): nothing here to wait for.
        Removal::Detach { workspace_going: true } => Ok(Vec::new()),
        Removal::Detach { workspace_going: false } => {
            let (ws, db) = resolve::workspace_database(ctx, &ns, &att.spec.workspace, pinned_uid(att)).await?;
            let desired = ctx.stores.connection(&ns, &att.spec.connection).and_then(|c| resolve::connection_schema(&c).ok());
            detach(ctx, &ws_key, &db, &ws.spec.readers, att, desired.as_deref()).await
        }
    }
}

/// A removal that failed: given up on after the bound (a Warning Event
/// names what may remain), or held with the reason in status until the
/// database answers.
async fn failed(att: &WorkspaceConnection, ctx: &Context, e: Failure) -> Result<Action, Error> {
    let ns = att.namespace().unwrap_or_default();
    match deletion::give_up(ctx, att, &ns, &e).await {
        Some(bound) => {
            let note = format!(
                "gave up on the database of Workspace {:?} after {bound:?}: {}. What this attachment made may remain \
                 there: schema {:?} and its server and user mapping, whose comments name this attachment",
                att.spec.workspace,
                e.message,
                att.status.as_ref().and_then(|s| s.schema.clone()).unwrap_or_default()
            );
            warn!(attachment = %att.name_any(), namespace = %ns, "{note}");
            status::event(ctx, att, true, Reason::CleanupAbandoned.as_str(), "Detach", note).await;
            ctx.backoff.succeeded(&BackoffKey::of(att));
            Ok(Action::await_change())
        }
        None => {
            let held = Failure::new(e.reason, deletion::held_message("wsconn", &att.name_any(), &e));
            super::report::report(att, ctx, &Step::from(held.clone())).await?;
            Err(Error::Held(held))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{WorkspaceConnectionSpec, WorkspaceConnectionStatus};
    use crate::controller::testing::{FakeDb, context, owned};
    use crate::postgres::plan::Owner;

    fn attachment(schema: Option<&str>) -> WorkspaceConnection {
        let mut att = WorkspaceConnection::new(
            "a1",
            WorkspaceConnectionSpec { workspace: "ws".into(), connection: "c".into(), deletion_policy: DeletionPolicy::Delete },
        );
        att.metadata.namespace = Some("t".into());
        att.status = Some(WorkspaceConnectionStatus { schema: schema.map(str::to_owned), ..Default::default() });
        att
    }

    fn owner(name: &str) -> Owner {
        Owner { namespace: "t".into(), name: name.into() }
    }

    #[tokio::test]
    async fn a_detach_drops_every_schema_the_attachment_may_own_and_nothing_else() {
        let att = attachment(Some("old"));
        let ctx = context(vec![], vec![], vec![att.clone()]);
        let db = FakeDb::with(&[("cur", owned(&owner("a1"))), ("x", owned(&owner("other")))]);
        let key = ("t".to_string(), "ws".to_string());
        let dropped = detach(&ctx, &key, db.as_ref(), &[], &att, Some("wanted")).await.unwrap();
        assert_eq!(dropped, ["cur"], "only what was there is reported dropped");
        let detaches: Vec<String> = db.calls().into_iter().filter(|c| c.starts_with("detach")).collect();
        assert_eq!(detaches, ["detach t/a1 cur", "detach t/a1 old", "detach t/a1 wanted"], "its marker's, its status's, its spec's");
        assert!(db.catalog.lock().unwrap().contains_key("x"), "another attachment's schema stays");
    }

    #[tokio::test]
    async fn a_failed_detach_stops_with_its_reason() {
        let att = attachment(Some("cur"));
        let ctx = context(vec![], vec![], vec![att.clone()]);
        let db = FakeDb::with(&[("cur", owned(&owner("a1")))]);
        db.fail("cur", Failure::new(Reason::Timeout, "canceling statement due to lock timeout"));
        let key = ("t".to_string(), "ws".to_string());
        let err = detach(&ctx, &key, db.as_ref(), &[], &att, None).await.unwrap_err();
        assert_eq!(err.reason, Reason::Timeout);
        assert!(db.catalog.lock().unwrap().contains_key("cur"));
    }

    #[tokio::test]
    async fn an_orphan_marks_what_the_catalog_shows_as_its_own() {
        let att = attachment(None);
        let ctx = context(vec![], vec![], vec![att.clone()]);
        let db = FakeDb::with(&[("cur", owned(&owner("a1"))), ("x", owned(&owner("other")))]);
        let key = ("t".to_string(), "ws".to_string());
        orphan(&ctx, &key, db.as_ref(), &att).await.unwrap();
        let marks: Vec<String> = db.calls().into_iter().filter(|c| c.starts_with("orphan")).collect();
        assert_eq!(marks, ["orphan t/a1 cur"]);
    }

    #[test]
    fn the_policy_that_applies_is_the_workspaces_orphan_when_both_go() {
        let ws = |policy: DeletionPolicy, going: bool| {
            let mut w: crate::api::Workspace = serde_json::from_value(serde_json::json!({
                "apiVersion": "manifold.dev/v1alpha1", "kind": "Workspace", "metadata": { "name": "ws", "namespace": "t" },
                "spec": { "database": { "secretRef": { "name": "db", "key": "uri" } } },
            }))
            .unwrap();
            w.spec.deletion_policy = policy;
            if going {
                w.metadata.deletion_timestamp = Some(status::now());
            }
            w
        };
        let att = attachment(None);
        assert_eq!(removal(&att, Some(&ws(DeletionPolicy::Orphan, true))), Removal::Leave);
        assert_eq!(removal(&att, Some(&ws(DeletionPolicy::Orphan, false))), Removal::Detach { workspace_going: false });
        assert_eq!(removal(&att, None), Removal::Detach { workspace_going: true });
        let mut orphaned = attachment(None);
        orphaned.spec.deletion_policy = DeletionPolicy::Orphan;
        assert_eq!(removal(&orphaned, Some(&ws(DeletionPolicy::Delete, false))), Removal::Orphan);
    }
}
