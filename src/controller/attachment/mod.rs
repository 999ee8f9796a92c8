//! The attachment reconciler: the only code that creates schemas. A short
//! driver over named steps, one file each:
//!
//! | step | file | what it does |
//! |---|---|---|
//! | resolve | `resolve.rs` | the Workspace, its database, the Connection, the schema (stores) |
//! | observe | `observe.rs` | the workspace's shared observation, as this attachment sees it |
//! | plan | `plan.rs` | the desired state (pure data) |
//! | admit | `admit.rs` | nothing to do at rest; else a session from the workspace's queue |
//! | apply | `apply.rs` | the plan in one transaction |
//! | report | `report.rs` | one status patch, only if it changed, and Events |
//! | cleanup | `cleanup.rs` | on deletion: detach, orphan or leave |
//!
//! Each step returns `Result<T, Outcome>`: `?` carries a refusal (or an
//! "in place, nothing to do") to the one place that reports it. A
//! finalizer (`finalizer.rs`) is added by the reconcile that is about to
//! change the database (or finds its schema in place without one), just
//! before it does, and that reconcile goes on: an attachment waiting in
//! its workspace's queue has cost the apiserver nothing yet, so that in a
//! bulk apply every attachment joins its queue at once, and the workspaces
//! work through the connections together.

mod admit;
mod apply;
mod cleanup;
mod finalizer;
mod observe;
mod plan;
mod report;
mod resolve;

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::{BackoffKey, Context, Error, requeue};
use crate::api::{Failure, Reason, Retry, WorkspaceConnection};
use crate::postgres::plan::Change;
use finalizer::Finalized;

pub const FINALIZER: &str = "manifold.dev/detach";

type WsKey = (String, String);

/// What one reconcile found and did.
struct Step {
    outcome: Failure,
    /// The schema this attachment wants (or had).
    schema: Option<String>,
    tables: Option<i64>,
    /// DDL that ran: `Some` after an attach that changed something.
    change: Option<Change>,
    /// Schemas dropped by a detach.
    detached: Vec<String>,
    /// What this reconcile's import proved, if it imported.
    proof: Option<crate::api::ImportProof>,
    /// No ticket for the workspace: nothing ran, nothing is reported.
    parked: Option<super::admission::Parked>,
    /// The uid of the Workspace this reconcile found: what the attachment
    /// is pinned to from its first report on.
    workspace_uid: Option<String>,
}

impl Step {
    fn parked(parked: super::admission::Parked) -> Self {
        Step { parked: Some(parked), ..Step::from(Failure::new(Reason::Progressing, "waiting for a session of the workspace")) }
    }

    fn with_schema(mut self, schema: &str) -> Self {
        self.schema = Some(schema.to_owned());
        self
    }
}

impl From<Failure> for Step {
    fn from(outcome: Failure) -> Self {
        Step { outcome, schema: None, tables: None, change: None, detached: Vec::new(), proof: None, parked: None, workspace_uid: None }
    }
}

/// Why a reconcile's steps stop before the end: what to report, or an
/// error of the Kubernetes API after which the reconcile is retried with
/// nothing changed. The step is boxed: every `?` of every step carries
/// an `Outcome`, and a `Step` is large.
enum Outcome {
    Report(Box<Step>),
    Retry(Error),
}

impl From<Step> for Outcome {
    fn from(step: Step) -> Self {
        Outcome::Report(Box::new(step))
    }
}

impl From<Failure> for Outcome {
    fn from(failure: Failure) -> Self {
        Outcome::Report(Box::new(failure.into()))
    }
}

impl From<Error> for Outcome {
    fn from(error: Error) -> Self {
        Outcome::Retry(error)
    }
}

fn ready(schema: &str, tables: i64) -> Step {
    Step {
        tables: Some(tables),
        ..Step::from(Failure::new(Reason::Attached, format!("schema {schema:?} holds {tables} tables"))).with_schema(schema)
    }
}

pub async fn reconcile(att: Arc<WorkspaceConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = att.namespace().unwrap_or_default();
    // A ticket kept for this attachment and not used by this reconcile
    // goes on to the next in its workspace's queue.
    let _visit = ctx.admission.visit(&(ns.clone(), att.spec.workspace.clone()), &att.name_any());
    if att.meta().deletion_timestamp.is_none() && !att.finalizers().iter().any(|f| f == FINALIZER) {
        return apply(&att, &ctx, Finalized::Not).await;
    }
    if att.meta().deletion_timestamp.is_none() {
        return apply(&att, &ctx, Finalized::Yes).await;
    }
    if !att.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let action = cleanup::cleanup(&att, &ctx).await?;
    finalizer::remove(&ctx, &att).await?;
    Ok(action)
}

/// The steps of one reconcile's attach. `seen`: see `resolve::resolve`.
async fn attach(att: &WorkspaceConnection, ctx: &Context, finalized: Finalized, seen: &mut Option<String>) -> Result<Step, Outcome> {
    let r = resolve::resolve(ctx, att, seen).await?;
    let seen = observe::observe(ctx, att, &r).await?;
    let plan = plan::plan(ctx, att, &r, &seen).await?;
    let detached = apply::drop_moved(ctx, &r, &seen, &plan).await?;
    admit::at_rest(ctx, att, &seen, &plan, finalized, &detached).await?;
    let admitted = admit::admit(ctx, att, &r, &seen)?;
    // The finalizer goes on just before the first change to the database.
    if finalized == Finalized::Not {
        finalizer::add(ctx, att).await?;
    }
    Ok(apply::attach(ctx, &r, &plan, admitted, detached).await)
}

async fn apply(att: &WorkspaceConnection, ctx: &Context, finalized: Finalized) -> Result<Action, Error> {
    let mut seen = None;
    let mut step = match attach(att, ctx, finalized, &mut seen).await {
        Ok(step) => step,
        Err(Outcome::Report(step)) => *step,
        Err(Outcome::Retry(e)) => return Err(e),
    };
    step.workspace_uid = seen;
    if let Some(parked) = step.parked {
        // Woken when a ticket comes back; the retry covers a lost wake.
        return Ok(Action::requeue(parked.retry()));
    }
    report::report(att, ctx, &step).await?;
    let key = BackoffKey::of(att);
    // A new reason is progress (someone fixed what the last one named):
    // the backoff starts again from its shortest delay.
    let previous = att.status.as_ref().and_then(|s| crate::api::conditions::find(&s.conditions, crate::api::conditions::READY));
    if previous.is_some_and(|c| c.reason != step.outcome.reason.as_str()) {
        ctx.backoff.succeeded(&key);
    }
    Ok(match step.outcome.reason.retry() {
        Retry::Never => {
            ctx.backoff.succeeded(&key);
            Action::await_change()
        }
        Retry::AwaitChange => Action::await_change(),
        // Never later than the resync: what a person fixes in the database
        // (a GRANT, a dropped view) sends no event, and everything at rest
        // is looked at once per resync anyway.
        Retry::Backoff => requeue(ctx.backoff.failed(&key).min(ctx.settings.resync)),
    })
}
