//! Where a test runs: only where the connection may send its credentials.

use std::sync::Arc;

use kube::{Resource, ResourceExt};

use crate::api::{Connection, Failure, Reason, Workspace, conditions};
use crate::controller::context::Context;

/// Where a test runs.
pub enum TestPlace {
    /// A Workspace the connection is attached to.
    Workspace(Arc<Workspace>),
    /// The cluster admin's test database (`--test-database-uri-file`).
    AdminDatabase,
}

/// The key of the admin's test database among the pools: no namespace is
/// named "".
pub(super) const ADMIN_TEST_POOL: (&str, &str) = ("", "manifold-test-database");

/// Where a test runs: a Workspace the connection is attached to, since a
/// test sends the connection's credentials to the workspace's database
/// (the rolled-back user mapping is statement text there), and only an
/// attachment, which the admission policy lets only those who may attach
/// the connection make, says where its credentials may go. The Workspace
/// is the one the attachment is pinned to (its uid, recorded when the
/// attachment first saw it), never another made since under the same
/// name; its database is the one its pin proves. Without one, the cluster
/// admin's test database, if there is one: a Connection can be tested
/// before it is attached anywhere. `spec.test.workspace` picks one of the
/// attached Workspaces; without it, the first Ready one by name. Never
/// another namespace's, and never one a name alone chooses.
pub(super) fn test_workspace(ctx: &Context, conn: &Connection) -> Result<TestPlace, String> {
    let ns = conn.namespace().unwrap_or_default();
    let name = conn.name_any();
    let mut attached: Vec<Arc<Workspace>> = ctx
        .stores
        .attachments_of_connection(&ns, &name)
        .iter()
        .filter(|a| a.meta().deletion_timestamp.is_none())
        .filter_map(|a| {
            let pinned = a.status.as_ref()?.workspace_uid.as_deref()?;
            ctx.stores.workspace(&ns, &a.spec.workspace).filter(|w| w.metadata.uid.as_deref() == Some(pinned))
        })
        .filter(|w| w.meta().deletion_timestamp.is_none())
        .collect();
    attached.sort_by_key(|w| w.name_any());
    attached.dedup_by_key(|w| w.name_any());
    if let Some(wanted) = conn.spec.test.as_ref().and_then(|t| t.workspace.as_deref()) {
        return attached.into_iter().find(|w| w.name_any() == wanted).map(TestPlace::Workspace).ok_or_else(|| {
            format!(
                "spec.test.workspace {wanted:?} is not a Workspace this connection is attached to: a test runs only where \
                 the connection is attached"
            )
        });
    }
    match attached.into_iter().find(|w| w.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions))) {
        Some(ws) => Ok(TestPlace::Workspace(ws)),
        None if ctx.settings.test_database.is_some() => Ok(TestPlace::AdminDatabase),
        None => Err("the connection is attached to no Ready Workspace, and no test database is configured: a test runs \
                     only where the connection is attached"
            .to_owned()),
    }
}

/// The admin's test database: the URI in the file, read at each test so
/// that a rotated Secret behind the file is taken up.
pub(super) fn admin_test_database(ctx: &Context) -> Result<crate::postgres::Db, Failure> {
    let path = ctx.settings.test_database.as_ref().ok_or_else(|| Failure::new(Reason::NoWorkspace, "no test database"))?;
    let uri = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(Reason::WorkspaceUnreachable, format!("the test database's URI file {}: {e}", path.display())))?;
    let target = crate::postgres::Target { uri: uri.trim().to_owned(), ca: None, purpose: crate::postgres::Purpose::AdminTests };
    ctx.pools
        .get(ADMIN_TEST_POOL.0, ADMIN_TEST_POOL.1, &target)
        .map(|db| std::sync::Arc::new(db) as crate::postgres::Db)
        .map_err(|f| Failure::new(f.reason, format!("the test database: {}", f.message)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{WorkspaceConnection, WorkspaceConnectionStatus};
    use crate::controller::testing::context;

    fn workspace(name: &str, uid: &str) -> Workspace {
        let mut ws: Workspace = serde_json::from_value(serde_json::json!({
            "apiVersion": "manifold.dev/v1alpha1", "kind": "Workspace",
            "metadata": { "name": name, "namespace": "t", "uid": uid },
            "spec": { "database": { "secretRef": { "name": "db", "key": "uri" } } },
            "status": { "conditions": [{ "type": "Ready", "status": "True", "reason": "Reachable", "message": "",
                                         "lastTransitionTime": "2026-01-01T00:00:00Z" }] },
        }))
        .unwrap();
        ws.metadata.namespace = Some("t".into());
        ws
    }

    fn attachment(name: &str, ws: &str, pinned: Option<&str>) -> WorkspaceConnection {
        let mut att = WorkspaceConnection::new(
            name,
            crate::api::WorkspaceConnectionSpec { workspace: ws.into(), connection: "prod".into(), deletion_policy: Default::default() },
        );
        att.metadata.namespace = Some("t".into());
        att.status = Some(WorkspaceConnectionStatus { workspace_uid: pinned.map(str::to_owned), ..Default::default() });
        att
    }

    fn prod() -> Connection {
        let mut c = Connection::new(
            "prod",
            crate::api::ConnectionSpec { schema: None, plugin: None, aggregator: None, credentials: None, tables: None, test: None },
        );
        c.metadata.namespace = Some("t".into());
        c
    }

    fn placed(ctx: &Context) -> Option<String> {
        match test_workspace(ctx, &prod()) {
            Ok(TestPlace::Workspace(ws)) => Some(format!("{}/{}", ws.name_any(), ws.metadata.uid.clone().unwrap_or_default())),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_test_goes_only_to_the_workspace_an_attachment_is_pinned_to() {
        // Pinned to the Workspace "ws" that exists: the test goes there.
        let ctx = context(vec![workspace("ws", "uid-1")], vec![prod()], vec![attachment("a", "ws", Some("uid-1"))]);
        assert_eq!(placed(&ctx).as_deref(), Some("ws/uid-1"));
        // "ws" was deleted and made again (another uid): not there.
        let ctx = context(vec![workspace("ws", "uid-2")], vec![prod()], vec![attachment("a", "ws", Some("uid-1"))]);
        assert_eq!(placed(&ctx), None);
        // An attachment that has not seen its Workspace yet places nothing.
        let ctx = context(vec![workspace("ws", "uid-1")], vec![prod()], vec![attachment("a", "ws", None)]);
        assert_eq!(placed(&ctx), None);
        // Of two, the pinned one, whatever the names' order.
        let ctx = context(
            vec![workspace("aa", "uid-a"), workspace("zz", "uid-z")],
            vec![prod()],
            vec![attachment("a", "aa", None), attachment("z", "zz", Some("uid-z"))],
        );
        assert_eq!(placed(&ctx).as_deref(), Some("zz/uid-z"));
    }
}
