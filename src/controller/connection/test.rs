//! test: one test in a rolled-back transaction, its result, and what it
//! is recorded as (metrics, backoff, an Event).

use tracing::info;

use super::place::TestPlace;
use super::place::admin_test_database;
use super::recent::source_schema;
use super::schedule::Cause;
use crate::api::SourceSchema;
use crate::controller::context::BackoffKey;
use std::time::Instant;

use kube::{Resource, ResourceExt};

use crate::api::{Connection, Failure, Reason, TEST_REQUEST_ANNOTATION, TestOutcome, TestResult};
use crate::controller::context::Context;
use crate::controller::resolve::{self, Resolved};
use crate::controller::status::{self};
use crate::postgres::Tested;
use crate::postgres::plan::{AttachPlan, Owner, PlanInput};

/// Runs one test. Failures to resolve the connection are test failures
/// too, and nothing is sent anywhere after one.
pub(super) async fn run_test(
    ctx: &Context,
    conn: &Connection,
    resolved: &Result<Resolved, Failure>,
    workspace: Result<TestPlace, String>,
) -> (TestResult, Option<Tested>) {
    let started = Instant::now();
    let mut result = TestResult {
        result: TestOutcome::Failed,
        reason: String::new(),
        message: String::new(),
        tables: None,
        duration_ms: 0,
        tested_at: status::now(),
        observed_generation: conn.meta().generation,
        request: conn.annotations().get(TEST_REQUEST_ANNOTATION).cloned(),
        workspace: None,
        credentials: resolved.as_ref().ok().and_then(|r| r.version.clone()),
    };
    let outcome: Result<Tested, Failure> = async {
        let resolved = resolved.as_ref().map_err(Clone::clone)?;
        let db = match workspace.map_err(|m| Failure::new(Reason::NoWorkspace, m))? {
            TestPlace::Workspace(ws) => {
                result.workspace = Some(ws.name_any());
                resolve::workspace_database(ctx, &conn.namespace().unwrap_or_default(), &ws.name_any()).await?.1
            }
            TestPlace::AdminDatabase => admin_test_database(ctx)?,
        };
        let (plan, scratch) = scratch_plan(conn, resolved);
        // Errors name the scratch server; a person knows the connection.
        db.test(&plan, ctx.settings.test_timeout, suspect(conn))
            .await
            .map_err(|e| Failure::new(e.reason, e.message.replace(&scratch, &conn.name_any())))
    }
    .await;
    result.duration_ms = started.elapsed().as_millis() as i64;
    let tested = record(&mut result, outcome);
    (result, tested)
}

/// The plan of a test: the connection attached to a scratch schema and
/// server that no attachment can own; the transaction is rolled back
/// whatever happens. The plan, and the scratch name.
fn scratch_plan(conn: &Connection, resolved: &Resolved) -> (AttachPlan, String) {
    let scratch = format!(
        "manifold_test_{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() & 0xffff_ffff_ffff
    );
    let plan = AttachPlan::new(PlanInput {
        owner: Owner { namespace: conn.namespace().unwrap_or_default(), name: conn.name_any() },
        uid: conn.metadata.uid.as_deref().unwrap_or(""),
        connection: &conn.name_any(),
        readers: Vec::new(),
        schema: &scratch,
        wrapper: resolved.wrapper.clone(),
        tables: resolve::table_filter(conn),
        credentials_version: resolved.version.as_deref(),
        source_hash: None,
    });
    (plan, scratch)
}

/// A source whose last test timed out or could not be reached may not take
/// the test pool's last session.
fn suspect(conn: &Connection) -> bool {
    conn.status
        .as_ref()
        .and_then(|s| s.test.as_ref())
        .is_some_and(|t| t.reason == Reason::Timeout.as_str() || t.reason == Reason::HostUnreachable.as_str())
}

/// Pure: writes a test's outcome into its result; what it found, if it
/// passed.
fn record(result: &mut TestResult, outcome: Result<Tested, Failure>) -> Option<Tested> {
    match outcome {
        Ok(found) => {
            let tables = found.tables;
            result.result = TestOutcome::Passed;
            result.reason = Reason::Passed.as_str().to_owned();
            result.tables = Some(tables as i32);
            result.message = if tables == 0 {
                "connected and imported, but the remote schema has no tables to read".to_owned()
            } else {
                format!("imported {tables} tables and read a row")
            };
            Some(found)
        }
        Err(f) => {
            if f.reason == Reason::NoWorkspace {
                result.result = TestOutcome::Unknown;
            }
            result.reason = f.reason.as_str().to_owned();
            result.message = f.message;
            None
        }
    }
}

/// Runs a test and records it: the log, the metrics, the backoff and an
/// Event. Returns the result and the source schema it found.
pub(super) async fn test_and_record(
    ctx: &Context,
    conn: &Connection,
    resolved: &Result<Resolved, Failure>,
    workspace: Result<TestPlace, String>,
    cause: Cause,
    backoff_key: &BackoffKey,
) -> (TestResult, Option<SourceSchema>) {
    let (result, tested) = run_test(ctx, conn, resolved, workspace).await;
    let source = source_schema(conn, tested.as_ref());
    info!(connection = %conn.name_any(), namespace = %conn.namespace().unwrap_or_default(), ?cause,
          result = ?result.result, reason = %result.reason, duration_ms = result.duration_ms, "tested");
    ctx.metrics
        .tests
        .get_or_create(&crate::metrics::TestLabels { result: format!("{:?}", result.result), reason: result.reason.clone() })
        .inc();
    match result.result {
        TestOutcome::Passed => ctx.backoff.succeeded(backoff_key),
        TestOutcome::Failed => {
            ctx.backoff.failed(backoff_key);
        }
        TestOutcome::Unknown => {}
    }
    let (warning, reason) = match result.result {
        TestOutcome::Passed => (false, Reason::TestPassed),
        TestOutcome::Failed => (true, Reason::TestFailed),
        TestOutcome::Unknown => (false, Reason::NoWorkspace),
    };
    let note = match result.result {
        TestOutcome::Passed => format!("{} in {} ms", result.message, result.duration_ms),
        _ => format!("{}: {}", result.reason, result.message),
    };
    status::event(ctx, conn, warning, reason.as_str(), "Test", note).await;
    (result, source)
}
