//! The workspace reconciler: reachability and version, the periodic resync
//! (one catalog query, then every attachment re-checks itself against it),
//! the `connections` list, and removing the attachments' schemas when the
//! workspace is deleted.

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::attachment;
use super::status::{self, Outcome};
use super::{Context, Error, resolve};
use crate::api::{AttachedConnection, DeletionPolicy, Reason, Workspace, WorkspaceStatus};

pub const FINALIZER: &str = "manifold.dev/detach-all";

pub async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), &ws.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, ws, |event| async {
        match event {
            Finalizer::Apply(ws) => apply(&ws, &ctx).await,
            Finalizer::Cleanup(ws) => cleanup(&ws, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn key(ws: &Workspace) -> (String, String) {
    (ws.namespace().unwrap_or_default(), ws.name_any())
}

async fn apply(ws: &Workspace, ctx: &Context) -> Result<Action, Error> {
    let (ns, name) = key(ws);
    let backoff_key = format!("Workspace/{ns}/{name}");
    let resync = ctx.settings.resync;
    let mut version = None;
    let (outcome, action) = match resolve::workspace_uri(&ctx.stores, ws) {
        Err(f) => {
            ctx.pools.remove(&ns, &name);
            (Outcome::new(f.reason, f.message), Action::await_change())
        }
        Ok(uri) => match ctx.pools.get(&ns, &name, &uri) {
            Err(e) => (Outcome::new(e.reason, e.message), Action::await_change()),
            // Due when the last observation is a resync interval old (less a
            // little, so that the requeue below does not just miss it).
            Ok(db) => match ctx
                .observations
                .with(&(ns.clone(), name.clone()), &db, resync.saturating_sub(Duration::from_secs(1)), |s, fresh| {
                    (s.observation.version.clone(), s.observation.taken, fresh)
                })
                .await
            {
                Ok((v, taken, refreshed)) => {
                    version = Some(v);
                    if refreshed {
                        // Each attachment compares itself with the new
                        // observation; those that drifted apply, the rest
                        // cost nothing.
                        for att in ctx.stores.attachments_where(&ns, |a| a.spec.workspace == name) {
                            let _ = ctx.triggers.attachments.unbounded_send(ObjectRef::new(&att.name_any()).within(&ns));
                        }
                    }
                    ctx.backoff.succeeded(&backoff_key);
                    (Outcome::new(Reason::Reachable, "the database is reachable"), Action::requeue(resync.saturating_sub(taken.elapsed())))
                }
                Err(e) => (Outcome::new(e.reason, e.message), Action::requeue(ctx.backoff.failed(&backoff_key))),
            },
        },
    };
    report(ws, ctx, &outcome, version).await?;
    Ok(action)
}

/// What each of the workspace's attachments reports, by connection name.
fn connections(ctx: &Context, ns: &str, name: &str) -> Vec<AttachedConnection> {
    let mut list: Vec<AttachedConnection> = ctx
        .stores
        .attachments_where(ns, |a| a.spec.workspace == name)
        .iter()
        .map(|a| AttachedConnection {
            name: a.spec.connection.clone(),
            schema: a.status.as_ref().and_then(|s| s.schema.clone()).unwrap_or_default(),
            state: status::attachment_state(a),
            tables: a.status.as_ref().and_then(|s| s.tables).unwrap_or(0),
        })
        .collect();
    list.sort();
    list
}

async fn report(ws: &Workspace, ctx: &Context, outcome: &Outcome, version: Option<String>) -> Result<(), Error> {
    let (ns, name) = key(ws);
    let current = ws.status.as_ref();
    let generation = ws.meta().generation;
    let connections = connections(ctx, &ns, &name);
    let previous_reason = current.and_then(|s| status::ready_reason(&s.conditions)).map(str::to_owned);
    let status = WorkspaceStatus {
        observed_generation: generation,
        conditions: status::merge_conditions(
            current.map(|s| s.conditions.as_slice()).unwrap_or_default(),
            &outcome.conditions(),
            generation,
        ),
        postgres_version: version.or_else(|| current.and_then(|s| s.postgres_version.clone())),
        connection_count: connections.iter().filter(|c| c.state == "Ready").count() as i32,
        connections,
    };
    status::write(ctx, ws, current, &status).await?;
    if !outcome.is_ready() {
        ctx.metrics.failed("Workspace", outcome.reason);
    }
    if !outcome.is_ready() && previous_reason.as_deref() != Some(outcome.reason.as_str()) {
        status::event(ctx, ws, true, outcome.reason.as_str(), "Connect", outcome.message.clone()).await;
    }
    Ok(())
}

/// Deleting a workspace removes its attachments' schemas, under the same
/// safety rules as a detach; Orphan attachments keep theirs.
async fn cleanup(ws: &Workspace, ctx: &Context) -> Result<Action, Error> {
    let (ns, name) = key(ws);
    let db = match resolve::workspace_uri(&ctx.stores, ws).map(|uri| ctx.pools.get(&ns, &name, &uri)) {
        Ok(Ok(db)) => Some(db),
        _ => ctx.pools.cached(&ns, &name),
    };
    let Some(db) = db else {
        // Without its Secret there is no way into the database: holding the
        // deletion forever would not change that. Nothing is dropped.
        let note = "the database Secret is gone, so the attachments' schemas were left in place".to_owned();
        warn!(workspace = %name, namespace = %ns, "{note}");
        status::event(ctx, ws, true, Reason::SecretNotFound.as_str(), "Delete", note).await;
        ctx.observations.forget(&(ns, name));
        return Ok(Action::await_change());
    };
    let ws_key = (ns.clone(), name.clone());
    for att in ctx.stores.attachments_where(&ns, |a| a.spec.workspace == name) {
        if att.spec.deletion_policy == DeletionPolicy::Orphan {
            continue;
        }
        if let Err(e) = attachment::detach(ctx, &ws_key, &db, &att, None).await {
            report(ws, ctx, &Outcome::new(e.reason, format!("deletion held: {}", e.message)), None).await?;
            return Err(Error::Held(e.message));
        }
    }
    ctx.pools.remove(&ns, &name);
    ctx.observations.forget(&ws_key);
    Ok(Action::await_change())
}
