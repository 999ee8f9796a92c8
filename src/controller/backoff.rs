//! Per-object backoff of failed reconciles and tests, and bounded requeues.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::api::duration;

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
