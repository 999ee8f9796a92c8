//! What every reconciler shares, composed: the settings, the stores and
//! triggers of its scope, backoff, the pools, the Event reporter, the
//! metrics, the recent tests and the admission tickets. The parts live in
//! modules of their own (settings, stores, triggers, backoff, errors,
//! recent_tests, admission), which know nothing of the reconcilers; this
//! module only composes them.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Client, Resource};
use tracing::warn;

use super::admission::Admission;
use super::observations::Observations;
use super::recent_tests::RecentTests;
use crate::metrics::{Metrics, StatementLabels};
use crate::postgres::Pools;
use crate::postgres::pin::PinKey;

pub use super::backoff::*;
pub use super::errors::Error;
pub use super::settings::*;
pub use super::stores::*;
pub use super::triggers::*;

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
    pub recent_tests: RecentTests,
    /// The key of every Workspace's pin (see `postgres::pin`).
    pub pin_key: PinKey,
}

impl Shared {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>, pin_key: PinKey) -> Self {
        // One `let` each: a family's guard must be gone before the next
        // get_or_create takes its lock.
        let queries = metrics.statements.get_or_create(&StatementLabels { kind: "query" }).clone();
        let ddl = metrics.statements.get_or_create(&StatementLabels { kind: "ddl" }).clone();
        let counters = crate::postgres::Counters {
            queries,
            ddl,
            sessions: metrics.sessions.clone(),
            session_waits: metrics.session_waits.clone(),
            sessions_opened: metrics.sessions_opened.clone(),
        };
        Shared {
            pools: Arc::new(Pools::new(
                settings.pool_sizes,
                settings.timeouts,
                counters,
                &settings.sources.type_extensions,
                settings.sessions,
            )),
            observations: Arc::default(),
            backoff: Backoff::default(),
            reporting_instance: std::env::var("POD_NAME").unwrap_or_else(|_| MANAGER.to_owned()),
            client,
            settings,
            metrics,
            recent_tests: Default::default(),
            pin_key,
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
    pub admission: Admission,
}

impl Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
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
