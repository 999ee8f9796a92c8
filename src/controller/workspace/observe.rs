//! observe: the workspace's database, reached through its Secret, and the
//! shared observation of it (one catalog query per resync interval, which
//! every attachment of the workspace reads).

use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::api::{Failure, Workspace};
use crate::controller::context::Context;
use crate::controller::resolve::{self, SecretUser};
use crate::postgres::Db;

/// What one observation says about the database.
pub(super) struct Seen {
    pub(super) version: String,
    pub(super) role: String,
    pub(super) superuser: bool,
    pub(super) database: String,
    pub(super) search_path: Vec<String>,
    pub(super) roles: std::collections::BTreeSet<String>,
    /// `host:port/dbname`, which the status keeps from the first time.
    pub(super) identity: Option<String>,
    /// A session found (or wrote) the Workspace's pin.
    pub(super) pinned: bool,
    /// Sessions of the workspace role that are not Manifold's.
    pub(super) others: Vec<crate::postgres::pin::Session>,
}

/// The database and what the observation says of it.
pub(super) struct Found {
    pub(super) seen: Seen,
    pub(super) db: Db,
    /// When the observation was taken.
    pub(super) taken: Instant,
    /// The observation is new: every attachment compares itself with it.
    pub(super) refreshed: bool,
}

/// A Secret that goes missing leaves the workspace's sessions as they
/// are: deleting a namespace deletes the Secret before the Workspace, whose
/// cleanup still needs a way in. The observation is due when the last one
/// is a resync interval old (less a little, so that the requeue after it
/// does not just miss it).
pub(super) async fn observe(ctx: &Context, ws: &Workspace) -> Result<Found, Failure> {
    let (ns, name) = (ws.namespace().unwrap_or_default(), ws.name_any());
    let target = match resolve::workspace_target(ctx, ws) {
        Ok(target) => target,
        Err(f) => return Err(resolve::explain(ctx, &ns, f, SecretUser::Workspace(ws)).await),
    };
    let db: Db = std::sync::Arc::new(ctx.pools.get(&ns, &name, &target)?);
    // Attachments on their way: the observation's session is theirs next.
    let pending = ctx.stores.attachments_of_workspace(&ns, &name).iter().any(|a| a.unreported() || !ready(a));
    if pending {
        db.expect_work();
    }
    let max_age = ctx.settings.resync.saturating_sub(Duration::from_secs(1));
    let (seen, taken, refreshed) = ctx
        .observations
        .with(&(ns.clone(), name.clone()), &db, &ws.spec.readers, max_age, |s, fresh| {
            let o = &s.observation;
            let seen = Seen {
                version: o.version.clone(),
                role: o.role.clone(),
                superuser: o.superuser,
                database: o.database_name.clone(),
                search_path: o.search_path.clone(),
                roles: o.roles.clone(),
                identity: None,
                pinned: o.pinned,
                others: o.others.clone(),
            };
            (seen, o.taken, fresh)
        })
        .await?;
    let seen = Seen { identity: resolve::database_identity(&target.uri), ..seen };
    Ok(Found { seen, db, taken, refreshed })
}

fn ready(att: &crate::api::WorkspaceConnection) -> bool {
    att.status.as_ref().is_some_and(|s| crate::api::conditions::is_ready(&s.conditions))
}
