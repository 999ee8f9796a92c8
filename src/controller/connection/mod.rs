//! The connection reconciler: resolves the plugin, schema and credentials,
//! tests the connection (on change, on a schedule and on demand), and lists
//! the workspaces that use it. A short driver over named steps, one file
//! each:
//!
//! | step | file | what it does |
//! |---|---|---|
//! | schedule | `schedule.rs` | whether a test is due, and when the next one is |
//! | place | `place.rs` | where a test may run (an attached Workspace, or the admin's test database) |
//! | recent | `recent.rs` | a first attach's import answers the first test; tests written before the store shows them |
//! | test | `test.rs` | one test, rolled back, and its metrics, backoff and Event |
//! | report | `report.rs` | the status, conditions and the workspaces that use it; an aggregator's members |

mod place;
mod recent;
mod report;
mod schedule;
mod test;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::aggregates;
use super::context::{BackoffKey, Context, Error, requeue};
use super::resolve::{self, SecretUser};
use crate::api::{Connection, Failure};

use place::*;

use recent::*;
use report::*;
use schedule::*;
use test::*;

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
    let credentials = credentials_version(&ctx, &conn, &resolved);
    let workspace = test_workspace(&ctx, &conn);
    let since_last = last.map(|t| since(&t.tested_at));
    let mut cause = due(&conn, credentials.as_deref(), since_last, ctx.backoff.peek(&backoff_key), workspace.is_ok());
    let mut test = last.cloned();
    let mut source = conn.status.as_ref().and_then(|s| s.source_schema.clone());
    if cause == Some(Cause::Spec) && last.is_none() && resolved.is_ok() {
        match proven_by_attach(&ctx, &conn, credentials.as_deref()).await {
            FirstTest::Proven(result, found) => (test, source, cause) = (Some(*result), found, None),
            FirstTest::Pending(left) => {
                report(&conn, &ctx, &untested(), None, source).await?;
                return Ok(requeue(left + Duration::from_millis(100)));
            }
            FirstTest::Ask => {}
        }
    }
    if let Some(cause) = cause {
        let (result, found) = test_and_record(&ctx, &conn, &resolved, workspace, cause, &backoff_key).await;
        (test, source) = (Some(result), found);
    }
    if let Some(t) = &test
        && last != Some(t)
    {
        ctx.recent_tests.remember(&conn, t, &source);
    }
    report(&conn, &ctx, &outcome(resolved.as_ref().err(), test.as_ref()), test.clone(), source).await?;
    let since_now = test.as_ref().map(|t| since(&t.tested_at)).unwrap_or_default();
    Ok(match next_test(&conn, test.as_ref(), since_now, ctx.backoff.peek(&backoff_key)) {
        Some(after) => requeue(after),
        None => Action::await_change(),
    })
}

/// The version of the credentials: unresolvable credentials still have
/// one, so that fixing the Secret is a change.
fn credentials_version(ctx: &Context, conn: &Connection, resolved: &Result<resolve::Resolved, Failure>) -> Option<String> {
    resolved
        .as_ref()
        .ok()
        .and_then(|r| r.version.clone())
        .or_else(|| resolve::credentials(&ctx.stores, conn).ok().flatten().map(|s| resolve::secret_version(&s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConnectionSpec, PluginSpec, TestSpec};
    use crate::api::{ConnectionStatus, SourceSchema, TEST_REQUEST_ANNOTATION, TestOutcome, TestResult};
    use crate::controller::recent_tests::RecentTests;
    use crate::controller::status;

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
        let source = Some(SourceSchema { hash: "h".into(), tables: 2, changed_at: status::now(), request: None, by_table: Vec::new() });
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
                    server_options_public: true,
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
