//! report: the status (the last test, the workspaces that use it, the
//! conditions) and an aggregator's members.

use kube::ResourceExt;

use crate::api::conditions::{Desired, Status, VERIFIED};
use crate::api::{
    Connection, ConnectionStatus, Failure, Reason, SourceSchema, TEST_HISTORY, TestOutcome, TestRecord, TestResult, WorkspaceUse,
    conditions,
};
use crate::controller::context::{Context, Error};
use crate::controller::resolve::{self};
use crate::controller::status::{self, Announce};
use crate::plugins;

pub(super) fn workspaces(ctx: &Context, conn: &Connection) -> Vec<WorkspaceUse> {
    let (ns, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
    let mut list: Vec<WorkspaceUse> = ctx
        .stores
        .attachments_of_connection(&ns, &name)
        .iter()
        .map(|a| WorkspaceUse {
            name: a.spec.workspace.clone(),
            schema: a.status.as_ref().and_then(|s| s.schema.clone()).unwrap_or_default(),
            state: status::attachment_state(a),
        })
        .collect();
    list.sort();
    list
}

/// The `Verified` condition for a test result.
pub(super) fn verified(test: Option<&TestResult>) -> Desired {
    match test {
        Some(t) if t.result == TestOutcome::Passed => Desired::new(VERIFIED, Status::True, Reason::Passed.as_str(), t.message.clone()),
        Some(t) if t.result == TestOutcome::Failed => Desired::new(VERIFIED, Status::False, t.reason.clone(), t.message.clone()),
        Some(t) => Desired::new(VERIFIED, Status::Unknown, t.reason.clone(), t.message.clone()),
        None => Desired::new(VERIFIED, Status::Unknown, Reason::NotTested.as_str(), "not tested yet"),
    }
}

pub(super) async fn report(
    conn: &Connection,
    ctx: &Context,
    outcome: &Failure,
    test: Option<TestResult>,
    source_schema: Option<SourceSchema>,
) -> Result<(), Error> {
    let workspaces = workspaces(ctx, conn);
    let verified = verified(test.as_ref());
    let previous = conn.status.as_ref().map(|s| s.test_history.as_slice()).unwrap_or_default();
    let status = ConnectionStatus {
        plugin: Some(plugins::label(conn.spec.plugin.as_ref())),
        schema: resolve::connection_schema(conn).ok(),
        test_history: history(previous, test.as_ref()),
        test,
        source_schema,
        workspace_count: workspaces.iter().filter(|w| w.state == "Ready").count() as i32,
        workspaces,
        ..Default::default()
    };
    // A failed test has its own Event.
    let announce = |f: &Failure| if f.reason == Reason::TestFailed { Announce::Quiet } else { Announce::Warning };
    status::report(ctx, conn, conn.status.as_ref(), status, outcome, vec![verified], announce).await
}

/// Pure: the test history with `test` first, once, and at most
/// `TEST_HISTORY` entries.
pub(super) fn history(previous: &[TestRecord], test: Option<&TestResult>) -> Vec<TestRecord> {
    let Some(test) = test else { return previous.to_vec() };
    let last = TestRecord::from(test);
    std::iter::once(last.clone()).chain(previous.iter().filter(|r| **r != last).cloned()).take(TEST_HISTORY).collect()
}

/// The condition that says whether an aggregator has members.
pub const MEMBERS: &str = "Members";

/// An aggregator has no test of its own: it is Ready when its spec is, and
/// its status lists its members. One that covers no connection is a
/// warning (`Members=False`, `NoMembers`), not a failure.
pub(super) async fn report_aggregator(conn: &Connection, ctx: &Context, members: &[crate::api::MemberState]) -> Result<(), Error> {
    let workspaces = workspaces(ctx, conn);
    let ready = members.iter().filter(|m| m.state == "Ready").count();
    let condition = if members.is_empty() {
        Desired::new(MEMBERS, Status::False, Reason::NoMembers.as_str(), "no connection matches the aggregator's names, globs or selector")
    } else {
        Desired::new(MEMBERS, Status::True, Reason::Aggregating.as_str(), format!("{ready} of {} members Ready", members.len()))
    };
    let status = ConnectionStatus {
        plugin: Some(plugins::label(None)),
        schema: resolve::connection_schema(conn).ok(),
        workspace_count: workspaces.iter().filter(|w| w.state == "Ready").count() as i32,
        workspaces,
        members: members.to_vec(),
        ..Default::default()
    };
    let outcome = match resolve::connection_schema(conn) {
        Ok(_) => Failure::new(Reason::Valid, format!("aggregates {} connections", members.len())),
        Err(f) => f,
    };
    let previous = conn.status.as_ref().and_then(|s| conditions::find(&s.conditions, MEMBERS)).map(|c| c.reason.clone());
    status::report(ctx, conn, conn.status.as_ref(), status, &outcome, vec![condition], |_| Announce::Warning).await?;
    if members.is_empty() && previous.as_deref() != Some(Reason::NoMembers.as_str()) {
        status::event(ctx, conn, true, Reason::NoMembers.as_str(), "Aggregate", "no connection matches the aggregator".into()).await;
    }
    Ok(())
}

/// A connection whose plugin, schema and credentials resolve, not tested.
pub(super) fn untested() -> Failure {
    Failure::new(Reason::Valid, "the plugin, schema and credentials resolve; not tested yet")
}

/// Pure: what `Ready` says, from the refusal to resolve (if any) and the
/// last test.
pub(super) fn outcome(refused: Option<&Failure>, test: Option<&TestResult>) -> Failure {
    match (refused, test) {
        (Some(f), _) => f.clone(),
        (None, Some(t)) if t.result == TestOutcome::Failed => {
            Failure::new(Reason::TestFailed, format!("the last test failed: {}: {}", t.reason, t.message))
        }
        (None, Some(t)) if t.result == TestOutcome::Passed => Failure::new(Reason::Passed, "the last test passed"),
        (None, _) => untested(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn test(result: TestOutcome) -> TestResult {
        TestResult {
            result,
            reason: "AuthenticationFailed".into(),
            message: "wrong password".into(),
            tables: None,
            duration_ms: 1,
            tested_at: status::now(),
            observed_generation: None,
            request: None,
            workspace: None,
            credentials: None,
        }
    }

    #[test]
    fn ready_follows_the_resolution_then_the_last_test() {
        let refused = Failure::new(Reason::SecretNotFound, "no Secret");
        assert_eq!(outcome(Some(&refused), Some(&test(TestOutcome::Passed))).reason, Reason::SecretNotFound);
        assert_eq!(outcome(None, None).reason, Reason::Valid);
        assert_eq!(outcome(None, Some(&test(TestOutcome::Unknown))).reason, Reason::Valid);
        assert_eq!(outcome(None, Some(&test(TestOutcome::Passed))).reason, Reason::Passed);
        let failed = outcome(None, Some(&test(TestOutcome::Failed)));
        assert_eq!(failed.reason, Reason::TestFailed);
        assert!(failed.message.contains("AuthenticationFailed: wrong password"), "{}", failed.message);
    }

    #[test]
    fn the_history_keeps_each_test_once_newest_first() {
        let first = test(TestOutcome::Failed);
        let once = history(&[], Some(&first));
        assert_eq!(once.len(), 1);
        assert_eq!(history(&once, Some(&first)), once, "reporting the same test again adds nothing");
        assert_eq!(history(&once, None), once);
        let mut second = test(TestOutcome::Passed);
        second.tested_at = Time(first.tested_at.0 + jiff::SignedDuration::from_secs(60));
        let twice = history(&once, Some(&second));
        assert_eq!(twice.iter().map(|r| r.result).collect::<Vec<_>>(), [TestOutcome::Passed, TestOutcome::Failed]);
        let mut long = twice.clone();
        for i in 0..20 {
            let mut t = test(TestOutcome::Passed);
            t.tested_at = Time(first.tested_at.0 + jiff::SignedDuration::from_secs(120 + i));
            long = history(&long, Some(&t));
        }
        assert_eq!(long.len(), TEST_HISTORY);
    }
}
