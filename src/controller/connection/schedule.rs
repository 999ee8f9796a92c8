//! When a connection is tested: on a change of spec or credentials, on a
//! new request, every `spec.test.interval`, and again with backoff after a
//! failure.

use std::time::Duration;

use kube::{Resource, ResourceExt};

use crate::api::{Connection, REFRESH_REQUEST_ANNOTATION, TEST_REQUEST_ANNOTATION, TestOutcome, TestResult, duration};

/// The default of `spec.test.interval`.
pub const DEFAULT_TEST_INTERVAL: Duration = Duration::from_secs(3600);

/// Why a test runs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Never tested, or tested against another generation of the spec.
    Spec,
    /// The credentials Secret changed.
    Credentials,
    /// `manifold.dev/test-request` took a new value.
    Requested,
    /// `manifold.dev/refresh-request` took a new value.
    Refresh,
    /// The interval elapsed since the last test.
    Periodic,
    /// The last test failed or could not run; retried with backoff.
    Retry,
}

/// The test interval of a connection; None when periodic tests are off.
pub fn interval(conn: &Connection) -> Option<Duration> {
    let Some(text) = conn.spec.test.as_ref().and_then(|t| t.interval.as_deref()) else {
        return Some(DEFAULT_TEST_INTERVAL);
    };
    // The CRD admits only what parses; anything else (an object stored
    // before that rule) falls back to the default rather than fail.
    let parsed = duration::parse(text).unwrap_or(DEFAULT_TEST_INTERVAL);
    (!parsed.is_zero()).then_some(parsed)
}

/// Decides whether a test is due, from the last result and the inputs.
/// `since_last` is how long ago the last test ran; `retry_after` is the
/// backoff of a failed or unrun test.
pub fn due(
    conn: &Connection,
    credentials: Option<&str>,
    since_last: Option<Duration>,
    retry_after: Duration,
    workspace_available: bool,
) -> Option<Cause> {
    let Some(last) = conn.status.as_ref().and_then(|s| s.test.as_ref()) else {
        return Some(Cause::Spec);
    };
    if last.observed_generation != conn.meta().generation {
        return Some(Cause::Spec);
    }
    let request = conn.annotations().get(TEST_REQUEST_ANNOTATION);
    if request.is_some() && request != last.request.as_ref() {
        return Some(Cause::Requested);
    }
    let refresh = conn.annotations().get(REFRESH_REQUEST_ANNOTATION);
    let refreshed = conn.status.as_ref().and_then(|s| s.source_schema.as_ref()).and_then(|s| s.request.as_ref());
    if refresh.is_some() && refresh != refreshed {
        return Some(Cause::Refresh);
    }
    if last.credentials.as_deref() != credentials {
        return Some(Cause::Credentials);
    }
    let since = since_last.unwrap_or(Duration::MAX);
    // A test that had nowhere to run runs as soon as somewhere appears.
    if last.result == TestOutcome::Unknown && workspace_available {
        return Some(Cause::Retry);
    }
    if last.result == TestOutcome::Failed && since >= retry_after {
        return Some(Cause::Retry);
    }
    match interval(conn) {
        Some(every) if since >= every => Some(Cause::Periodic),
        _ => None,
    }
}

/// When the next test after `last` falls due, if nothing else changes.
pub(super) fn next_test(conn: &Connection, last: Option<&TestResult>, since_last: Duration, retry_after: Duration) -> Option<Duration> {
    let last = last?;
    let mut next = interval(conn).map(|every| every.saturating_sub(since_last));
    if last.result == TestOutcome::Failed {
        let retry = retry_after.saturating_sub(since_last);
        next = Some(next.map_or(retry, |n| n.min(retry)));
    }
    next
}

pub(super) fn since(tested_at: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Duration {
    let elapsed = jiff::Timestamp::now().duration_since(tested_at.0);
    Duration::try_from(elapsed).unwrap_or_default()
}
