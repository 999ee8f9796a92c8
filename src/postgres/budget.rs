//! Sessions as a budget, not a constant per workspace.
//!
//! Each workspace database has small pools (attaches, tests, the
//! observation), but a platform puts hundreds of workspace databases on one
//! Postgres server, whose `max_connections` is 100 by default (and in
//! CloudNativePG). So every session the operator opens holds two permits:
//! one of its server's (`--server-sessions`, shared by every workspace
//! database on the same host and port) and one of the operator's in all
//! (`--sessions`). A session is opened only with both, and gives them back
//! when it closes:
//!
//! - **Idle sessions close** after `--session-idle`: at rest the operator
//!   holds next to nothing, and a resync opens what it needs.
//! - **Fair turns.** Permits are handed out in the order they were asked
//!   for (tokio's semaphore is FIFO). While any workspace waits for one, a
//!   session that is taken from its pool for reuse, once it has served
//!   its workspace for a turn (`TURN`), gives its permits up first and
//!   asks again at the back of the queue: one busy workspace
//!   cannot keep a server's budget while the others wait. A waiter also
//!   closes other workspaces' sessions on its server that have been idle
//!   for a second (a session just handed back is wanted again in a moment,
//!   by the next attachment of its workspace).
//! - **Never "too many clients".** A session that cannot be opened within
//!   `--session-wait` is `SessionsBusy`, which says whose budget is spent;
//!   the work is retried with backoff, and Postgres's own refusal
//!   (`too_many_connections`) is the same reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult, WeakPool};
use deadpool_postgres::ClientWrapper;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a session is kept for its workspace's work before it yields
/// its permits to a workspace that waits for one.
pub const TURN: Duration = Duration::from_secs(2);

/// How long a session must have been idle before a waiter closes it.
const RECLAIM_GRACE: Duration = Duration::from_secs(1);

/// How many sessions the operator may hold, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct BudgetSettings {
    /// Sessions to one Postgres server (host and port), all of its
    /// workspace databases together.
    pub per_server: usize,
    /// Sessions to all servers together.
    pub total: usize,
    /// A session unused this long is closed.
    pub idle: Duration,
    /// How long a new session may wait for its permits.
    pub wait: Duration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings { per_server: 32, total: 256, idle: Duration::from_secs(30), wait: Duration::from_secs(120) }
    }
}

/// One limit: its permits, and how many wait for one now.
struct Limit {
    permits: Arc<Semaphore>,
    size: usize,
    waiting: AtomicUsize,
}

impl Limit {
    fn new(size: usize) -> Limit {
        let size = size.max(1);
        Limit { permits: Arc::new(Semaphore::new(size)), size, waiting: AtomicUsize::new(0) }
    }
}

/// A pool whose idle sessions a waiter or the sweep may close.
struct Registered {
    server: String,
    pool: WeakPool<Budgeted>,
}

/// Every session the operator may open, by server and in all.
pub struct Budget {
    settings: BudgetSettings,
    total: Limit,
    servers: Mutex<HashMap<String, Arc<Limit>>>,
    pools: Mutex<Vec<Registered>>,
    sweeping: AtomicBool,
    /// Waiters for any permit, of any server or of the total.
    waiting: AtomicUsize,
    /// Sessions open now, and new sessions that had to wait.
    sessions: prometheus_client::metrics::gauge::Gauge,
    waits: prometheus_client::metrics::counter::Counter,
}

/// The permits a session holds while it is open.
pub struct Permits {
    _server: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
    sessions: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Permits {
    fn drop(&mut self) {
        self.sessions.dec();
    }
}

/// Why a session could not be had in time, for a person.
#[derive(Debug, Clone)]
pub struct Busy(pub String);

impl Budget {
    pub fn new(
        settings: BudgetSettings,
        sessions: prometheus_client::metrics::gauge::Gauge,
        waits: prometheus_client::metrics::counter::Counter,
    ) -> Arc<Budget> {
        Arc::new(Budget {
            total: Limit::new(settings.total),
            settings,
            servers: Mutex::default(),
            pools: Mutex::default(),
            sweeping: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            sessions,
            waits,
        })
    }

    pub fn settings(&self) -> BudgetSettings {
        self.settings
    }

    fn server(&self, server: &str) -> Arc<Limit> {
        self.servers.lock().unwrap().entry(server.to_owned()).or_insert_with(|| Arc::new(Limit::new(self.settings.per_server))).clone()
    }

    /// Whether anyone waits for a permit of `server`, or of the total.
    fn contended(&self, server: &str) -> bool {
        self.total.waiting.load(Ordering::Relaxed) > 0 || self.server(server).waiting.load(Ordering::Relaxed) > 0
    }

    /// Whether anyone waits for a permit at all: sessions are short.
    pub fn contended_anywhere(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Lets the sweep and waiters close this pool's idle sessions.
    pub(super) fn register(self: &Arc<Self>, server: &str, pool: &managed::Pool<Budgeted>) {
        self.pools.lock().unwrap().push(Registered { server: server.to_owned(), pool: pool.weak() });
        self.start_sweep();
    }

    /// The permits of a new session to `server`: at once if there are
    /// some; else in turn, closing idle sessions of other databases of the
    /// server (or of any server, for the total) while it waits.
    pub(super) async fn acquire(&self, server: &str) -> Result<Permits, Busy> {
        let limit = self.server(server);
        let started = Instant::now();
        let deadline = started + self.settings.wait;
        let server_permit = self.take(&limit, Some(server), deadline).await.ok_or_else(|| self.busy(server, &limit, started))?;
        let total_permit = self.take(&self.total, None, deadline).await.ok_or_else(|| self.busy(server, &self.total, started))?;
        if started.elapsed() > Duration::from_millis(5) {
            self.waits.inc();
        }
        self.sessions.inc();
        Ok(Permits { _server: server_permit, _total: total_permit, sessions: self.sessions.clone() })
    }

    async fn take(&self, limit: &Limit, server: Option<&str>, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = limit.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        limit.waiting.fetch_add(1, Ordering::Relaxed);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = async {
            // One acquire, kept across the loop: its place in the queue.
            let acquire = limit.permits.clone().acquire_owned();
            tokio::pin!(acquire);
            loop {
                self.close_one_idle(server);
                let now = Instant::now();
                if now >= deadline {
                    return None;
                }
                let step = (deadline - now).min(Duration::from_millis(100));
                if let Ok(permit) = tokio::time::timeout(step, &mut acquire).await {
                    return permit.ok();
                }
            }
        }
        .await;
        limit.waiting.fetch_sub(1, Ordering::Relaxed);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        permit
    }

    fn busy(&self, server: &str, limit: &Limit, started: Instant) -> Busy {
        let whose = if std::ptr::eq(limit, &self.total) {
            format!("the {} sessions the operator may hold in all (--sessions)", limit.size)
        } else {
            format!("the {} sessions the operator may hold to server {server} (--server-sessions)", limit.size)
        };
        Busy(format!(
            "waited {:?} for a session: {whose} are in use by other workspaces, which take turns; this work is tried again",
            started.elapsed()
        ))
    }

    /// Closes one idle session of another pool: of `server`'s, or of any
    /// when `server` is None. Pools that are gone are forgotten.
    fn close_one_idle(&self, server: Option<&str>) {
        let pools: Vec<managed::Pool<Budgeted>> = {
            let mut registered = self.pools.lock().unwrap();
            registered.retain(|r| r.pool.upgrade().is_some());
            registered.iter().filter(|r| server.is_none_or(|s| r.server == s)).filter_map(|r| r.pool.upgrade()).collect()
        };
        for pool in pools {
            if pool.status().available == 0 {
                continue;
            }
            let mut closed = false;
            let result = pool.retain(|_, metrics| {
                // A session just handed back is likely wanted again in a
                // moment: its workspace's next attachment was woken when
                // the last one's ticket came back.
                let keep = closed || metrics.last_used() < RECLAIM_GRACE;
                closed |= !keep;
                keep
            });
            if !result.removed.is_empty() {
                return;
            }
        }
    }

    /// Closes every session idle for longer than `idle`.
    pub fn sweep(&self) {
        let idle = self.settings.idle;
        let pools: Vec<managed::Pool<Budgeted>> = {
            let mut registered = self.pools.lock().unwrap();
            registered.retain(|r| r.pool.upgrade().is_some());
            registered.iter().filter_map(|r| r.pool.upgrade()).collect()
        };
        for pool in pools {
            pool.retain(|_, metrics: Metrics| metrics.last_used() < idle);
        }
    }

    /// Sweeps every quarter of the idle time, from the first pool on, on
    /// the runtime that made it.
    fn start_sweep(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let budget = Arc::downgrade(self);
        let every = (self.settings.idle / 4).max(Duration::from_millis(250));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(budget) = budget.upgrade() else { return };
                budget.sweep();
            }
        });
    }
}

/// A session and the permits it holds.
pub struct Session {
    client: ClientWrapper,
    _permits: Permits,
}

impl std::ops::Deref for Session {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        &self.client
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut ClientWrapper {
        &mut self.client
    }
}

/// What opening a session can fail with.
#[derive(Debug)]
pub enum SessionError {
    Postgres(tokio_postgres::Error),
    Busy(Busy),
}

impl From<tokio_postgres::Error> for SessionError {
    fn from(e: tokio_postgres::Error) -> Self {
        SessionError::Postgres(e)
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Postgres(e) => e.fmt(f),
            SessionError::Busy(b) => f.write_str(&b.0),
        }
    }
}

/// deadpool-postgres's manager, with a budget: a session is opened only
/// with its permits, and a session taken for reuse while others wait gives
/// them up.
pub struct Budgeted {
    inner: deadpool_postgres::Manager,
    budget: Arc<Budget>,
    server: String,
    /// Counts the sessions this pool opens.
    opened: prometheus_client::metrics::counter::Counter,
}

impl Budgeted {
    pub fn new(
        inner: deadpool_postgres::Manager,
        budget: Arc<Budget>,
        server: String,
        opened: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Budgeted { inner, budget, server, opened }
    }
}

impl managed::Manager for Budgeted {
    type Type = Session;
    type Error = SessionError;

    async fn create(&self) -> Result<Session, SessionError> {
        let permits = self.budget.acquire(&self.server).await.map_err(SessionError::Busy)?;
        let client = managed::Manager::create(&self.inner).await?;
        self.opened.inc();
        Ok(Session { client, _permits: permits })
    }

    async fn recycle(&self, session: &mut Session, metrics: &Metrics) -> RecycleResult<SessionError> {
        // A turn lasts at least `TURN`: a session that yielded at every
        // reuse would cost a connect (and its pin check) per attach.
        if metrics.age() >= TURN && self.budget.contended(&self.server) {
            return Err(RecycleError::message("yields its permits to a workspace that waits for one"));
        }
        managed::Manager::recycle(&self.inner, &mut session.client, metrics).await.map_err(|e| match e {
            RecycleError::Message(m) => RecycleError::Message(m),
            RecycleError::Backend(e) => RecycleError::Backend(SessionError::Postgres(e)),
        })
    }

    fn detach(&self, session: &mut Session) {
        managed::Manager::detach(&self.inner, &mut session.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_server: usize, total: usize, wait: Duration) -> Arc<Budget> {
        Budget::new(BudgetSettings { per_server, total, idle: Duration::from_secs(30), wait }, Default::default(), Default::default())
    }

    #[tokio::test]
    async fn a_server_and_the_total_bound_the_sessions() {
        let b = budget(2, 3, Duration::from_millis(50));
        let a1 = b.acquire("a:5432").await.unwrap();
        let _a2 = b.acquire("a:5432").await.unwrap();
        let refused = b.acquire("a:5432").await.err().expect("the server's two are taken");
        assert!(refused.0.contains("2 sessions the operator may hold to server a:5432"), "{}", refused.0);
        let _b1 = b.acquire("b:5432").await.unwrap();
        let refused = b.acquire("b:5432").await.err().expect("the total of three is taken");
        assert!(refused.0.contains("3 sessions the operator may hold in all"), "{}", refused.0);
        drop(a1);
        let _b2 = b.acquire("b:5432").await.expect("a session closed gives its permits back");
        assert_eq!(b.sessions.get(), 3, "the gauge counts what is open");
    }

    #[tokio::test]
    async fn waiters_are_served_in_turn_and_contention_is_seen() {
        let b = budget(1, 10, Duration::from_secs(5));
        let held = b.acquire("s").await.unwrap();
        assert!(!b.contended("s"));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (b, order) = (b.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let p = b.acquire("s").await.unwrap();
                order.lock().unwrap().push(i);
                drop(p);
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(b.contended("s"), "a reused session would yield now");
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2], "first come, first served");
        assert!(!b.contended("s"));
        assert!(b.waits.get() >= 3);
    }
}
