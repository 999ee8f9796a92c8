//! `test`: the command-line Test Connection button. It sets the
//! `manifold.dev/test-request` annotation, then waits for the operator's
//! answer to that request.

use std::time::Duration;

use clap::Args;
use kube::api::{Api, Patch, PatchParams};
use manifold::api::{Connection, TEST_REQUEST_ANNOTATION, TestOutcome};

use super::{FIELD_MANAGER, KubeFlags, Result};

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Name of the Connection.
    pub name: String,
    /// Wait for the result (`--wait=false` only asks for a test).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// How long to wait for the result.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub timeout: Duration,
}

/// Parses a Go-style duration such as `90s`, `5m` or `1h30m`.
pub fn duration(s: &str) -> std::result::Result<Duration, String> {
    manifold::api::duration::parse(s)
}

/// Exits 0 if the test passed, 1 if it failed or could not run, 2 if no
/// answer came in time.
pub async fn run(flags: &KubeFlags, args: TestArgs) -> Result<i32> {
    let (client, ns) = flags.client().await?;
    let name = args.name.as_str();
    let api: Api<Connection> = Api::namespaced(client, &ns);
    let request = format!("{}-{}", jiff::Timestamp::now(), std::process::id());
    let patch = serde_json::json!({ "metadata": { "annotations": { TEST_REQUEST_ANNOTATION: request } } });
    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    api.patch(name, &params, &Patch::Merge(&patch)).await.map_err(super::explain)?;
    if !args.wait {
        println!("connection.manifold.dev/{name} test requested ({TEST_REQUEST_ANNOTATION}={request})");
        return Ok(0);
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let conn = api.get(name).await.map_err(super::explain)?;
        if let Some(test) = conn.status.and_then(|s| s.test).filter(|t| t.request.as_deref() == Some(request.as_str())) {
            let place = test.workspace.map(|w| format!(" in workspace {w}")).unwrap_or_default();
            match test.result {
                TestOutcome::Passed => {
                    let tables = test.tables.unwrap_or(0);
                    println!("{ns}/{name}: Passed: {tables} tables, {} ms{place}", test.duration_ms);
                    println!("  {}", test.message);
                    return Ok(0);
                }
                outcome => {
                    println!("{ns}/{name}: {outcome:?}: {}{place}", test.reason);
                    println!("  {}", test.message);
                    return Ok(1);
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("{ns}/{name}: no test result after {:?}; is the operator running?", args.timeout);
            return Ok(2);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
