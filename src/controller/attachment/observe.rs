//! observe: the workspace's shared observation (one catalog query per
//! resync for all its attachments) as this attachment sees it.

use super::Outcome;
use super::resolve::Resolved;
use crate::controller::context::Context;
use crate::controller::observations::Seen;

pub async fn observe(ctx: &Context, att: &crate::api::WorkspaceConnection, r: &Resolved) -> Result<Seen, Outcome> {
    // Not in place yet: if this reconcile observes, an attach follows.
    if att.status.as_ref().is_none_or(|s| !crate::api::conditions::is_ready(&s.conditions)) {
        r.db.expect_work();
    }
    ctx.observations
        .seen(&r.ws_key, &r.db, &r.ws.spec.readers, ctx.settings.resync, &r.owner, &r.schema)
        .await
        .map_err(|e| super::Step::from(e).with_schema(&r.schema).into())
}
