//! What every reconciler shares: the settings, the stores and indexes of its
//! scope, the triggers that queue other controllers, per-object backoff,
//! the pools, the Event reporter, the metrics, and the one error type.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use super::index::Index;
use super::observations::Observations;
use crate::api::{Connection, SECRET_LABEL, Workspace, WorkspaceConnection, duration};
use crate::metrics::{Metrics, StatementLabels};
use crate::plugins::SourcePolicy;
use crate::postgres::{PoolSizes, Pools, Timeouts};

/// The field manager of every write (status, finalizer), and the reporting
/// controller of every Event.
pub const MANAGER: &str = "manifold";

/// Patch parameters under the operator's field manager.
pub fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() }
}

/// How the controllers behave.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often each workspace's catalog is observed, and drift healed.
    pub resync: Duration,
    /// Sessions per workspace database, for attaches and for tests.
    pub pool_sizes: PoolSizes,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
    pub timeouts: Timeouts,
    /// Bounds every statement of a connection test.
    pub test_timeout: Duration,
    /// A file holding the URI of the cluster admin's test database, where
    /// a Connection attached nowhere is tested.
    pub test_database: Option<std::path::PathBuf>,
    /// Which wrappers, source hosts and connect timeouts are allowed.
    pub sources: SourcePolicy,
    /// The label selector of the Secrets Manifold may use; empty: all.
    pub secret_selector: String,
    /// How long a Workspace's deletion waits for a database it cannot
    /// reach before it gives up, leaving that database's objects in place.
    pub cleanup_timeout: Duration,
    /// The same wait while the namespace itself is being deleted: a
    /// database that went with its namespace does not come back.
    pub terminating_cleanup_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(300),
            pool_sizes: PoolSizes::default(),
            concurrency: 64,
            timeouts: Timeouts::default(),
            test_timeout: Duration::from_secs(10),
            test_database: None,
            sources: SourcePolicy::default(),
            secret_selector: format!("{SECRET_LABEL}=true"),
            cleanup_timeout: Duration::from_secs(600),
            terminating_cleanup_timeout: Duration::from_secs(60),
        }
    }
}

/// The reflector stores of the four watched kinds, and the indexes over
/// them. The Secret store holds only the Secrets the selector admits.
#[derive(Clone)]
pub struct Stores {
    pub workspaces: Store<Workspace>,
    pub connections: Store<Connection>,
    pub attachments: Store<WorkspaceConnection>,
    pub secrets: Store<Secret>,
    pub index: Arc<RwLock<Index>>,
}

impl Stores {
    pub fn workspace(&self, ns: &str, name: &str) -> Option<Arc<Workspace>> {
        self.workspaces.get(&ObjectRef::new(name).within(ns))
    }

    pub fn connection(&self, ns: &str, name: &str) -> Option<Arc<Connection>> {
        self.connections.get(&ObjectRef::new(name).within(ns))
    }

    pub fn attachment(&self, ns: &str, name: &str) -> Option<Arc<WorkspaceConnection>> {
        self.attachments.get(&ObjectRef::new(name).within(ns))
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(ns))
    }

    fn attachments_named(&self, ns: &str, names: Vec<String>) -> Vec<Arc<WorkspaceConnection>> {
        names.into_iter().filter_map(|name| self.attachment(ns, &name)).collect()
    }

    /// The attachments to a workspace, sorted by name.
    pub fn attachments_of_workspace(&self, ns: &str, workspace: &str) -> Vec<Arc<WorkspaceConnection>> {
        let names = self.index.read().unwrap().by_workspace(ns, workspace);
        self.attachments_named(ns, names)
    }

    /// The attachments of a connection, sorted by name.
    pub fn attachments_of_connection(&self, ns: &str, connection: &str) -> Vec<Arc<WorkspaceConnection>> {
        let names = self.index.read().unwrap().by_connection(ns, connection);
        self.attachments_named(ns, names)
    }
}

/// How long a change to an attachment waits before it reaches the lists
/// on its Workspace and Connection, so that the attachments that turn
/// Ready together in a bulk apply are listed in one status write.
pub const LIST_DELAY: Duration = Duration::from_millis(500);

/// How often, at most, one object's list is rewritten while its
/// attachments keep changing (a bulk apply): the first change waits
/// `LIST_DELAY`, and later ones are gathered until this much time has
/// passed since the last write.
pub const LIST_INTERVAL: Duration = Duration::from_secs(3);

/// A long list waits longer: every write of it is decoded, validated entry
/// by entry and stored whole by the apiserver, and sent to every watcher,
/// so a workspace of 1,200 attachments rewritten every 3 s was most of the
/// apiserver's work in a bulk apply. This much per entry, up to
/// `LIST_INTERVAL_MAX`.
pub const LIST_INTERVAL_PER_ENTRY: Duration = Duration::from_millis(20);
pub const LIST_INTERVAL_MAX: Duration = Duration::from_secs(30);

/// The least time between two writes of a list of `entries`.
pub fn list_interval(entries: usize) -> Duration {
    LIST_INTERVAL_PER_ENTRY.saturating_mul(u32::try_from(entries).unwrap_or(u32::MAX)).clamp(LIST_INTERVAL, LIST_INTERVAL_MAX)
}

/// How long a connection's list waits while some of its attachments are
/// still on their way in (not reconciled yet, or parked in their
/// workspace's queue): in a bulk apply its attachments in different
/// workspaces turn Ready seconds apart, and a list written as each did
/// was a write per attachment. The list goes out when the last of them
/// settles (after `LIST_DELAY`), or this long after the first change.
pub const LIST_SETTLING: Duration = Duration::from_secs(30);

/// What a list update waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListWait {
    /// A list of this many entries, all settled.
    Entries(usize),
    /// Entries still on their way in.
    Settling,
}

type ListKey = (bool, String, String);

/// The list updates on their way (and when each goes out), and when each
/// object's last went out.
#[derive(Default)]
pub struct Delayed {
    pending: HashMap<ListKey, tokio::time::Instant>,
    fired: HashMap<ListKey, tokio::time::Instant>,
}

/// Queues reconciles on the controllers from outside their own watches.
#[derive(Clone)]
pub struct Triggers {
    pub workspaces: UnboundedSender<ObjectRef<Workspace>>,
    pub connections: UnboundedSender<ObjectRef<Connection>>,
    pub attachments: UnboundedSender<ObjectRef<WorkspaceConnection>>,
    /// Workspaces and connections whose list update is on its way.
    pub delayed: Arc<Mutex<Delayed>>,
}

impl Triggers {
    pub fn new(
        workspaces: UnboundedSender<ObjectRef<Workspace>>,
        connections: UnboundedSender<ObjectRef<Connection>>,
        attachments: UnboundedSender<ObjectRef<WorkspaceConnection>>,
    ) -> Self {
        Triggers { workspaces, connections, attachments, delayed: Arc::default() }
    }

    /// Queues the workspace (or the connection) for its list update, once
    /// for all the requests made meanwhile: after `LIST_DELAY`, or
    /// `list_interval(entries)` after its last list update if that is
    /// later; while entries are `Settling`, `LIST_SETTLING` after the last
    /// update, or after now if there was none lately. An update already on
    /// its way is never put off, only brought forward.
    pub fn list_changed(&self, workspace: bool, ns: &str, name: &str, wait: ListWait) {
        let key = (workspace, ns.to_owned(), name.to_owned());
        let now = tokio::time::Instant::now();
        let at = {
            let mut delayed = self.delayed.lock().unwrap();
            let last = delayed.fired.get(&key).copied();
            let after_last = match wait {
                ListWait::Entries(entries) => last.map(|t| t + list_interval(entries)),
                ListWait::Settling => Some(last.unwrap_or(now) + LIST_SETTLING),
            };
            let at = after_last.map_or(now + LIST_DELAY, |t| t.max(now + LIST_DELAY));
            if delayed.pending.get(&key).is_some_and(|due| *due <= at) {
                return;
            }
            // Forget what is long past, now and then.
            if delayed.fired.len() > 4096 {
                delayed.fired.retain(|_, t| now.duration_since(*t) < LIST_INTERVAL_MAX.max(LIST_SETTLING));
            }
            delayed.pending.insert(key.clone(), at);
            at
        };
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            {
                let mut delayed = this.delayed.lock().unwrap();
                // Brought forward: the earlier one went out.
                if delayed.pending.get(&key) != Some(&at) {
                    return;
                }
                delayed.pending.remove(&key);
                delayed.fired.insert(key.clone(), tokio::time::Instant::now());
            }
            let (workspace, ns, name) = key;
            if workspace { this.workspace(&ns, &name) } else { this.connection(&ns, &name) }
        });
    }

    pub fn attachment(&self, ns: &str, name: &str) {
        let _ = self.attachments.unbounded_send(ObjectRef::new(name).within(ns));
    }

    pub fn connection(&self, ns: &str, name: &str) {
        let _ = self.connections.unbounded_send(ObjectRef::new(name).within(ns));
    }

    pub fn workspace(&self, ns: &str, name: &str) {
        let _ = self.workspaces.unbounded_send(ObjectRef::new(name).within(ns));
    }
}

/// What a backoff counts failures of: an object's reconciles, or its tests.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackoffKey {
    kind: &'static str,
    namespace: String,
    name: String,
}

impl BackoffKey {
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Self {
        let kind = match K::kind(&()) {
            std::borrow::Cow::Borrowed(kind) => kind,
            std::borrow::Cow::Owned(_) => "object",
        };
        Self::named(kind, obj)
    }

    /// A key of its own for one purpose, such as an object's tests.
    pub fn named<K: Resource<DynamicType = ()>>(purpose: &'static str, obj: &K) -> Self {
        BackoffKey { kind: purpose, namespace: obj.namespace().unwrap_or_default(), name: obj.name_any() }
    }
}

impl std::fmt::Display for BackoffKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// Per-object retry delays: 1 s, doubling up to 5 minutes, with jitter, and
/// reset by a success. Failures back off; they do not spin.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<BackoffKey, u32>>,
}

impl Backoff {
    fn delay(failures: u32) -> Duration {
        Duration::from_secs(1).saturating_mul(1 << failures.saturating_sub(1).min(9)).min(Duration::from_secs(300))
    }

    pub fn failed(&self, key: &BackoffKey) -> Duration {
        let mut failures = self.failures.lock().unwrap();
        let n = failures.entry(key.clone()).or_default();
        *n = n.saturating_add(1);
        let base = Self::delay(*n);
        // Jitter of up to a quarter, so that many objects failing together
        // (a database restart) do not retry in lockstep.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }

    /// The delay `failed` would give next, without counting a failure and
    /// without jitter: 1 s when nothing has failed yet.
    pub fn peek(&self, key: &BackoffKey) -> Duration {
        Self::delay(self.failures.lock().unwrap().get(key).copied().unwrap_or(0))
    }

    pub fn succeeded(&self, key: &BackoffKey) {
        self.failures.lock().unwrap().remove(key);
    }
}

/// A requeue, never later than a day: a delay from a spec can be as long as
/// the CRD lets it be, and the controller's queue has a limit.
pub fn requeue(after: Duration) -> Action {
    Action::requeue(after.clamp(Duration::from_millis(100), duration::MAX_DELAY))
}

/// What the operator shares across scopes.
pub struct Shared {
    pub client: Client,
    pub settings: Settings,
    pub pools: Arc<Pools>,
    pub observations: Arc<Observations>,
    pub backoff: Backoff,
    /// `reportingInstance` of the Events this process publishes.
    pub reporting_instance: String,
    pub metrics: Arc<Metrics>,
    pub recent_tests: super::connection::RecentTests,
}

impl Shared {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        // One `let` each: a family's guard must be gone before the next
        // get_or_create takes its lock.
        let queries = metrics.statements.get_or_create(&StatementLabels { kind: "query" }).clone();
        let ddl = metrics.statements.get_or_create(&StatementLabels { kind: "ddl" }).clone();
        let counters = crate::postgres::Counters { queries, ddl };
        Shared {
            pools: Arc::new(Pools::new(settings.pool_sizes, settings.timeouts, counters)),
            observations: Arc::default(),
            backoff: Backoff::default(),
            reporting_instance: std::env::var("POD_NAME").unwrap_or_else(|_| MANAGER.to_owned()),
            client,
            settings,
            metrics,
            recent_tests: Default::default(),
        }
    }
}

/// Everything a reconciler needs: what every scope shares, and the stores
/// and triggers of its own scope (all namespaces, or one).
pub struct Context {
    pub shared: Arc<Shared>,
    pub stores: Stores,
    pub triggers: Triggers,
    /// Tickets for attaches, per workspace database.
    pub admission: super::admission::Admission,
}

impl Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// A reconcile that failed against the Kubernetes API, or a deletion that
/// must wait. Database and spec problems are not errors here: they are
/// reported in status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A cleanup that cannot complete yet; the reason is in status.
    #[error("{0}")]
    Held(crate::api::Failure),
}

impl Error {
    /// The finalizer was added by an earlier reconcile whose update the store
    /// has not seen yet, so the patch's test failed. Not a failure: the watch
    /// event is on its way.
    pub fn is_finalizer_race(&self) -> bool {
        matches!(
            self,
            Error::Finalizer(inner) if matches!(
                inner.as_ref(),
                kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(status))
                    | kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status)) if status.code == 422
            )
        )
    }
}

pub fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    if err.is_finalizer_race() {
        return Action::requeue(Duration::from_millis(200));
    }
    let key = BackoffKey::of(obj.as_ref());
    let delay = ctx.backoff.failed(&key);
    warn!(object = %key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use futures::channel::mpsc::unbounded;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn list_updates_are_gathered_and_spaced() {
        let (ws_tx, mut ws_rx) = unbounded();
        let (conn_tx, _conn_rx) = unbounded();
        let (att_tx, _att_rx) = unbounded();
        let triggers = Triggers::new(ws_tx, conn_tx, att_tx);
        let start = tokio::time::Instant::now();
        // Three changes at once: one update, after LIST_DELAY.
        for _ in 0..3 {
            triggers.list_changed(true, "ns", "ws", ListWait::Entries(10));
        }
        assert_eq!(ws_rx.next().await.unwrap().name, "ws");
        assert_eq!(start.elapsed(), LIST_DELAY);
        // More right after: gathered until LIST_INTERVAL after that one.
        triggers.list_changed(true, "ns", "ws", ListWait::Entries(10));
        triggers.list_changed(true, "ns", "ws", ListWait::Entries(10));
        ws_rx.next().await.unwrap();
        assert_eq!(start.elapsed(), LIST_DELAY + LIST_INTERVAL);
        // Once it is quiet, a change waits LIST_DELAY again.
        tokio::time::sleep(LIST_INTERVAL * 2).await;
        let quiet = tokio::time::Instant::now();
        triggers.list_changed(true, "ns", "ws", ListWait::Entries(10));
        ws_rx.next().await.unwrap();
        assert_eq!(quiet.elapsed(), LIST_DELAY);
        // Right after a write, a long list waits its own, longer interval.
        let last = tokio::time::Instant::now();
        triggers.list_changed(true, "ns", "ws", ListWait::Entries(1_000));
        ws_rx.next().await.unwrap();
        assert_eq!(last.elapsed(), Duration::from_secs(20));
        assert!(ws_rx.try_recv().is_err(), "nothing else queued");
    }

    #[tokio::test(start_paused = true)]
    async fn a_settling_list_waits_for_its_last_entry_or_its_bound() {
        let (ws_tx, _ws_rx) = unbounded();
        let (conn_tx, mut conn_rx) = unbounded();
        let (att_tx, _att_rx) = unbounded();
        let triggers = Triggers::new(ws_tx, conn_tx, att_tx);
        let settling = |t: &Triggers| t.list_changed(false, "ns", "c", ListWait::Settling);
        // Entries on their way: nothing goes out until the last settles.
        let start = tokio::time::Instant::now();
        settling(&triggers);
        tokio::time::sleep(Duration::from_secs(10)).await;
        settling(&triggers);
        assert!(conn_rx.try_recv().is_err());
        // The last one settles: the update is brought forward to LIST_DELAY.
        let settled = tokio::time::Instant::now();
        triggers.list_changed(false, "ns", "c", ListWait::Entries(10));
        assert_eq!(conn_rx.next().await.unwrap().name, "c");
        assert_eq!(settled.elapsed(), LIST_DELAY);
        // The update first planned does not go out a second time.
        tokio::time::sleep(LIST_SETTLING).await;
        assert!(conn_rx.try_recv().is_err(), "one update");
        // Entries that never settle are listed every LIST_SETTLING.
        let last = tokio::time::Instant::now() - LIST_SETTLING;
        settling(&triggers);
        conn_rx.next().await.unwrap();
        assert_eq!(last.elapsed(), LIST_SETTLING + LIST_DELAY);
        settling(&triggers);
        conn_rx.next().await.unwrap();
        assert_eq!(last.elapsed(), LIST_SETTLING * 2 + LIST_DELAY);
        // An entry on its way does not put off an update already planned.
        triggers.list_changed(false, "ns", "c", ListWait::Entries(10));
        settling(&triggers);
        conn_rx.next().await.unwrap();
        assert_eq!(last.elapsed(), LIST_SETTLING * 2 + LIST_DELAY + LIST_INTERVAL);
        assert!(conn_rx.try_recv().is_err());
        assert!(start.elapsed() > LIST_SETTLING);
    }

    #[test]
    fn long_lists_wait_longer_up_to_a_bound() {
        assert_eq!(list_interval(0), LIST_INTERVAL);
        assert_eq!(list_interval(150), LIST_INTERVAL);
        assert_eq!(list_interval(400), Duration::from_secs(8));
        assert_eq!(list_interval(1_200), Duration::from_secs(24));
        assert_eq!(list_interval(12_000), LIST_INTERVAL_MAX);
        assert_eq!(list_interval(usize::MAX), LIST_INTERVAL_MAX);
    }
}
