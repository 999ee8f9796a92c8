//! End-to-end tests against a real kube-apiserver and a real Postgres, both
//! started by the test support on 127.0.0.1. Build them first with
//! tests/controlplane/build.sh (the README's test command does).

use manifold_test_support as support;
use manifold_test_support::tests;

fn main() {
    support::harness::run(tests![
        crds::crds_install_and_become_established,
        crds::valid_objects_are_accepted_and_listed_with_their_columns,
        crds::each_validation_rule_rejects_a_bad_object,
        crds::attachment_references_are_immutable,
        crds::kubectl_explain_shows_the_field_docs,
        attach::attach_imports_the_source_tables_and_queries_return_its_rows,
        attach::one_connection_in_two_workspaces,
        attach::detach_drops_the_schema_and_orphan_keeps_it,
        attach::the_finalizer_goes_on_with_the_first_change_and_comes_back,
        attach::a_view_on_a_foreign_table_holds_the_detach,
        attach::changes_to_the_connection_reach_the_workspace,
        attach::drift_heals_and_a_schema_made_by_hand_is_a_conflict,
        attach::deleting_a_connection_detaches_it_and_recreating_reattaches,
        attach::applying_in_reverse_order_converges,
        attach::an_unreachable_workspace_recovers_without_a_restart,
        attach::a_resync_at_rest_costs_one_query_and_writes_nothing,
        attach::deleting_a_workspace_removes_its_schemas,
        test_connection::good_credentials_pass_and_leave_nothing_behind,
        test_connection::each_failure_has_a_reason_that_says_what_to_fix_and_no_secret_leaks,
        test_connection::a_test_runs_only_where_the_connection_is_attached,
        test_connection::a_periodic_test_runs_again_after_its_interval,
        test_connection::manifold_test_is_the_test_connection_button,
        gitops::status_objects_follow_kstatus_and_argo_health,
        gitops::argocd_cm_carries_health_lua_for_each_kind,
        gitops::the_overlays_apply_to_a_real_apiserver,
        quoting::generated_strings_round_trip_through_postgres,
        hostile::hostile_values_are_stored_literally_and_harmlessly,
        hostile::two_connections_wanting_one_schema,
        hostile::a_reference_into_another_namespace_reaches_nothing,
        hostile::what_others_made_is_never_altered_or_dropped,
        tenancy::a_tenant_cannot_name_a_secret_it_cannot_read,
        tenancy::a_secret_nobody_opted_in_is_never_read,
        tenancy::a_tenant_cannot_carry_another_connections_credentials,
        tenancy::a_workspace_database_does_not_move_under_its_attachments,
        tenancy::a_gitops_service_account_with_attach_converges_in_any_order,
        security::planted_functions_never_run_as_the_operator,
        security::the_fdw_plugin_installs_only_what_an_admin_allowed,
        security::a_password_is_required_even_for_a_superuser_workspace,
        security::first_attaches_create_the_extension_once_and_a_superuser_is_warned_about,
        security::a_least_privilege_role_is_told_what_to_grant,
        security::tls_to_a_workspace_honours_sslmode_and_its_ca,
        security::credentials_stay_out_of_what_other_roles_can_read,
        security::the_longest_accepted_durations_do_not_crash_the_operator,
        workspace::readers_query_as_themselves_without_naming_a_schema,
        workspace::an_aggregator_unions_its_members_as_steampipe_does,
        workspace::a_users_view_on_an_aggregator_holds_its_detach,
        sources::a_sources_schema_changes_reach_every_workspace,
        sources::mysql_fdw_attaches_a_mariadb_database,
        db_safety::no_password_reaches_the_server_log_or_the_statement_statistics,
        db_safety::a_source_cannot_point_an_import_at_another_server,
        db_safety::a_detach_ends_readers_access_at_once,
        db_safety::a_temporary_view_on_an_aggregator_holds_no_member,
        db_safety::markers_count_only_on_what_the_workspace_role_owns,
        db_safety::a_missing_reader_role_holds_nothing,
        plugin::the_plugin_verbs_work_through_kubectl,
        plugin::dry_run_yaml_applies_back_and_converges,
        plugin::plugin_errors_say_what_to_do,
        selector::a_selector_attaches_matching_connections_now_and_later,
        import::steampipe_configs_round_trip_into_the_cluster,
        console::the_console_shows_connections_as_the_user_sees_them,
        console::every_flow_of_the_seed_works_in_a_browser,
        import::a_postgres_connection_of_a_spc_file_attaches,
        selector::a_selector_needs_attach_on_every_connection,
        pins::a_test_follows_the_attachment_to_the_workspace_it_first_saw,
        pins::a_database_behind_a_repointed_name_is_refused,
        pins::a_planted_domain_never_runs_as_the_operator,
        pins::a_label_that_joins_a_selector_needs_attach,
        pins::the_workspace_login_is_manifolds_alone,
    ])
}

mod attach;
mod console;
mod crds;
mod db_safety;
mod gitops;
mod hostile;
mod import;
mod pins;
mod plugin;
mod quoting;
mod security;
mod selector;
mod sources;
mod tenancy;
mod test_connection;
mod workspace;
