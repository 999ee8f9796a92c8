//! The workspace reconciler: reachability, version and role, the periodic
//! resync (one catalog query, then every attachment re-checks itself
//! against it), the `connections` list, and, when the workspace is deleted,
//! the removal of everything its namespace made in its database. A short
//! driver over named steps, one file each:
//!
//! | step | file | what it does |
//! |---|---|---|
//! | select | `../selection.rs` | the connection selectors' WorkspaceConnections |
//! | observe | `observe.rs` | the database through its Secret, and the shared observation |
//! | search path | `search_path.rs` | the path the spec wants, set when it differs |
//! | report | `report.rs` | status and conditions |
//! | cleanup | `cleanup.rs` | on deletion: remove what the namespace made, or orphan it |

mod cleanup;
mod observe;
mod report;
mod search_path;

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};

use super::context::{BackoffKey, Context, Error, requeue};
use crate::api::conditions::Desired;
use crate::api::{Failure, Reason, Retry, Workspace};

pub const FINALIZER: &str = "manifold.dev/detach-all";

/// The condition that says whether the workspace role is least privilege.
pub const LEAST_PRIVILEGE: &str = "LeastPrivilege";

/// The condition that says whether only Manifold uses the workspace's
/// login (which reads every attached connection's credentials).
pub const PRIVATE_LOGIN: &str = "PrivateLogin";

pub async fn reconcile(ws: Arc<Workspace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Workspace> = Api::namespaced(ctx.client.clone(), &ws.namespace().unwrap_or_default());
    finalizer(&api, FINALIZER, ws, |event| async {
        match event {
            Finalizer::Apply(ws) => apply(&ws, &ctx).await,
            Finalizer::Cleanup(ws) => cleanup::cleanup(&ws, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn key(ws: &Workspace) -> (String, String) {
    (ws.namespace().unwrap_or_default(), ws.name_any())
}

/// The condition that says whether every reader role exists.
pub const READERS: &str = "Readers";
/// The condition that says whether the search path is as the spec wants.
pub const SEARCH_PATH: &str = "SearchPath";

async fn apply(ws: &Workspace, ctx: &Context) -> Result<Action, Error> {
    let (ns, name) = key(ws);
    let backoff = BackoffKey::of(ws);
    // Selected connections are Kubernetes objects: made whether or not the
    // database answers now. Without selectors, this only deletes what
    // earlier selectors made.
    let selected = super::selection::reconcile(ws, ctx).await;
    let (outcome, seen, extra, action) = match observe::observe(ctx, ws).await {
        Ok(mut found) => {
            let extra: Vec<Desired> = search_path::apply(ctx, ws, &found.db, &mut found.seen).await.into_iter().collect();
            if found.refreshed {
                recheck_attachments(ctx, &ns, &name);
            }
            ctx.backoff.succeeded(&backoff);
            let outcome = Failure::new(Reason::Reachable, "the database is reachable");
            (outcome, Some(found.seen), extra, requeue(ctx.settings.resync.saturating_sub(found.taken.elapsed())))
        }
        Err(f) => {
            let action = match f.reason.retry() {
                Retry::Backoff => requeue(ctx.backoff.failed(&backoff)),
                _ => Action::await_change(),
            };
            (f, None, Vec::new(), action)
        }
    };
    report::report(ws, ctx, &outcome, seen, extra, selected).await?;
    Ok(action)
}

/// After a new observation each attachment compares itself with it; those
/// that drifted apply, the rest cost nothing. Those waiting for a ticket
/// look when their turn comes.
fn recheck_attachments(ctx: &Context, ns: &str, name: &str) {
    let ws_key = (ns.to_owned(), name.to_owned());
    for att in ctx.stores.index.read().unwrap().by_workspace(ns, name) {
        if !ctx.admission.waiting(&ws_key, &att) {
            ctx.triggers.attachment(ns, &att);
        }
    }
}
