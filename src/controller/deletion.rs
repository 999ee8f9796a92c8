//! What every deletion shares: the way into a workspace's database while
//! its objects go, and when a deletion stops waiting for a database it
//! cannot clean.
//!
//! Every deletion completes. A deletion waits only for what can still come
//! back: a database that is down (for `--cleanup-timeout`, or for
//! `--terminating-cleanup-timeout` once the namespace itself is being
//! deleted, since the database's own cluster usually goes with it), or a
//! person who must remove what holds a drop (`DependentObjects`, which
//! never gives up by itself and says so in the condition).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Resource;
use kube::api::Api;

use super::context::Context;
use super::resolve;
use crate::api::{Failure, Reason};
use crate::postgres::Db;

/// The database behind a workspace during a deletion: through its Secret
/// while the Workspace exists, even if it is being deleted, or through the
/// pools still open after its Secret went. Only the Workspace with uid
/// `uid` (when one is known): a Workspace made again under the same name
/// is another database, where nothing of the first one's is removed.
pub fn cleanup_database(ctx: &Context, ns: &str, ws_name: &str, uid: Option<&str>) -> Option<Db> {
    let ws = ctx.stores.workspace(ns, ws_name).filter(|ws| uid.is_none_or(|uid| ws.metadata.uid.as_deref() == Some(uid)));
    let uid = uid.map(str::to_owned).or_else(|| ws.as_ref().and_then(|ws| ws.metadata.uid.clone()))?;
    let from_secret =
        ws.and_then(|ws| resolve::workspace_target(ctx, &ws).ok()).and_then(|target| ctx.pools.get(ns, ws_name, &target).ok());
    from_secret.or_else(|| ctx.pools.cached(ns, ws_name, &uid)).map(|db| Arc::new(db) as Db)
}

/// How a deletion that failed with `failure` may wait at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Until a person acts: the condition says what to do.
    ForAPerson,
    /// Until this much time has passed since the deletion began.
    Until(Duration),
}

/// Whether a failure means the database cannot be reached at all (or no
/// way into it is left), rather than that it answered and refused.
pub fn unreachable(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::WorkspaceUnreachable
            | Reason::DatabaseMoved
            | Reason::Timeout
            | Reason::HostUnreachable
            | Reason::SecretNotFound
            | Reason::SecretKeyMissing
            | Reason::SecretNotPermitted
            | Reason::WorkspaceNotFound
    )
}

/// The policy, pure: objects that someone else built on ours hold the
/// drop until a person removes them; a database that cannot be reached
/// is waited for `terminating` once the namespace is being deleted, and
/// `timeout` otherwise; any other refusal is waited for `timeout`.
pub fn hold(reason: Reason, namespace_terminating: bool, timeout: Duration, terminating: Duration) -> Hold {
    match reason {
        Reason::DependentObjects => Hold::ForAPerson,
        r if unreachable(r) && namespace_terminating => Hold::Until(terminating.min(timeout)),
        _ => Hold::Until(timeout),
    }
}

/// Whether the namespace is being deleted. An answer the operator may not
/// get (namespaced RBAC without the namespace's `get`) counts as no.
pub async fn namespace_terminating(ctx: &Context, ns: &str) -> bool {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    match api.get_opt(ns).await {
        Ok(Some(namespace)) => {
            namespace.metadata.deletion_timestamp.is_some() || namespace.status.and_then(|s| s.phase).as_deref() == Some("Terminating")
        }
        Ok(None) => true,
        Err(_) => false,
    }
}

/// How long the deletion of `obj` has been going on.
fn deleting_for<K: Resource>(obj: &K) -> Duration {
    obj.meta()
        .deletion_timestamp
        .as_ref()
        .map(|t| std::time::Duration::try_from(jiff::Timestamp::now().duration_since(t.0)).unwrap_or_default())
        .unwrap_or_default()
}

/// `Some(bound)` when the deletion of `obj`, failed with `failure`, has
/// waited as long as it may: it goes on without the database, after the
/// caller's Warning Event. `None`: it keeps waiting (with backoff).
pub async fn give_up<K: Resource>(ctx: &Context, obj: &K, ns: &str, failure: &Failure) -> Option<Duration> {
    let (timeout, terminating) = (ctx.settings.cleanup_timeout, ctx.settings.terminating_cleanup_timeout);
    if failure.reason == Reason::DependentObjects {
        return None;
    }
    let waited = deleting_for(obj);
    // The namespace is asked only once the shorter bound has passed.
    if waited < terminating.min(timeout) {
        return None;
    }
    let terminating_ns = unreachable(failure.reason) && namespace_terminating(ctx, ns).await;
    match hold(failure.reason, terminating_ns, timeout, terminating) {
        Hold::Until(bound) if waited >= bound => Some(bound),
        _ => None,
    }
}

/// What a person reads in a held deletion's condition: what holds it, and
/// what to do.
pub fn held_message(kind: &str, name: &str, failure: &Failure) -> String {
    let todo = match failure.reason {
        Reason::DependentObjects => format!(
            "drop or move the objects named above (they were not made by Manifold, so Manifold never drops them), \
             or release the {kind} and keep everything with: kubectl patch {kind} {name} --type merge \
             -p '{{\"metadata\":{{\"finalizers\":null}}}}'"
        ),
        r if unreachable(r) => "the deletion waits for the database to come back, for --cleanup-timeout at most \
                                (--terminating-cleanup-timeout while the namespace is being deleted)"
            .to_owned(),
        _ => "fix what the message names; the deletion retries with backoff, for --cleanup-timeout at most".to_owned(),
    };
    format!("deletion held: {}. To go on: {todo}", failure.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dependent_objects_wait_for_a_person() {
        let (timeout, terminating) = (Duration::from_secs(600), Duration::from_secs(60));
        for &reason in Reason::ALL {
            let hold_open = hold(reason, false, timeout, terminating);
            let hold_terminating = hold(reason, true, timeout, terminating);
            if reason == Reason::DependentObjects {
                assert_eq!(hold_open, Hold::ForAPerson, "{reason}");
                assert_eq!(hold_terminating, Hold::ForAPerson, "{reason}");
            } else {
                assert_eq!(hold_open, Hold::Until(timeout), "{reason}");
                let expected = if unreachable(reason) { terminating } else { timeout };
                assert_eq!(hold_terminating, Hold::Until(expected), "{reason}");
            }
        }
        // The shorter bound never lengthens the wait.
        assert_eq!(hold(Reason::WorkspaceUnreachable, true, Duration::from_secs(5), terminating), Hold::Until(Duration::from_secs(5)));
    }

    #[test]
    fn a_held_deletion_says_what_to_do() {
        let f = Failure::new(Reason::DependentObjects, "view public.v depends on schema sales");
        let m = held_message("wsconn", "a", &f);
        assert!(m.contains("view public.v") && m.contains("kubectl patch wsconn a"), "{m}");
        let f = Failure::new(Reason::WorkspaceUnreachable, "connection refused");
        assert!(held_message("mws", "w", &f).contains("--terminating-cleanup-timeout"));
    }
}
