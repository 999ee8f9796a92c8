//! The workspace reconciler: reachability, version and role, the periodic
//! resync (one catalog query, then every attachment re-checks itself
//! against it), the `connections` list, and, when the workspace is deleted,
//! the removal of everything its namespace made in its database.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use tracing::{info, warn};

use super::context::{BackoffKey, Context, Error, requeue};
use super::deletion::{self, cleanup_database};
use super::resolve::{self, SecretUser};
use super::status::{self, Announce};
use crate::api::conditions::{self, Desired, Status};
use crate::api::{
    AttachedConnection, DeletionPolicy, Failure, ReaderState, Reason, Retry, SearchPathMode, SelectedConnection, Workspace, WorkspaceStatus,
};
use crate::postgres::Database;
use crate::postgres::plan::{self, LiveAttachment, WorkspaceRemoval};

pub const FINALIZER: &str = "manifold.dev/detach-all";

/// The condition that says whether the workspace role is least privilege.
pub const LEAST_PRIVILEGE: &str = "LeastPrivilege";

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

/// What one observation says about the database.
struct Seen {
    version: String,
    role: String,
    superuser: bool,
    database: String,
    search_path: Vec<String>,
    roles: std::collections::BTreeSet<String>,
    /// `host:port/dbname`, which the status keeps from the first time.
    identity: Option<String>,
}

/// The condition that says whether every reader role exists.
pub const READERS: &str = "Readers";
/// The condition that says whether the search path is as the spec wants.
pub const SEARCH_PATH: &str = "SearchPath";

async fn apply(ws: &Workspace, ctx: &Context) -> Result<Action, Error> {
    let (ns, name) = key(ws);
    let backoff = BackoffKey::of(ws);
    let resync = ctx.settings.resync;
    // Selected connections are Kubernetes objects: made whether or not the
    // database answers now. Without selectors, this only deletes what
    // earlier selectors made.
    let selected = super::selection::reconcile(ws, ctx).await;
    // A Secret that goes missing leaves the workspace's sessions as they
    // are: deleting a namespace deletes the Secret before the Workspace,
    // whose cleanup still needs a way in.
    let mut identity = None;
    let observed = match resolve::workspace_target(&ctx.stores, ws) {
        Err(f) => Err(resolve::explain(ctx, &ns, f, SecretUser::Workspace(ws)).await),
        Ok(target) => match ctx.pools.get(&ns, &name, &target) {
            Err(f) => Err(f),
            // Due when the last observation is a resync interval old (less a
            // little, so that the requeue below does not just miss it).
            Ok(db) => ctx
                .observations
                .with(&(ns.clone(), name.clone()), &db, &ws.spec.readers, resync.saturating_sub(Duration::from_secs(1)), |s, fresh| {
                    let o = &s.observation;
                    let seen = Seen {
                        version: o.version.clone(),
                        role: o.role.clone(),
                        superuser: o.superuser,
                        database: o.database_name.clone(),
                        search_path: o.search_path.clone(),
                        roles: o.roles.clone(),
                        identity: None,
                    };
                    (seen, o.taken, fresh)
                })
                .await
                .map(|found| {
                    identity = resolve::database_identity(&target.uri);
                    (found, db)
                }),
        },
    };
    let mut extra = Vec::new();
    let (outcome, seen, action) = match observed {
        Ok(((mut seen, taken, refreshed), db)) => {
            if let Some(path) = search_path(ctx, &ns, ws) {
                extra.push(match plan::search_path(&seen.database, &path, &seen.search_path) {
                    None => Desired::new(SEARCH_PATH, Status::True, Reason::Reachable.as_str(), "as the spec wants"),
                    Some(statement) => match db.set_search_path(statement).await {
                        Ok(()) => {
                            ctx.observations.set_search_path(&(ns.clone(), name.clone()), &path);
                            seen.search_path = path;
                            Desired::new(SEARCH_PATH, Status::True, Reason::Reachable.as_str(), "as the spec wants")
                        }
                        Err(f) => Desired::new(SEARCH_PATH, Status::False, f.reason.as_str(), f.message),
                    },
                });
            }
            if refreshed {
                // Each attachment compares itself with the new observation;
                // those that drifted apply, the rest cost nothing. Those
                // waiting for a ticket look when their turn comes.
                let ws_key = (ns.clone(), name.clone());
                for att in ctx.stores.index.read().unwrap().by_workspace(&ns, &name) {
                    if !ctx.admission.waiting(&ws_key, &att) {
                        ctx.triggers.attachment(&ns, &att);
                    }
                }
            }
            ctx.backoff.succeeded(&backoff);
            let outcome = Failure::new(Reason::Reachable, "the database is reachable");
            (outcome, Some(seen), requeue(resync.saturating_sub(taken.elapsed())))
        }
        Err(f) => {
            let action = match f.reason.retry() {
                Retry::Backoff => requeue(ctx.backoff.failed(&backoff)),
                _ => Action::await_change(),
            };
            (f, None, action)
        }
    };
    report(ws, ctx, &outcome, seen.map(|s| Seen { identity, ..s }), extra, selected).await?;
    Ok(action)
}

/// The search path the spec wants, if it wants one. `Auto`: the prefix,
/// `public`, the aggregators, then the connections, each group sorted
/// (Turbot Pipes' order), from the attachments that are Ready.
fn search_path(ctx: &Context, ns: &str, ws: &Workspace) -> Option<Vec<String>> {
    let spec = ws.spec.search_path.as_ref()?;
    if spec.mode == SearchPathMode::Explicit {
        return Some(spec.schemas.clone());
    }
    let (mut aggregators, mut connections) = (Vec::new(), Vec::new());
    for att in ctx.stores.attachments_of_workspace(ns, &ws.name_any()) {
        let Some(schema) = att.status.as_ref().filter(|s| conditions::is_ready(&s.conditions)).and_then(|s| s.schema.clone()) else {
            continue;
        };
        let aggregator = ctx.stores.connection(ns, &att.spec.connection).is_some_and(|c| c.spec.aggregator.is_some());
        if aggregator { aggregators.push(schema) } else { connections.push(schema) }
    }
    aggregators.sort();
    connections.sort();
    let mut path: Vec<String> = Vec::new();
    for schema in spec.prefix.iter().cloned().chain(["public".to_owned()]).chain(aggregators).chain(connections) {
        if !path.contains(&schema) {
            path.push(schema);
        }
    }
    Some(path)
}

/// What each of the workspace's attachments reports, by connection name.
fn connections(ctx: &Context, ns: &str, name: &str) -> Vec<AttachedConnection> {
    let mut list: Vec<AttachedConnection> = ctx
        .stores
        .attachments_of_workspace(ns, name)
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

/// The `LeastPrivilege` condition: False, and a Warning Event when it turns
/// so, while the workspace role is a superuser.
fn least_privilege(seen: &Seen) -> Desired {
    if seen.superuser {
        Desired::new(
            LEAST_PRIVILEGE,
            Status::False,
            Reason::SuperuserRole.as_str(),
            format!(
                "role {:?} is a superuser: postgres_fdw skips its password checks for superusers, so a source can reach \
                 whatever trust or peer authentication lets in; use the database owner with USAGE on the wrappers \
                 (CloudNativePG: the <cluster>-app Secret), or fence the sources (--source-hosts)",
                seen.role
            ),
        )
    } else {
        Desired::new(LEAST_PRIVILEGE, Status::True, Reason::LeastPrivilege.as_str(), format!("role {:?} is not a superuser", seen.role))
    }
}

async fn report(
    ws: &Workspace,
    ctx: &Context,
    outcome: &Failure,
    seen: Option<Seen>,
    mut extra: Vec<Desired>,
    selected: Vec<SelectedConnection>,
) -> Result<(), Error> {
    let (ns, name) = key(ws);
    let current = ws.status.as_ref();
    let connections = connections(ctx, &ns, &name);
    let was_superuser =
        current.and_then(|s| conditions::find(&s.conditions, LEAST_PRIVILEGE)).is_some_and(|c| c.reason == Reason::SuperuserRole.as_str());
    extra.extend(seen.iter().map(least_privilege));
    // Each reader, and whether it exists: one that does not is left out,
    // and the others and the attachments are unaffected.
    let readers: Vec<ReaderState> = match &seen {
        Some(seen) => ws
            .spec
            .readers
            .iter()
            .map(|r| match seen.roles.contains(r) {
                true => ReaderState { name: r.clone(), state: "Ready".into(), message: String::new() },
                false => ReaderState {
                    name: r.clone(),
                    state: Reason::RoleNotFound.as_str().into(),
                    message: format!("role {r:?} does not exist in the database"),
                },
            })
            .collect(),
        None => current.map(|s| s.readers.clone()).unwrap_or_default(),
    };
    if seen.is_some() && !ws.spec.readers.is_empty() {
        let missing: Vec<&str> = readers.iter().filter(|r| r.state != "Ready").map(|r| r.name.as_str()).collect();
        extra.push(match missing.as_slice() {
            [] => Desired::new(READERS, Status::True, Reason::Reachable.as_str(), format!("{} reader roles", readers.len())),
            _ => Desired::new(READERS, Status::False, Reason::RoleNotFound.as_str(), format!("no such role: {}", missing.join(", "))),
        });
    }
    let status = WorkspaceStatus {
        database: current.and_then(|s| s.database.clone()).or_else(|| seen.as_ref().and_then(|s| s.identity.clone())),
        postgres_version: seen.as_ref().map(|s| s.version.clone()).or_else(|| current.and_then(|s| s.postgres_version.clone())),
        connection_count: connections.iter().filter(|c| c.state == "Ready").count() as i32,
        connections,
        readers,
        selected,
        search_path: match &seen {
            Some(seen) if ws.spec.search_path.is_some() => Some(seen.search_path.join(", ")),
            Some(_) => None,
            None => current.and_then(|s| s.search_path.clone()),
        },
        ..Default::default()
    };
    status::report(ctx, ws, current, status, outcome, extra, |_| Announce::Warning).await?;
    if let Some(seen) = seen.filter(|s| s.superuser && !was_superuser) {
        warn!(workspace = %name, namespace = %ns, role = %seen.role, "the workspace role is a superuser");
        let message = least_privilege(&seen).message;
        status::event(ctx, ws, true, Reason::SuperuserRole.as_str(), "Connect", message).await;
    }
    Ok(())
}

/// Removes what the planner says a workspace's deletion removes
/// (`plan::workspace_removal`), until a fresh observation finds nothing more
/// to do (an attach that committed meanwhile is found the next round).
/// Returns the schemas dropped, or the first failure.
async fn remove_all(ctx: &Context, ns: &str, name: &str, db: &Database) -> Result<Vec<String>, Failure> {
    let mut dropped = Vec::new();
    for _ in 0..5 {
        let observation = db.observe_all(&[]).await?;
        let live = |attachment: &str| {
            ctx.stores
                .attachment(ns, attachment)
                .map(|a| LiveAttachment { workspace: a.spec.workspace.clone(), orphan: a.spec.deletion_policy == DeletionPolicy::Orphan })
        };
        let WorkspaceRemoval { drop, orphan } = plan::workspace_removal(ns, name, &observation.catalog, live);
        if drop.is_empty() && orphan.is_empty() {
            return Ok(dropped);
        }
        for (owner, schema) in orphan {
            db.orphan(&owner, &schema).await?;
        }
        let mut held = None;
        for (owner, schema) in drop {
            match db.detach(&owner, &schema, &[]).await {
                Ok(done) if done.schema || done.server => dropped.push(schema),
                Ok(_) => {}
                // A view someone built on our tables holds this schema; the
                // credentials go anyway, and the rest is removed.
                Err(e) if e.reason == Reason::DependentObjects => {
                    db.forget_credentials(&owner, &schema).await?;
                    held.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = held {
            return Err(e);
        }
    }
    Ok(dropped)
}

/// The database's `search_path` goes back to the server's default when
/// the Workspace that set it goes: its entries name schemas that are gone.
async fn reset_search_path(db: &Database) -> Result<(), Failure> {
    let observation = db.observe_all(&[]).await?;
    match plan::search_path(&observation.database_name, &[], &observation.search_path) {
        Some(statement) => db.set_search_path(statement).await,
        None => Ok(()),
    }
}

async fn cleanup(ws: &Workspace, ctx: &Context) -> Result<Action, Error> {
    let (ns, name) = key(ws);
    let ws_key = (ns.clone(), name.clone());
    if ws.spec.deletion_policy == DeletionPolicy::Orphan {
        // Released at once, as a CloudNativePG Database with
        // databaseReclaimPolicy retain: the database keeps what is there.
        let note = "deletionPolicy Orphan: the schemas, servers and user mappings of this namespace's attachments stay in \
                    the database (their comments name the attachment that made them)";
        info!(workspace = %name, namespace = %ns, "deleted; {note}");
        status::event(ctx, ws, false, "Orphaned", "Delete", note.to_owned()).await;
        ctx.pools.remove(&ns, &name);
        ctx.observations.forget(&ws_key);
        return Ok(Action::await_change());
    }
    let result = match cleanup_database(ctx, &ns, &name) {
        Some(db) => match remove_all(ctx, &ns, &name, &db).await {
            Ok(dropped) if ws.spec.search_path.is_some() => reset_search_path(&db).await.map(|_| dropped),
            other => other,
        },
        None => Err(Failure::new(
            Reason::SecretNotFound,
            "the database Secret is gone and no session to the database is open, so nothing can be removed",
        )),
    };
    match result {
        Ok(dropped) => {
            if !dropped.is_empty() {
                info!(workspace = %name, namespace = %ns, schemas = dropped.len(), "deleted: removed its namespace's schemas");
            }
        }
        Err(e) => match deletion::give_up(ctx, ws, &ns, &e).await {
            Some(bound) => {
                let note = format!(
                    "gave up after {bound:?}, leaving what remains in the database: {}. Remove those schemas and servers by \
                     hand when the database is back (their comments name the attachment; the README's \"Cleaning a database \
                     that comes back\" has the queries); to release a Workspace at once: \
                     kubectl patch mws {name} --type merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'",
                    e.message
                );
                warn!(workspace = %name, namespace = %ns, "{note}");
                status::event(ctx, ws, true, Reason::CleanupAbandoned.as_str(), "Delete", note).await;
            }
            None => {
                let held = Failure::new(e.reason, deletion::held_message("mws", &name, &e));
                report(ws, ctx, &held, None, Vec::new(), ws.status.as_ref().map(|s| s.selected.clone()).unwrap_or_default()).await?;
                return Err(Error::Held(held));
            }
        },
    }
    ctx.pools.remove(&ns, &name);
    ctx.observations.forget(&ws_key);
    Ok(Action::await_change())
}
