//! admit: whether anything must run at all (at rest, the observation shows
//! the plan in place and nothing runs), and then a session of the
//! workspace, a ticket from its queue, so that a bulk apply works through
//! each workspace in turn instead of opening a session per attachment.

use kube::ResourceExt;
use tracing::debug;

use super::finalizer::{self, Finalized};
use super::resolve::Resolved;
use super::{Outcome, Step, ready};
use crate::api::{Reason, WorkspaceConnection, conditions};
use crate::controller::admission::{Ticket, Turn};
use crate::controller::aggregates;
use crate::controller::context::Context;
use crate::controller::observations::Seen;
use crate::postgres::plan::{self, AttachPlan, Change, Owner};

/// Stops with Ready when the observation shows the plan in place (putting
/// back a finalizer taken off by hand), or with the planner's refusal.
pub async fn at_rest(
    ctx: &Context,
    att: &WorkspaceConnection,
    seen: &Seen,
    plan: &AttachPlan,
    finalized: Finalized,
    detached: &[String],
) -> Result<(), Outcome> {
    let Some(observed) = &seen.schema else { return Ok(()) };
    match plan::decide(plan, observed) {
        Ok(Change::None) => {
            if finalized == Finalized::Not {
                finalizer::add(ctx, att).await?;
            }
            Err(Step { detached: detached.to_vec(), ..ready(&plan.schema, observed.foreign_tables) }.into())
        }
        Err(refusal) => Err(Step::from(refusal).with_schema(&plan.schema).into()),
        Ok(_) => Ok(()),
    }
}

/// A session of the workspace to attach in, with what the attach needs
/// to know besides the plan.
pub struct Admitted {
    pub ticket: Ticket,
    /// The source last timed out: it may not take the workspace's last
    /// session.
    pub suspect: bool,
    /// The aggregators attached to the same workspace whose views this
    /// attachment joins.
    pub joins: Vec<(Owner, String)>,
}

pub fn admit(ctx: &Context, att: &WorkspaceConnection, r: &Resolved, seen: &Seen) -> Result<Admitted, Outcome> {
    let suspect = att.status.as_ref().is_some_and(|s| {
        conditions::ready(&s.conditions)
            .is_some_and(|c| c.reason == Reason::Timeout.as_str() || c.reason == Reason::HostUnreachable.as_str())
    });
    let joins = aggregates::joined_by(&ctx.stores, &r.ns, &att.spec.workspace, &r.conn);
    let turn = Turn {
        created: r.conn.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
        connection: r.conn.name_any(),
        attachment: att.name_any(),
    };
    debug!(attachment = %att.name_any(), seen = ?seen.schema.as_ref().map(|o| o.foreign_tables), taken = ?seen.taken.elapsed(), "to attach");
    match ctx.admission.enter(&r.ws_key, &turn, suspect) {
        Ok(ticket) => Ok(Admitted { ticket, suspect, joins }),
        Err(parked) => Err(Step::parked(parked).into()),
    }
}
