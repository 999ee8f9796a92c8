//! plan: the desired state of the attachment's schema (pure data): an
//! aggregator's views over its Ready members, or a plugin's server, user
//! mapping and import.

use super::Outcome;
use super::resolve::Resolved;
use crate::api::WorkspaceConnection;
use crate::controller::aggregates;
use crate::controller::context::Context;
use crate::controller::observations::Seen;
use crate::controller::resolve::{self, SecretUser};
use crate::postgres::plan::AttachPlan;

pub async fn plan(ctx: &Context, att: &WorkspaceConnection, r: &Resolved, seen: &Seen) -> Result<AttachPlan, Outcome> {
    match &r.conn.spec.aggregator {
        Some(aggregator) => {
            let members = aggregates::members(&ctx.stores, &r.ns, &att.spec.workspace, aggregator);
            let uid = att.metadata.uid.as_deref().unwrap_or("");
            let name = r.conn.metadata.name.as_deref().unwrap_or_default();
            Ok(AttachPlan::aggregate(r.owner.clone(), uid, name, &r.schema, members, seen.readers.clone()))
        }
        None => match resolve::plan(ctx, att, &r.conn, seen.readers.clone()) {
            Ok(plan) => Ok(plan),
            Err(f) => Err(resolve::explain(ctx, &r.ns, f, SecretUser::Connection(&r.conn)).await.into()),
        },
    }
}
