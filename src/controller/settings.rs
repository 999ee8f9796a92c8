//! The operator's settings, and the field manager of its writes.

use std::time::Duration;

use crate::api::SECRET_LABEL;
use crate::plugins::SourcePolicy;
use crate::postgres::budget::BudgetSettings;
use crate::postgres::{PoolSizes, Timeouts};

/// The field manager of every write (status, finalizer), and the reporting
/// controller of every Event.
pub const MANAGER: &str = "manifold";

/// Patch parameters under the operator's field manager.
pub fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() }
}

/// How the controllers behave.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often each workspace's catalog is observed, and drift healed.
    pub resync: Duration,
    /// Sessions per workspace database, for attaches and for tests.
    pub pool_sizes: PoolSizes,
    /// Sessions per server and in all, and when idle ones close.
    pub sessions: BudgetSettings,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
    pub timeouts: Timeouts,
    /// Bounds every statement of a connection test.
    pub test_timeout: Duration,
    /// A file holding the URI of the cluster admin's test database, where
    /// a Connection attached nowhere is tested.
    pub test_database: Option<std::path::PathBuf>,
    /// Which wrappers, source hosts and connect timeouts are allowed.
    pub sources: SourcePolicy,
    /// The label selector of the Secrets Manifold may use; empty: all.
    pub secret_selector: String,
    /// How long a Workspace's deletion waits for a database it cannot
    /// reach before it gives up, leaving that database's objects in place.
    pub cleanup_timeout: Duration,
    /// The same wait while the namespace itself is being deleted: a
    /// database that went with its namespace does not come back.
    pub terminating_cleanup_timeout: Duration,
    /// On SIGTERM, how long the reconciles already running may take to
    /// finish before they are abandoned (their transactions roll back). The
    /// Lease is released only after: keep it below the pod's grace period.
    pub shutdown_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(300),
            pool_sizes: PoolSizes::default(),
            sessions: BudgetSettings::default(),
            concurrency: 64,
            timeouts: Timeouts::default(),
            test_timeout: Duration::from_secs(10),
            test_database: None,
            sources: SourcePolicy::default(),
            secret_selector: format!("{SECRET_LABEL}=true"),
            cleanup_timeout: Duration::from_secs(600),
            terminating_cleanup_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}
