//! Prometheus metrics and the admin server: `/healthz`, `/readyz` (ready once
//! the caches are synced) and `/metrics` in the Prometheus text format.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::Reason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TestLabels {
    pub result: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatementLabels {
    pub kind: &'static str,
}

/// Counts attachments by state at scrape time.
pub type StateSource = Box<dyn Fn() -> Vec<(String, i64)> + Send + Sync>;

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    pub tests: Family<TestLabels, Counter>,
    pub attachments: Family<StateLabels, Gauge>,
    /// SQL statements sent to workspace databases, by `query` or `ddl`.
    pub statements: Family<StatementLabels, Counter>,
    /// Status writes to the apiserver, by kind.
    pub status_writes: Family<KindLabels, Counter>,
    /// Sessions to workspace databases open now, and new sessions that
    /// waited for the budget.
    pub sessions: Gauge,
    pub session_waits: Counter,
    /// Sessions opened, by the pool they serve (work, tests, observe): a
    /// figure that grows much faster than the attachments means sessions
    /// are closed and opened again, each a backend started.
    pub sessions_opened: Family<PoolLabels, Counter>,
    pub leader: Gauge,
    state_sources: Mutex<Vec<StateSource>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("manifold");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));
        let tests = Family::<TestLabels, Counter>::default();
        let attachments = Family::<StateLabels, Gauge>::default();
        let statements = Family::<StatementLabels, Counter>::default();
        let status_writes = Family::<KindLabels, Counter>::default();
        let leader = Gauge::default();
        let sessions = Gauge::default();
        let session_waits = Counter::default();
        let sessions_opened = Family::<PoolLabels, Counter>::default();
        registry.register("reconciles", "Reconciles, by kind", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that ended in a failure, by kind and reason", errors.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration, by kind", duration.clone());
        registry.register("connection_tests", "Connection tests, by result and reason", tests.clone());
        registry.register("attachments", "WorkspaceConnections, by state (Ready or the reason)", attachments.clone());
        registry.register("sql_statements", "SQL statements sent to workspace databases, by kind (query or ddl)", statements.clone());
        registry.register("status_writes", "Status writes to the apiserver, by kind", status_writes.clone());
        registry.register("leader", "1 while this process holds the leader Lease", leader.clone());
        registry.register("sessions", "Sessions to workspace databases open now", sessions.clone());
        registry.register("session_waits", "New sessions that waited for the session budget", session_waits.clone());
        registry.register("sessions_opened", "Sessions opened to workspace databases, by pool", sessions_opened.clone());
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            tests,
            attachments,
            statements,
            status_writes,
            leader,
            sessions,
            session_waits,
            sessions_opened,
            state_sources: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Records one reconcile; `api_failed` when it failed against the
    /// Kubernetes API (other failures are counted by `failed`).
    pub fn reconciled(&self, kind: &'static str, took: Duration, api_failed: bool) {
        self.reconciles.get_or_create(&KindLabels { kind }).inc();
        self.duration.get_or_create(&KindLabels { kind }).observe(took.as_secs_f64());
        if api_failed {
            self.errors.get_or_create(&ErrorLabels { kind, reason: "KubernetesApi" }).inc();
        }
    }

    /// Records a reconcile whose outcome was a failure, reported in status.
    pub fn failed(&self, kind: &'static str, reason: Reason) {
        self.errors.get_or_create(&ErrorLabels { kind, reason: reason.as_str() }).inc();
    }

    /// Records a status write.
    pub fn status_written(&self, kind: &'static str) {
        self.status_writes.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn add_state_source(&self, source: StateSource) {
        self.state_sources.lock().unwrap().push(source);
    }

    /// The text exposition, with the attachment gauges taken now.
    pub fn encode(&self) -> String {
        self.attachments.clear();
        for source in self.state_sources.lock().unwrap().iter() {
            for (state, n) in source() {
                let gauge = self.attachments.get_or_create(&StateLabels { state }).clone();
                gauge.inc_by(n);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding to a String cannot fail");
        out
    }
}

/// Whether the caches have synced: `/readyz`.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    health: Health,
}

/// Serves the admin endpoints on `addr` until the process ends. Returns the
/// bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>, health: Health) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, health });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(error = %err, "admin server stopped");
        }
    });
    Ok(bound)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.is_ready() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "caches not synced") }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}
