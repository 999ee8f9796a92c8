//! The connection reconciler: resolves the plugin, schema and credentials,
//! tests the connection (on change, on a schedule and on demand), and lists
//! the workspaces that use it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::aggregates;
use super::context::{BackoffKey, Context, Error, requeue};
use super::resolve::{self, Resolved, SecretUser};
use super::status::{self, Announce};
use crate::api::conditions::{Desired, Status, VERIFIED};
use crate::api::{
    Connection, ConnectionStatus, Failure, REFRESH_REQUEST_ANNOTATION, Reason, SourceSchema, TEST_REQUEST_ANNOTATION, TestOutcome,
    TestResult, Workspace, WorkspaceUse, conditions, duration,
};
use crate::plugins;
use crate::postgres::Tested;
use crate::postgres::plan::{AttachPlan, Owner, PlanInput};

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
fn next_test(conn: &Connection, last: Option<&TestResult>, since_last: Duration, retry_after: Duration) -> Option<Duration> {
    let last = last?;
    let mut next = interval(conn).map(|every| every.saturating_sub(since_last));
    if last.result == TestOutcome::Failed {
        let retry = retry_after.saturating_sub(since_last);
        next = Some(next.map_or(retry, |n| n.min(retry)));
    }
    next
}

fn since(tested_at: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Duration {
    let elapsed = jiff::Timestamp::now().duration_since(tested_at.0);
    Duration::try_from(elapsed).unwrap_or_default()
}

/// Where a test runs.
pub enum TestPlace {
    /// A Workspace the connection is attached to.
    Workspace(Arc<Workspace>),
    /// The cluster admin's test database (`--test-database-uri-file`).
    AdminDatabase,
}

/// The key of the admin's test database among the pools: no namespace is
/// named "".
const ADMIN_TEST_POOL: (&str, &str) = ("", "manifold-test-database");

/// Where a test runs: a Workspace the connection is attached to, since a
/// test sends the connection's credentials to the workspace's database
/// (the rolled-back user mapping is statement text there), and only an
/// attachment, which the admission policy lets only those who may attach
/// the connection make, says where its credentials may go. Without one,
/// the cluster admin's test database, if there is one: a Connection can be
/// tested before it is attached anywhere. `spec.test.workspace` picks one
/// of the attached Workspaces; without it, the first Ready one by name.
/// Never another namespace's, and never one a name alone chooses.
fn test_workspace(ctx: &Context, conn: &Connection) -> Result<TestPlace, String> {
    let ns = conn.namespace().unwrap_or_default();
    let name = conn.name_any();
    let mut attached: Vec<Arc<Workspace>> = ctx
        .stores
        .attachments_of_connection(&ns, &name)
        .iter()
        .filter(|a| a.meta().deletion_timestamp.is_none())
        .filter_map(|a| ctx.stores.workspace(&ns, &a.spec.workspace))
        .filter(|w| w.meta().deletion_timestamp.is_none())
        .collect();
    attached.sort_by_key(|w| w.name_any());
    attached.dedup_by_key(|w| w.name_any());
    if let Some(wanted) = conn.spec.test.as_ref().and_then(|t| t.workspace.as_deref()) {
        return attached.into_iter().find(|w| w.name_any() == wanted).map(TestPlace::Workspace).ok_or_else(|| {
            format!(
                "spec.test.workspace {wanted:?} is not a Workspace this connection is attached to: a test runs only where \
                 the connection is attached"
            )
        });
    }
    match attached.into_iter().find(|w| w.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions))) {
        Some(ws) => Ok(TestPlace::Workspace(ws)),
        None if ctx.settings.test_database.is_some() => Ok(TestPlace::AdminDatabase),
        None => Err("the connection is attached to no Ready Workspace, and no test database is configured: a test runs \
                     only where the connection is attached"
            .to_owned()),
    }
}

/// The admin's test database: the URI in the file, read at each test so
/// that a rotated Secret behind the file is taken up.
fn admin_test_database(ctx: &Context) -> Result<crate::postgres::Database, Failure> {
    let path = ctx.settings.test_database.as_ref().ok_or_else(|| Failure::new(Reason::NoWorkspace, "no test database"))?;
    let uri = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(Reason::WorkspaceUnreachable, format!("the test database's URI file {}: {e}", path.display())))?;
    let target = crate::postgres::Target { uri: uri.trim().to_owned(), ca: None };
    ctx.pools
        .get(ADMIN_TEST_POOL.0, ADMIN_TEST_POOL.1, &target)
        .map_err(|f| Failure::new(f.reason, format!("the test database: {}", f.message)))
}

/// Runs one test. Failures to resolve the connection are test failures
/// too, and nothing is sent anywhere after one.
async fn run_test(
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
        // A scratch schema and server that no attachment can own; the
        // transaction is rolled back whatever happens.
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
        // A source whose last test timed out may not take the last session.
        let suspect = conn
            .status
            .as_ref()
            .and_then(|s| s.test.as_ref())
            .is_some_and(|t| t.reason == Reason::Timeout.as_str() || t.reason == Reason::HostUnreachable.as_str());
        // Errors name the scratch server; a person knows the connection.
        db.test(&plan, ctx.settings.test_timeout, suspect)
            .await
            .map_err(|e| Failure::new(e.reason, e.message.replace(&scratch, &conn.name_any())))
    }
    .await;
    result.duration_ms = started.elapsed().as_millis() as i64;
    let mut tested = None;
    match outcome {
        Ok(found) => {
            let tables = found.tables;
            tested = Some(found);
            result.result = TestOutcome::Passed;
            result.reason = Reason::Passed.as_str().to_owned();
            result.tables = Some(tables as i32);
            result.message = if tables == 0 {
                "connected and imported, but the remote schema has no tables to read".to_owned()
            } else {
                format!("imported {tables} tables and read a row")
            };
        }
        Err(f) => {
            if f.reason == Reason::NoWorkspace {
                result.result = TestOutcome::Unknown;
            }
            result.reason = f.reason.as_str().to_owned();
            result.message = f.message;
        }
    }
    (result, tested)
}

/// The test results this process wrote, until its store shows them. A
/// reconcile that runs before the watch delivers the write (another
/// attachment turned Ready meanwhile) must neither test again nor take the
/// result back.
#[derive(Default)]
pub struct RecentTests(std::sync::Mutex<std::collections::HashMap<String, (TestResult, Option<SourceSchema>)>>);

impl RecentTests {
    fn remember(&self, conn: &Connection, test: &TestResult, source: &Option<SourceSchema>) {
        // As the store will hold it: timestamps to the second.
        let as_stored = |v| serde_json::to_value(v).ok().and_then(|v| serde_json::from_value(v).ok());
        if let (Some(uid), Some(test)) = (conn.uid(), as_stored((test, source))) {
            self.0.lock().unwrap().insert(uid, test);
        }
    }

    /// `conn` as this process last wrote its test, if the store has not
    /// caught up yet.
    fn apply(&self, conn: Arc<Connection>) -> Arc<Connection> {
        let Some(uid) = conn.uid() else { return conn };
        let mut recent = self.0.lock().unwrap();
        let Some((test, source)) = recent.get(&uid) else {
            return conn;
        };
        let stored = conn.status.as_ref().and_then(|s| s.test.as_ref());
        if stored.is_some_and(|s| s == test || s.tested_at > test.tested_at) {
            // The store shows this write, or a later one.
            recent.remove(&uid);
            return conn;
        }
        let mut fresher = (*conn).clone();
        let status = fresher.status.get_or_insert_with(Default::default);
        status.test = Some(test.clone());
        status.source_schema = source.clone();
        Arc::new(fresher)
    }
}

/// How a new connection's first test is answered.
enum ByAttach {
    /// An attach imported and read a row with this spec and credentials.
    Proven(TestResult, Tested),
    /// An attachment made with the connection has not reported yet; the
    /// wait ends after this long. Its report queues the connection (its
    /// list changes), so nothing polls meanwhile.
    Pending(Duration),
    /// The test runs.
    No,
}

/// How long a new connection's first test waits for its attachments that
/// have not reported at all (a failed attach reports, and ends the wait at
/// once). In a bulk apply of thousands, an attachment may wait minutes in
/// its workspace's queue, and a test that gave up on it would import the
/// source a second time, competing with the attaches for the same pools.
/// Counted from the connection's creation, or from this process's first
/// test of any connection if that is later: Connections applied a minute
/// before the operator started have waited for nobody.
const WAIT_FOR_ATTACH: Duration = Duration::from_secs(300);

static FIRST_TEST: std::sync::LazyLock<jiff::Timestamp> = std::sync::LazyLock::new(jiff::Timestamp::now);

fn first_test_by_attach(ctx: &Context, conn: &Connection, credentials: Option<&str>) -> ByAttach {
    let ns = conn.namespace().unwrap_or_default();
    let attachments = ctx.stores.attachments_of_connection(&ns, &conn.name_any());
    let proof = attachments.iter().find_map(|a| {
        let proof = a.status.as_ref()?.proof.as_ref()?;
        (Some(proof.connection_generation) == conn.metadata.generation && proof.credentials.as_deref() == credentials)
            .then(|| (a.spec.workspace.clone(), proof.clone()))
    });
    if let Some((workspace, proof)) = proof {
        let result = TestResult {
            result: TestOutcome::Passed,
            reason: Reason::Passed.as_str().to_owned(),
            message: format!("imported {} tables and read a row, attaching to workspace {workspace:?}", proof.tables),
            tables: Some(proof.tables),
            duration_ms: proof.duration_ms,
            tested_at: status::now(),
            observed_generation: conn.metadata.generation,
            request: conn.annotations().get(TEST_REQUEST_ANNOTATION).cloned(),
            workspace: Some(workspace),
            credentials: credentials.map(str::to_owned),
        };
        let found = Tested { tables: i64::from(proof.tables), source_hash: proof.source_hash.unwrap_or_default() };
        return ByAttach::Proven(result, found);
    }
    let age = conn.metadata.creation_timestamp.as_ref().map(|t| {
        let since = t.0.max(*FIRST_TEST);
        std::time::Duration::try_from(jiff::Timestamp::now().duration_since(since)).unwrap_or_default()
    });
    let left = age.and_then(|age| WAIT_FOR_ATTACH.checked_sub(age)).filter(|left| !left.is_zero());
    let pending = attachments.iter().any(|a| {
        a.metadata.deletion_timestamp.is_none()
            && a.status.as_ref().is_none_or(|s| conditions::find(&s.conditions, conditions::READY).is_none())
    });
    match left {
        Some(left) if pending => ByAttach::Pending(left),
        _ => ByAttach::No,
    }
}

/// The source's schema after a test: a new hash changes `changedAt` (and
/// every attachment re-imports); the same hash keeps it.
fn source_schema(conn: &Connection, tested: Option<&Tested>) -> Option<SourceSchema> {
    let previous = conn.status.as_ref().and_then(|s| s.source_schema.clone());
    let request = conn.annotations().get(REFRESH_REQUEST_ANNOTATION).cloned();
    let Some(tested) = tested else {
        return previous;
    };
    Some(match previous {
        Some(p) if p.hash == tested.source_hash => SourceSchema { tables: tested.tables as i32, request, ..p },
        _ => SourceSchema { hash: tested.source_hash.clone(), tables: tested.tables as i32, changed_at: status::now(), request },
    })
}

pub async fn reconcile(conn: Arc<Connection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let conn = ctx.recent_tests.apply(conn);
    let ns = conn.namespace().unwrap_or_default();
    if let Some(aggregator) = &conn.spec.aggregator {
        report_aggregator(&conn, &ctx, &aggregates::states(&ctx.stores, &ns, aggregator)).await?;
        return Ok(Action::await_change());
    }
    let resolved = match resolve::connection(&ctx.stores, &conn, &ctx.settings.sources) {
        Ok(r) => Ok(r),
        Err(f) => Err(resolve::explain(&ctx, &ns, f, SecretUser::Connection(&conn)).await),
    };
    let backoff_key = BackoffKey::named("ConnectionTest", conn.as_ref());
    let last = conn.status.as_ref().and_then(|s| s.test.as_ref());
    let since_last = last.map(|t| since(&t.tested_at));
    let retry_after = ctx.backoff.peek(&backoff_key);
    let credentials = resolved.as_ref().ok().and_then(|r| r.version.clone()).or_else(|| {
        // Unresolvable credentials still have a version, so that fixing the
        // Secret is a change.
        resolve::credentials(&ctx.stores, &conn).ok().flatten().map(|s| resolve::secret_version(&s))
    });

    let mut test = last.cloned();
    let mut source = conn.status.as_ref().and_then(|s| s.source_schema.clone());
    let workspace = test_workspace(&ctx, &conn);
    let mut cause = due(&conn, credentials.as_deref(), since_last, retry_after, workspace.is_ok());
    // A new connection's first test: an attach that imported and read a
    // row under this spec and these credentials has answered it; one still
    // on its way will, shortly. Either way the source is not asked twice.
    let mut proven = None;
    if cause == Some(Cause::Spec) && last.is_none() && resolved.is_ok() {
        match first_test_by_attach(&ctx, &conn, credentials.as_deref()) {
            ByAttach::Proven(result, found) => {
                proven = Some((result, found));
                cause = None;
            }
            ByAttach::Pending(left) => {
                report(
                    &conn,
                    &ctx,
                    &Failure::new(Reason::Valid, "the plugin, schema and credentials resolve; not tested yet"),
                    None,
                    source,
                )
                .await?;
                return Ok(requeue(left + Duration::from_millis(100)));
            }
            ByAttach::No => {}
        }
    }
    if let Some((result, found)) = proven {
        source = source_schema(&conn, Some(&found));
        info!(connection = %conn.name_any(), namespace = %ns, workspace = ?result.workspace, "tested by its first attach");
        ctx.metrics.tests.get_or_create(&crate::metrics::TestLabels { result: "Passed".into(), reason: "ProvenByAttach".into() }).inc();
        status::event(&ctx, &*conn, false, Reason::TestPassed.as_str(), "Test", result.message.clone()).await;
        test = Some(result);
    }
    if let Some(cause) = cause {
        let (result, tested) = run_test(&ctx, &conn, &resolved, workspace).await;
        source = source_schema(&conn, tested.as_ref());
        info!(connection = %conn.name_any(), namespace = %ns, ?cause,
              result = ?result.result, reason = %result.reason, duration_ms = result.duration_ms, "tested");
        ctx.metrics
            .tests
            .get_or_create(&crate::metrics::TestLabels { result: format!("{:?}", result.result), reason: result.reason.clone() })
            .inc();
        if result.result == TestOutcome::Passed {
            ctx.backoff.succeeded(&backoff_key);
        } else if result.result == TestOutcome::Failed {
            ctx.backoff.failed(&backoff_key);
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
        status::event(&ctx, &*conn, warning, reason.as_str(), "Test", note).await;
        test = Some(result);
    }

    let outcome = match (&resolved, &test) {
        (Err(f), _) => f.clone(),
        (Ok(_), Some(t)) if t.result == TestOutcome::Failed => {
            Failure::new(Reason::TestFailed, format!("the last test failed: {}: {}", t.reason, t.message))
        }
        (Ok(_), Some(t)) if t.result == TestOutcome::Passed => Failure::new(Reason::Passed, "the last test passed"),
        (Ok(_), _) => Failure::new(Reason::Valid, "the plugin, schema and credentials resolve; not tested yet"),
    };
    if let Some(t) = &test
        && last != Some(t)
    {
        ctx.recent_tests.remember(&conn, t, &source);
    }
    report(&conn, &ctx, &outcome, test.clone(), source).await?;

    let since_now = test.as_ref().map(|t| since(&t.tested_at)).unwrap_or_default();
    Ok(match next_test(&conn, test.as_ref(), since_now, ctx.backoff.peek(&backoff_key)) {
        Some(after) => requeue(after),
        None => Action::await_change(),
    })
}

fn workspaces(ctx: &Context, conn: &Connection) -> Vec<WorkspaceUse> {
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
fn verified(test: Option<&TestResult>) -> Desired {
    match test {
        Some(t) if t.result == TestOutcome::Passed => Desired::new(VERIFIED, Status::True, Reason::Passed.as_str(), t.message.clone()),
        Some(t) if t.result == TestOutcome::Failed => Desired::new(VERIFIED, Status::False, t.reason.clone(), t.message.clone()),
        Some(t) => Desired::new(VERIFIED, Status::Unknown, t.reason.clone(), t.message.clone()),
        None => Desired::new(VERIFIED, Status::Unknown, Reason::NotTested.as_str(), "not tested yet"),
    }
}

async fn report(
    conn: &Connection,
    ctx: &Context,
    outcome: &Failure,
    test: Option<TestResult>,
    source_schema: Option<SourceSchema>,
) -> Result<(), Error> {
    let workspaces = workspaces(ctx, conn);
    let verified = verified(test.as_ref());
    let status = ConnectionStatus {
        plugin: Some(plugins::label(conn.spec.plugin.as_ref())),
        schema: resolve::connection_schema(conn).ok(),
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

/// The condition that says whether an aggregator has members.
pub const MEMBERS: &str = "Members";

/// An aggregator has no test of its own: it is Ready when its spec is, and
/// its status lists its members. One that covers no connection is a
/// warning (`Members=False`, `NoMembers`), not a failure.
async fn report_aggregator(conn: &Connection, ctx: &Context, members: &[crate::api::MemberState]) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConnectionSpec, PluginSpec, TestSpec};

    fn conn(generation: i64, interval: Option<&str>, test: Option<TestResult>, request: Option<&str>) -> Connection {
        let mut c = Connection::new(
            "c",
            ConnectionSpec {
                schema: None,
                plugin: Some(PluginSpec { postgres: None, steampipe: None, fdw: None }),
                aggregator: None,
                credentials: None,
                tables: None,
                test: Some(TestSpec { interval: interval.map(str::to_owned), workspace: None }),
            },
        );
        c.metadata.generation = Some(generation);
        if let Some(r) = request {
            c.metadata.annotations = Some([(TEST_REQUEST_ANNOTATION.to_owned(), r.to_owned())].into());
        }
        c.status = Some(ConnectionStatus { test, ..Default::default() });
        c
    }

    fn result(outcome: TestOutcome, generation: i64, request: Option<&str>, credentials: Option<&str>) -> TestResult {
        TestResult {
            result: outcome,
            reason: "Passed".into(),
            message: String::new(),
            tables: None,
            duration_ms: 1,
            tested_at: status::now(),
            observed_generation: Some(generation),
            request: request.map(str::to_owned),
            workspace: None,
            credentials: credentials.map(str::to_owned),
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_written_test_counts_until_the_store_shows_it() {
        let recent = RecentTests::default();
        let mut stale = conn(1, None, None, None);
        stale.metadata.uid = Some("u1".into());
        let source = Some(SourceSchema { hash: "h".into(), tables: 2, changed_at: status::now(), request: None });
        let written = result(TestOutcome::Passed, 1, None, None);
        recent.remember(&stale, &written, &source);
        // Before the watch delivers the write: the store's copy is stale,
        // so it is not tested again.
        let seen = recent.apply(Arc::new(stale.clone()));
        let test = seen.status.as_ref().and_then(|s| s.test.clone()).unwrap();
        assert_eq!(test.result, TestOutcome::Passed);
        assert_eq!(seen.status.as_ref().and_then(|s| s.source_schema.as_ref()).map(|s| s.hash.as_str()), Some("h"));
        assert_eq!(due(&seen, None, Some(Duration::ZERO), MIN, true), None);
        // Once the store holds it (to the second, as the apiserver keeps
        // it), the store's copy is used and the entry goes.
        let mut caught_up = stale.clone();
        caught_up.status.as_mut().unwrap().test = Some(test);
        let seen = recent.apply(Arc::new(caught_up));
        assert!(recent.0.lock().unwrap().is_empty());
        assert!(seen.status.as_ref().unwrap().source_schema.is_none(), "the store's own copy");
    }

    #[test]
    fn a_new_or_changed_connection_is_tested() {
        assert_eq!(due(&conn(1, None, None, None), None, None, MIN, false), Some(Cause::Spec));
        let tested = Some(result(TestOutcome::Passed, 1, None, None));
        assert_eq!(due(&conn(2, None, tested.clone(), None), None, Some(MIN), MIN, false), Some(Cause::Spec));
        assert_eq!(due(&conn(1, None, tested, None), None, Some(MIN), MIN, false), None);
    }

    #[test]
    fn new_credentials_and_new_requests_are_tested() {
        let tested = Some(result(TestOutcome::Passed, 1, Some("a"), Some("uid@1")));
        assert_eq!(due(&conn(1, None, tested.clone(), Some("a")), Some("uid@2"), Some(MIN), MIN, false), Some(Cause::Credentials));
        assert_eq!(due(&conn(1, None, tested.clone(), Some("b")), Some("uid@1"), Some(MIN), MIN, false), Some(Cause::Requested));
        assert_eq!(due(&conn(1, None, tested, Some("a")), Some("uid@1"), Some(MIN), MIN, false), None);
    }

    #[test]
    fn the_interval_schedules_tests_and_zero_turns_them_off() {
        let tested = Some(result(TestOutcome::Passed, 1, None, None));
        let hour = Duration::from_secs(3600);
        assert_eq!(due(&conn(1, None, tested.clone(), None), None, Some(hour), MIN, false), Some(Cause::Periodic));
        assert_eq!(due(&conn(1, Some("2h"), tested.clone(), None), None, Some(hour), MIN, false), None);
        assert_eq!(due(&conn(1, Some("0"), tested.clone(), None), None, Some(hour * 100), MIN, false), None);
        assert_eq!(
            next_test(&conn(1, Some("90s"), None, None), tested.as_ref(), Duration::from_secs(30), MIN),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn a_failed_test_is_retried_with_backoff() {
        let failed = Some(result(TestOutcome::Failed, 1, None, None));
        let c = conn(1, None, failed, None);
        assert_eq!(due(&c, None, Some(Duration::from_secs(5)), Duration::from_secs(10), false), None);
        assert_eq!(due(&c, None, Some(Duration::from_secs(10)), Duration::from_secs(10), false), Some(Cause::Retry));
        let last = c.status.as_ref().and_then(|s| s.test.as_ref());
        assert_eq!(next_test(&c, last, Duration::from_secs(4), Duration::from_secs(10)), Some(Duration::from_secs(6)));
    }
}

/// No spec that the apiserver accepts makes a reconcile panic: every pure
/// step a reconcile takes (scheduling, the plugin, the plan, the planner,
/// the SQL) runs on generated specs within the CRD's rules, and on hostile
/// Secret data.
#[cfg(test)]
mod accepted_specs {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::api::{ConnectionSpec, CredentialsSpec, PluginSpec, PostgresPlugin, SecretRef, TablesSpec, TestSpec};
    use crate::plugins::{self, SourcePolicy};
    use crate::postgres::plan::{self, Locked, Observed, TableFilter, WrapperState};
    use crate::postgres::sql;

    fn spec() -> impl Strategy<Value = (ConnectionSpec, BTreeMap<String, Vec<u8>>)> {
        let host = prop_oneof!["[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}", "[0-9a-f:]{2,20}", "\\PC{1,30}"];
        let interval = prop_oneof![Just(None), "(0|([0-9]{1,6}(ms|s|m|h)){1,4})".prop_map(Some)];
        let option = (proptest::sample::select(crate::api::POSTGRES_OPTIONS), "\\PC{0,12}");
        let names = proptest::collection::vec("\\PC{1,20}", 0..4);
        let secret = proptest::collection::btree_map(
            prop_oneof![Just("user".to_owned()), Just("password".to_owned()), "\\PC{1,8}"],
            proptest::collection::vec(any::<u8>(), 0..40),
            0..4,
        );
        (host, 1i32..=65535, "\\PC{1,20}", proptest::collection::vec(option, 0..4), interval, names.clone(), names, secret).prop_map(
            |(host, port, database, options, interval, include, exclude, secret)| {
                let spec = ConnectionSpec {
                    schema: None,
                    aggregator: None,
                    plugin: Some(PluginSpec {
                        postgres: Some(PostgresPlugin {
                            host,
                            port,
                            database,
                            remote_schema: "public".into(),
                            options: options.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                        }),
                        steampipe: None,
                        fdw: None,
                    }),
                    credentials: Some(CredentialsSpec { secret_ref: SecretRef { name: "creds".into() } }),
                    tables: Some(TablesSpec { include: include.clone(), exclude: if include.is_empty() { exclude } else { Vec::new() } }),
                    test: Some(TestSpec { interval, workspace: None }),
                };
                (spec, secret)
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
        #[test]
        fn a_reconcile_never_panics((spec, secret) in spec(), since in 0u64..u64::MAX / 2, failures in 0u32..40) {
            let mut conn = Connection::new("c", spec);
            conn.metadata.generation = Some(1);
            let since = Duration::from_millis(since);
            let retry = Duration::from_secs(u64::from(failures));
            let _ = due(&conn, Some("v"), Some(since), retry, true);
            if let Some(after) = next_test(&conn, None, since, retry) {
                let _ = requeue(after);
            }
            let _ = requeue(interval(&conn).unwrap_or_default());
            let Ok(wrapper) = plugins::resolve(conn.spec.plugin.as_ref().unwrap(), "c", Some(&secret), &SourcePolicy::default()) else { return Ok(()) };
            let plan = plan::AttachPlan::new(plan::PlanInput {
                owner: plan::Owner { namespace: "ns".into(), name: "a".into() },
                uid: "u",
                schema: "c",
                wrapper,
                tables: match &conn.spec.tables {
                    Some(t) if !t.include.is_empty() => TableFilter::LimitTo(t.include.clone()),
                    Some(t) if !t.exclude.is_empty() => TableFilter::Except(t.exclude.clone()),
                    _ => TableFilter::All,
                },
                credentials_version: Some("v"),
                connection: "c",
                readers: vec!["reader".into()],
                source_hash: Some("h"),
            });
            for wrapper in [WrapperState::Usable, WrapperState::Missing, WrapperState::NoUsage] {
                let locked = Locked {
                    observed: Observed::default(),
                    owned_tables: vec!["t".into()],
                    wrapper,
                    role: "r".into(),
                    readers: vec!["gone".into()],
                    views: Vec::new(),
                    columns: Vec::new(),
                };
                if let Ok((_, statements)) = plan::attach(&plan, &locked) {
                    for statement in &statements {
                        if sql::options_spec(statement).is_some() {
                            // Its values are a parameter; its text is fixed.
                            assert_eq!(sql::render(statement), sql::create_with_options(0));
                            continue;
                        }
                        sql::lex::tokens(&sql::render(statement)).expect("every rendered statement lexes");
                    }
                }
            }
        }
    }
}
