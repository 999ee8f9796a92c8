//! What Manifold's end-to-end test binaries and benchmarks share, by what it
//! serves:
//!
//! - `devenv`: the launcher of private services, stopped with the test;
//! - `cluster`: one control plane per test binary, a namespace per test;
//! - `cpu`: what the benchmarks read of processes (CPU seconds, memory);
//! - `postgres`: private Postgres instances, databases and sources;
//! - `operator`: the operator under test;
//! - `proxy`: network peers for faults and attacks;
//! - `objects`: typed Manifold objects and Secrets, applied server-side;
//! - `world`: one test's namespace, source and workspace, and its waits;
//! - `harness`: runs the tests, then scans the run for leaked secrets.

pub mod cluster;
pub mod cpu;
pub mod devenv;
pub mod harness;
pub mod objects;
pub mod operator;
pub mod postgres;
pub mod proxy;
pub mod world;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use cluster::{CRD_NAMES, ControlPlane, TestNs, control_plane, namespace, stdout_ok};
pub use devenv::{Devenv, bin_dir, repo_root, unique};
pub use objects::{secret_yaml, unlabelled_secret_yaml};
pub use operator::{MYSQL_FDW, Operator, RESYNC_SECS, free_port, operator, operator_logs};
pub use postgres::{MariaDb, Postgres, Source, mariadb, postgres};
pub use proxy::{FakePostgres, FakeSource, Proxy, silent_source};

/// This run's secret marker: every credential the tests create contains it,
/// and after the suite it must appear nowhere else.
pub fn secret_marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        format!("Mk{}x{nanos}", std::process::id())
    })
}

/// The one wait of the tests: polls `check` until it returns Ok, or panics
/// after `timeout` with the description and the last value seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if start.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
