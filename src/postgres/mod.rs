//! The Postgres side: one small pool per workspace, the catalog observation,
//! and the transactions that attach, detach and test. SQL text comes only
//! from `sql`; decisions come only from `plan`.

pub mod plan;
pub mod sql;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;

use crate::api::Reason;
use plan::{AttachPlan, Change, Observed, Owner, Refusal};

/// A failed database operation, classified into a condition reason. The
/// message is for a person and has been cleaned of every secret value the
/// operation used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    pub reason: Reason,
    pub message: String,
}

impl DbError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        DbError { reason, message: message.into() }
    }
}

/// Replaces every secret value in `text` with `***`, longest first, so that
/// a value that contains another is not half revealed.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for s in secrets {
        out = out.replace(s, "***");
    }
    out
}

/// Maps a Postgres error to a reason. postgres_fdw reports a failed remote
/// connection as 08001 with libpq's text in the detail, so the text decides
/// between a wrong password, an unreachable host and a timeout.
pub fn classify(err: &tokio_postgres::Error, secrets: &[&str]) -> DbError {
    let Some(db) = err.as_db_error() else {
        // No server response: the workspace connection itself broke.
        return DbError::new(Reason::WorkspaceUnreachable, redact(&format!("workspace database: {err}"), secrets));
    };
    let mut text = db.message().to_owned();
    if let Some(detail) = db.detail() {
        text.push_str(": ");
        text.push_str(detail.trim());
    }
    let lower = text.to_lowercase();
    let code = db.code();
    let reason = if *code == SqlState::DEPENDENT_OBJECTS_STILL_EXIST {
        Reason::DependentObjects
    } else if *code == SqlState::QUERY_CANCELED || *code == SqlState::LOCK_NOT_AVAILABLE {
        Reason::Timeout
    } else if *code == SqlState::INVALID_PASSWORD
        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        || lower.contains("password authentication failed")
        || lower.contains("no password supplied")
        || lower.contains("password is required")
        || lower.contains("authentication failed")
    {
        Reason::AuthenticationFailed
    } else if lower.contains("timeout expired") || lower.contains("timed out") {
        Reason::Timeout
    } else if *code == SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION
        || *code == SqlState::CONNECTION_EXCEPTION
        || lower.contains("could not connect")
        || lower.contains("connection refused")
        || lower.contains("could not translate host name")
    {
        Reason::HostUnreachable
    } else if *code == SqlState::FDW_SCHEMA_NOT_FOUND || *code == SqlState::INVALID_SCHEMA_NAME {
        Reason::RemoteSchemaMissing
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        Reason::PermissionDenied
    } else if (*code == SqlState::FEATURE_NOT_SUPPORTED || *code == SqlState::UNDEFINED_FILE)
        && lower.contains("extension")
        || *code == SqlState::UNDEFINED_OBJECT && lower.contains("foreign-data wrapper")
    {
        Reason::ExtensionMissing
    } else if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CANNOT_CONNECT_NOW || code.code().starts_with("08") {
        Reason::WorkspaceUnreachable
    } else {
        Reason::DatabaseError
    };
    // One line: libpq's hints arrive as extra tab-indented lines.
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    DbError::new(reason, redact(&text, secrets))
}

/// Timeouts of the work done in a workspace database.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub statement: Duration,
    pub lock: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(10), statement: Duration::from_secs(30), lock: Duration::from_secs(10) }
    }
}

/// Counts the statements Manifold sends to workspace databases, for the
/// metrics: queries (catalog reads, locks, settings) and DDL. The counters
/// are shared handles: every clone counts into the same metric.
#[derive(Default, Debug, Clone)]
pub struct Counters {
    pub queries: prometheus_client::metrics::counter::Counter,
    pub ddl: prometheus_client::metrics::counter::Counter,
}

static NEXT_DATABASE_ID: AtomicU64 = AtomicU64::new(1);

/// One workspace database: a small pool and what we run in it.
#[derive(Clone)]
pub struct Database {
    /// Distinguishes pools: an observation taken through one pool says
    /// nothing about the database a new URI points to.
    id: u64,
    pool: Pool,
    timeouts: Timeouts,
    counters: Counters,
    /// The workspace URI's password, to clean error messages with.
    uri_secret: Arc<str>,
}

/// The result of an attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub change: Change,
    pub tables: i64,
}

/// The result of a detach: what was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    pub schema: bool,
    pub server: bool,
}

/// Every managed schema of a workspace, by name, as one observation showed it.
pub type Catalog = HashMap<String, Observed>;

/// One at-rest observation of a workspace database.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The `Database::id` it was taken through.
    pub database: u64,
    pub taken: std::time::Instant,
    pub version: String,
    pub catalog: Catalog,
}

fn parse_catalog(schemas: &serde_json::Value) -> Catalog {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    schemas
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let observed = Observed {
                schema_comment: text(&s["comment"]),
                foreign_tables: s["foreign_tables"].as_i64().unwrap_or(0),
                server_comment: text(&s["server_comment"]),
                mapping: s["mapping"].as_bool().unwrap_or(false),
            };
            Some((text(&s["schema"])?, observed))
        })
        .collect()
}

impl Database {
    /// Builds a pool for a libpq URI. Nothing connects until first use.
    pub fn new(uri: &str, max_connections: usize, timeouts: Timeouts, counters: Counters) -> Result<Self, DbError> {
        let mut config: tokio_postgres::Config = uri
            .parse()
            .map_err(|_| DbError::new(Reason::InvalidSpec, "the workspace Secret's URI is not a valid libpq connection URI"))?;
        let uri_secret: Arc<str> =
            config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default().into();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeouts.connect);
        }
        config.application_name("manifold");
        let manager = Manager::from_config(config, tls(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeouts.statement + timeouts.connect))
            .create_timeout(Some(timeouts.connect))
            .build()
            .map_err(|e| DbError::new(Reason::InvalidSpec, format!("workspace pool: {e}")))?;
        Ok(Database { id: NEXT_DATABASE_ID.fetch_add(1, Ordering::Relaxed), pool, timeouts, counters, uri_secret })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(|e| {
            let text = match &e {
                deadpool_postgres::PoolError::Backend(err) => match err.as_db_error() {
                    Some(db) => db.message().to_owned(),
                    None => err.to_string(),
                },
                deadpool_postgres::PoolError::Timeout(_) => "timed out waiting for a connection".to_owned(),
                other => other.to_string(),
            };
            DbError::new(Reason::WorkspaceUnreachable, redact(&format!("cannot connect to the workspace database: {text}"), &[&self.uri_secret]))
        })
    }

    fn count(&self, statements: u64, ddl: u64) {
        self.counters.queries.inc_by(statements.saturating_sub(ddl));
        self.counters.ddl.inc_by(ddl);
    }

    /// The at-rest resync: the server version and every managed schema, in
    /// one query.
    pub async fn observe_all(&self) -> Result<Observation, DbError> {
        let client = self.client().await?;
        self.count(1, 0);
        let row = client.query_one(sql::OBSERVE_ALL, &[]).await.map_err(|e| classify(&e, &[&self.uri_secret]))?;
        let version: String = row.get("version");
        let schemas: serde_json::Value = row.get("schemas");
        Ok(Observation {
            database: self.id,
            taken: std::time::Instant::now(),
            version: version.split_whitespace().next().unwrap_or_default().to_owned(),
            catalog: parse_catalog(&schemas),
        })
    }

    /// Every secret value a plan's statements carry, and the workspace URI's
    /// password: what error messages are cleaned of.
    fn secrets_of<'a>(&'a self, plan: &'a AttachPlan) -> Vec<&'a str> {
        plan.server_options
            .iter()
            .chain(&plan.mapping_options)
            .filter(|(_, v)| v.is_secret())
            .map(|(_, v)| v.expose())
            .chain([&*self.uri_secret])
            .collect()
    }

    /// Brings one attachment to its plan in one transaction: extension,
    /// server, user mapping, schema, import, marker. Either all of it
    /// happens, or none.
    pub async fn attach(&self, plan: &AttachPlan) -> Result<Attached, DbError> {
        let secrets = self.secrets_of(plan);
        let err = |e: tokio_postgres::Error| classify(&e, &secrets);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let observed = self.lock_and_observe(&tx, &plan.schema, &plan.server).await.map_err(err)?;
        let change = match plan::decide(plan, &observed) {
            Ok(change) => change,
            Err(Refusal::Conflict(message)) => return Err(DbError::new(Reason::SchemaConflict, message)),
        };
        let mut ddl: Vec<String> = Vec::new();
        match &change {
            Change::None => {
                tx.commit().await.map_err(err)?;
                return Ok(Attached { change, tables: observed.foreign_tables });
            }
            Change::Recomment => {}
            Change::Update { remap, reimport } => {
                if *remap {
                    ddl.push(sql::drop_user_mapping(&plan.server));
                    ddl.push(sql::create_user_mapping(&plan.server, &plan.mapping_options));
                }
                if *reimport {
                    ddl.extend(self.drop_owned_tables(&tx, &plan.schema, &plan.server).await.map_err(err)?);
                    ddl.push(sql::import_foreign_schema(&plan.remote_schema, &plan.tables, &plan.server, &plan.schema));
                }
            }
            Change::Rebuild => {
                ddl.push(sql::create_extension(&plan.extension));
                if observed.schema_comment.is_some() {
                    ddl.extend(self.drop_owned_tables(&tx, &plan.schema, &plan.server).await.map_err(err)?);
                }
                if observed.server_comment.is_some() {
                    ddl.push(sql::drop_user_mapping(&plan.server));
                    ddl.push(sql::drop_server(&plan.server));
                }
                ddl.push(sql::create_server(plan));
                ddl.push(sql::comment_on_server(&plan.server, &plan.server_marker().render()));
                ddl.push(sql::create_user_mapping(&plan.server, &plan.mapping_options));
                if observed.schema_comment.is_none() {
                    ddl.push(sql::create_schema(&plan.schema));
                }
                ddl.push(sql::import_foreign_schema(&plan.remote_schema, &plan.tables, &plan.server, &plan.schema));
            }
        }
        // All DDL in one round trip; then the table count for the marker.
        let tables = if ddl.is_empty() {
            observed.foreign_tables
        } else {
            self.count(ddl.len() as u64, ddl.len() as u64);
            tx.batch_execute(&ddl.join(";\n")).await.map_err(err)?;
            self.count(1, 0);
            tx.query_one(sql::COUNT_FOREIGN_TABLES, &[&plan.schema]).await.map_err(err)?.get(0)
        };

        self.count(1, 1);
        tx.batch_execute(&sql::comment_on_schema(&plan.schema, &plan.schema_marker(tables).render()))
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        self.disconnect_fdw(&client, plan).await;
        Ok(Attached { change, tables })
    }

    /// postgres_fdw keeps the remote connection an import opened for the
    /// life of the session; a pooled session must not collect them.
    async fn disconnect_fdw(&self, client: &deadpool_postgres::Object, plan: &AttachPlan) {
        if plan.wrapper == "postgres_fdw" {
            self.count(1, 0);
            let _ = client.batch_execute(sql::DISCONNECT_FDW).await;
        }
    }

    /// Tests a plan: in one transaction that is always rolled back, creates
    /// the server, the user mapping and a scratch schema, imports, and reads
    /// one row of the first imported table. Nothing is left behind. Returns
    /// the number of tables imported. `timeout` bounds every statement.
    pub async fn test(&self, plan: &AttachPlan, timeout: Duration) -> Result<i64, DbError> {
        let secrets = self.secrets_of(plan);
        let err = |e: tokio_postgres::Error| classify(&e, &secrets);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let ms = timeout.as_millis() as u64;
        let ddl = [
            sql::set_timeouts(ms, ms),
            sql::create_extension(&plan.extension),
            sql::create_server(plan),
            sql::create_user_mapping(&plan.server, &plan.mapping_options),
            sql::create_schema(&plan.schema),
            sql::import_foreign_schema(&plan.remote_schema, &plan.tables, &plan.server, &plan.schema),
        ];
        // The timeouts are not DDL; the listing query after is counted with them.
        self.count(ddl.len() as u64 + 1, ddl.len() as u64 - 1);
        tx.batch_execute(&ddl.join(";\n")).await.map_err(err)?;
        let tables: Vec<String> = tx
            .query(sql::OWNED_FOREIGN_TABLES, &[&plan.schema, &plan.server])
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(first) = tables.first() {
            self.count(1, 0);
            tx.simple_query(&sql::read_one_row(&plan.schema, first)).await.map_err(err)?;
        }
        tx.rollback().await.map_err(err)?;
        self.disconnect_fdw(&client, plan).await;
        Ok(tables.len() as i64)
    }

    /// Removes what an attachment owns: its foreign tables, its schema, its
    /// user mapping and its server, never anything else. If something that
    /// Manifold did not create depends on them, Postgres refuses (RESTRICT),
    /// nothing is dropped, and the error says `DependentObjects`.
    pub async fn detach(&self, owner: &Owner, schema: &str, server: &str) -> Result<Detached, DbError> {
        let err = |e: tokio_postgres::Error| classify(&e, &[&self.uri_secret]);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let observed = self.lock_and_observe(&tx, schema, server).await.map_err(err)?;
        let removal = plan::removal(owner, &observed);
        let mut ddl = Vec::new();
        if removal.schema {
            if removal.server {
                ddl.extend(self.drop_owned_tables(&tx, schema, server).await.map_err(err)?);
            }
            ddl.push(sql::drop_schema(schema));
        }
        if removal.server {
            ddl.push(sql::drop_user_mapping(server));
            ddl.push(sql::drop_server(server));
        }
        if !ddl.is_empty() {
            self.count(ddl.len() as u64, ddl.len() as u64);
            tx.batch_execute(&ddl.join(";\n")).await.map_err(|e| {
                let mut e = err(e);
                if e.reason == Reason::DependentObjects {
                    e.message = format!("detach held, nothing was dropped: {}", e.message);
                }
                e
            })?;
        }
        tx.commit().await.map_err(err)?;
        Ok(Detached { schema: removal.schema, server: removal.server })
    }

    async fn lock_and_observe(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: &str,
    ) -> Result<Observed, tokio_postgres::Error> {
        self.count(3, 0);
        tx.batch_execute(&sql::set_timeouts(
            self.timeouts.statement.as_millis() as u64,
            self.timeouts.lock.as_millis() as u64,
        ))
        .await?;
        tx.execute(sql::LOCK_SCHEMA, &[&schema]).await?;
        let row = tx.query_one(sql::OBSERVE_ONE, &[&schema, &server]).await?;
        Ok(Observed {
            schema_comment: row.get(0),
            foreign_tables: row.get(1),
            server_comment: row.get(2),
            mapping: row.get(3),
        })
    }

    async fn drop_owned_tables(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: &str,
    ) -> Result<Option<String>, tokio_postgres::Error> {
        self.count(1, 0);
        let rows = tx.query(sql::OWNED_FOREIGN_TABLES, &[&schema, &server]).await?;
        let tables: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        Ok(sql::drop_foreign_tables(schema, &tables))
    }
}

/// TLS for workspace connections: rustls with the webpki roots. Used when the
/// URI asks for it (`sslmode=require`) or the server offers it (`prefer`).
fn tls() -> tokio_postgres_rustls::MakeRustlsConnect {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// The pools of every workspace, keyed by namespace/name. A pool is made on
/// first use and replaced when the workspace's connection URI changes.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<(String, String), (u64, Database)>>,
    pub counters: Counters,
    pub max_connections: usize,
    pub timeouts: Timeouts,
}

impl Pools {
    pub fn new(max_connections: usize, timeouts: Timeouts, counters: Counters) -> Self {
        Pools { pools: Mutex::default(), counters, max_connections, timeouts }
    }

    /// The database of a workspace, for its current URI.
    pub fn get(&self, namespace: &str, name: &str, uri: &str) -> Result<Database, DbError> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        uri.hash(&mut hasher);
        let version = hasher.finish();
        let key = (namespace.to_owned(), name.to_owned());
        let mut pools = self.pools.lock().unwrap();
        if let Some((v, db)) = pools.get(&key)
            && *v == version
        {
            return Ok(db.clone());
        }
        let db = Database::new(uri, self.max_connections, self.timeouts, self.counters.clone())?;
        if let Some((_, old)) = pools.insert(key, (version, db.clone())) {
            old.pool.close();
        }
        Ok(db)
    }

    /// The pool a workspace has now, whatever its Secret says: a detach can
    /// still use it after the Secret is gone.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Database> {
        self.pools.lock().unwrap().get(&(namespace.to_owned(), name.to_owned())).map(|(_, db)| db.clone())
    }

    /// Drops a workspace's pool, closing its connections.
    pub fn remove(&self, namespace: &str, name: &str) {
        if let Some((_, db)) = self.pools.lock().unwrap().remove(&(namespace.to_owned(), name.to_owned())) {
            db.pool.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_replaces_longest_first() {
        assert_eq!(redact("pw=abc123 and abc", &["abc", "abc123"]), "pw=*** and ***");
        assert_eq!(redact("nothing", &[""]), "nothing");
    }
}
