//! search path: the one the spec wants (`Auto`: Turbot Pipes' order), and
//! setting it on the database when it differs.

use super::SEARCH_PATH;
use super::observe::Seen;

use kube::ResourceExt;

use crate::api::conditions::{self, Desired, Status};
use crate::api::{Reason, SearchPathMode, Workspace};
use crate::controller::context::Context;
use crate::postgres::WorkspaceDb;
use crate::postgres::plan::{self};

/// The search path the spec wants, if it wants one. `Auto`: the prefix,
/// `public`, the aggregators, then the connections, each group sorted
/// (Turbot Pipes' order), from the attachments that are Ready.
pub(super) fn search_path(ctx: &Context, ns: &str, ws: &Workspace) -> Option<Vec<String>> {
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

/// Sets the search path the spec wants, if it wants one and the database
/// has another, and says so in the `SearchPath` condition.
pub(super) async fn apply(ctx: &Context, ws: &Workspace, db: &dyn WorkspaceDb, seen: &mut Seen) -> Option<Desired> {
    let (ns, name) = (ws.namespace().unwrap_or_default(), ws.name_any());
    let path = search_path(ctx, &ns, ws)?;
    let ok = || Desired::new(SEARCH_PATH, Status::True, Reason::Reachable.as_str(), "as the spec wants");
    Some(match plan::search_path(&seen.database, &path, &seen.search_path) {
        None => ok(),
        Some(statement) => match db.set_search_path(statement).await {
            Ok(()) => {
                ctx.observations.set_search_path(&(ns, name), &path);
                seen.search_path = path;
                ok()
            }
            Err(f) => Desired::new(SEARCH_PATH, Status::False, f.reason.as_str(), f.message),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Failure;
    use crate::controller::testing::{FakeDb, context};

    fn workspace(schemas: &[&str]) -> Workspace {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "manifold.dev/v1alpha1", "kind": "Workspace",
            "metadata": { "name": "ws", "namespace": "t" },
            "spec": {
                "database": { "secretRef": { "name": "db", "key": "uri" } },
                "searchPath": { "mode": "Explicit", "schemas": schemas },
            },
        }))
        .unwrap()
    }

    fn seen(path: &[&str]) -> Seen {
        Seen {
            version: "17".into(),
            role: "app".into(),
            superuser: false,
            database: "ws".into(),
            search_path: path.iter().map(|s| s.to_string()).collect(),
            roles: Default::default(),
            identity: None,
            pinned: true,
            others: Vec::new(),
        }
    }

    #[tokio::test]
    async fn the_search_path_is_set_once_and_only_when_the_database_has_another() {
        let ws = workspace(&["sales", "public"]);
        let ctx = context(vec![ws.clone()], vec![], vec![]);
        let db = FakeDb::with(&[]);
        let mut now = seen(&["public"]);
        let condition = apply(&ctx, &ws, db.as_ref(), &mut now).await.unwrap();
        assert_eq!((condition.status, db.calls()), (Status::True, vec!["set search_path".to_string()]));
        assert_eq!(*db.search_path.lock().unwrap(), ["sales", "public"]);
        assert_eq!(now.search_path, ["sales", "public"], "what the database has now");
        let again = apply(&ctx, &ws, db.as_ref(), &mut now).await.unwrap();
        assert_eq!((again.status, db.calls().len()), (Status::True, 1), "in place: nothing runs");
    }

    #[tokio::test]
    async fn a_refused_search_path_is_a_false_condition_with_the_reason_and_nothing_is_recorded() {
        let ws = workspace(&["sales"]);
        let ctx = context(vec![ws.clone()], vec![], vec![]);
        let db = FakeDb::with(&[]);
        db.fail("search_path", Failure::new(Reason::PermissionDenied, "must be owner of database ws"));
        let mut now = seen(&["public"]);
        let condition = apply(&ctx, &ws, db.as_ref(), &mut now).await.unwrap();
        assert_eq!((condition.status, condition.reason.as_str()), (Status::False, "PermissionDenied"));
        assert_eq!(now.search_path, ["public"]);
    }

    #[tokio::test]
    async fn a_workspace_without_a_search_path_leaves_the_database_alone() {
        let mut ws = workspace(&["sales"]);
        ws.spec.search_path = None;
        let ctx = context(vec![ws.clone()], vec![], vec![]);
        let db = FakeDb::with(&[]);
        assert!(apply(&ctx, &ws, db.as_ref(), &mut seen(&["public"])).await.is_none());
        assert!(db.calls().is_empty());
    }
}
