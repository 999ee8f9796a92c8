//! The attachment reconciler: the only code that creates or drops schemas.
//!
//! resolve (stores) -> plan (pure) -> compare with the workspace's shared
//! observation -> apply only if it differs (one transaction) -> report (one
//! status patch, only if changed). A finalizer detaches on deletion.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use tracing::info;

use super::resolve::{self, Failure};
use super::status::{self, Outcome};
use super::{Context, Error};
use crate::api::{DeletionPolicy, Reason, WorkspaceConnection, WorkspaceConnectionStatus};
use crate::postgres::plan::{self, Change, Observed};
use crate::postgres::{Database, DbError};

pub const FINALIZER: &str = "manifold.dev/detach";

type WsKey = (String, String);

/// What one reconcile found and did.
struct Step {
    outcome: Outcome,
    /// The schema this attachment wants (or had).
    schema: Option<String>,
    tables: Option<i64>,
    /// DDL that ran: `Some` after an attach that changed something.
    change: Option<Change>,
    /// Schemas dropped by a detach.
    detached: Vec<String>,
}

impl Step {
    fn outcome(reason: Reason, message: impl Into<String>) -> Self {
        Step { outcome: Outcome::new(reason, message), schema: None, tables: None, change: None, detached: Vec::new() }
    }

    fn with_schema(mut self, schema: &str) -> Self {
        self.schema = Some(schema.to_owned());
        self
    }
}

impl From<Failure> for Step {
    fn from(f: Failure) -> Self {
        Step::outcome(f.reason, f.message)
    }
}

impl From<DbError> for Step {
    fn from(e: DbError) -> Self {
        Step::outcome(e.reason, e.message)
    }
}

pub async fn reconcile(att: Arc<WorkspaceConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<WorkspaceConnection> = Api::namespaced(ctx.client.clone(), &att.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, att, |event| async {
        match event {
            Finalizer::Apply(att) => apply(&att, &ctx).await,
            Finalizer::Cleanup(att) => cleanup(&att, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn backoff_key(att: &WorkspaceConnection) -> String {
    format!("WorkspaceConnection/{}/{}", att.namespace().unwrap_or_default(), att.name_any())
}

async fn apply(att: &WorkspaceConnection, ctx: &Context) -> Result<Action, Error> {
    let step = attach(att, ctx).await;
    report(att, ctx, &step).await?;
    let key = backoff_key(att);
    Ok(match step.outcome.reason {
        _ if step.outcome.is_ready() => {
            ctx.backoff.succeeded(&key);
            Action::await_change()
        }
        // A watch brings the change that can fix these.
        Reason::WorkspaceNotFound
        | Reason::ConnectionNotFound
        | Reason::SecretNotFound
        | Reason::SecretKeyMissing
        | Reason::InvalidSpec
        | Reason::SchemaConflict => Action::await_change(),
        _ => Action::requeue(ctx.backoff.failed(&key)),
    })
}

/// The database of a workspace, if it can be reached in principle.
fn database(ctx: &Context, ns: &str, ws_name: &str) -> Result<(WsKey, Database), Step> {
    let ws = ctx
        .stores
        .workspace(ns, ws_name)
        .ok_or_else(|| Step::outcome(Reason::WorkspaceNotFound, format!("Workspace {ws_name:?} not found")))?;
    if ws.meta().deletion_timestamp.is_some() {
        return Err(Step::outcome(Reason::WorkspaceNotFound, format!("Workspace {ws_name:?} is being deleted")));
    }
    let uri = resolve::workspace_uri(&ctx.stores, &ws).map_err(|f| {
        Step::outcome(f.reason, format!("Workspace {ws_name:?}: {}", f.message))
    })?;
    let db = ctx.pools.get(ns, ws_name, &uri).map_err(Step::from)?;
    Ok(((ns.to_owned(), ws_name.to_owned()), db))
}

async fn attach(att: &WorkspaceConnection, ctx: &Context) -> Step {
    let ns = att.namespace().unwrap_or_default();
    let (ws_key, db) = match database(ctx, &ns, &att.spec.workspace) {
        Ok(found) => found,
        Err(step) => return step,
    };
    let conn = ctx.stores.connection(&ns, &att.spec.connection).filter(|c| c.meta().deletion_timestamp.is_none());
    let Some(conn) = conn else {
        // Deleting a Connection detaches it everywhere.
        let missing = format!("Connection {:?} not found", att.spec.connection);
        if att.spec.deletion_policy == DeletionPolicy::Orphan {
            return Step::outcome(Reason::ConnectionNotFound, format!("{missing}; deletionPolicy Orphan leaves its schema in place"));
        }
        return match detach(ctx, &ws_key, &db, att, None).await {
            Ok(dropped) => Step { detached: dropped, ..Step::outcome(Reason::ConnectionNotFound, format!("{missing}; detached")) },
            Err(e) => e.into(),
        };
    };
    let plan = match resolve::plan(&ctx.stores, att, &conn) {
        Ok(plan) => plan,
        Err(f) => return f.into(),
    };
    let seen = match ctx.observations.seen(&ws_key, &db, ctx.settings.resync, &plan.owner, &plan.schema).await {
        Ok(seen) => seen,
        Err(e) => return Step::from(e).with_schema(&plan.schema),
    };
    // The schema moved (spec.schema changed): drop the old one first.
    let mut detached = Vec::new();
    for stale in seen.owned.iter().filter(|s| **s != plan.schema) {
        if let Err(e) = db.detach(&plan.owner, stale, stale).await {
            return Step::from(e).with_schema(&plan.schema);
        }
        ctx.observations.record(&ws_key, stale, None);
        detached.push(stale.clone());
    }
    // At rest: the observation shows the plan in place, and nothing runs.
    if let Some(observed) = &seen.schema {
        match plan::decide(&plan, observed) {
            Ok(Change::None) => {
                return Step { tables: Some(observed.foreign_tables), detached, ..ready(&plan.schema, observed.foreign_tables) };
            }
            Err(plan::Refusal::Conflict(message)) => {
                return Step::outcome(Reason::SchemaConflict, message).with_schema(&plan.schema);
            }
            Ok(_) => {}
        }
    }
    match db.attach(&plan).await {
        Ok(done) => {
            ctx.observations.record(
                &ws_key,
                &plan.schema,
                Some(Observed {
                    schema_comment: Some(plan.schema_marker(done.tables).render()),
                    foreign_tables: done.tables,
                    server_comment: Some(plan.server_marker().render()),
                    mapping: true,
                }),
            );
            Step { change: Some(done.change), detached, ..ready(&plan.schema, done.tables) }
        }
        Err(e) => Step { detached, ..Step::from(e).with_schema(&plan.schema) },
    }
}

fn ready(schema: &str, tables: i64) -> Step {
    Step {
        tables: Some(tables),
        ..Step::outcome(Reason::Attached, format!("schema {schema:?} holds {tables} foreign tables")).with_schema(schema)
    }
}

/// Drops whatever in the workspace carries this attachment's marker: the
/// schema in its status, the one its connection wants, and any other the
/// observation shows as its own. Returns the schemas dropped.
pub(super) async fn detach(ctx: &Context, ws_key: &WsKey, db: &Database, att: &WorkspaceConnection, also: Option<&str>) -> Result<Vec<String>, DbError> {
    let owner = resolve::owner(att);
    let owned = ctx.observations.with(ws_key, db, ctx.settings.resync, |s, _| s.owned_by(&owner)).await?;
    let mut names: BTreeSet<String> = owned.into_iter().collect();
    names.extend(att.status.as_ref().and_then(|s| s.schema.clone()));
    names.extend(also.map(str::to_owned));
    let mut dropped = Vec::new();
    for name in names {
        let done = db.detach(&owner, &name, &name).await?;
        ctx.observations.record(ws_key, &name, None);
        if done.schema {
            dropped.push(name);
        }
    }
    Ok(dropped)
}

async fn cleanup(att: &WorkspaceConnection, ctx: &Context) -> Result<Action, Error> {
    if att.spec.deletion_policy == DeletionPolicy::Orphan {
        info!(attachment = %att.name_any(), "deleted with deletionPolicy Orphan; schema left in place");
        return Ok(Action::await_change());
    }
    let ns = att.namespace().unwrap_or_default();
    let (ws_key, db) = match database(ctx, &ns, &att.spec.workspace) {
        Ok(found) => found,
        // A workspace that is gone or going takes its attachments' schemas
        // with it (the workspace reconciler does that); nothing to reach here.
        Err(step) if step.outcome.reason == Reason::WorkspaceNotFound => return Ok(Action::await_change()),
        Err(step) => {
            report(att, ctx, &step).await?;
            return Err(Error::Held(format!("cannot detach: {}", step.outcome.message)));
        }
    };
    let desired = ctx
        .stores
        .connection(&ns, &att.spec.connection)
        .and_then(|c| resolve::connection_schema(&c).ok());
    match detach(ctx, &ws_key, &db, att, desired.as_deref()).await {
        Ok(dropped) => {
            if !dropped.is_empty() {
                let note = format!("dropped schema {} from Workspace {:?}", dropped.join(", "), att.spec.workspace);
                status::event(ctx, att, false, Reason::Detached.as_str(), "Detach", note).await;
            }
            ctx.backoff.succeeded(&backoff_key(att));
            Ok(Action::await_change())
        }
        Err(e) => {
            let step = Step::from(e.clone());
            report(att, ctx, &step).await?;
            Err(Error::Held(e.message))
        }
    }
}

/// Writes the status if it changed, and publishes Events for what happened.
async fn report(att: &WorkspaceConnection, ctx: &Context, step: &Step) -> Result<(), Error> {
    let current = att.status.as_ref();
    let generation = att.meta().generation;
    let previous_reason = current.and_then(|s| status::ready_reason(&s.conditions)).map(str::to_owned);
    let applied = matches!(step.change, Some(ref c) if *c != Change::None);
    let last_applied_at = if applied {
        Some(status::now())
    } else {
        match current.and_then(|s| s.last_applied_at.clone()) {
            Some(t) => Some(t),
            // The store may not have seen the status that recorded the
            // attach yet; read it, rather than erase the time.
            None if step.outcome.is_ready() => {
                let api: Api<WorkspaceConnection> = Api::namespaced(ctx.client.clone(), &att.namespace().unwrap_or_default());
                api.get_status(&att.name_any()).await?.status.and_then(|s| s.last_applied_at)
            }
            None => None,
        }
    };
    let status = WorkspaceConnectionStatus {
        observed_generation: generation,
        conditions: status::merge_conditions(
            current.map(|s| s.conditions.as_slice()).unwrap_or_default(),
            &step.outcome.conditions(),
            generation,
        ),
        schema: step.schema.clone().or_else(|| current.and_then(|s| s.schema.clone())),
        tables: if step.outcome.is_ready() { step.tables.map(|t| t as i32) } else { None },
        last_applied_at,
    };
    status::write(ctx, att, current, &status).await?;
    if !step.outcome.is_ready() {
        ctx.metrics.failed("WorkspaceConnection", step.outcome.reason);
    }

    if !step.detached.is_empty() {
        let note = format!("dropped schema {} from Workspace {:?}", step.detached.join(", "), att.spec.workspace);
        status::event(ctx, att, false, Reason::Detached.as_str(), "Detach", note).await;
    }
    if applied {
        info!(attachment = %att.name_any(), namespace = %att.namespace().unwrap_or_default(), change = ?step.change, "attached");
        status::event(ctx, att, false, Reason::Attached.as_str(), "Attach", step.outcome.message.clone()).await;
    } else if !step.outcome.is_ready() && previous_reason.as_deref() != Some(step.outcome.reason.as_str()) {
        info!(attachment = %att.name_any(), namespace = %att.namespace().unwrap_or_default(), reason = %step.outcome.reason, message = %step.outcome.message, "not attached");
        let warning = !matches!(step.outcome.reason, Reason::ConnectionNotFound | Reason::WorkspaceNotFound);
        status::event(ctx, att, warning, step.outcome.reason.as_str(), "Attach", step.outcome.message.clone()).await;
    }
    Ok(())
}
