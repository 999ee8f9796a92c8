//! Operating Manifold like a real cluster would: the Helm chart, its RBAC
//! with a real ServiceAccount token, leader election between two processes,
//! and the metrics. A test binary of its own, so that no operator watching
//! every namespace runs beside the ones these tests start.

#[path = "../e2e/support/mod.rs"]
mod support;

mod chart;
mod leader;
mod rbac;
