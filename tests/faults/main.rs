//! Faults survived without manual action: Postgres killed in the middle of an
//! attach, the operator killed in the middle of a batch, the apiserver
//! restarted, a source that goes away and comes back, a workspace that is
//! slow because of a lock; and a load of 200 attachments changed at once.
//!
//! A binary of its own: each test runs an operator of its own, and the
//! apiserver restart would disturb anything running beside it, so the tests
//! here run one at a time.

use manifold_test_support as support;
use manifold_test_support::tests;

mod deletion;
mod faults;
mod isolation;
mod load;
mod sessions;

fn main() {
    support::harness::run(tests![
        faults::postgres_killed_mid_attach_leaves_nothing_half_made,
        faults::operator_killed_mid_batch_converges_without_duplicates,
        faults::watches_resume_after_an_apiserver_restart,
        faults::a_source_that_goes_away_and_comes_back,
        faults::a_slow_workspace_times_out_and_blocks_no_other,
        load::two_hundred_attachments_changed_at_once,
        isolation::silent_sources_do_not_stall_a_workspace,
        isolation::a_deleted_namespace_leaves_nothing_behind,
        isolation::a_workspace_whose_database_is_gone_gives_up,
        deletion::every_deletion_order_converges,
        deletion::a_namespace_whose_database_is_gone_is_deleted_within_the_bound,
        sessions::a_hundred_workspaces_share_a_server_of_a_hundred_connections,
    ])
}
