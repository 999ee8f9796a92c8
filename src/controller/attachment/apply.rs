//! apply: the plan in one transaction, and the observation updated with
//! what it left; and, before it, the drop of a schema the attachment moved
//! away from.

use super::admit::Admitted;
use super::resolve::Resolved;
use super::{Outcome, Step, ready};
use crate::api::{Failure, ImportProof, Reason};
use crate::controller::context::Context;
use crate::controller::observations::Seen;
use crate::controller::resolve;
use crate::postgres::plan::AttachPlan;

/// The schema moved (spec.schema changed): the old one is dropped first.
/// Returns the schemas dropped.
pub async fn drop_moved(ctx: &Context, r: &Resolved, seen: &Seen, plan: &AttachPlan) -> Result<Vec<String>, Outcome> {
    let mut detached = Vec::new();
    for stale in seen.owned.iter().filter(|s| **s != plan.schema) {
        r.db.detach(&plan.owner, stale, &seen.readers).await.map_err(|e| Step::from(e).with_schema(&plan.schema))?;
        ctx.observations.record(&r.ws_key, stale, None);
        detached.push(stale.clone());
    }
    Ok(detached)
}

/// Runs the plan and says what came of it.
pub async fn attach(ctx: &Context, r: &Resolved, plan: &AttachPlan, admitted: Admitted, detached: Vec<String>) -> Step {
    let started = std::time::Instant::now();
    let attached = r.db.attach(plan, admitted.suspect, &admitted.joins).await;
    drop(admitted.ticket);
    let proof = attached.as_ref().ok().filter(|done| done.proven).map(|done| ImportProof {
        connection_generation: r.conn.metadata.generation.unwrap_or_default(),
        credentials: resolve::credentials(&ctx.stores, &r.conn).ok().flatten().map(|s| resolve::secret_version(&s)),
        tables: done.tables as i32,
        source_hash: done.source_hash.clone(),
        duration_ms: started.elapsed().as_millis() as i64,
    });
    match attached {
        Ok(done) if !done.held.is_empty() => {
            // The change went through but for the tables a user's objects
            // hold; the next observation shows what is there.
            ctx.observations.forget(&r.ws_key);
            let message = format!("re-imported, but kept what others depend on: {}", done.held.join("; "));
            Step {
                change: Some(done.change),
                detached,
                tables: Some(done.tables),
                ..Step::from(Failure::new(Reason::DependentObjects, message)).with_schema(&plan.schema)
            }
        }
        Ok(done) => {
            ctx.observations.record(&r.ws_key, &plan.schema, Some(plan.observed_after(done.tables, done.source_hash.as_deref())));
            Step { change: Some(done.change), detached, proof, ..ready(&plan.schema, done.tables) }
        }
        Err(e) => Step { detached, ..Step::from(e).with_schema(&plan.schema) },
    }
}
