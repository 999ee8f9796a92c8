//! Starting the operator: the watches of each scope, their stores and
//! indexes, and the three controllers once this replica leads.
//!
//! Four watches (the three kinds and Secrets) feed four reflector stores.
//! Every watch event also updates the indexes and is mapped, in
//! `relations`, to the objects of other kinds that depend on it, which are
//! queued on their controllers; so a rotated Secret reaches every
//! attachment that uses it. The Secret watch is narrowed by a label
//! selector: the operator caches, and can use, only the Secrets that were
//! opted in.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::channel::mpsc::{UnboundedReceiver, unbounded};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{self, ObjectRef, Store};

use super::subscriber::kept_moving;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Client, Resource};
use tracing::{info, warn};

use super::admission::Admission;
use super::context::{Context, Error, Shared, Stores, Triggers, error_policy};
use super::{attachment, connection, relations, status, workspace};
use crate::api::{Connection, Workspace, WorkspaceConnection};
use crate::metrics::Health;

type Relate<K> = fn(&Stores, &Triggers, &Event<K>);

/// A watch of one kind, in one scope (all namespaces, or one), whose events
/// are reflected into a shared store, handed to `relate` (which updates the
/// indexes and queues dependents), and broadcast to the kind's controller.
fn reflect<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
    stores: &Arc<OnceLock<Stores>>,
    triggers: &Triggers,
    relate: Relate<K>,
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
    let driver = watcher::watcher(api, config.any_semantic())
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

/// The events of a controller's own kind that ask it to reconcile: those
/// that changed what it acts on (the spec, labels, annotations,
/// finalizers, deletion), not its own status writes, which would each wake
/// it for nothing. Other kinds' changes reach it through the relations.
/// Without `finalizers`, a change of finalizers alone is not one (the
/// attachment controller adds its finalizer in the reconcile that goes on
/// to attach, and needs no second reconcile for it), except while the
/// object is being deleted.
fn own_changes<K>(objects: BoxStream<'static, Arc<K>>, store: Store<K>, finalizers: bool) -> BoxStream<'static, Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    use std::hash::{Hash, Hasher};
    let mut seen: HashMap<ObjectRef<K>, u64> = HashMap::new();
    objects
        .filter(move |obj| {
            let meta = obj.meta();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            // While an object is being deleted its finalizers are all that
            // still changes, and a change to them must never go unseen.
            let finalizers = if finalizers || meta.deletion_timestamp.is_some() { meta.finalizers.as_ref() } else { None };
            (&meta.uid, meta.generation, meta.deletion_timestamp.is_some(), finalizers, &meta.labels, &meta.annotations).hash(&mut h);
            let fresh = seen.insert(ObjectRef::from_obj(obj), h.finish()) != Some(h.finish());
            // Forget objects that are gone, now and then.
            if seen.len() > 2 * store.len() + 1024 {
                seen.retain(|key, _| store.get(key).is_some());
            }
            future::ready(fresh)
        })
        .boxed()
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
    let api_failed = result.as_ref().is_err_and(|e| !e.is_finalizer_race() && !matches!(e, Error::Held(_)));
    ctx.metrics.reconciled(kind, started.elapsed(), api_failed);
    result
}

/// A kind's changes, as its store's subscriber sees them.
type Changes<K> = BoxStream<'static, Arc<K>>;
/// What the relations queue for a kind's controller.
type Queued<K> = UnboundedReceiver<ObjectRef<K>>;

/// The watches, stores and controllers of one scope.
struct Scope {
    ctx: Arc<Context>,
    subscribers: (Changes<Workspace>, Changes<Connection>, Changes<WorkspaceConnection>),
    receivers: (Queued<Workspace>, Queued<Connection>, Queued<WorkspaceConnection>),
}

/// Starts the watches of one scope; their drivers are spawned.
fn watch_scope(shared: &Arc<Shared>, namespace: Option<&str>, tasks: &mut Vec<tokio::task::JoinHandle<()>>) -> Scope {
    let (ws_tx, ws_rx) = unbounded();
    let (conn_tx, conn_rx) = unbounded();
    let (att_tx, att_rx) = unbounded();
    let triggers = Triggers::new(ws_tx, conn_tx, att_tx);
    // The relations need the stores of other kinds, which exist only once
    // every reflector is made; the cell is filled right after.
    let cell: Arc<OnceLock<Stores>> = Arc::default();
    let client = &shared.client;
    let all = watcher::Config::default;
    let secrets_config = match shared.settings.secret_selector.trim() {
        "" => all(),
        selector => all().labels(selector),
    };
    let (workspaces, ws_sub, ws_driver) = reflect(client, namespace, all(), &cell, &triggers, relations::workspace_changed);
    let (connections, conn_sub, conn_driver) = reflect(client, namespace, all(), &cell, &triggers, relations::connection_changed);
    let (attachments, att_sub, att_driver) = reflect(client, namespace, all(), &cell, &triggers, relations::attachment_changed);
    let (secrets, secret_sub, secret_driver) =
        reflect::<Secret>(client, namespace, secrets_config, &cell, &triggers, relations::secret_changed);
    let stores = Stores { workspaces, connections, attachments, secrets, index: Arc::default() };
    cell.set(stores.clone()).ok();
    tasks.push(tokio::spawn(ws_driver));
    tasks.push(tokio::spawn(conn_driver));
    tasks.push(tokio::spawn(att_driver));
    tasks.push(tokio::spawn(secret_driver));
    // Secrets have no controller of their own; their subscriber is drained.
    tasks.push(tokio::spawn(secret_sub.for_each(|_| future::ready(()))));
    Scope {
        ctx: Arc::new(Context {
            shared: shared.clone(),
            admission: {
                let budget = shared.pools.budget.clone();
                Admission::for_scope(shared.settings.pool_sizes.work, stores.clone(), triggers.clone(), move || budget.contended_anywhere())
            },
            stores,
            triggers,
        }),
        subscribers: (kept_moving(ws_sub).boxed(), kept_moving(conn_sub).boxed(), kept_moving(att_sub).boxed()),
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
    let shared = Arc::new(shared);
    let shutdown = futures::FutureExt::shared(shutdown);
    let mut tasks = Vec::new();
    let scopes: Vec<Scope> = if namespaces.is_empty() {
        vec![watch_scope(&shared, None, &mut tasks)]
    } else {
        namespaces.iter().map(|ns| watch_scope(&shared, Some(ns), &mut tasks)).collect()
    };

    if !stores_ready(&scopes).await {
        return;
    }
    let attachment_stores: Vec<Store<WorkspaceConnection>> = scopes.iter().map(|s| s.ctx.stores.attachments.clone()).collect();
    shared.metrics.add_state_source(Box::new(move || attachment_states(&attachment_stores)));
    health.set_ready();
    info!(scopes = scopes.len(), watched_secrets_label_selector = %shared.settings.secret_selector, "caches synced");

    tokio::select! {
        _ = leader => {}
        _ = shutdown.clone() => {
            tasks.iter().for_each(|t| t.abort());
            return;
        }
    }
    shared.metrics.leader.set(1);
    info!(resync = ?shared.settings.resync, pool_size = shared.settings.pool_sizes.work, "leading: controllers starting");

    let config = controller::Config::default().concurrency(shared.settings.concurrency);
    let debounced = config.clone().debounce(Duration::from_millis(200));
    let mut controllers: Vec<std::pin::Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
    for scope in scopes {
        let Scope { ctx, subscribers: (ws_sub, conn_sub, att_sub), receivers: (ws_rx, conn_rx, att_rx) } = scope;
        let stores = ctx.stores.clone();
        let stop = shutdown.clone();
        let ws = Watched { kind: "Workspace", changes: ws_sub, store: stores.workspaces, finalizers: true, queued: ws_rx };
        controllers.push(drive(ws, debounced.clone(), stop.clone(), ctx.clone(), workspace::reconcile));
        let conn = Watched { kind: "Connection", changes: conn_sub, store: stores.connections, finalizers: true, queued: conn_rx };
        controllers.push(drive(conn, debounced.clone(), stop.clone(), ctx.clone(), connection::reconcile));
        let att = Watched { kind: "WorkspaceConnection", changes: att_sub, store: stores.attachments, finalizers: false, queued: att_rx };
        controllers.push(drive(att, config.clone(), stop, ctx, attachment::reconcile));
    }
    until_stopped(controllers, shutdown, shared.settings.shutdown_timeout).await;
    tasks.iter().for_each(|t| t.abort());
    shared.metrics.leader.set(0);
    info!("controllers stopped");
}

/// Runs the controllers until they stop. On shutdown they take no new work
/// and wait for the reconciles already running; those get `limit`, then are
/// dropped (a dropped transaction rolls back).
async fn until_stopped(controllers: Vec<std::pin::Pin<Box<dyn Future<Output = ()>>>>, shutdown: impl Future<Output = ()>, limit: Duration) {
    tokio::select! {
        _ = future::join_all(controllers) => {}
        _ = async { shutdown.await; tokio::time::sleep(limit).await } => {
            warn!(timeout = ?limit, "reconciles still running at the shutdown timeout: abandoned, their transactions roll back");
        }
    }
}

/// A reconcile reads all four stores: until each has listed its kind, a
/// missing reference would be reported wrongly. False if one never does.
async fn stores_ready(scopes: &[Scope]) -> bool {
    for scope in scopes {
        let s = &scope.ctx.stores;
        let ready = future::join4(
            s.workspaces.wait_until_ready(),
            s.connections.wait_until_ready(),
            s.attachments.wait_until_ready(),
            s.secrets.wait_until_ready(),
        );
        if let (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) = ready.await {
            warn!(error = %e, "stores never became ready");
            return false;
        }
    }
    true
}

/// One kind's watch, as a controller takes it: the changes that matter
/// (see `own_changes`), its store, and the queue that relations fill.
struct Watched<K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static> {
    kind: &'static str,
    changes: Changes<K>,
    store: Store<K>,
    /// Whether a change of finalizers alone is a change.
    finalizers: bool,
    queued: Queued<K>,
}

/// The controller of one kind: measured, logged, and stopped on shutdown.
fn drive<K, R, F>(
    watched: Watched<K>,
    config: controller::Config,
    shutdown: futures::future::Shared<impl Future<Output = ()> + Send + 'static>,
    ctx: Arc<Context>,
    reconcile: R,
) -> std::pin::Pin<Box<dyn Future<Output = ()>>>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    R: Fn(Arc<K>, Arc<Context>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let Watched { kind, changes, store, finalizers, queued } = watched;
    Box::pin(
        Controller::for_shared_stream(own_changes(changes, store.clone(), finalizers), store)
            .with_config(config)
            .reconcile_on(queued)
            .graceful_shutdown_on(shutdown)
            .run(move |o, c| measured(kind, c.clone(), reconcile(o, c)), error_policy, ctx)
            .for_each(move |r| log_result(kind, r)),
    )
}

/// Attachments by state (Ready, or the reason), for the metrics.
fn attachment_states(stores: &[Store<WorkspaceConnection>]) -> Vec<(String, i64)> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    for att in stores.iter().flat_map(|s| s.state()) {
        *counts.entry(status::attachment_state(&att)).or_default() += 1;
    }
    counts.into_iter().collect()
}
