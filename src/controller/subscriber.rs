//! A shared store's subscriber, kept moving.
//!
//! kube-runtime's `ReflectHandle` (5.0) reads the reference that each
//! applied watch event broadcasts and yields the object from the store.
//! When the object is gone by then, it returns `Pending` without asking to
//! be woken, having taken the reference from its channel; the next change
//! is read only when something else wakes the controller's task. That
//! happens when an object is created and deleted before the controller
//! reads its reference: most of all on a standby replica, whose buffered
//! references are read only when it becomes the leader. A quiet new leader
//! then saw a new attachment only at its first requeue, the resync later
//! (30.5 s in the node test's failover round). A tick every second polls
//! the subscriber again, so such a stall lasts a second at most.

use std::time::Duration;

use futures::{Stream, StreamExt, future};

/// How often the subscriber is polled even when nothing woke it.
const TICK: Duration = Duration::from_secs(1);

/// `subscriber`, polled again at every tick.
pub fn kept_moving<S>(subscriber: S) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ticks = futures::stream::poll_fn(move |cx| interval.poll_tick(cx).map(|_| Some(None)));
    futures::stream::select(subscriber.map(Some), ticks).filter_map(future::ready)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::channel::mpsc;
    use futures::stream::BoxStream;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;
    use kube::runtime::watcher::{Error, Event};
    use kube::runtime::{WatchStreamExt, reflector};

    use super::*;

    fn config_map(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm
    }

    /// How long (on the paused clock) the subscriber takes to yield an
    /// object applied 100 ms after it read the reference of one that is
    /// already gone.
    async fn after_a_gone_object(keep_moving: bool) -> Duration {
        let (_reader, writer) = reflector::store_shared::<ConfigMap>(16);
        let subscriber = writer.subscribe().unwrap();
        let (events, rx) = mpsc::unbounded::<Result<Event<ConfigMap>, Error>>();
        tokio::spawn(rx.reflect_shared(writer).for_each(|_| future::ready(())));
        events.unbounded_send(Ok(Event::Apply(config_map("gone")))).unwrap();
        events.unbounded_send(Ok(Event::Delete(config_map("gone")))).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut changes: BoxStream<'static, Arc<ConfigMap>> =
            if keep_moving { kept_moving(subscriber).boxed() } else { subscriber.boxed() };
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            events.unbounded_send(Ok(Event::Apply(config_map("new")))).unwrap();
            std::future::pending::<()>().await;
        });
        let next = tokio::time::timeout(Duration::from_secs(60), changes.next()).await.unwrap().unwrap();
        assert_eq!(next.name_any(), "new");
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_after_a_gone_object_is_seen_within_a_tick() {
        // kube-runtime's subscriber alone waits for an unrelated wake (here
        // the timeout's, 60 s later). If this starts failing, kube fixed
        // it, and `kept_moving` can go.
        assert_eq!(after_a_gone_object(false).await, Duration::from_secs(60));
        assert!(after_a_gone_object(true).await <= TICK, "not within a tick");
    }
}
