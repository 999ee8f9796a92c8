//! search path: the one the spec wants (`Auto`: Turbot Pipes' order), and
//! setting it on the database when it differs.

use super::SEARCH_PATH;
use super::observe::Seen;

use kube::ResourceExt;

use crate::api::conditions::{self, Desired, Status};
use crate::api::{Reason, SearchPathMode, Workspace};
use crate::controller::context::Context;
use crate::postgres::Database;
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
pub(super) async fn apply(ctx: &Context, ws: &Workspace, db: &Database, seen: &mut Seen) -> Option<Desired> {
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
