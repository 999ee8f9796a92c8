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
//!
//! | file | what it holds |
//! |---|---|
//! | `plan`, `sql` | re-exported from `manifold-core`: the planner (every statement and its order) and the SQL renderer, both pure |
//! | `db.rs` | `WorkspaceDb`, what the reconcilers ask of a database |
//! | `errors.rs` | an error's reason, from its code, message and detail (pure) |
//! | `session.rs` | pools, sessions and their deadlines |
//! | `attach.rs` | the locked read, an attach's transaction, aggregator rebuilds |
//! | `execute.rs` | running planned statements, re-imports, reading a row |
//! | `test.rs` | a connection test, rolled back |
//! | `detach.rs` | detach, revoke, orphan, forget credentials |
//! | `budget.rs` | the sessions the operator may hold, per server and in all; idle ones close |
//! | `pin.rs` | the pin each new session checks: the database proves it is the one first reached |
//! | `tls.rs` | TLS to workspace databases |

pub use manifold_core::{plan, sql};
pub mod budget;
pub mod pin;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use budget::{Budget, Budgeted};
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};

type Pool = deadpool::managed::Pool<Budgeted>;
type Object = deadpool::managed::Object<Budgeted>;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::api::{Failure, Reason};
use crate::plugins::EXTENSION_SCHEMA;
use crate::secret::{sanitize, scrub};

mod attach;
mod db;
mod detach;
mod errors;
mod execute;
mod session;
mod test;
pub use db::{Db, WorkspaceDb};
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
    /// Sessions open now, and new ones that waited for their permits.
    pub sessions: prometheus_client::metrics::gauge::Gauge,
    pub session_waits: prometheus_client::metrics::counter::Counter,
    /// Sessions opened, by pool.
    pub sessions_opened:
        prometheus_client::metrics::family::Family<crate::metrics::PoolLabels, prometheus_client::metrics::counter::Counter>,
}

static NEXT_DATABASE_ID: AtomicU64 = AtomicU64::new(1);

/// How to reach a workspace database: its libpq URI, optionally the CA
/// that signed its certificate (PEM), and what it must prove to be.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Target {
    pub uri: String,
    pub ca: Option<Vec<u8>>,
    pub purpose: Purpose,
}

/// What a database is for, and what a session checks before it is used.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Purpose {
    /// A Workspace's database: every session checks its pin.
    Workspace(pin::Pin),
    /// The cluster admin's test database (`--test-database-uri-file`): no
    /// tenant names it, and a test there refuses a superuser role.
    AdminTests,
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
    /// The pin every new session checks (a Workspace's database).
    pin: Option<Arc<pin::PinState>>,
    /// The admin's test database: a superuser role is refused there.
    admin_tests: bool,
    /// Extensions whose types an imported column may have.
    type_extensions: Arc<[String]>,
    /// The sessions the operator may hold to this database's server.
    budget_size: usize,
    /// Until when work is expected here (`expect_work`): an observation
    /// then leaves its session in the work pool for that work.
    work_expected: Arc<Mutex<Option<std::time::Instant>>>,
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
    /// A session found (or, on first contact, wrote) the Workspace's pin.
    pub pinned: bool,
    /// Sessions of the workspace role in the database that are not
    /// Manifold's: whoever holds them reads every mapping's options.
    pub others: Vec<pin::Session>,
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

fn wrapper_state(value: Option<String>) -> WrapperState {
    match value.as_deref() {
        Some("usable") => WrapperState::Usable,
        Some(_) => WrapperState::NoUsage,
        None => WrapperState::Missing,
    }
}

/// What to do about a missing extension or wrapper privilege, for the
/// person who reads it. The planner says so itself when the catalog shows
/// it; this is for when Postgres says it first (an admin created the
/// extension between the read and the statements).
fn with_hint(mut failure: Failure, plan: &AttachPlan, role: &str) -> Failure {
    if failure.reason == Reason::PermissionDenied
        && failure.message.contains("foreign-data wrapper")
        && let Some(f) = plan.foreign()
    {
        failure.message = format!(
            "{}: role {role:?} has no USAGE on foreign-data wrapper {:?}: GRANT USAGE ON FOREIGN DATA WRAPPER {} TO {role} \
             (CloudNativePG: Database spec.fdws[].usage)",
            failure.message, f.wrapper, f.wrapper
        );
        return failure;
    }
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
/// pools are made on first use and replaced when its target changes; their
/// sessions come out of one `Budget`.
pub struct Pools {
    pools: Mutex<HashMap<(String, String), (u64, Database)>>,
    pub counters: Counters,
    pub sizes: PoolSizes,
    pub timeouts: Timeouts,
    /// Extensions whose types an imported column may have.
    pub type_extensions: Arc<[String]>,
    pub budget: Arc<Budget>,
}

impl Default for Pools {
    fn default() -> Self {
        Pools::new(PoolSizes::default(), Timeouts::default(), Counters::default(), &[], budget::BudgetSettings::default())
    }
}

impl Pools {
    pub fn new(
        sizes: PoolSizes,
        timeouts: Timeouts,
        counters: Counters,
        type_extensions: &[String],
        budget: budget::BudgetSettings,
    ) -> Self {
        let budget = Budget::new(budget, counters.sessions.clone(), counters.session_waits.clone());
        Pools { pools: Mutex::default(), counters, sizes, timeouts, type_extensions: type_extensions.into(), budget }
    }

    /// The database of a workspace, for its current target. A target that
    /// differs only in whether the pin may be written yet keeps its pools
    /// (see `PinState::take_up`).
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
            if let (Some(state), Purpose::Workspace(pin)) = (&db.pin, &target.purpose) {
                state.take_up(pin.establish);
            }
            return Ok(db.clone());
        }
        let db = Database::new(target, self.sizes, self.timeouts, self.counters.clone(), self.type_extensions.clone(), &self.budget)?;
        if let Some((_, old)) = pools.insert(key, (version, db.clone())) {
            old.close();
        }
        Ok(db)
    }

    /// The pools a workspace has now, whatever its Secret says: a cleanup
    /// can still use them after the Secret is gone. Only those of the
    /// Workspace with uid `uid`: another Workspace made since under the
    /// same name is another database.
    pub fn cached(&self, namespace: &str, name: &str, uid: &str) -> Option<Database> {
        let pools = self.pools.lock().unwrap();
        let (_, db) = pools.get(&(namespace.to_owned(), name.to_owned()))?;
        db.pin.as_ref().is_some_and(|p| p.workspace() == uid).then(|| db.clone())
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
        pin::forget(self.id);
    }
}
