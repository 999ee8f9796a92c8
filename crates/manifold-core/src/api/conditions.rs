//! Conditions in the shape kstatus, Flux and Argo CD read: `Ready` with
//! normal polarity, `Reconciling` and `Stalled` with abnormal-true polarity,
//! and `observedGeneration` on each.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const VERIFIED: &str = "Verified";

/// The status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition as the controller wants it, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &'static str, status: Status, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Desired { type_, status, reason: reason.into(), message: message.into() }
    }
}

/// Merges desired conditions into the current ones. A condition whose status
/// did not change keeps its `lastTransitionTime`, so that rewriting the same
/// state is a no-op and does not cause a status write. Conditions of other
/// types are kept untouched.
pub fn merge(current: &[Condition], desired: &[Desired], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let mut out: Vec<Condition> = current.iter().filter(|c| !desired.iter().any(|d| d.type_ == c.type_)).cloned().collect();
    for d in desired {
        let previous = current.iter().find(|c| c.type_ == d.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == d.status.as_str() => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        out.push(Condition {
            type_: d.type_.to_owned(),
            status: d.status.as_str().to_owned(),
            reason: d.reason.clone(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The `Ready` condition, if the status has one yet.
pub fn ready(conditions: &[Condition]) -> Option<&Condition> {
    find(conditions, READY)
}

/// True when the `Ready` condition is `True`.
pub fn is_ready(conditions: &[Condition]) -> bool {
    find(conditions, READY).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn unchanged_status_keeps_transition_time() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-01T00:01:00Z");
        let first = merge(&[], &[Desired::new(READY, Status::True, "Attached", "ok")], Some(1), &t0);
        let second = merge(&first, &[Desired::new(READY, Status::True, "Attached", "ok")], Some(1), &t1);
        assert_eq!(first, second);
        let third = merge(&second, &[Desired::new(READY, Status::False, "SchemaConflict", "no")], Some(2), &t1);
        assert_eq!(third[0].last_transition_time, t1);
        assert_eq!(third[0].observed_generation, Some(2));
    }

    #[test]
    fn other_types_are_kept_and_sorted() {
        let t0 = time("2026-01-01T00:00:00Z");
        let verified = merge(&[], &[Desired::new(VERIFIED, Status::True, "Passed", "")], Some(1), &t0);
        let all = merge(&verified, &[Desired::new(READY, Status::True, "Attached", "")], Some(1), &t0);
        let types: Vec<_> = all.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Verified"]);
    }
}
