//! What this process knows before its store does: the tests it wrote, and
//! a first attach's import, which answers a new connection's first test.

use tracing::info;

use std::time::Duration;

use kube::ResourceExt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    Connection, REFRESH_REQUEST_ANNOTATION, Reason, SOURCE_TABLES_LISTED, SourceSchema, SourceTable, TEST_REQUEST_ANNOTATION, TestOutcome,
    TestResult,
};
use crate::controller::context::Context;
use crate::controller::status::{self};
use crate::postgres::Tested;
use crate::postgres::plan::TableShape;

/// How a new connection's first test is answered.
pub(super) enum ByAttach {
    /// An attach imported and read a row with this spec and credentials.
    /// Boxed: a `TestResult` is several times the other variants.
    Proven(Box<TestResult>, Tested),
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
pub(super) const WAIT_FOR_ATTACH: Duration = Duration::from_secs(300);

static FIRST_TEST: std::sync::LazyLock<jiff::Timestamp> = std::sync::LazyLock::new(jiff::Timestamp::now);

pub(super) fn first_test_by_attach(ctx: &Context, conn: &Connection, credentials: Option<&str>) -> ByAttach {
    let ns = conn.namespace().unwrap_or_default();
    let attachments = ctx.stores.attachments_of_connection(&ns, &conn.name_any());
    let proof = attachments.iter().find_map(|a| {
        let proof = a.status.as_ref()?.proof.as_ref()?;
        (Some(proof.connection_generation) == conn.metadata.generation && proof.credentials.as_deref() == credentials)
            .then(|| (a.spec.workspace.clone(), proof.clone()))
    });
    if let Some((workspace, proof)) = proof {
        let result = Box::new(TestResult {
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
        });
        let found = Tested { tables: i64::from(proof.tables), source_hash: proof.source_hash.unwrap_or_default(), shapes: Vec::new() };
        return ByAttach::Proven(result, found);
    }
    let age = conn.metadata.creation_timestamp.as_ref().map(|t| {
        let since = t.0.max(*FIRST_TEST);
        std::time::Duration::try_from(jiff::Timestamp::now().duration_since(since)).unwrap_or_default()
    });
    let left = age.and_then(|age| WAIT_FOR_ATTACH.checked_sub(age)).filter(|left| !left.is_zero());
    let pending = attachments.iter().any(|a| a.unreported());
    match left {
        Some(left) if pending => ByAttach::Pending(left),
        _ => ByAttach::No,
    }
}

/// The source's schema after a test: a new hash changes `changedAt` (and
/// every attachment re-imports); the same hash keeps it. Each table keeps
/// its own `changedAt` while its shape stays; a test without shapes (an
/// attach's import) keeps the list it had when the hash is the same.
pub(super) fn source_schema(conn: &Connection, tested: Option<&Tested>) -> Option<SourceSchema> {
    let previous = conn.status.as_ref().and_then(|s| s.source_schema.clone());
    let request = conn.annotations().get(REFRESH_REQUEST_ANNOTATION).cloned();
    let Some(tested) = tested else {
        return previous;
    };
    let now = status::now();
    let same = previous.as_ref().is_some_and(|p| p.hash == tested.source_hash);
    let before = previous.as_ref().map(|p| p.by_table.as_slice()).unwrap_or_default();
    let by_table = if tested.shapes.is_empty() && same { before.to_vec() } else { by_table(before, &tested.shapes, &now) };
    Some(match previous {
        Some(p) if same => SourceSchema { tables: tested.tables as i32, request, by_table, ..p },
        _ => SourceSchema { hash: tested.source_hash.clone(), tables: tested.tables as i32, changed_at: now, request, by_table },
    })
}

/// Pure: the tables of a test, each with the time it last changed shape
/// (`now` for a new or changed one), at most `SOURCE_TABLES_LISTED`.
fn by_table(before: &[SourceTable], shapes: &[TableShape], now: &Time) -> Vec<SourceTable> {
    shapes
        .iter()
        .take(SOURCE_TABLES_LISTED)
        .map(|shape| {
            let kept = before.iter().find(|t| t.name == shape.name && t.hash == shape.hash);
            SourceTable {
                name: shape.name.clone(),
                columns: shape.columns as i32,
                hash: shape.hash.clone(),
                changed_at: kept.map_or_else(|| now.clone(), |t| t.changed_at.clone()),
            }
        })
        .collect()
}

/// How a new connection's first test is answered.
pub(super) enum FirstTest {
    /// By an attach's import: the result, and the source schema it found.
    /// Boxed: a `TestResult` is several times the other variants.
    Proven(Box<TestResult>, Option<SourceSchema>),
    /// An attach is on its way: ask again after this long.
    Pending(Duration),
    /// By a test of its own.
    Ask,
}

/// A new connection's first test: an attach that imported and read a row
/// under this spec and these credentials has answered it; one still on its
/// way will, shortly. Either way the source is not asked twice.
pub(super) async fn proven_by_attach(ctx: &Context, conn: &Connection, credentials: Option<&str>) -> FirstTest {
    match first_test_by_attach(ctx, conn, credentials) {
        ByAttach::Proven(result, found) => {
            info!(connection = %conn.name_any(), namespace = %conn.namespace().unwrap_or_default(), workspace = ?result.workspace, "tested by its first attach");
            ctx.metrics.tests.get_or_create(&crate::metrics::TestLabels { result: "Passed".into(), reason: "ProvenByAttach".into() }).inc();
            // No Event: no test ran. The attachment's `Attached` Event says
            // what happened, and status.test says what it proved; one Event
            // per new connection was a sixth of a bulk apply's writes.
            let source = source_schema(conn, Some(&found));
            FirstTest::Proven(result, source)
        }
        ByAttach::Pending(left) => FirstTest::Pending(left),
        ByAttach::No => FirstTest::Ask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn shape(name: &str, hash: &str) -> TableShape {
        TableShape { name: name.into(), columns: 2, hash: hash.into() }
    }

    #[test]
    fn a_table_keeps_its_time_until_its_shape_changes() {
        let then = at("2026-01-01T00:00:00Z");
        let now = at("2026-02-01T00:00:00Z");
        let before = by_table(&[], &[shape("a", "1"), shape("b", "2")], &then);
        assert!(before.iter().all(|t| t.changed_at == then));
        let after = by_table(&before, &[shape("a", "1"), shape("b", "3"), shape("c", "4")], &now);
        let times: Vec<(&str, &Time)> = after.iter().map(|t| (t.name.as_str(), &t.changed_at)).collect();
        assert_eq!(times, [("a", &then), ("b", &now), ("c", &now)]);
        let many: Vec<TableShape> = (0..SOURCE_TABLES_LISTED + 5).map(|i| shape(&format!("t{i}"), "h")).collect();
        assert_eq!(by_table(&[], &many, &now).len(), SOURCE_TABLES_LISTED);
    }
}
