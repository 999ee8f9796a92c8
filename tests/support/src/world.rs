//! One test's world: a namespace, a source database and a workspace
//! database, with helpers that apply the three kinds and wait for them.

use std::time::Duration;

use kube::api::Api;
use manifold::api::{Connection, TablesSpec, TestResult, TestSpec, WorkspaceConnection, conditions};

use crate::objects::{self, yaml};
use crate::{Postgres, Source, TestNs, namespace, postgres, stdout_ok, wait_for};

pub const WAIT: Duration = Duration::from_secs(60);

/// One test's namespace, source database and workspace database.
pub struct World {
    pub t: TestNs,
    pub pg: &'static Postgres,
    pub src: Source,
    pub ws_db: String,
}

/// A world whose objects no operator watches yet.
pub async fn world_without_operator(prefix: &str) -> World {
    world_on(postgres(), prefix).await
}

/// A world whose databases are on `pg`.
pub async fn world_on(pg: &'static Postgres, prefix: &str) -> World {
    let t = namespace(prefix).await;
    let src = pg.source(prefix).await;
    let ws_db = pg.database(&format!("{prefix}-ws")).await;
    World { t, pg, src, ws_db }
}

impl World {
    /// `kubectl apply` of YAML as a person writes it.
    pub fn apply(&self, yaml: &str) {
        stdout_ok(&self.t.apply(yaml));
    }

    /// Server-side apply of a typed object, as a GitOps controller applies.
    pub fn apply_object<K: serde::Serialize>(&self, object: &K) {
        let args =
            ["-n", self.t.ns.as_str(), "apply", "--server-side", "--force-conflicts", "--field-manager", "manifold-tests", "-f", "-"];
        stdout_ok(&crate::control_plane().kubectl_stdin(&args, &yaml(object)));
    }

    /// A Workspace on database `db` of `pg`, with its URI Secret: the
    /// database owner's, least privilege.
    pub fn workspace_on(&self, name: &str, pg: &Postgres, db: &str) {
        self.workspace_uri(name, &pg.owner_uri(db));
    }

    /// A Workspace whose URI Secret holds `uri`.
    pub fn workspace_uri(&self, name: &str, uri: &str) {
        self.apply_object(&objects::secret(&format!("{name}-db"), &[("uri", uri)]));
        self.apply_object(&objects::workspace(name, &format!("{name}-db")));
    }

    /// The Workspace of `workspace(name)`, adjusted by `change`.
    pub fn workspace_with(&self, name: &str, change: impl FnOnce(&mut manifold::api::Workspace)) {
        self.apply_object(&objects::secret(&format!("{name}-db"), &[("uri", &self.pg.owner_uri(&self.ws_db))]));
        let mut ws = objects::workspace(name, &format!("{name}-db"));
        change(&mut ws);
        self.apply_object(&ws);
    }

    /// Waits until the Workspace satisfies `check`; returns it.
    pub async fn wait_workspace(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&manifold::api::Workspace) -> bool,
    ) -> manifold::api::Workspace {
        let api: Api<manifold::api::Workspace> = self.t.api();
        wait_for(&format!("Workspace {name}: {what}"), WAIT, || async {
            let ws = api.get(name).await.map_err(|e| e.to_string())?;
            if check(&ws) { Ok(ws) } else { Err(format!("{:?}", ws.status)) }
        })
        .await
    }

    pub fn workspace(&self, name: &str) {
        self.workspace_on(name, self.pg, &self.ws_db);
    }

    /// The credentials Secret of connection `name`.
    pub fn credentials(&self, name: &str, password: &str) {
        self.apply_object(&objects::secret(&format!("{name}-creds"), &[("user", &self.src.user), ("password", password)]));
    }

    /// A postgres Connection to the source database, with its credentials
    /// Secret; `change` adjusts it before it is applied.
    pub fn connection(&self, name: &str, change: impl FnOnce(&mut Connection)) {
        self.credentials(name, &self.src.password);
        self.connection_only(name, change);
    }

    /// The Connection alone, its credentials Secret as it is.
    pub fn connection_only(&self, name: &str, change: impl FnOnce(&mut Connection)) {
        let mut conn = objects::postgres_connection(name, "127.0.0.1", self.pg.port, &self.src.db, &format!("{name}-creds"));
        change(&mut conn);
        self.apply_object(&conn);
    }

    /// An attachment; `change` adjusts it before it is applied.
    pub fn attach(&self, name: &str, workspace: &str, connection: &str, change: impl FnOnce(&mut WorkspaceConnection)) {
        let mut att = objects::attachment(name, workspace, connection);
        change(&mut att);
        self.apply_object(&att);
    }

    pub async fn wait_workspace_ready(&self, name: &str) {
        let api: Api<manifold::api::Workspace> = self.t.api();
        wait_for(&format!("Workspace {name} Ready"), WAIT, || async {
            let ws = api.get(name).await.map_err(|e| e.to_string())?;
            if ws.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions)) { Ok(()) } else { Err(format!("{:?}", ws.status)) }
        })
        .await
    }

    /// How many attachments of the namespace are Ready.
    pub async fn ready_count(&self) -> usize {
        let list = self.attachments().list(&Default::default()).await.unwrap();
        list.items.iter().filter(|a| a.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions))).count()
    }

    /// YAML for `n` Connections `c<i>` to the source through 127.0.0.1:`port`,
    /// all with the Secret `shared-creds`, each attached as `a<i>` to the
    /// workspace `workspace(i)`; `change` adjusts each Connection.
    pub fn bulk_yaml(&self, n: usize, port: u16, workspace: impl Fn(usize) -> String, change: impl Fn(&mut Connection)) -> String {
        let mut out = String::new();
        for i in 0..n {
            let mut conn = objects::postgres_connection(&format!("c{i}"), "127.0.0.1", port, &self.src.db, "shared-creds");
            change(&mut conn);
            out.push_str("---\n");
            out.push_str(&yaml(&conn));
            out.push_str("---\n");
            out.push_str(&yaml(&objects::attachment(&format!("a{i}"), &workspace(i), &format!("c{i}"))));
        }
        out
    }

    pub fn attachments(&self) -> Api<WorkspaceConnection> {
        self.t.api()
    }

    /// Waits until `check` accepts the attachment; returns it.
    pub async fn wait_attachment(&self, name: &str, what: &str, check: impl Fn(&WorkspaceConnection) -> bool) -> WorkspaceConnection {
        let api = self.attachments();
        wait_for(&format!("{name}: {what}"), WAIT, || async {
            match api.get_opt(name).await {
                Ok(Some(att)) if check(&att) => Ok(att),
                Ok(other) => Err(format!("{:?}", other.and_then(|a| a.status))),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Waits until the attachment is Ready for its current generation.
    pub async fn wait_ready(&self, name: &str) -> WorkspaceConnection {
        self.wait_attachment(name, "Ready", |a| {
            a.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions) && s.observed_generation == a.metadata.generation)
        })
        .await
    }

    /// Waits until the attachment's Ready reason is `reason`.
    pub async fn wait_reason(&self, name: &str, reason: &str) -> WorkspaceConnection {
        self.wait_attachment(name, reason, |a| ready_reason(a) == Some(reason)).await
    }

    pub async fn wait_gone(&self, name: &str) {
        let api = self.attachments();
        wait_for(&format!("{name} deleted"), WAIT, || async {
            match api.get_opt(name).await {
                Ok(None) => Ok(()),
                Ok(Some(a)) => Err(format!("{:?}", a.status)),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// A session on the workspace database as the workspace role, whose
    /// user mappings the foreign tables use.
    pub async fn ws(&self) -> tokio_postgres::Client {
        self.pg.connect_owner(&self.ws_db).await
    }

    /// A superuser session on the workspace database.
    pub async fn ws_admin(&self) -> tokio_postgres::Client {
        self.pg.connect(&self.ws_db).await
    }
}

pub fn ready_reason(att: &WorkspaceConnection) -> Option<&str> {
    att.status.as_ref().and_then(|s| conditions::find(&s.conditions, conditions::READY)).map(|c| c.reason.as_str())
}

pub async fn schema_exists(c: &tokio_postgres::Client, schema: &str) -> bool {
    c.query_one("SELECT count(*) FROM pg_namespace WHERE nspname = $1", &[&schema]).await.unwrap().get::<_, i64>(0) == 1
}

pub async fn foreign_tables(c: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    c.query(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind = 'f' ORDER BY 1",
        &[&schema],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

pub async fn server_exists(c: &tokio_postgres::Client, server: &str) -> bool {
    c.query_one("SELECT count(*) FROM pg_foreign_server WHERE srvname = $1", &[&server]).await.unwrap().get::<_, i64>(0) == 1
}

pub async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

impl World {
    pub fn connections(&self) -> Api<Connection> {
        self.t.api()
    }

    /// Waits until the connection's last test satisfies `check`.
    pub async fn wait_test(&self, name: &str, what: &str, check: impl Fn(&TestResult) -> bool) -> Connection {
        let api = self.connections();
        wait_for(&format!("{name}: test {what}"), WAIT, || async {
            let conn = api.get(name).await.map_err(|e| e.to_string())?;
            match conn.status.as_ref().and_then(|s| s.test.as_ref()) {
                Some(t) if check(t) => Ok(conn),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// Waits until the Connection satisfies `check`; returns it.
    pub async fn wait_test_or_status(&self, name: &str, check: impl Fn(&Connection) -> bool) -> Connection {
        let api = self.connections();
        wait_for(&format!("Connection {name}"), WAIT, || async {
            let conn = api.get(name).await.map_err(|e| e.to_string())?;
            if check(&conn) { Ok(conn) } else { Err(format!("{:?}", conn.status)) }
        })
        .await
    }

    pub async fn wait_test_reason(&self, name: &str, reason: &str) -> Connection {
        self.wait_test(name, reason, |t| t.reason == reason).await
    }

    /// Every status and Event in the namespace, as JSON text.
    pub fn everything_visible(&self) -> String {
        let statuses = stdout_ok(&self.t.kubectl(&["get", "conn,mws,wsconn", "-o", "json"]));
        let events = stdout_ok(&self.t.kubectl(&["get", "events", "-o", "json"]));
        format!("{statuses}\n{events}")
    }
}

/// Imports only these remote tables.
pub fn include(tables: &[&str]) -> impl Fn(&mut Connection) {
    let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    move |c| c.spec.tables = Some(TablesSpec { include: tables.clone(), exclude: Vec::new() })
}

/// Tests every `interval` (`"0"`: never again after the first).
pub fn interval(interval: &str) -> impl Fn(&mut Connection) {
    let interval = interval.to_owned();
    move |c| c.spec.test = Some(TestSpec { interval: Some(interval.clone()), workspace: None })
}

/// Leaves the connection as it is.
pub fn as_is<K>(_: &mut K) {}

/// `deletionPolicy: Orphan`.
pub fn orphan(att: &mut WorkspaceConnection) {
    att.spec.deletion_policy = manifold::api::DeletionPolicy::Orphan;
}
