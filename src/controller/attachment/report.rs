//! report: one status patch, only if it changed, and the Events of what
//! happened.

use kube::ResourceExt;
use kube::api::Api;
use tracing::info;

use super::Step;
use crate::api::{Failure, Reason, WorkspaceConnection, WorkspaceConnectionStatus};
use crate::controller::context::{Context, Error};
use crate::controller::status::{self, Announce};
use crate::postgres::plan::Change;

/// Writes the status if it changed, and publishes Events for what happened.
pub async fn report(att: &WorkspaceConnection, ctx: &Context, step: &Step) -> Result<(), Error> {
    let current = att.status.as_ref();
    let previous =
        current.and_then(|s| crate::api::conditions::find(&s.conditions, crate::api::conditions::READY)).map(|c| c.reason.clone());
    let ready = step.outcome.reason.is_success();
    let applied = matches!(step.change, Some(ref c) if *c != Change::None);
    let last_applied_at = if applied {
        Some(status::now())
    } else {
        match current.and_then(|s| s.last_applied_at.clone()) {
            Some(t) => Some(t),
            // The store may not have seen the status that recorded the
            // attach yet; read it, rather than erase the time.
            None if ready => {
                let api: Api<WorkspaceConnection> = Api::namespaced(ctx.client.clone(), &att.namespace().unwrap_or_default());
                api.get_status(&att.name_any()).await?.status.and_then(|s| s.last_applied_at)
            }
            None => None,
        }
    };
    // The Workspace it first saw is the one it stays with.
    let workspace_uid = current.and_then(|s| s.workspace_uid.clone()).or_else(|| step.workspace_uid.clone());
    let status = WorkspaceConnectionStatus {
        workspace_uid,
        schema: step.schema.clone().or_else(|| current.and_then(|s| s.schema.clone())),
        tables: if ready { step.tables.map(|t| t as i32) } else { None },
        last_applied_at,
        proof: step.proof.clone().or_else(|| current.and_then(|s| s.proof.clone())),
        ..Default::default()
    };
    let quiet_when_missing = |f: &Failure| match f.reason {
        Reason::ConnectionNotFound | Reason::WorkspaceNotFound => Announce::Normal,
        _ => Announce::Warning,
    };
    if applied {
        // Logged before the status says Ready, so that the log leads what a
        // watcher sees.
        info!(attachment = %att.name_any(), namespace = %att.namespace().unwrap_or_default(), change = ?step.change, "attached");
    }
    status::report(ctx, att, current, status, &step.outcome, Vec::new(), quiet_when_missing).await?;

    if !step.detached.is_empty() {
        let note = format!("dropped schema {} from Workspace {:?}", step.detached.join(", "), att.spec.workspace);
        status::event(ctx, att, false, Reason::Detached.as_str(), "Detach", note).await;
    }
    if applied {
        status::event(ctx, att, false, Reason::Attached.as_str(), "Attach", step.outcome.message.clone()).await;
    } else if !ready && previous.as_deref() != Some(step.outcome.reason.as_str()) {
        info!(attachment = %att.name_any(), namespace = %att.namespace().unwrap_or_default(), reason = %step.outcome.reason, message = %step.outcome.message, "not attached");
    }
    Ok(())
}
