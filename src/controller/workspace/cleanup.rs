//! cleanup: when the Workspace is deleted, the removal of everything its
//! namespace made in its database (or, with `Orphan`, nothing), and when
//! to stop waiting for a database that is gone.

use super::key;
use super::report::report;

use kube::runtime::controller::Action;
use tracing::{info, warn};

use crate::api::{DeletionPolicy, Failure, Reason, Workspace};
use crate::controller::context::{Context, Error};
use crate::controller::deletion::{self, cleanup_database};
use crate::controller::status::{self};
use crate::postgres::WorkspaceDb;
use crate::postgres::plan::{self, LiveAttachment, WorkspaceRemoval};

/// Removes what the planner says a workspace's deletion removes
/// (`plan::workspace_removal`), until a fresh observation finds nothing more
/// to do (an attach that committed meanwhile is found the next round).
/// Returns the schemas dropped, or the first failure.
pub(super) async fn remove_all(ctx: &Context, ns: &str, name: &str, db: &dyn WorkspaceDb) -> Result<Vec<String>, Failure> {
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
pub(super) async fn reset_search_path(db: &dyn WorkspaceDb) -> Result<(), Failure> {
    let observation = db.observe_all(&[]).await?;
    match plan::search_path(&observation.database_name, &[], &observation.search_path) {
        Some(statement) => db.set_search_path(statement).await,
        None => Ok(()),
    }
}

/// After a cleanup that removed what it had to: the log line, then the pin.
async fn removed(ns: &str, name: &str, dropped: &[String], db: Option<std::sync::Arc<dyn WorkspaceDb>>) {
    if !dropped.is_empty() {
        info!(workspace = %name, namespace = %ns, schemas = dropped.len(), "deleted: removed its namespace's schemas");
    }
    // Last: a session opened after this would not find the pin. A pin left
    // behind names a Workspace that is gone, and harms none.
    if let Some(db) = db
        && let Err(e) = db.unpin().await
    {
        warn!(workspace = %name, namespace = %ns, reason = %e.reason, "could not remove the Workspace's pin: {}", e.message);
    }
}

pub(super) async fn cleanup(ws: &Workspace, ctx: &Context) -> Result<Action, Error> {
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
    let result = match cleanup_database(ctx, &ns, &name, ws.metadata.uid.as_deref()) {
        Some(db) => match remove_all(ctx, &ns, &name, &db).await {
            Ok(dropped) if ws.spec.search_path.is_some() => reset_search_path(&db).await.map(|_| dropped),
            other => other,
        }
        .map(|dropped| (dropped, Some(db))),
        None => Err(Failure::new(
            Reason::SecretNotFound,
            "the database Secret is gone and no session to the database is open, so nothing can be removed",
        )),
    };
    match result {
        Ok((dropped, db)) => removed(&ns, &name, &dropped, db).await,
        Err(e) => match deletion::give_up(ctx, ws, &ns, &e).await {
            Some(bound) => {
                let note = format!(
                    "gave up after {bound:?}, leaving what remains in the database: {}. Remove those schemas and servers by \
                     hand when the database is back (their comments name the attachment; docs/src/operations.md, \"Cleaning a database \
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{WorkspaceConnection, WorkspaceConnectionSpec};
    use crate::controller::testing::{FakeDb, context, owned};
    use crate::postgres::plan::Owner;

    fn owner(ns: &str, name: &str) -> Owner {
        Owner { namespace: ns.into(), name: name.into() }
    }

    fn staying() -> WorkspaceConnection {
        let mut att = WorkspaceConnection::new(
            "keep",
            WorkspaceConnectionSpec { workspace: "ws".into(), connection: "c".into(), deletion_policy: DeletionPolicy::Orphan },
        );
        att.metadata.namespace = Some("t".into());
        att
    }

    #[tokio::test]
    async fn a_workspace_removes_what_its_namespace_made_orphans_what_stays_and_leaves_the_rest() {
        let ctx = context(vec![], vec![], vec![staying()]);
        let db = FakeDb::with(&[("a", owned(&owner("t", "gone"))), ("b", owned(&owner("t", "keep"))), ("c", owned(&owner("other", "x")))]);
        let dropped = remove_all(&ctx, "t", "ws", db.as_ref()).await.unwrap();
        assert_eq!(dropped, ["a"]);
        let calls = db.calls();
        assert!(calls.contains(&"orphan t/keep b".to_string()) && calls.contains(&"detach t/gone a".to_string()), "{calls:?}");
        assert!(!calls.iter().any(|c| c.ends_with(" c")), "another namespace's schema is not touched: {calls:?}");
        assert_eq!(db.catalog.lock().unwrap().keys().collect::<Vec<_>>(), ["c"]);
    }

    #[tokio::test]
    async fn a_schema_that_a_view_holds_loses_its_credentials_and_the_rest_still_goes() {
        let ctx = context(vec![], vec![], vec![]);
        let db = FakeDb::with(&[("a", owned(&owner("t", "one"))), ("b", owned(&owner("t", "two")))]);
        db.fail("a", Failure::new(Reason::DependentObjects, "view v depends on a"));
        let err = remove_all(&ctx, "t", "ws", db.as_ref()).await.unwrap_err();
        assert_eq!(err.reason, Reason::DependentObjects);
        let calls = db.calls();
        assert!(calls.contains(&"forget t/one a".to_string()), "{calls:?}");
        assert!(calls.contains(&"detach t/two b".to_string()), "{calls:?}");
        assert_eq!(db.catalog.lock().unwrap().keys().collect::<Vec<_>>(), ["a"]);
    }

    #[tokio::test]
    async fn a_database_that_cannot_be_observed_stops_the_removal_with_its_reason() {
        let ctx = context(vec![], vec![], vec![]);
        let db = FakeDb::with(&[("a", owned(&owner("t", "one")))]);
        db.fail("observe", Failure::new(Reason::WorkspaceUnreachable, "connection refused"));
        assert_eq!(remove_all(&ctx, "t", "ws", db.as_ref()).await.unwrap_err().reason, Reason::WorkspaceUnreachable);
        assert_eq!(db.calls(), ["observe"], "nothing is dropped blind");
    }
}
