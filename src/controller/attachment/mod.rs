//! The attachment reconciler: the only code that creates schemas.
//!
//! resolve (stores) -> plan (pure) -> compare with the workspace's shared
//! observation -> apply only if it differs (one transaction) -> report (one
//! status patch, only if changed). A finalizer detaches on deletion, or,
//! with `deletionPolicy: Orphan`, marks the schema as orphaned.
//!
//! The finalizer is added by the reconcile that is about to change the
//! database (or finds its schema in place without one), just before it
//! does, and that reconcile goes on: an attachment waiting in its
//! workspace's queue has cost the apiserver nothing yet, so that in a bulk
//! apply every attachment joins its queue at once, and the workspaces work
//! through the connections together.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::admission::Turn;
use super::aggregates;
use super::context::{BackoffKey, Context, Error, patch_params, requeue};
use super::deletion::{self, cleanup_database};
use super::resolve::{self, SecretUser};
use super::status::{self, Announce};
use crate::api::{DeletionPolicy, Failure, Reason, Retry, WorkspaceConnection, WorkspaceConnectionStatus};
use crate::postgres::Database;
use crate::postgres::plan::{self, AttachPlan, Change};

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
        Step { outcome, schema: None, tables: None, change: None, detached: Vec::new(), proof: None, parked: None }
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
    let action = cleanup(&att, &ctx).await?;
    remove_finalizer(&ctx, &att).await?;
    Ok(action)
}

/// Takes the finalizer off, every copy of it (a copy left behind would
/// hold the object with nothing left to wake its reconcile), with the same
/// tests as kube's `finalizer`: the uid, and the finalizers as the store
/// shows them, so that a store that is behind fails the test and the
/// reconcile is retried soon.
async fn remove_finalizer(ctx: &Context, att: &WorkspaceConnection) -> Result<(), Error> {
    let api: Api<WorkspaceConnection> = Api::namespaced(ctx.client.clone(), &att.namespace().unwrap_or_default());
    let finalizers = att.finalizers();
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
    let ops = serde_json::json!([
        { "op": "test", "path": "/metadata/uid", "value": att.metadata.uid },
        { "op": "test", "path": "/metadata/finalizers", "value": finalizers },
        { "op": "replace", "path": "/metadata/finalizers", "value": rest },
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    match api.patch(&att.name_any(), &patch_params(), &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(()),
        // Gone already: nothing holds it.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::Finalizer(Box::new(kube::runtime::finalizer::Error::RemoveFinalizer(e)))),
    }
}

/// Whether the attachment carries the finalizer yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Finalized {
    Yes,
    Not,
}

/// Adds the finalizer, with the same tests as kube's `finalizer` (the
/// finalizers as the store shows them, and the object's uid): a store that
/// is behind fails the test, which `Error::is_finalizer_race` retries soon.
async fn add_finalizer(ctx: &Context, att: &WorkspaceConnection) -> Result<(), Error> {
    let api: Api<WorkspaceConnection> = Api::namespaced(ctx.client.clone(), &att.namespace().unwrap_or_default());
    let finalizers = att.finalizers();
    let mut ops = vec![serde_json::json!({ "op": "test", "path": "/metadata/uid", "value": att.metadata.uid })];
    if finalizers.is_empty() {
        ops.push(serde_json::json!({ "op": "test", "path": "/metadata/finalizers", "value": null }));
        ops.push(serde_json::json!({ "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }));
    } else {
        ops.push(serde_json::json!({ "op": "test", "path": "/metadata/finalizers", "value": finalizers }));
        ops.push(serde_json::json!({ "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER }));
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    api.patch(&att.name_any(), &patch_params(), &Patch::<()>::Json(patch))
        .await
        .map_err(|e| Error::Finalizer(Box::new(kube::runtime::finalizer::Error::AddFinalizer(e))))?;
    Ok(())
}

async fn apply(att: &WorkspaceConnection, ctx: &Context, finalized: Finalized) -> Result<Action, Error> {
    let step = attach(att, ctx, finalized).await?;
    if let Some(parked) = step.parked {
        // Woken when a ticket comes back; the retry covers a lost wake.
        return Ok(Action::requeue(parked.retry()));
    }
    report(att, ctx, &step).await?;
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
        Retry::Backoff => requeue(ctx.backoff.failed(&key)),
    })
}

/// One reconcile's attach. `Err` only when the finalizer could not be
/// added: nothing was changed, and the reconcile is retried.
async fn attach(att: &WorkspaceConnection, ctx: &Context, finalized: Finalized) -> Result<Step, Error> {
    let ns = att.namespace().unwrap_or_default();
    let ws_key = (ns.clone(), att.spec.workspace.clone());
    let (ws, db) = match resolve::workspace_database(ctx, &ns, &att.spec.workspace).await {
        Ok(found) => found,
        Err(f) => return Ok(f.into()),
    };
    // Approved for the Workspace it attached to first, not for another
    // one made later under the same name.
    if let Some(pinned) = att.status.as_ref().and_then(|s| s.workspace_uid.as_deref())
        && ws.metadata.uid.as_deref() != Some(pinned)
    {
        return Ok(Failure::new(
            Reason::WorkspaceNotFound,
            format!(
                "Workspace {:?} was deleted and created again: this attachment was made for the one that was deleted and \
                 does not follow a new one; delete and re-create this WorkspaceConnection (as someone who may attach \
                 Connection {:?}) to attach it there",
                att.spec.workspace, att.spec.connection
            ),
        )
        .into());
    }
    let readers = &ws.spec.readers;
    let conn = ctx.stores.connection(&ns, &att.spec.connection).filter(|c| c.meta().deletion_timestamp.is_none());
    let Some(conn) = conn else {
        // Deleting a Connection detaches it everywhere.
        let missing = format!("Connection {:?} not found", att.spec.connection);
        if att.spec.deletion_policy == DeletionPolicy::Orphan {
            return Ok(
                Failure::new(Reason::ConnectionNotFound, format!("{missing}; deletionPolicy Orphan leaves its schema in place")).into()
            );
        }
        return Ok(match detach(ctx, &ws_key, &db, readers, att, None).await {
            Ok(dropped) => Step { detached: dropped, ..Failure::new(Reason::ConnectionNotFound, format!("{missing}; detached")).into() },
            Err(e) => e.into(),
        });
    };
    // A draft is tested, and attached nowhere until it is created; what an
    // attachment made before it became one stays as it is.
    if crate::api::is_draft(&conn) {
        return Ok(Failure::new(
            Reason::ConnectionDraft,
            format!(
                "Connection {:?} is a draft (annotation {}): it is attached once it is created, when the annotation is removed",
                att.spec.connection,
                crate::api::DRAFT_ANNOTATION
            ),
        )
        .into());
    }
    let (owner, schema) = match resolve::connection_schema(&conn) {
        Ok(schema) => (resolve::owner(att), schema),
        Err(f) => return Ok(f.into()),
    };
    let seen = match ctx.observations.seen(&ws_key, &db, readers, ctx.settings.resync, &owner, &schema).await {
        Ok(seen) => seen,
        Err(e) => return Ok(Step::from(e).with_schema(&schema)),
    };
    let plan = match &conn.spec.aggregator {
        Some(aggregator) => {
            let members = aggregates::members(&ctx.stores, &ns, &att.spec.workspace, aggregator);
            let uid = att.metadata.uid.as_deref().unwrap_or("");
            AttachPlan::aggregate(owner, uid, &conn.name_any(), &schema, members, seen.readers.clone())
        }
        None => match resolve::plan(ctx, att, &conn, seen.readers.clone()) {
            Ok(plan) => plan,
            Err(f) => return Ok(resolve::explain(ctx, &ns, f, SecretUser::Connection(&conn)).await.into()),
        },
    };
    // The schema moved (spec.schema changed): drop the old one first.
    let mut detached = Vec::new();
    for stale in seen.owned.iter().filter(|s| **s != plan.schema) {
        if let Err(e) = db.detach(&plan.owner, stale, &seen.readers).await {
            return Ok(Step::from(e).with_schema(&plan.schema));
        }
        ctx.observations.record(&ws_key, stale, None);
        detached.push(stale.clone());
    }
    // At rest: the observation shows the plan in place, and nothing runs.
    if let Some(observed) = &seen.schema {
        match plan::decide(&plan, observed) {
            Ok(Change::None) => {
                // In place without the finalizer (it was taken off by
                // hand): the finalizer goes back on.
                if finalized == Finalized::Not {
                    add_finalizer(ctx, att).await?;
                }
                return Ok(Step { detached, ..ready(&plan.schema, observed.foreign_tables) });
            }
            Err(refusal) => return Ok(Step::from(refusal).with_schema(&plan.schema)),
            Ok(_) => {}
        }
    }
    // A source that last timed out may not take the workspace's last session.
    let suspect = att.status.as_ref().is_some_and(|s| {
        crate::api::conditions::find(&s.conditions, crate::api::conditions::READY)
            .is_some_and(|c| c.reason == Reason::Timeout.as_str() || c.reason == Reason::HostUnreachable.as_str())
    });
    let joins = aggregates::joined_by(&ctx.stores, &ns, &att.spec.workspace, &conn);
    let turn = Turn {
        created: conn.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second()),
        connection: conn.name_any(),
        attachment: att.name_any(),
    };
    debug!(attachment = %att.name_any(), seen = ?seen.schema.as_ref().map(|o| o.foreign_tables), taken = ?seen.taken.elapsed(), "to attach");
    let ticket = match ctx.admission.enter(&ws_key, &turn, suspect) {
        Ok(ticket) => ticket,
        Err(parked) => return Ok(Step::parked(parked)),
    };
    // The finalizer goes on just before the first change to the database.
    if finalized == Finalized::Not {
        add_finalizer(ctx, att).await?;
    }
    let started = std::time::Instant::now();
    let attached = db.attach(&plan, suspect, &joins).await;
    drop(ticket);
    let proof = attached.as_ref().ok().filter(|done| done.proven).map(|done| crate::api::ImportProof {
        connection_generation: conn.metadata.generation.unwrap_or_default(),
        credentials: resolve::credentials(&ctx.stores, &conn).ok().flatten().map(|s| resolve::secret_version(&s)),
        tables: done.tables as i32,
        source_hash: done.source_hash.clone(),
        duration_ms: started.elapsed().as_millis() as i64,
    });
    Ok(match attached {
        Ok(done) if !done.held.is_empty() => {
            // The change went through but for the tables a user's objects
            // hold; the next observation shows what is there.
            ctx.observations.forget(&ws_key);
            let message = format!("re-imported, but kept what others depend on: {}", done.held.join("; "));
            Step {
                change: Some(done.change),
                detached,
                tables: Some(done.tables),
                ..Step::from(Failure::new(Reason::DependentObjects, message)).with_schema(&plan.schema)
            }
        }
        Ok(done) => {
            ctx.observations.record(&ws_key, &plan.schema, Some(plan.observed_after(done.tables, done.source_hash.as_deref())));
            Step { change: Some(done.change), detached, proof, ..ready(&plan.schema, done.tables) }
        }
        Err(e) => Step { detached, ..Step::from(e).with_schema(&plan.schema) },
    })
}

fn ready(schema: &str, tables: i64) -> Step {
    Step {
        tables: Some(tables),
        ..Step::from(Failure::new(Reason::Attached, format!("schema {schema:?} holds {tables} tables"))).with_schema(schema)
    }
}

/// The schemas an attachment may own in a workspace: the one in its status,
/// `also` (the one its connection wants), and any other the observation
/// shows as its own.
async fn owned(
    ctx: &Context,
    ws_key: &WsKey,
    db: &Database,
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
async fn detach(
    ctx: &Context,
    ws_key: &WsKey,
    db: &Database,
    readers: &[String],
    att: &WorkspaceConnection,
    also: Option<&str>,
) -> Result<Vec<String>, Failure> {
    let owner = resolve::owner(att);
    let mut dropped = Vec::new();
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
async fn orphan(ctx: &Context, ws_key: &WsKey, db: &Database, att: &WorkspaceConnection) -> Result<(), Failure> {
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
async fn cleanup(att: &WorkspaceConnection, ctx: &Context) -> Result<Action, Error> {
    let ns = att.namespace().unwrap_or_default();
    let ws_key = (ns.clone(), att.spec.workspace.clone());
    let workspace = ctx.stores.workspace(&ns, &att.spec.workspace);
    let how = removal(att, workspace.as_deref());
    let result = match how {
        Removal::Leave => Ok(Vec::new()),
        Removal::Orphan => match cleanup_database(ctx, &ns, &att.spec.workspace) {
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
        Removal::Detach { workspace_going: false } => match resolve::workspace_database(ctx, &ns, &att.spec.workspace).await {
            Ok((ws, db)) => {
                let desired = ctx.stores.connection(&ns, &att.spec.connection).and_then(|c| resolve::connection_schema(&c).ok());
                detach(ctx, &ws_key, &db, &ws.spec.readers, att, desired.as_deref()).await
            }
            Err(f) => Err(f),
        },
    };
    match result {
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
        Err(e) => match deletion::give_up(ctx, att, &ns, &e).await {
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
                report(att, ctx, &Step::from(held.clone())).await?;
                Err(Error::Held(held))
            }
        },
    }
}

/// Writes the status if it changed, and publishes Events for what happened.
async fn report(att: &WorkspaceConnection, ctx: &Context, step: &Step) -> Result<(), Error> {
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
    // The Workspace it attached to is the one it stays with.
    let workspace_uid = current.and_then(|s| s.workspace_uid.clone()).or_else(|| {
        ready
            .then(|| ctx.stores.workspace(&att.namespace().unwrap_or_default(), &att.spec.workspace))
            .flatten()
            .and_then(|w| w.metadata.uid.clone())
    });
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
