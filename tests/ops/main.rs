//! Operating Manifold like a real cluster would: the Helm chart, its RBAC
//! with a real ServiceAccount token, leader election between two processes,
//! and the metrics. A test binary of its own, so that no operator watching
//! every namespace runs beside the ones these tests start.

use manifold_test_support as support;
use manifold_test_support::tests;

fn main() {
    support::harness::run(tests![
        chart::helm_lint_is_clean,
        chart::chart_crds_are_the_generated_crds,
        chart::chart_admission_policy_is_the_one_in_admission,
        chart::helm_install_creates_the_release,
        chart::helm_template_applies_server_side,
        rbac::the_chart_rbac_is_enough_and_no_more,
        leader::one_leader_reconciles_and_a_standby_takes_over,
        leader::a_leader_asked_to_stop_keeps_the_lease_until_its_reconciles_end,
        leader::a_leader_abandons_what_does_not_end_within_the_shutdown_timeout,
        leader::a_leader_that_loses_the_lease_abandons_its_reconciles_at_once,
        sources::the_admin_fences_sources_and_allows_wrappers,
    ])
}

mod chart;
mod leader;
mod rbac;
mod sources;
