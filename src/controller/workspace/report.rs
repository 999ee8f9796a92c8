//! report: the status (version, role, database, the connections, the
//! selected ones, readers, search path) and its conditions.

use super::observe::Seen;
use super::{LEAST_PRIVILEGE, PRIVATE_LOGIN, READERS, key};

use tracing::warn;

use crate::api::conditions::{self, Desired, Status};
use crate::api::{AttachedConnection, Failure, ReaderState, Reason, SelectedConnection, Workspace, WorkspaceStatus};
use crate::controller::context::{Context, Error};
use crate::controller::status::{self, Announce};

/// What each of the workspace's attachments reports, by connection name.
pub(super) fn connections(ctx: &Context, ns: &str, name: &str) -> Vec<AttachedConnection> {
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
pub(super) fn least_privilege(seen: &Seen) -> Desired {
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

/// The `PrivateLogin` condition: False, naming the applications, while
/// sessions other than Manifold's use the workspace's login. That login
/// reads every attached connection's credentials (`pg_user_mappings`
/// shows the mapped user its options), so it is Manifold's alone;
/// people and applications query as readers, who see none.
pub(super) fn private_login(seen: &Seen) -> Desired {
    if seen.others.is_empty() {
        return Desired::new(
            PRIVATE_LOGIN,
            Status::True,
            Reason::LoginPrivate.as_str(),
            format!("only Manifold's sessions use role {:?}", seen.role),
        );
    }
    let mut named: Vec<String> = seen
        .others
        .iter()
        .map(|s| {
            let application = s.application.as_deref().filter(|a| !a.is_empty()).unwrap_or("(no application_name)");
            match s.client.as_deref() {
                Some(client) => format!("{application:?} from {client} (pid {})", s.pid),
                None => format!("{application:?} over a local socket (pid {})", s.pid),
            }
        })
        .collect();
    let more = named.len().saturating_sub(5);
    named.truncate(5);
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    Desired::new(
        PRIVATE_LOGIN,
        Status::False,
        Reason::LoginShared.as_str(),
        crate::secret::sanitize(&format!(
            "{} other session(s) use role {:?}, the workspace's login: {}{more}. That login reads every attached \
             connection's password (SELECT umoptions FROM pg_user_mappings): give people and applications roles of \
             their own, listed in spec.readers, and keep this login for Manifold (CloudNativePG: a managed role for \
             Manifold, applications on the -app Secret)",
            seen.others.len(),
            seen.role,
            named.join(", ")
        )),
    )
}

/// Pure: each reader, and whether it exists (as the last observation saw
/// the roles; without one, as status has it). One that does not is left
/// out, and the others and the attachments are unaffected.
fn readers(ws: &Workspace, seen: Option<&Seen>) -> Vec<ReaderState> {
    let Some(seen) = seen else {
        return ws.status.as_ref().map(|s| s.readers.clone()).unwrap_or_default();
    };
    ws.spec
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
        .collect()
}

pub(super) async fn report(
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
    let was_shared =
        current.and_then(|s| conditions::find(&s.conditions, PRIVATE_LOGIN)).is_some_and(|c| c.reason == Reason::LoginShared.as_str());
    extra.extend(seen.iter().map(least_privilege));
    extra.extend(seen.iter().map(private_login));
    let readers = readers(ws, seen.as_ref());
    if seen.is_some() && !ws.spec.readers.is_empty() {
        let missing: Vec<&str> = readers.iter().filter(|r| r.state != "Ready").map(|r| r.name.as_str()).collect();
        extra.push(match missing.as_slice() {
            [] => Desired::new(READERS, Status::True, Reason::Reachable.as_str(), format!("{} reader roles", readers.len())),
            _ => Desired::new(READERS, Status::False, Reason::RoleNotFound.as_str(), format!("no such role: {}", missing.join(", "))),
        });
    }
    let status = WorkspaceStatus {
        database: current.and_then(|s| s.database.clone()).or_else(|| seen.as_ref().and_then(|s| s.identity.clone())),
        pinned_at: current.and_then(|s| s.pinned_at.clone()).or_else(|| seen.as_ref().filter(|s| s.pinned).map(|_| status::now())),
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
    if let Some(seen) = seen.as_ref().filter(|s| !s.others.is_empty() && !was_shared) {
        let message = private_login(seen).message;
        warn!(workspace = %name, namespace = %ns, role = %seen.role, sessions = seen.others.len(), "other sessions use the workspace's login");
        status::event(ctx, ws, true, Reason::LoginShared.as_str(), "Connect", message).await;
    }
    if let Some(seen) = seen.filter(|s| s.superuser && !was_superuser) {
        warn!(workspace = %name, namespace = %ns, role = %seen.role, "the workspace role is a superuser");
        let message = least_privilege(&seen).message;
        status::event(ctx, ws, true, Reason::SuperuserRole.as_str(), "Connect", message).await;
    }
    Ok(())
}
