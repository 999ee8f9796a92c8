//! resolve: the Workspace and its database, the Connection and the schema
//! it wants, read from the stores. A Workspace made again under the same
//! name, a gone Connection (detached everywhere) and a draft stop here.

use std::sync::Arc;

use kube::{Resource, ResourceExt};

use super::{Outcome, Step, WsKey};
use crate::api::{Connection, DRAFT_ANNOTATION, DeletionPolicy, Failure, Reason, Workspace, WorkspaceConnection, is_draft};
use crate::controller::context::Context;
use crate::controller::resolve;
use crate::postgres::plan::Owner;
use crate::postgres::{Db, WorkspaceDb};

/// What an attachment refers to, found.
pub struct Resolved {
    pub ns: String,
    pub ws_key: WsKey,
    pub ws: Arc<Workspace>,
    pub db: Db,
    pub conn: Arc<Connection>,
    pub owner: Owner,
    pub schema: String,
}

/// `seen`: the uid of the Workspace found, once it is found, for the
/// report to pin (whatever the later steps find).
pub async fn resolve(ctx: &Context, att: &WorkspaceConnection, seen: &mut Option<String>) -> Result<Resolved, Outcome> {
    let ns = att.namespace().unwrap_or_default();
    let ws_key = (ns.clone(), att.spec.workspace.clone());
    let ws = resolve::workspace(ctx, &ns, &att.spec.workspace, None)?;
    pinned_workspace(att, &ws)?;
    seen.clone_from(&ws.metadata.uid);
    let db = resolve::database(ctx, &ws).await?;
    let conn = ctx.stores.connection(&ns, &att.spec.connection).filter(|c| c.meta().deletion_timestamp.is_none());
    let Some(conn) = conn else {
        return Err(connection_gone(ctx, att, &ws_key, &db, &ws.spec.readers).await.into());
    };
    // A draft is tested, and attached nowhere until it is created; what an
    // attachment made before it became one stays as it is.
    if is_draft(&conn) {
        return Err(Failure::new(
            Reason::ConnectionDraft,
            format!(
                "Connection {:?} is a draft (annotation {DRAFT_ANNOTATION}): it is attached once it is created, when the annotation \
                 is removed",
                att.spec.connection
            ),
        )
        .into());
    }
    let schema = resolve::connection_schema(&conn)?;
    Ok(Resolved { ns, ws_key, ws, db, conn, owner: resolve::owner(att), schema })
}

/// Approved for the Workspace it first saw, not for another one made later
/// under the same name. The report of the reconcile that first resolves it
/// records that Workspace's uid (`Step::workspace_uid`), whatever else
/// that reconcile finds: one that never became Ready is pinned too.
pub(super) fn pinned_workspace(att: &WorkspaceConnection, ws: &Workspace) -> Result<(), Failure> {
    match att.status.as_ref().and_then(|s| s.workspace_uid.as_deref()) {
        Some(pinned) if ws.metadata.uid.as_deref() != Some(pinned) => Err(Failure::new(
            Reason::WorkspaceNotFound,
            format!(
                "Workspace {:?} was deleted and created again: this attachment was made for the one that was deleted and \
                 does not follow a new one; delete and re-create this WorkspaceConnection (as someone who may attach \
                 Connection {:?}) to attach it there",
                att.spec.workspace, att.spec.connection
            ),
        )),
        _ => Ok(()),
    }
}

/// Deleting a Connection detaches it everywhere (unless the attachment
/// orphans its schema).
async fn connection_gone(ctx: &Context, att: &WorkspaceConnection, ws_key: &WsKey, db: &dyn WorkspaceDb, readers: &[String]) -> Step {
    let missing = format!("Connection {:?} not found", att.spec.connection);
    if att.spec.deletion_policy == DeletionPolicy::Orphan {
        return Failure::new(Reason::ConnectionNotFound, format!("{missing}; deletionPolicy Orphan leaves its schema in place")).into();
    }
    match super::cleanup::detach(ctx, ws_key, db, readers, att, None).await {
        Ok(dropped) => Step { detached: dropped, ..Failure::new(Reason::ConnectionNotFound, format!("{missing}; detached")).into() },
        Err(e) => e.into(),
    }
}
