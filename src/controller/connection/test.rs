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
use crate::postgres::plan::{AttachPlan, Owner, PlanInput};
use crate::postgres::{Tested, WorkspaceDb};

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
                // The very Workspace placement chose (by uid), if it is
                // still there, through its pinned database.
                let ns = conn.namespace().unwrap_or_default();
                let ws = resolve::workspace(ctx, &ns, &ws.name_any(), ws.metadata.uid.as_deref())?;
                resolve::database(ctx, &ws).await?
            }
            TestPlace::AdminDatabase => admin_test_database(ctx)?,
        };
        test_in(db.as_ref(), conn, resolved, ctx.settings.test_timeout).await
    }
    .await;
    result.duration_ms = started.elapsed().as_millis() as i64;
    let tested = record(&mut result, outcome);
    (result, tested)
}

/// The test itself, in `db`: the connection attached to a scratch schema
/// in a transaction that is rolled back. Errors name the scratch server;
/// a person knows the connection, so they name that instead.
async fn test_in(db: &dyn WorkspaceDb, conn: &Connection, resolved: &Resolved, timeout: std::time::Duration) -> Result<Tested, Failure> {
    let (plan, scratch) = scratch_plan(conn, resolved);
    db.test(&plan, timeout, suspect(conn)).await.map_err(|e| Failure::new(e.reason, e.message.replace(&scratch, &conn.name_any())))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConnectionSpec;
    use crate::controller::testing::FakeDb;
    use crate::plugins::Wrapper;

    fn resolved() -> Resolved {
        let wrapper = Wrapper {
            label: "postgres".into(),
            extension: "postgres_fdw".into(),
            wrapper: "postgres_fdw".into(),
            server_options: Vec::new(),
            mapping_options: Vec::new(),
            remote_schema: "public".into(),
            embedded_secrets: Vec::new(),
        };
        Resolved { wrapper, schema: "sales".into(), version: Some("uid@1".into()) }
    }

    fn connection() -> Connection {
        let mut c = Connection::new(
            "sales",
            ConnectionSpec { schema: None, plugin: None, aggregator: None, credentials: None, tables: None, test: None },
        );
        c.metadata.namespace = Some("t".into());
        c.metadata.uid = Some("u".into());
        c
    }

    #[tokio::test]
    async fn a_test_runs_in_a_scratch_schema_and_its_errors_name_the_connection() {
        let db = FakeDb::with(&[]);
        let found = test_in(db.as_ref(), &connection(), &resolved(), std::time::Duration::from_secs(1)).await.unwrap();
        assert_eq!(found.tables, 2);
        let calls = db.calls();
        assert!(calls.len() == 1 && calls[0].starts_with("test manifold_test_"), "a scratch schema no attachment owns: {calls:?}");
        let scratch = calls[0].trim_start_matches("test ").to_string();
        assert_ne!(scratch, "sales");
        // The fake answers a failure named after the scratch server.
        let failing = FakeDb::with(&[]);
        failing.fail("test", Failure::new(Reason::AuthenticationFailed, "could not connect to server \"{schema}\""));
        let err = test_in(failing.as_ref(), &connection(), &resolved(), std::time::Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.reason, Reason::AuthenticationFailed);
        assert_eq!(err.message, "could not connect to server \"sales\"", "the connection's name, not the scratch server's");
    }

    #[test]
    fn a_test_outcome_becomes_its_result() {
        let mut result = TestResult {
            result: TestOutcome::Failed,
            reason: String::new(),
            message: String::new(),
            tables: None,
            duration_ms: 0,
            tested_at: status::now(),
            observed_generation: None,
            request: None,
            workspace: None,
            credentials: None,
        };
        let found = record(&mut result, Ok(Tested { tables: 0, source_hash: "h".into(), shapes: Vec::new() }));
        assert!(found.is_some());
        assert_eq!((result.result, result.tables), (TestOutcome::Passed, Some(0)));
        assert!(result.message.contains("no tables to read"), "{}", result.message);
        assert!(record(&mut result, Err(Failure::new(Reason::NoWorkspace, "attached nowhere"))).is_none());
        assert_eq!((result.result, result.reason.as_str()), (TestOutcome::Unknown, "NoWorkspace"));
    }
}
