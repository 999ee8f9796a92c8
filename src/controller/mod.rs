//! The controllers: one reconciler per kind, and what they share.
//!
//! Four watches (the three kinds and Secrets) feed four reflector stores.
//! Every watch event is also mapped, in `relations`, to the objects of other
//! kinds that depend on it, and those are queued on the controllers through
//! `reconcile_on`; so a rotated Secret reaches every attachment that uses it.
//! Only the attachment reconciler touches schemas; the workspace reconciler
//! owns the periodic resync (one catalog query per workspace) and the
//! connection reconciler owns tests and the connection's status.

mod attachment;
mod connection;
mod observations;
mod relations;
mod resolve;
mod status;
mod workspace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::{Connection, Workspace, WorkspaceConnection};
use crate::metrics::{Health, Metrics, StatementLabels};
use crate::postgres::{Pools, Timeouts};
pub use observations::Observations;

/// The field manager of every status write, and the reporting controller of
/// every Event.
pub const MANAGER: &str = "manifold";

/// How the controllers behave.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often each workspace's catalog is observed, and drift healed.
    pub resync: Duration,
    /// Connections per workspace pool: the bound on concurrent work in one
    /// database.
    pub pool_size: usize,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
    pub timeouts: Timeouts,
    /// Bounds every statement of a connection test.
    pub test_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(300),
            pool_size: 4,
            concurrency: 64,
            timeouts: Timeouts::default(),
            test_timeout: Duration::from_secs(10),
        }
    }
}

/// The reflector stores of the four watched kinds.
#[derive(Clone)]
pub struct Stores {
    pub workspaces: Store<Workspace>,
    pub connections: Store<Connection>,
    pub attachments: Store<WorkspaceConnection>,
    pub secrets: Store<Secret>,
}

impl Stores {
    pub fn workspace(&self, ns: &str, name: &str) -> Option<Arc<Workspace>> {
        self.workspaces.get(&ObjectRef::new(name).within(ns))
    }

    pub fn connection(&self, ns: &str, name: &str) -> Option<Arc<Connection>> {
        self.connections.get(&ObjectRef::new(name).within(ns))
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(ns))
    }

    pub fn attachments_where(&self, ns: &str, pred: impl Fn(&WorkspaceConnection) -> bool) -> Vec<Arc<WorkspaceConnection>> {
        let mut found: Vec<_> =
            self.attachments.state().into_iter().filter(|a| a.namespace().as_deref() == Some(ns) && pred(a)).collect();
        found.sort_by_key(|a| a.name_any());
        found
    }
}

/// Queues reconciles on the controllers from outside their own watches.
#[derive(Clone)]
pub struct Triggers {
    pub workspaces: UnboundedSender<ObjectRef<Workspace>>,
    pub connections: UnboundedSender<ObjectRef<Connection>>,
    pub attachments: UnboundedSender<ObjectRef<WorkspaceConnection>>,
}

/// Per-object retry delays: 1 s, doubling up to 5 minutes, with jitter, and
/// reset by a success. Failures back off; they do not spin.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    fn delay(failures: u32) -> Duration {
        Duration::from_secs(1).saturating_mul(1 << failures.saturating_sub(1).min(9)).min(Duration::from_secs(300))
    }

    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap();
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        let base = Self::delay(*n);
        // Jitter of up to a quarter, so that many objects failing together
        // (a database restart) do not retry in lockstep.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }

    /// The delay `failed` would give next, without counting a failure and
    /// without jitter: 1 s when nothing has failed yet.
    pub fn peek(&self, key: &str) -> Duration {
        Self::delay(self.failures.lock().unwrap().get(key).copied().unwrap_or(0))
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap().remove(key);
    }
}

/// Everything a reconciler needs: the stores and triggers of its scope (all
/// namespaces, or one), and what every scope shares.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub stores: Stores,
    pub triggers: Triggers,
    pub pools: Arc<Pools>,
    pub observations: Arc<Observations>,
    pub backoff: Arc<Backoff>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

/// A reconcile that failed against the Kubernetes API. Database and spec
/// problems are not errors here: they are reported in status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0}")]
    Held(String),
}

impl Error {
    /// The finalizer was added by an earlier reconcile whose update the store
    /// has not seen yet, so the patch's test failed. Not a failure: the watch
    /// event is on its way.
    fn is_finalizer_race(&self) -> bool {
        matches!(
            self,
            Error::Finalizer(inner) if matches!(
                inner.as_ref(),
                kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(status)) if status.code == 422
            )
        )
    }
}

fn error_policy<K: Resource<DynamicType = ()>>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    if err.is_finalizer_race() {
        return Action::requeue(Duration::from_millis(200));
    }
    let key = format!("{}/{}/{}", K::kind(&()), obj.meta().namespace.as_deref().unwrap_or(""), obj.meta().name.as_deref().unwrap_or(""));
    let delay = ctx.backoff.failed(&key);
    warn!(object = %key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// A watch of one kind, in one scope (all namespaces, or one), whose events
/// are reflected into a shared store, handed to `relate` (which queues
/// dependents), and broadcast to the kind's own controller.
fn reflect<K>(
    client: &Client,
    namespace: Option<&str>,
    stores: &Arc<std::sync::OnceLock<Stores>>,
    triggers: &Triggers,
    relate: fn(&Stores, &Triggers, &Event<K>),
) -> (Store<K>, impl Stream<Item = Arc<K>> + Send + 'static, impl Future<Output = ()> + Send + 'static)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store_shared::<K>(1024);
    let subscriber = writer.subscribe().expect("a shared store has subscribers");
    let api = match namespace {
        Some(ns) => Api::<K>::namespaced(client.clone(), ns),
        None => Api::<K>::all(client.clone()),
    };
    let driver = watcher::watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|obj| {
            // Nothing reads managed fields; they are most of an object's size.
            obj.meta_mut().managed_fields = None;
        })
        .inspect_ok({
            let (stores, triggers) = (stores.clone(), triggers.clone());
            move |event| {
                if let Some(stores) = stores.get() {
                    relate(stores, &triggers, event)
                }
            }
        })
        .reflect_shared(writer)
        .for_each(|event| {
            if let Err(err) = event {
                warn!(kind = %K::kind(&()), error = %err, "watch failed; retrying");
            }
            future::ready(())
        });
    (reader, subscriber, driver)
}

type RunResult<K> = Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>;

fn log_result<K: Resource>(kind: &'static str, result: RunResult<K>) -> future::Ready<()> {
    match result {
        Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {} // error_policy logs those
        Err(other) => warn!(kind, error = %other, "controller"),
    }
    future::ready(())
}

/// Times a reconcile for the metrics; failures reported in status are
/// counted where the status is written.
async fn measured(kind: &'static str, ctx: Arc<Context>, run: impl Future<Output = Result<Action, Error>>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = run.await;
    let api_failed = result.as_ref().is_err_and(|e| !e.is_finalizer_race());
    ctx.metrics.reconciled(kind, started.elapsed(), api_failed);
    result
}

/// What the operator shares across scopes.
pub struct Shared {
    pub client: Client,
    pub settings: Settings,
    pub pools: Arc<Pools>,
    pub observations: Arc<Observations>,
    pub backoff: Arc<Backoff>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        // One `let` each: a family's guard must be gone before the next
        // get_or_create takes its lock.
        let queries = metrics.statements.get_or_create(&StatementLabels { kind: "query" }).clone();
        let ddl = metrics.statements.get_or_create(&StatementLabels { kind: "ddl" }).clone();
        let counters = crate::postgres::Counters { queries, ddl };
        Shared {
            pools: Arc::new(Pools::new(settings.pool_size, settings.timeouts, counters)),
            observations: Arc::default(),
            backoff: Arc::default(),
            recorder: Recorder::new(
                client.clone(),
                Reporter { controller: MANAGER.into(), instance: std::env::var("POD_NAME").ok() },
            ),
            client,
            settings,
            metrics,
        }
    }
}

/// The watches, stores and controllers of one scope.
struct Scope {
    ctx: Arc<Context>,
    subscribers: (
        futures::stream::BoxStream<'static, Arc<Workspace>>,
        futures::stream::BoxStream<'static, Arc<Connection>>,
        futures::stream::BoxStream<'static, Arc<WorkspaceConnection>>,
    ),
    receivers: (
        futures::channel::mpsc::UnboundedReceiver<ObjectRef<Workspace>>,
        futures::channel::mpsc::UnboundedReceiver<ObjectRef<Connection>>,
        futures::channel::mpsc::UnboundedReceiver<ObjectRef<WorkspaceConnection>>,
    ),
}

/// Starts the watches of one scope; their drivers are spawned.
fn watch_scope(shared: &Shared, namespace: Option<&str>, tasks: &mut Vec<tokio::task::JoinHandle<()>>) -> Scope {
    let (ws_tx, ws_rx) = unbounded();
    let (conn_tx, conn_rx) = unbounded();
    let (att_tx, att_rx) = unbounded();
    let triggers = Triggers { workspaces: ws_tx, connections: conn_tx, attachments: att_tx };
    // The relations need the stores of other kinds, which exist only once
    // every reflector is made; the cell is filled right after.
    let cell: Arc<std::sync::OnceLock<Stores>> = Arc::default();
    let client = &shared.client;
    let (workspaces, ws_sub, ws_driver) = reflect(client, namespace, &cell, &triggers, relations::workspace_changed);
    let (connections, conn_sub, conn_driver) = reflect(client, namespace, &cell, &triggers, relations::connection_changed);
    let (attachments, att_sub, att_driver) = reflect(client, namespace, &cell, &triggers, relations::attachment_changed);
    let (secrets, secret_sub, secret_driver) = reflect(client, namespace, &cell, &triggers, relations::secret_changed);
    let stores = Stores { workspaces, connections, attachments, secrets };
    cell.set(stores.clone()).ok();
    tasks.push(tokio::spawn(ws_driver));
    tasks.push(tokio::spawn(conn_driver));
    tasks.push(tokio::spawn(att_driver));
    tasks.push(tokio::spawn(secret_driver));
    // Secrets have no controller of their own; their subscriber is drained.
    tasks.push(tokio::spawn(secret_sub.for_each(|_| future::ready(()))));
    Scope {
        ctx: Arc::new(Context {
            client: shared.client.clone(),
            settings: shared.settings.clone(),
            stores,
            triggers,
            pools: shared.pools.clone(),
            observations: shared.observations.clone(),
            backoff: shared.backoff.clone(),
            recorder: shared.recorder.clone(),
            metrics: shared.metrics.clone(),
        }),
        subscribers: (ws_sub.boxed(), conn_sub.boxed(), att_sub.boxed()),
        receivers: (ws_rx, conn_rx, att_rx),
    }
}

/// Runs the operator: the watches start at once (so a standby replica has
/// warm caches and is ready), the controllers once `leader` resolves, and
/// everything stops when `shutdown` resolves. `namespaces` limits the
/// watches to those namespaces; empty means all.
pub async fn run(
    shared: Shared,
    namespaces: &[String],
    health: Health,
    leader: impl Future<Output = ()> + Send,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown = futures::FutureExt::shared(shutdown);
    let mut tasks = Vec::new();
    let scopes: Vec<Scope> = if namespaces.is_empty() {
        vec![watch_scope(&shared, None, &mut tasks)]
    } else {
        namespaces.iter().map(|ns| watch_scope(&shared, Some(ns), &mut tasks)).collect()
    };

    // A reconcile reads all four stores: until each has listed its kind, a
    // missing reference would be reported wrongly.
    for scope in &scopes {
        let s = &scope.ctx.stores;
        let ready = future::join4(
            s.workspaces.wait_until_ready(),
            s.connections.wait_until_ready(),
            s.attachments.wait_until_ready(),
            s.secrets.wait_until_ready(),
        );
        if let (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) = ready.await {
            warn!(error = %e, "stores never became ready");
            return;
        }
    }
    let attachment_stores: Vec<Store<WorkspaceConnection>> = scopes.iter().map(|s| s.ctx.stores.attachments.clone()).collect();
    shared.metrics.add_state_source(Box::new(move || attachment_states(&attachment_stores)));
    health.set_ready();
    info!(scopes = scopes.len(), "caches synced");

    tokio::select! {
        _ = leader => {}
        _ = shutdown.clone() => {
            tasks.iter().for_each(|t| t.abort());
            return;
        }
    }
    shared.metrics.leader.set(1);
    info!(resync = ?shared.settings.resync, pool_size = shared.settings.pool_size, "leading: controllers starting");

    let config = controller::Config::default().concurrency(shared.settings.concurrency);
    let mut controllers: Vec<std::pin::Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
    for scope in scopes {
        let Scope { ctx, subscribers: (ws_sub, conn_sub, att_sub), receivers: (ws_rx, conn_rx, att_rx) } = scope;
        controllers.push(Box::pin(
            Controller::for_shared_stream(ws_sub, ctx.stores.workspaces.clone())
                .with_config(config.clone().debounce(Duration::from_millis(200)))
                .reconcile_on(ws_rx)
                .graceful_shutdown_on(shutdown.clone())
                .run(|o, c| measured("Workspace", c.clone(), workspace::reconcile(o, c)), error_policy, ctx.clone())
                .for_each(|r| log_result("Workspace", r)),
        ));
        controllers.push(Box::pin(
            Controller::for_shared_stream(conn_sub, ctx.stores.connections.clone())
                .with_config(config.clone().debounce(Duration::from_millis(200)))
                .reconcile_on(conn_rx)
                .graceful_shutdown_on(shutdown.clone())
                .run(|o, c| measured("Connection", c.clone(), connection::reconcile(o, c)), error_policy, ctx.clone())
                .for_each(|r| log_result("Connection", r)),
        ));
        controllers.push(Box::pin(
            Controller::for_shared_stream(att_sub, ctx.stores.attachments.clone())
                .with_config(config.clone())
                .reconcile_on(att_rx)
                .graceful_shutdown_on(shutdown.clone())
                .run(
                    |o, c| measured("WorkspaceConnection", c.clone(), attachment::reconcile(o, c)),
                    error_policy,
                    ctx.clone(),
                )
                .for_each(|r| log_result("WorkspaceConnection", r)),
        ));
    }
    future::join_all(controllers).await;
    tasks.iter().for_each(|t| t.abort());
    shared.metrics.leader.set(0);
    info!("controllers stopped");
}

/// Attachments by state (Ready, or the reason), for the metrics.
fn attachment_states(stores: &[Store<WorkspaceConnection>]) -> Vec<(String, i64)> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    for att in stores.iter().flat_map(|s| s.state()) {
        *counts.entry(status::attachment_state(&att)).or_default() += 1;
    }
    counts.into_iter().collect()
}
