//! The Postgres side: small pools per workspace, the catalog observation,
//! and the transactions that attach, detach, orphan and test. SQL text
//! comes only from `sql`; every decision about DDL comes only from `plan`.
//! This module runs what the planner returns and records the result.
//!
//! Every wait is bounded. Sessions start with `search_path`,
//! `statement_timeout` and `lock_timeout` pinned; every operation also has
//! a client-side deadline, after which its session is cancelled and thrown
//! away rather than returned to the pool. Attaches, tests and observations
//! have pools of their own, so that neither starves the others, and the
//! observation lock never waits for a slot that an attach holds. Work on a
//! source that last timed out or could not be reached (a *suspect*) may
//! hold all of a pool's sessions but one: a source that never answers
//! cannot keep a healthy one waiting.

pub mod plan;
pub mod sql;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::api::{Failure, Reason};
use crate::plugins::EXTENSION_SCHEMA;
use crate::secret::{redact, sanitize};

mod errors;
pub use errors::{chain, classify};
use std::collections::BTreeMap;

use plan::{AttachPlan, Change, Column, Locked, Marker, Member, Observed, Owner, Source, Statement, TableDef, WrapperState};

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

impl Timeouts {
    /// The client-side bound of one operation: longer than anything the
    /// server-side timeouts allow, so that it fires only when the server
    /// does not answer at all.
    fn deadline(&self, statement: Duration) -> Duration {
        self.connect + self.lock + statement * 2 + Duration::from_secs(5)
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

/// How to reach a workspace database: its libpq URI and, optionally, the
/// CA that signed its certificate (PEM).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Target {
    pub uri: String,
    pub ca: Option<Vec<u8>>,
}

/// Sessions per workspace database, by what they are for.
#[derive(Clone, Copy, Debug)]
pub struct PoolSizes {
    pub work: usize,
    pub tests: usize,
}

impl Default for PoolSizes {
    fn default() -> Self {
        PoolSizes { work: 4, tests: 2 }
    }
}

/// A pool, and the share of it that suspect sources may hold.
#[derive(Clone)]
struct Sessions {
    pool: Pool,
    suspects: Arc<tokio::sync::Semaphore>,
}

/// One workspace database: its pools and what we run in it.
#[derive(Clone)]
pub struct Database {
    /// Distinguishes pools: an observation taken through one pool says
    /// nothing about the database a new URI points to.
    id: u64,
    work: Sessions,
    tests: Sessions,
    observe: Pool,
    tls: MakeRustlsConnect,
    timeouts: Timeouts,
    counters: Counters,
    /// The workspace URI's password. Only connection errors are cleaned of
    /// it: no other message can contain it, and cleaning messages that
    /// carry a tenant's text of it would tell the tenant its guesses.
    uri_secret: Arc<str>,
}

/// The result of an attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub change: Change,
    pub tables: i64,
    /// Tables a re-import kept because a user's object depends on them,
    /// in Postgres's words. The rest of the change went through.
    pub held: Vec<String>,
    /// It imported and read a row: what a connection test proves.
    pub proven: bool,
    /// The source's schema hash the import found.
    pub source_hash: Option<String>,
}

/// What a connection test found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tested {
    pub tables: i64,
    /// The hash of the source's schema (`plan::source_hash`).
    pub source_hash: String,
    /// Each table's shape; empty when the test was an attach's import.
    pub shapes: Vec<plan::TableShape>,
}

/// What running planned statements did.
#[derive(Debug, Default)]
struct Executed {
    tables: i64,
    held: Vec<String>,
    source_hash: Option<String>,
    /// The first foreign table of the schema that uses the server, when
    /// the marker's count was read with the server named.
    first_owned: Option<Option<String>>,
    /// What an import created that it may not have (see
    /// `sql::IMPORT_INTRUDERS`), for a person; nothing ran after it, and
    /// the caller rolls back.
    refused: Option<String>,
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
    /// The workspace role, and whether it is a superuser.
    pub role: String,
    pub superuser: bool,
    /// The database's name, and its `search_path` setting.
    pub database_name: String,
    pub search_path: Vec<String>,
    /// Which of the readers asked about exist.
    pub roles: std::collections::BTreeSet<String>,
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

/// A pooled session that is returned to its pool only when the operation
/// finished. Dropped unfinished (its deadline passed), its query is
/// cancelled and the session closed: its state is unknown, and a session
/// stuck in a source's connect must not be handed to the next attach.
struct Session {
    object: Option<Object>,
    cancel: tokio_postgres::CancelToken,
    tls: MakeRustlsConnect,
    finished: bool,
}

impl Session {
    fn client(&mut self) -> &mut Object {
        self.object.as_mut().expect("a session holds its client until dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(object) = self.object.take() {
            drop(Object::take(object));
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (cancel, tls) = (self.cancel.clone(), self.tls.clone());
                runtime.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), cancel.cancel_query(tls)).await;
                });
            }
        }
    }
}

impl Database {
    /// Builds the pools of a workspace. Nothing connects until first use.
    pub fn new(target: &Target, sizes: PoolSizes, timeouts: Timeouts, counters: Counters) -> Result<Self, Failure> {
        let invalid = |m: String| Failure::new(Reason::InvalidSpec, m);
        let (uri, mode) = tls::split_sslmode(&target.uri).map_err(|m| invalid(format!("the workspace Secret's URI: {m}")))?;
        let mut config: tokio_postgres::Config =
            uri.parse().map_err(|_| invalid("the workspace Secret's URI is not a valid libpq connection URI".into()))?;
        let uri_secret: Arc<str> = config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default().into();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeouts.connect);
        }
        config.application_name("manifold");
        // Pinned from the first statement of every session: nothing a
        // database user plants on the search path runs as the operator,
        // and nothing waits without bound.
        let pinned = format!(
            "-c search_path={} -c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            sql::SESSION_SEARCH_PATH.replace(' ', ""),
            timeouts.statement.as_millis(),
            timeouts.lock.as_millis(),
            timeouts.deadline(timeouts.statement).as_millis(),
        );
        let options = match config.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {pinned}"),
            _ => pinned,
        };
        config.options(options);
        let tls = tls::connector(mode, target.ca.as_deref()).map_err(|m| invalid(format!("workspace TLS: {m}")))?;
        let pool = |size: usize| {
            let manager = Manager::from_config(config.clone(), tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
            Pool::builder(manager)
                .max_size(size.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(timeouts.deadline(timeouts.statement)))
                .create_timeout(Some(timeouts.connect))
                .build()
                .map_err(|e| invalid(format!("workspace pool: {e}")))
        };
        let sessions = |size: usize| -> Result<Sessions, Failure> {
            let suspects = Arc::new(tokio::sync::Semaphore::new(size.saturating_sub(1).max(1)));
            Ok(Sessions { pool: pool(size)?, suspects })
        };
        Ok(Database {
            id: NEXT_DATABASE_ID.fetch_add(1, Ordering::Relaxed),
            work: sessions(sizes.work)?,
            tests: sessions(sizes.tests)?,
            observe: pool(1)?,
            tls,
            timeouts,
            counters,
            uri_secret,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// A session of `sessions` for work on a source; a suspect source first
    /// waits, bounded, for its share.
    async fn source_session(
        &self,
        sessions: &Sessions,
        suspect: bool,
    ) -> Result<(Session, Option<tokio::sync::OwnedSemaphorePermit>), Failure> {
        let permit = if suspect {
            let wait = self.timeouts.deadline(self.timeouts.statement);
            match tokio::time::timeout(wait, sessions.suspects.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    return Err(Failure::new(
                        Reason::Timeout,
                        format!("waited {wait:?} for a session: other sources that time out hold the ones this source may use"),
                    ));
                }
            }
        } else {
            None
        };
        Ok((self.session(&sessions.pool).await?, permit))
    }

    async fn session(&self, pool: &Pool) -> Result<Session, Failure> {
        let object = pool.get().await.map_err(|e| {
            let text = match &e {
                deadpool_postgres::PoolError::Backend(err) => match err.as_db_error() {
                    Some(db) => db.message().to_owned(),
                    None => chain(err),
                },
                deadpool_postgres::PoolError::Timeout(_) => "timed out waiting for a connection".to_owned(),
                other => other.to_string(),
            };
            let message = redact(&sanitize(&format!("cannot connect to the workspace database: {text}")), &[&self.uri_secret]);
            Failure::new(Reason::WorkspaceUnreachable, message)
        })?;
        let cancel = object.cancel_token();
        Ok(Session { object: Some(object), cancel, tls: self.tls.clone(), finished: false })
    }

    /// The result of an operation that ran under a deadline. A session
    /// that answered goes back to its pool; one that did not is dropped.
    fn finish<T>(
        &self,
        mut session: Session,
        result: Result<Result<T, Failure>, tokio::time::error::Elapsed>,
        deadline: Duration,
    ) -> Result<T, Failure> {
        match result {
            Ok(done) => {
                session.finished = true;
                done
            }
            Err(_) => Err(Failure::new(
                Reason::Timeout,
                format!("the workspace database did not answer within {deadline:?}; the session was cancelled and closed"),
            )),
        }
    }

    fn count(&self, statements: u64, ddl: u64) {
        self.counters.queries.inc_by(statements.saturating_sub(ddl));
        self.counters.ddl.inc_by(ddl);
    }

    /// The at-rest resync: the server version, the role, the database's
    /// settings, which `readers` exist, and every managed schema, in one
    /// query.
    pub async fn observe_all(&self, readers: &[String]) -> Result<Observation, Failure> {
        let mut session = self.session(&self.observe).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            self.count(1, 0);
            let client = session.client();
            let statement = client.prepare_cached(sql::OBSERVE_ALL).await.map_err(|e| classify(&e, &[]))?;
            client.query_one(&statement, &[&readers]).await.map_err(|e| classify(&e, &[]))
        })
        .await;
        let row = self.finish(session, result, deadline)?;
        let version: String = row.get("version");
        let schemas: serde_json::Value = row.get("schemas");
        let settings: Vec<String> = row.get::<_, Option<Vec<String>>>("database_settings").unwrap_or_default();
        let search_path = settings.iter().find_map(|s| s.strip_prefix("search_path=")).map(plan::parse_search_path).unwrap_or_default();
        Ok(Observation {
            database: self.id,
            taken: std::time::Instant::now(),
            version: version.split_whitespace().next().unwrap_or_default().to_owned(),
            role: row.get("role"),
            superuser: row.get::<_, Option<bool>>("superuser").unwrap_or(false),
            database_name: row.get("database"),
            search_path,
            roles: row.get::<_, Vec<String>>("roles").into_iter().collect(),
            catalog: parse_catalog(&schemas),
        })
    }

    /// Brings one attachment to its plan in one transaction: extension,
    /// server, user mapping, schema, import, marker. Either all of it
    /// happens, or none.
    /// `suspect`: the source last timed out or could not be reached.
    /// `joins`: aggregators (their owners and schemas) that this attachment
    /// becomes a member of: when its tables change, the views of every
    /// aggregator it is (or becomes) a member of are rebuilt in the same
    /// transaction.
    pub async fn attach(&self, plan: &AttachPlan, suspect: bool, joins: &[(Owner, String)]) -> Result<Attached, Failure> {
        let secrets: Vec<&str> = plan.secrets().collect();
        let err = |e: tokio_postgres::Error| classify(&e, &secrets);
        let (mut session, _permit) = self.source_session(&self.work, suspect).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            let client = session.client();
            let tx = client.transaction().await.map_err(err)?;
            let (server, wrapper, extension) = match plan.foreign() {
                Some(f) => (f.server.as_str(), f.wrapper.as_str(), f.extension.as_str()),
                None => ("", "", ""),
            };
            let (mut locked, extension_schema) =
                self.lock_and_observe(&tx, &plan.owner, &plan.schema, server, wrapper, extension).await.map_err(err)?;
            if let Source::Aggregate(aggregate) = &plan.source {
                locked.columns = self.member_columns(&tx, &aggregate.members).await.map_err(err)?;
            }
            let (change, statements) = plan::attach(plan, &locked)?;
            if statements.is_empty() {
                tracing::debug!(schema = %plan.schema, "the plan was in place under the lock");
                tx.commit().await.map_err(err)?;
                return Ok(Attached { change, tables: locked.observed.foreign_tables, held: Vec::new(), proven: false, source_hash: None });
            }
            // An import (or a rebuild) replaces the tables that aggregators'
            // views select from: those views come down first, and back after.
            let tables_change = matches!(change, Change::Rebuild | Change::Update { reimport: true, .. }) && plan.foreign().is_some();
            let member = Member { connection: plan.connection.clone(), schema: plan.schema.clone() };
            // Only a schema or server that exists can be listed by an
            // aggregator's marker; a new one joins those the store names.
            let present = locked.observed.schema_comment.is_some() || locked.observed.server_comment.is_some();
            let aggregates = if tables_change {
                self.aggregates_of(&tx, &plan.schema, &plan.owner.namespace, joins, present).await.map_err(err)?
            } else {
                Vec::new()
            };
            for (agg_schema, agg_locked) in &aggregates {
                self.execute(&tx, agg_schema, plan::aggregate_teardown(agg_schema, agg_locked)).await.map_err(err)?;
            }
            let done = self
                .execute_for(&tx, &plan.schema, Some(server), wrapper, statements)
                .await
                .map_err(|e| with_hint(err(e), plan, &locked.role))?;
            if let Some(refused) = done.refused {
                return Err(Failure::new(Reason::SourceRefused, redact(&refused, &secrets)));
            }
            // An import that also reads a row proves what a test proves.
            let proven = if tables_change && done.held.is_empty() {
                self.read_a_row(&tx, &plan.schema, server, done.first_owned.clone()).await.map_err(err)?
            } else {
                false
            };
            for (agg_schema, agg_locked) in aggregates {
                let joining = joins.iter().any(|(_, s)| *s == agg_schema);
                self.rebuild_aggregate(&tx, &agg_schema, agg_locked, &member, joining, &plan.readers).await.map_err(err)?;
            }
            tx.commit().await.map_err(err)?;
            if wrapper == "postgres_fdw" && change != Change::None {
                self.disconnect_fdw(client, extension_schema.as_deref().unwrap_or(EXTENSION_SCHEMA)).await;
            }
            Ok(Attached { change, tables: done.tables, held: done.held, proven, source_hash: done.source_hash })
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// The aggregators a member's change touches: those whose marker lists
    /// the member's schema (when `listed` says the schema may be listed: it
    /// exists), and those it `joins`, each locked (in schema order, after
    /// the member's own lock: no two transactions wait on each other in a
    /// cycle) and read.
    async fn aggregates_of(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        member_schema: &str,
        namespace: &str,
        joins: &[(Owner, String)],
        listed: bool,
    ) -> Result<Vec<(String, Locked)>, tokio_postgres::Error> {
        let rows = if listed {
            self.count(1, 0);
            tx.query(&tx.prepare_cached(sql::AGGREGATES_OF).await?, &[&member_schema]).await?
        } else {
            Vec::new()
        };
        let mut owners: BTreeMap<String, Owner> = BTreeMap::new();
        for row in rows {
            let (schema, comment): (String, String) = (row.get("schema"), row.get("comment"));
            // An aggregator covers connections of its own namespace only: a
            // marker elsewhere that lists this schema is not read.
            if let Some(marker) = Marker::parse(&comment)
                && marker.owner.namespace == namespace
                && marker.members.as_ref().is_some_and(|m| m.iter().any(|m| m.schema == member_schema))
            {
                owners.insert(schema, marker.owner);
            }
        }
        for (owner, schema) in joins {
            owners.entry(schema.clone()).or_insert_with(|| owner.clone());
        }
        let mut locked = Vec::new();
        for (schema, owner) in owners {
            let (l, _) = self.lock_and_observe(tx, &owner, &schema, "", "", "").await?;
            // Only an aggregator's own schema, with its marker.
            if l.observed.schema_marker().is_some_and(|m| m.owner == owner && m.members.is_some()) {
                locked.push((schema, l));
            }
        }
        Ok(locked)
    }

    /// An aggregator's views again, after a member's tables changed: its
    /// members as its marker lists them, plus `member` if it is joining.
    async fn rebuild_aggregate(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        mut locked: Locked,
        member: &Member,
        joining: bool,
        readers: &[String],
    ) -> Result<(), tokio_postgres::Error> {
        let Some(marker) = locked.observed.schema_marker() else { return Ok(()) };
        let mut members = marker.members.clone().unwrap_or_default();
        if joining && !members.iter().any(|m| m.schema == member.schema) {
            members.push(member.clone());
        }
        let plan = AttachPlan::aggregate(marker.owner.clone(), &marker.uid, "", schema, members, readers.to_vec());
        let Source::Aggregate(aggregate) = &plan.source else { return Ok(()) };
        locked.columns = self.member_columns(tx, &aggregate.members).await?;
        // Emptied before the member's change (`aggregate_teardown`), not
        // dropped: each is redefined in place, and one no member has any
        // more is dropped.
        let emptied = std::mem::take(&mut locked.views);
        let (views, rest): (Vec<Statement>, Vec<Statement>) =
            plan::rebuild_views(&plan, &locked).into_iter().partition(|s| matches!(s, Statement::CreateView(_)));
        let mut kept = std::collections::BTreeSet::new();
        for statement in views {
            let Statement::CreateView(view) = statement else { continue };
            kept.insert(view.name.clone());
            self.replace_view(tx, &view).await?;
        }
        let gone: Vec<Statement> = emptied
            .into_iter()
            .filter(|name| !kept.contains(name))
            .map(|name| Statement::DropView { schema: schema.to_owned(), name })
            .collect();
        self.execute(tx, schema, gone).await?;
        self.execute(tx, schema, rest).await?;
        Ok(())
    }

    /// Redefines an aggregator's view in place (`sql::replace_view`), under
    /// a savepoint; where Postgres refuses (a column goes or changes its
    /// type), drops it (RESTRICT) and creates it.
    async fn replace_view(&self, tx: &deadpool_postgres::Transaction<'_>, view: &plan::View) -> Result<(), tokio_postgres::Error> {
        self.count(3, 1);
        let replace = format!("SAVEPOINT manifold_view; {}; RELEASE SAVEPOINT manifold_view", sql::replace_view(view));
        match tx.batch_execute(&replace).await {
            Ok(()) => Ok(()),
            Err(e) if e.as_db_error().is_some() => {
                self.count(3, 2);
                tx.batch_execute("ROLLBACK TO SAVEPOINT manifold_view").await?;
                let drop = sql::render(&Statement::DropView { schema: view.schema.clone(), name: view.name.clone() });
                tx.batch_execute(&format!("{drop}; {}", sql::render(&Statement::CreateView(view.clone())))).await
            }
            Err(e) => Err(e),
        }
    }

    async fn member_columns(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        members: &[Member],
    ) -> Result<Vec<Column>, tokio_postgres::Error> {
        let schemas: Vec<&str> = members.iter().map(|m| m.schema.as_str()).collect();
        self.count(1, 0);
        Ok(tx
            .query(sql::MEMBER_COLUMNS, &[&schemas])
            .await?
            .iter()
            .map(|r| Column { schema: r.get("schema"), table: r.get("table"), name: r.get("name"), type_oid: r.get("type_oid") })
            .collect())
    }

    /// Sets the database's search path, if it differs.
    pub async fn set_search_path(&self, statement: Statement) -> Result<(), Failure> {
        let err = |e: tokio_postgres::Error| classify(&e, &[]);
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            self.count(1, 1);
            session.client().batch_execute(&sql::render(&statement)).await.map_err(err)
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Runs planned statements, in as few round trips as they allow: one,
    /// unless a minimal re-import needs its steps. A marker that waits for
    /// the table count (and the source's hash) gets them, and is written
    /// last.
    async fn execute(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        statements: Vec<Statement>,
    ) -> Result<Executed, tokio_postgres::Error> {
        self.execute_for(tx, schema, None, "", statements).await
    }

    /// `execute`, and, if it reads the count of an import, the first
    /// foreign table that uses `server` too. What an import created is
    /// checked before anything else runs (`Executed::refused`), with the
    /// options `wrapper`'s import sets.
    async fn execute_for(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: Option<&str>,
        wrapper: &str,
        statements: Vec<Statement>,
    ) -> Result<Executed, tokio_postgres::Error> {
        // A reader role is checked in this transaction, right before its
        // grants and mappings: the workspace's observation may be older.
        let roles = plan::reader_roles(&statements);
        let statements = if roles.is_empty() {
            statements
        } else {
            self.count(1, 0);
            let existing: Vec<String> = tx.query_one(&tx.prepare_cached(sql::EXISTING_ROLES).await?, &[&roles]).await?.get(0);
            plan::without_missing_roles(statements, &existing.into_iter().collect())
        };
        let fresh: std::collections::BTreeSet<String> = statements
            .iter()
            .filter_map(|s| match s {
                Statement::CreateSchema { schema } => Some(schema.clone()),
                _ => None,
            })
            .collect();
        let mut imported: Option<(String, String)> = None;
        let mut batch: Vec<String> = Vec::new();
        let mut pending_marker: Option<Marker> = None;
        let mut executed = Executed::default();
        // Option values go ahead, as one bind parameter; the statements that
        // create servers and mappings read them (see `sql::SET_OPTIONS`).
        let specs: Vec<serde_json::Value> = statements.iter().filter_map(sql::options_spec).collect();
        if !specs.is_empty() {
            self.count(1, 0);
            tx.execute(&tx.prepare_cached(sql::SET_OPTIONS).await?, &[&sql::options_parameter(&specs)]).await?;
        }
        let mut created = 0;
        for statement in statements {
            if sql::options_spec(&statement).is_some() {
                batch.push(sql::create_with_options(created));
                created += 1;
                if created == specs.len() {
                    batch.push(sql::RESET_OPTIONS.to_owned());
                }
                continue;
            }
            match statement {
                Statement::MarkSchema { marker, .. } if marker.tables.is_none() => pending_marker = Some(marker),
                Statement::MarkSchema { ref marker, .. } => {
                    executed.tables = marker.tables.unwrap_or(0);
                    batch.push(sql::render(&statement));
                }
                Statement::Reimport { schema, server, remote_schema, filter } => {
                    self.flush(tx, &mut batch).await?;
                    match self.reimport(tx, &schema, &server, wrapper, &remote_schema, &filter).await? {
                        Ok(held) => executed.held.extend(held),
                        Err(refused) => {
                            executed.refused = Some(refused);
                            return Ok(executed);
                        }
                    }
                }
                Statement::Import { ref schema, ref server, .. } => {
                    imported = Some((schema.clone(), server.clone()));
                    batch.push(sql::render(&statement));
                }
                other => batch.push(sql::render(&other)),
            }
        }
        self.flush(tx, &mut batch).await?;
        if let Some((into, server)) = imported {
            executed.refused = self.intruders(tx, &into, &server, wrapper, fresh.contains(&into)).await?;
            if executed.refused.is_some() {
                return Ok(executed);
            }
        }
        let Some(mut marker) = pending_marker else { return Ok(executed) };
        self.count(1, 0);
        let after = tx.query_one(&tx.prepare_cached(sql::AFTER_IMPORT).await?, &[&schema, &server.unwrap_or("")]).await?;
        executed.tables = after.get("tables");
        if server.is_some() {
            executed.first_owned = Some(after.get("first_owned"));
        }
        marker.tables = Some(executed.tables);
        if let Some(fp) = marker.fingerprint.as_mut().filter(|fp| fp.part("import").is_some()) {
            let columns: Vec<(String, String, String)> =
                after.try_get::<_, Option<tokio_postgres::types::Json<_>>>("columns")?.map(|json| json.0).unwrap_or_default();
            let hash = plan::source_hash(&columns);
            executed.source_hash = Some(hash.clone());
            fp.set("source", hash);
        }
        self.flush(tx, &mut vec![sql::render(&Statement::MarkSchema { schema: schema.to_owned(), marker })]).await?;
        Ok(executed)
    }

    /// What an import into `schema` through `server` created that it may
    /// not have (see `sql::IMPORT_INTRUDERS`), as a message; None if
    /// nothing. `fresh`: the schema was made in this transaction, so
    /// everything in it is the import's.
    async fn intruders(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: &str,
        wrapper: &str,
        fresh: bool,
    ) -> Result<Option<String>, tokio_postgres::Error> {
        let (tables, columns) = match crate::plugins::imported_options(wrapper) {
            Some((tables, columns)) => (Some(tables.to_vec()), Some(columns.to_vec())),
            None => (None, None),
        };
        self.count(1, 0);
        let row = tx.query_one(&tx.prepare_cached(sql::IMPORT_INTRUDERS).await?, &[&schema, &server, &tables, &columns, &fresh]).await?;
        let found: Vec<String> = row.get(0);
        if found.is_empty() {
            return Ok(None);
        }
        Ok(Some(sanitize(&format!(
            "the source's answer to the import would have created what an import may not, so nothing was imported: {}",
            found.join("; ")
        ))))
    }

    async fn flush(&self, tx: &deadpool_postgres::Transaction<'_>, batch: &mut Vec<String>) -> Result<(), tokio_postgres::Error> {
        if batch.is_empty() {
            return Ok(());
        }
        self.count(batch.len() as u64, batch.len() as u64);
        tx.batch_execute(&batch.join(";\n")).await?;
        batch.clear();
        Ok(())
    }

    /// A minimal re-import (`Statement::Reimport`): a fresh import into a
    /// staging schema, then only what changed, as `plan::reimport` decides.
    /// Each drop is RESTRICT and alone, under a savepoint: a table that a
    /// user's object depends on is kept and reported, and the rest goes
    /// through. Returns what was kept, in Postgres's own words, or why the
    /// staged import was refused (see `intruders`): then nothing moved.
    async fn reimport(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: &str,
        wrapper: &str,
        remote_schema: &str,
        filter: &plan::TableFilter,
    ) -> Result<Result<Vec<String>, String>, tokio_postgres::Error> {
        // The staging name is known to every role: one that took it first
        // gets no say, the import goes to a name nobody could guess.
        let mut stage = plan::stage_schema(schema);
        self.count(1, 0);
        if tx.query_one(&tx.prepare_cached(sql::SCHEMA_EXISTS).await?, &[&stage]).await?.get::<_, bool>(0) {
            use std::hash::BuildHasher;
            stage = format!("{stage}_{:016x}", std::collections::hash_map::RandomState::new().hash_one(schema));
        }
        let import = Statement::Import {
            remote_schema: remote_schema.to_owned(),
            filter: filter.clone(),
            server: server.to_owned(),
            schema: stage.clone(),
        };
        self.flush(tx, &mut vec![sql::render(&Statement::CreateSchema { schema: stage.clone() }), sql::render(&import)]).await?;
        if let Some(refused) = self.intruders(tx, &stage, server, wrapper, true).await? {
            return Ok(Err(refused));
        }
        let defs = |rows: Vec<tokio_postgres::Row>| -> Vec<TableDef> {
            rows.iter().map(|r| TableDef { name: r.get(0), definition: r.get(1) }).collect()
        };
        self.count(2, 0);
        let existing = defs(tx.query(&tx.prepare_cached(sql::TABLE_DEFS).await?, &[&schema, &server]).await?);
        let staged = defs(tx.query(&tx.prepare_cached(sql::TABLE_DEFS).await?, &[&stage, &server]).await?);
        let diff = plan::reimport(&existing, &staged);
        let mut held = Vec::new();
        let mut kept = std::collections::BTreeSet::new();
        for table in diff.replace.iter().chain(&diff.remove) {
            let drop = sql::render(&Statement::DropForeignTables { schema: schema.to_owned(), tables: vec![table.clone()] });
            self.count(2, 1);
            match tx.batch_execute(&format!("SAVEPOINT manifold_drop; {drop}; RELEASE SAVEPOINT manifold_drop")).await {
                Ok(()) => {}
                Err(e) if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT manifold_drop").await?;
                    held.push(classify(&e, &[]).message);
                    kept.insert(table.clone());
                }
                Err(e) => return Err(e),
            }
        }
        let mut moves: Vec<String> = diff
            .add
            .iter()
            .chain(diff.replace.iter().filter(|t| !kept.contains(*t)))
            .map(|t| sql::render(&Statement::MoveForeignTable { from: stage.clone(), name: t.clone(), to: schema.to_owned() }))
            .collect();
        let moved: std::collections::BTreeSet<&String> =
            diff.add.iter().chain(diff.replace.iter().filter(|t| !kept.contains(*t))).collect();
        let leftovers: Vec<String> = staged.iter().map(|t| t.name.clone()).filter(|t| !moved.contains(t)).collect();
        if let Some(drop) = sql::drop_foreign_tables(&stage, &leftovers) {
            moves.push(drop);
        }
        moves.push(sql::render(&Statement::DropSchema { schema: stage }));
        self.flush(tx, &mut moves).await?;
        Ok(Ok(held))
    }

    /// Reads one row of the first of the schema's foreign tables that use
    /// `server` (`first`, if the caller read it already), under a
    /// savepoint: whether the source lets the workspace role read, as a
    /// test would show. A refusal is not the attach's failure.
    async fn read_a_row(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: &str,
        first: Option<Option<String>>,
    ) -> Result<bool, tokio_postgres::Error> {
        let first = match first {
            Some(first) => first,
            None => {
                self.count(1, 0);
                tx.query(&tx.prepare_cached(sql::OWNED_FOREIGN_TABLES).await?, &[&schema, &server]).await?.first().map(|r| r.get(0))
            }
        };
        self.count(1, 0);
        let Some(table) = first else { return Ok(true) };
        let read = format!("SAVEPOINT manifold_read; {}; RELEASE SAVEPOINT manifold_read", sql::read_one_row(schema, &table));
        match tx.batch_execute(&read).await {
            Ok(()) => Ok(true),
            Err(e) if e.as_db_error().is_some() => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT manifold_read").await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// postgres_fdw keeps the remote connection an import opened for the
    /// life of the session; a pooled session must not collect them.
    async fn disconnect_fdw(&self, client: &Object, extension_schema: &str) {
        self.count(1, 0);
        let _ = client.batch_execute(&sql::disconnect_fdw(extension_schema)).await;
    }

    /// Tests a plan: in one transaction that is always rolled back, creates
    /// the server, the user mapping and a scratch schema, imports, and reads
    /// one row of the first imported table. Nothing is left behind. Returns
    /// the number of tables imported. `timeout` bounds every statement.
    pub async fn test(&self, plan: &AttachPlan, timeout: Duration, suspect: bool) -> Result<Tested, Failure> {
        let secrets: Vec<&str> = plan.secrets().collect();
        let err = |e: tokio_postgres::Error| classify(&e, &secrets);
        let (mut session, _permit) = self.source_session(&self.tests, suspect).await?;
        let deadline = self.timeouts.deadline(timeout);
        let result = tokio::time::timeout(deadline, async {
            let client = session.client();
            let tx = client.transaction().await.map_err(err)?;
            let ms = timeout.as_millis() as u64;
            self.count(2, 0);
            tx.batch_execute(&sql::set_timeouts(ms, ms)).await.map_err(err)?;
            let f = plan.foreign().ok_or_else(|| Failure::new(Reason::InvalidSpec, "an aggregator has no test of its own"))?;
            let row = tx
                .query_one(&tx.prepare_cached(sql::OBSERVE_WRAPPER).await.map_err(err)?, &[&f.wrapper, &f.extension])
                .await
                .map_err(err)?;
            let role: String = row.get("role");
            let extension_schema: Option<String> = row.get("extension_schema");
            let statements = plan::test(plan, wrapper_state(row.get("wrapper")), &role)?;
            let done =
                self.execute_for(&tx, &plan.schema, None, &f.wrapper, statements).await.map_err(|e| with_hint(err(e), plan, &role))?;
            if let Some(refused) = done.refused {
                return Err(Failure::new(Reason::SourceRefused, redact(&refused, &secrets)));
            }
            self.count(1, 0);
            let tables: Vec<String> =
                tx.query(sql::OWNED_FOREIGN_TABLES, &[&plan.schema, &f.server]).await.map_err(err)?.iter().map(|r| r.get(0)).collect();
            if let Some(first) = tables.first() {
                self.count(1, 0);
                tx.simple_query(&sql::read_one_row(&plan.schema, first)).await.map_err(err)?;
            }
            self.count(1, 0);
            let columns: Vec<(String, String, String)> = tx
                .query(&tx.prepare_cached(sql::SOURCE_COLUMNS).await.map_err(err)?, &[&plan.schema])
                .await
                .map_err(err)?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let source_hash = plan::source_hash(&columns);
            let shapes = plan::table_shapes(&columns);
            tx.rollback().await.map_err(err)?;
            if f.wrapper == "postgres_fdw"
                && let Some(schema) = extension_schema
            {
                self.disconnect_fdw(client, &schema).await;
            }
            Ok(Tested { tables: tables.len() as i64, source_hash, shapes })
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Removes what an attachment owns: its foreign tables, its schema, its
    /// user mapping and its server, never anything else. If something that
    /// Manifold did not create depends on them, Postgres refuses (RESTRICT),
    /// nothing is dropped, and the error says `DependentObjects`.
    /// `readers`: the workspace's readers, who keep SELECT on the views of
    /// the aggregators that this schema leaves.
    /// Readers lose their access first, in a transaction of its own
    /// (`plan::revoke_readers`): what holds the rest cannot hold that.
    pub async fn detach(&self, owner: &Owner, schema: &str, readers: &[String]) -> Result<Detached, Failure> {
        let err = |e: tokio_postgres::Error| classify(&e, &[]);
        self.revoke_readers(owner, schema).await?;
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            let tx = session.client().transaction().await.map_err(err)?;
            let (locked, _) = self.lock_and_observe(&tx, owner, schema, schema, "", "").await.map_err(err)?;
            let statements = plan::detach(owner, schema, &locked);
            let detached = Detached {
                schema: statements.iter().any(|s| matches!(s, Statement::DropSchema { .. })),
                server: statements.iter().any(|s| matches!(s, Statement::DropServer { .. })),
            };
            // The aggregators' views over this schema are ours, not a user's:
            // they go first, and come back without it.
            let aggregates =
                if detached.schema { self.aggregates_of(&tx, schema, &owner.namespace, &[], true).await.map_err(err)? } else { Vec::new() };
            for (agg_schema, agg_locked) in &aggregates {
                self.execute(&tx, agg_schema, plan::aggregate_teardown(agg_schema, agg_locked)).await.map_err(err)?;
            }
            if let Err(e) = self.execute(&tx, schema, statements).await {
                let mut f = err(e);
                if f.reason == Reason::DependentObjects {
                    let _ = tx.rollback().await;
                    self.count(1, 0);
                    let holders: Vec<String> = match session.client().query_one(sql::HOLDERS, &[&schema]).await {
                        Ok(row) => row.get(0),
                        Err(_) => Vec::new(),
                    };
                    f.message = format!("detach held (readers' access was revoked, nothing else was dropped): {}", f.message);
                    if !holders.is_empty() {
                        f.message = format!("{}; held by {}", f.message, sanitize(&holders.join(", ")));
                    }
                }
                return Err(f);
            }
            for (agg_schema, mut agg_locked) in aggregates {
                if let Some(mut marker) = agg_locked.observed.schema_marker() {
                    marker.members = marker.members.map(|m| m.into_iter().filter(|m| m.schema != schema).collect());
                    agg_locked.observed.schema_comment = Some(marker.render());
                }
                let gone = Member { connection: String::new(), schema: schema.to_owned() };
                self.rebuild_aggregate(&tx, &agg_schema, agg_locked, &gone, false, readers).await.map_err(err)?;
            }
            tx.commit().await.map_err(err)?;
            Ok(detached)
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Takes the readers' grants on an attachment's schema and their user
    /// mappings, and commits (see `plan::revoke_readers`).
    async fn revoke_readers(&self, owner: &Owner, schema: &str) -> Result<(), Failure> {
        let err = |e: tokio_postgres::Error| classify(&e, &[]);
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            let tx = session.client().transaction().await.map_err(err)?;
            let (locked, _) = self.lock_and_observe(&tx, owner, schema, schema, "", "").await.map_err(err)?;
            let statements = plan::revoke_readers(owner, schema, &locked);
            if !statements.is_empty() {
                self.execute(&tx, schema, statements).await.map_err(err)?;
            }
            tx.commit().await.map_err(err)
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Marks an attachment's schema as orphaned (see `plan::orphan`).
    /// Returns whether a marker was written.
    pub async fn orphan(&self, owner: &Owner, schema: &str) -> Result<bool, Failure> {
        let err = |e: tokio_postgres::Error| classify(&e, &[]);
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            let tx = session.client().transaction().await.map_err(err)?;
            let (locked, _) = self.lock_and_observe(&tx, owner, schema, schema, "", "").await.map_err(err)?;
            let statements = plan::orphan(owner, schema, &locked.observed);
            let marked = !statements.is_empty();
            self.execute(&tx, schema, statements).await.map_err(err)?;
            tx.commit().await.map_err(err)?;
            Ok(marked)
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Drops an attachment's user mapping, if its server is ours (see
    /// `plan::forget_credentials`).
    pub async fn forget_credentials(&self, owner: &Owner, schema: &str) -> Result<(), Failure> {
        let err = |e: tokio_postgres::Error| classify(&e, &[]);
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            let tx = session.client().transaction().await.map_err(err)?;
            let (locked, _) = self.lock_and_observe(&tx, owner, schema, schema, "", "").await.map_err(err)?;
            self.execute(&tx, schema, plan::forget_credentials(owner, schema, &locked)).await.map_err(err)?;
            tx.commit().await.map_err(err)
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Takes the schema's advisory lock, then reads what the planner needs.
    /// Two statements: the read must see what a transaction that held the
    /// lock before us committed.
    /// `owner`: whose views in the schema count as its own.
    async fn lock_and_observe(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        owner: &Owner,
        schema: &str,
        server: &str,
        wrapper: &str,
        extension: &str,
    ) -> Result<(Locked, Option<String>), tokio_postgres::Error> {
        self.count(2, 0);
        tx.execute(&tx.prepare_cached(sql::LOCK_SCHEMA).await?, &[&schema]).await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&schema, &server, &wrapper, &extension];
        let mut row = tx.query_one(&tx.prepare_cached(sql::OBSERVE_ABSENT).await?, &params).await?;
        let present: bool = row.get("present");
        if present {
            self.count(1, 0);
            row = tx.query_one(&tx.prepare_cached(sql::OBSERVE_ONE).await?, &params).await?;
        }
        let views: Vec<String> = row.get("views");
        let locked = Locked {
            observed: Observed {
                schema_comment: row.get("schema_comment"),
                foreign_tables: row.get("foreign_tables"),
                server_comment: row.get("server_comment"),
                mapping: row.get("mapping"),
            },
            owned_tables: row.get("owned_tables"),
            wrapper: wrapper_state(row.get("wrapper")),
            role: row.get("role"),
            readers: row.get("readers"),
            views: views
                .iter()
                .filter_map(|v| v.split_once(' '))
                .filter(|(_, comment)| Marker::parse(comment).is_some_and(|m| &m.owner == owner))
                .map(|(name, _)| name.to_owned())
                .collect(),
            columns: Vec::new(),
        };
        Ok((locked, row.get("extension_schema")))
    }
}

fn wrapper_state(value: Option<String>) -> WrapperState {
    match value.as_deref() {
        Some("usable") => WrapperState::Usable,
        Some(_) => WrapperState::NoUsage,
        None => WrapperState::Missing,
    }
}

/// What to do about a missing extension, for the person who reads it.
fn with_hint(mut failure: Failure, plan: &AttachPlan, role: &str) -> Failure {
    if failure.reason == Reason::ExtensionMissing {
        failure.message = format!(
            "{}: extension {:?} is not installed and role {role:?} may not install it; an admin runs \
             CREATE EXTENSION {} SCHEMA {EXTENSION_SCHEMA} and GRANT USAGE ON FOREIGN DATA WRAPPER {} TO {role} \
             (CloudNativePG: Database spec.extensions and spec.fdws[].usage)",
            failure.message,
            plan.foreign().map(|f| f.extension.as_str()).unwrap_or_default(),
            plan.foreign().map(|f| f.extension.as_str()).unwrap_or_default(),
            plan.foreign().map(|f| f.wrapper.as_str()).unwrap_or_default()
        );
    }
    failure
}

/// The pools of every workspace, keyed by namespace/name. A workspace's
/// pools are made on first use and replaced when its target changes.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<(String, String), (u64, Database)>>,
    pub counters: Counters,
    pub sizes: PoolSizes,
    pub timeouts: Timeouts,
}

impl Pools {
    pub fn new(sizes: PoolSizes, timeouts: Timeouts, counters: Counters) -> Self {
        Pools { pools: Mutex::default(), counters, sizes, timeouts }
    }

    /// The database of a workspace, for its current target.
    pub fn get(&self, namespace: &str, name: &str, target: &Target) -> Result<Database, Failure> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        target.hash(&mut hasher);
        let version = hasher.finish();
        let key = (namespace.to_owned(), name.to_owned());
        let mut pools = self.pools.lock().unwrap();
        if let Some((v, db)) = pools.get(&key)
            && *v == version
        {
            return Ok(db.clone());
        }
        let db = Database::new(target, self.sizes, self.timeouts, self.counters.clone())?;
        if let Some((_, old)) = pools.insert(key, (version, db.clone())) {
            old.close();
        }
        Ok(db)
    }

    /// The pools a workspace has now, whatever its Secret says: a cleanup
    /// can still use them after the Secret is gone.
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Database> {
        self.pools.lock().unwrap().get(&(namespace.to_owned(), name.to_owned())).map(|(_, db)| db.clone())
    }

    /// Drops a workspace's pools, closing their connections.
    pub fn remove(&self, namespace: &str, name: &str) {
        if let Some((_, db)) = self.pools.lock().unwrap().remove(&(namespace.to_owned(), name.to_owned())) {
            db.close();
        }
    }
}

impl Database {
    fn close(&self) {
        self.work.pool.close();
        self.tests.pool.close();
        self.observe.close();
    }
}
