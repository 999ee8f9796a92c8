//! The screens that show: Connections, a connection's page, Workspaces and
//! a workspace's page, with the buttons the user's RBAC allows.

use axum::extract::{Path, Query, State};
use axum::response::Html;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use manifold::api::{
    Connection, ConnectionStatus, GROUP, SourceSchema, TestOutcome, Workspace, WorkspaceConnection, WorkspaceStatus, conditions, is_draft,
};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Console, Shared, button, page, post_form};

/// The query of the Connections screen: its filter.
#[derive(Deserialize)]
pub struct Filter {
    #[serde(default)]
    q: String,
}

/// The query of a page that a write redirects back to: the write's error.
#[derive(Deserialize)]
pub struct Notice {
    error: Option<String>,
}

pub fn error_page(ns: &str, title: &str, error: kube::Error) -> Html<String> {
    let message = match &error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    };
    page(ns, title, html! { h1 { (title) } p.error { (message) } })
}

/// What a page may offer, asked of the apiserver as the user. A question
/// that cannot be asked counts as a no.
pub async fn allowed(console: &Console, ns: &str, checks: &[(&str, &str, Option<&str>)]) -> Vec<bool> {
    let asks = checks.iter().map(|(resource, verb, name)| {
        let group = if *resource == "secrets" { "" } else { GROUP };
        async move { super::super::may(&console.client, ns, group, resource, verb, *name).await.unwrap_or(false) }
    });
    futures::future::join_all(asks).await
}

/// Whether the user may attach `connection`: the verb `attach` on it, or
/// reading the namespace's Secrets (the admission policy's rule).
pub async fn may_attach(console: &Console, ns: &str, connection: &str) -> bool {
    super::super::check_attach(&console.client, ns, connection).await.is_ok()
}

/// The GitOps tool that applied an object, from the labels and annotations
/// each one sets; its changes belong in Git, where the tool would revert a
/// change made here.
pub fn managed_by(meta: &ObjectMeta) -> Option<&'static str> {
    let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k)).map(String::as_str);
    let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k)).map(String::as_str);
    if label("kustomize.toolkit.fluxcd.io/name").is_some() || label("helm.toolkit.fluxcd.io/name").is_some() {
        Some("Flux")
    } else if label("app.kubernetes.io/managed-by") == Some("Helm") {
        Some("Helm")
    } else if annotation("argocd.argoproj.io/tracking-id").is_some() || label("app.kubernetes.io/instance").is_some() {
        Some("Argo CD")
    } else {
        None
    }
}

/// Whether the namespace asks for YAML instead of every write. A user who
/// may not read the Namespace gets the writes its RBAC allows.
pub async fn gitops_only(console: &Console, ns: &str) -> bool {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(console.client.clone());
    api.get_metadata(ns).await.ok().is_some_and(|n| n.annotations().get(super::GITOPS_ONLY_ANNOTATION).is_some_and(|v| v == "true"))
}

pub fn gitops_tag(meta: &ObjectMeta) -> Markup {
    html! { @if let Some(tool) = managed_by(meta) { " " span.tag title=(format!("applied by {tool}: changes give YAML to commit")) { (tool) } } }
}

/// `Ready`, the reason it is not, or `Pending`: a row's state for scripts
/// and tests.
fn state(list: &[Condition]) -> String {
    match conditions::find(list, conditions::READY) {
        Some(c) if c.status == "True" => "Ready".into(),
        Some(c) => c.reason.clone(),
        None => "Pending".into(),
    }
}

pub fn ready(list: &[Condition]) -> Markup {
    match conditions::find(list, conditions::READY) {
        Some(c) if c.status == "True" => html! { span.ok { "Ready" } },
        Some(c) => html! { span.bad title=(c.message) { (c.reason) } },
        None => html! { span.muted { "Pending" } },
    }
}

/// A doc comment's text, its `code` spans set as code.
pub fn doc(text: &str) -> Markup {
    html! { @for (i, part) in text.split('`').enumerate() { @if i % 2 == 1 { code { (part) } } @else { (part) } } }
}

/// A test's result, green when it passed, its message on hover.
pub fn outcome(t: &manifold::api::TestResult) -> Markup {
    let class = if t.result == TestOutcome::Passed { "ok" } else { "bad" };
    html! { span class=(class) title=(t.message) { (format!("{:?}", t.result)) } }
}

fn record_outcome(result: TestOutcome) -> Markup {
    html! { span class=(if result == TestOutcome::Passed { "ok" } else { "bad" }) { (format!("{result:?}")) } }
}

fn conditions_table(list: &[Condition]) -> Markup {
    html! {
        h2 { "Conditions" }
        table {
            tr { th { "Type" } th { "Status" } th { "Reason" } th { "Message" } }
            @for c in list { tr { td { (c.type_) } td { (c.status) } td { (c.reason) } td { (c.message) } } }
        }
    }
}

/// The plugin kind of a connection, as New Connection names it.
pub fn plugin_kind(c: &Connection) -> &'static str {
    match c.spec.plugin.as_ref() {
        Some(p) if p.postgres.is_some() => "postgres",
        Some(p) if p.steampipe.is_some() => "steampipe",
        Some(_) => "fdw",
        None => "aggregator",
    }
}

/// A row's menu with its Remove button.
fn remove_menu(console: &Console, ns: &str, attachment: &str, back: &str, allowed: bool) -> Markup {
    html! {
        details.menu {
            summary id=(format!("menu-{attachment}")) title="Actions" { "Actions" }
            (post_form(console, &format!("/ns/{ns}/attachments/{attachment}/remove"), &format!("remove-{attachment}"), html! {
                input type="hidden" name="back" value=(back);
                (button(&format!("remove-button-{attachment}"), "Remove", allowed, "your RBAC does not allow deleting WorkspaceConnections"))
            }))
        }
    }
}

pub async fn connections(
    State(console): State<Shared>,
    Path(ns): Path<String>,
    Query(Filter { q: filter }): Query<Filter>,
) -> Html<String> {
    let api: Api<Connection> = Api::namespaced(console.client.clone(), &ns);
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => return error_page(&ns, "Connections", e),
    };
    let attachments = Api::<WorkspaceConnection>::namespaced(console.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let can = allowed(&console, &ns, &[("connections", "create", None)]).await;
    let now = jiff::Timestamp::now();
    let shown: Vec<&Connection> = list.iter().filter(|c| filter.is_empty() || c.name_any().contains(&filter)).collect();
    page(
        &ns,
        "Connections",
        html! {
            h1 { "Connections" }
            div.bar {
                form method="get" { input type="search" name="q" value=(filter) placeholder="Filter by name"; }
                form method="get" action=(format!("/ns/{ns}/new")) {
                    (button("new-connection", "New Connection", can[0], "your RBAC does not allow creating Connections"))
                }
            }
            table id="connections" {
                tr { th { "Name" } th { "Plugin" } th { "Schema" } th { "Test" } th { "Workspaces" } th { "Ready" } }
                @for c in &shown { (connection_row(&ns, c, &attachments, now)) }
            }
            @if shown.is_empty() { p.muted { "No connections" @if !filter.is_empty() { " match " code { (filter) } } "." } }
        },
    )
}

/// One Connection's row in the namespace's list.
fn connection_row(ns: &str, c: &Connection, attachments: &[WorkspaceConnection], now: jiff::Timestamp) -> Markup {
    html! {
        @let status = c.status.clone().unwrap_or_default();
        @let used: Vec<String> = attachments.iter().filter(|a| a.spec.connection == c.name_any()).map(|a| a.spec.workspace.clone()).collect();
        tr {
            td {
                @if is_draft(c) {
                    a href=(format!("/ns/{ns}/new/{}?draft={}", plugin_kind(c), c.name_any())) { (c.name_any()) }
                    " " span.tag { "Draft" }
                } @else {
                    a href=(format!("/ns/{ns}/connections/{}", c.name_any())) { (c.name_any()) }
                }
                (gitops_tag(&c.metadata))
            }
            td { (status.plugin.clone().unwrap_or_else(|| if c.spec.aggregator.is_some() { "aggregator".into() } else { String::new() })) }
            td { code { (status.schema.clone().unwrap_or_default()) } }
            td {
                @if let Some(t) = &status.test {
                    (outcome(t))
                    " " span.muted { (super::super::get::age(Some(&t.tested_at), now)) " ago" }
                } @else { span.muted { "not tested" } }
            }
            td { (used.join(", ")) }
            td { (ready(&status.conditions)) }
        }
    }
}

pub async fn connection(
    State(console): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    Query(notice): Query<Notice>,
) -> Html<String> {
    connection_page(&console, &ns, &name, notice.error.as_deref()).await
}

/// A connection's page, with an error from the last action if there was one.
pub async fn connection_page(console: &Console, ns: &str, name: &str, error: Option<&str>) -> Html<String> {
    let c = match Api::<Connection>::namespaced(console.client.clone(), ns).get(name).await {
        Ok(c) => c,
        Err(e) => return error_page(ns, name, e),
    };
    let attachments: Vec<WorkspaceConnection> = Api::<WorkspaceConnection>::namespaced(console.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.into_iter().filter(|a| a.spec.connection == name).collect())
        .unwrap_or_default();
    let workspaces = other_workspaces(console, ns, &attachments).await;
    let can = allowed(
        console,
        ns,
        &[
            ("connections", "patch", Some(name)),
            ("workspaceconnections", "create", None),
            ("workspaceconnections", "delete", None),
            ("connections", "delete", Some(name)),
        ],
    )
    .await;
    let attach = can[1] && may_attach(console, ns, name).await;
    let status = c.status.clone().unwrap_or_default();
    let back = format!("/ns/{ns}/connections/{name}");
    page(
        ns,
        name,
        html! {
            h1 { (name) (gitops_tag(&c.metadata)) }
            @if let Some(error) = error { p.error id="error" { (error) } }
            (connection_facts(&c, &status))
            h2 { "Workspaces" }
            (attachments_table(console, ns, &attachments, &back, can[2]))
            @if !is_draft(&c) { (add_to_workspace_form(console, ns, name, &workspaces, attach)) }
            (test_section(&status))
            (post_form(console, &format!("/ns/{ns}/connections/{name}/test"), "test-connection", html! {
                (button("test-button", "Test Connection", can[0], "your RBAC does not allow patching this Connection"))
            }))
            @if let Some(source) = &status.source_schema { (source_section(source)) }
            @if !status.members.is_empty() {
                h2 { "Members" }
                table { tr { th { "Connection" } th { "State" } } @for m in &status.members { tr { td { (m.name) } td { (m.state) } } } }
            }
            (conditions_table(&status.conditions))
            h2 { "Settings" }
            (delete_connection_form(console, ns, name, can[3] && (attachments.is_empty() || can[2])))
        },
    )
}

/// The workspaces of the namespace that `attachments` leave out: where the
/// connection could be added. Empty when they cannot be listed.
async fn other_workspaces(console: &Console, ns: &str, attachments: &[WorkspaceConnection]) -> Vec<String> {
    Api::<Workspace>::namespaced(console.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.iter().map(|w| w.name_any()).filter(|w| !attachments.iter().any(|a| &a.spec.workspace == w)).collect())
        .unwrap_or_default()
}

/// The head of a connection's page: its plugin, schema, readiness and
/// credentials Secret.
fn connection_facts(c: &Connection, status: &ConnectionStatus) -> Markup {
    html! {
        dl {
            dt { "Plugin" } dd { (status.plugin.clone().unwrap_or_else(|| "aggregator".into())) }
            dt { "Schema" } dd { code { (status.schema.clone().unwrap_or_default()) } }
            dt { "Ready" } dd { (ready(&status.conditions)) }
            @if let Some(secret) = &c.spec.credentials { dt { "Credentials" } dd { "Secret " code { (secret.secret_ref.name) } } }
        }
    }
}

/// Add to Workspace: a choice of the `workspaces` the connection is not
/// in, and the button, enabled when there is one and the user `may_attach`.
fn add_to_workspace_form(console: &Console, ns: &str, name: &str, workspaces: &[String], may_attach: bool) -> Markup {
    post_form(
        console,
        &format!("/ns/{ns}/connections/{name}/attach"),
        "add-to-workspace",
        html! {
            div.bar {
                @if !workspaces.is_empty() { select name="workspace" id="workspace" { @for w in workspaces { option value=(w) { (w) } } } }
                (button("add-to-workspace-button", "Add to Workspace", may_attach && !workspaces.is_empty(),
                    if may_attach { "no other workspace in this namespace" } else { "your RBAC does not allow attaching this Connection (the verb attach on connections)" }))
            }
        },
    )
}

/// Delete Connection, confirmed by typing its name; `allowed` when the
/// user may delete the Connection and its WorkspaceConnections.
fn delete_connection_form(console: &Console, ns: &str, name: &str, allowed: bool) -> Markup {
    post_form(
        console,
        &format!("/ns/{ns}/connections/{name}/delete"),
        "delete-connection",
        html! {
            p { "Delete Connection removes it from every workspace, then deletes it. Its Secret is kept. Type "
                code { (name) } " to confirm." }
            div.bar {
                input type="text" name="confirm" id="confirm" autocomplete="off" placeholder=(name);
                (button("delete-button", "Delete Connection", allowed,
                    "your RBAC does not allow deleting this Connection and its WorkspaceConnections"))
            }
        },
    )
}

/// A connection's attachments, each with a Remove in its row's menu.
fn attachments_table(console: &Console, ns: &str, attachments: &[WorkspaceConnection], back: &str, can_remove: bool) -> Markup {
    html! {
        table id="workspaces" {
            tr { th { "Workspace" } th { "Schema" } th { "Tables" } th { "Ready" } th { "Attachment" } th {} }
            @for a in attachments {
                @let s = a.status.clone().unwrap_or_default();
                tr id=(format!("row-{}", a.name_any())) data-state=(state(&s.conditions)) {
                    td { a href=(format!("/ns/{ns}/workspaces/{}", a.spec.workspace)) { (a.spec.workspace) } (gitops_tag(&a.metadata)) }
                    td { code { (s.schema.clone().unwrap_or_default()) } }
                    td { (s.tables.map(|t| t.to_string()).unwrap_or_default()) }
                    td { (ready(&s.conditions)) }
                    td.muted { (a.name_any()) }
                    td { (remove_menu(console, ns, &a.name_any(), back, can_remove)) }
                }
            }
        }
        @if attachments.is_empty() { p.muted { "Attached to no workspace." } }
    }
}

/// The last test, then the history that status keeps (newest first).
fn test_section(status: &ConnectionStatus) -> Markup {
    let now = jiff::Timestamp::now();
    let ago = |t: &Time| super::super::get::age(Some(t), now);
    html! {
        h2 { "Test" }
        @if let Some(t) = &status.test {
            dl id="test" {
                dt { "Result" } dd { (outcome(t)) @if t.reason != format!("{:?}", t.result) { " (" (t.reason) ")" } }
                dt { "When" } dd { (ago(&t.tested_at)) " ago, " (t.duration_ms) " ms" @if let Some(w) = &t.workspace { ", in workspace " (w) } }
                dt { "Message" } dd { (t.message) }
            }
        } @else { p.muted { "Not tested yet." } }
        @if status.test_history.len() > 1 {
            section id="test-history" {
                h3 { "History (last " (status.test_history.len()) ")" }
                table {
                    tr { th { "When" } th { "Result" } th { "Reason" } th { "Tables" } th { "Duration" } th { "Message" } }
                    @for r in &status.test_history {
                        tr {
                            td title=(r.tested_at.0.to_string()) { (ago(&r.tested_at)) " ago" }
                            td { (record_outcome(r.result)) }
                            td { (r.reason) }
                            td { (r.tables.map(|n| n.to_string()).unwrap_or_default()) }
                            td { (r.duration_ms) " ms" }
                            td.muted { (r.message) }
                        }
                    }
                }
            }
        }
    }
}

/// The source's schema: its tables, and when each last changed shape.
fn source_section(source: &SourceSchema) -> Markup {
    let now = jiff::Timestamp::now();
    let ago = |t: &Time| super::super::get::age(Some(t), now);
    html! {
        h2 { "Source schema" }
        p { (source.tables) " tables, changed " (ago(&source.changed_at)) " ago" }
        @if !source.by_table.is_empty() {
            table id="source-tables" {
                tr { th { "Table" } th { "Columns" } th { "Changed" } }
                @for t in &source.by_table {
                    tr { td { code { (t.name) } } td { (t.columns) } td title=(t.changed_at.0.to_string()) { (ago(&t.changed_at)) " ago" } }
                }
            }
            @if (source.by_table.len() as i32) < source.tables { p.muted { "The first " (source.by_table.len()) " tables by name." } }
        } @else { p.muted { "The table list comes with the next test." } }
    }
}

pub async fn workspaces(State(console): State<Shared>, Path(ns): Path<String>) -> Html<String> {
    let list = match Api::<Workspace>::namespaced(console.client.clone(), &ns).list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => return error_page(&ns, "Workspaces", e),
    };
    page(
        &ns,
        "Workspaces",
        html! {
            h1 { "Workspaces" }
            table id="workspaces" {
                tr { th { "Name" } th { "Database" } th { "Connections" } th { "Search path" } th { "Ready" } }
                @for w in &list {
                    @let s = w.status.clone().unwrap_or_default();
                    tr {
                        td { a href=(format!("/ns/{ns}/workspaces/{}", w.name_any())) { (w.name_any()) } (gitops_tag(&w.metadata)) }
                        td { code { (s.database.clone().unwrap_or_default()) } }
                        td { (s.connection_count) }
                        td { code { (s.search_path.clone().unwrap_or_default()) } }
                        td { (ready(&s.conditions)) }
                    }
                }
            }
        },
    )
}

pub async fn workspace(
    State(console): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    Query(notice): Query<Notice>,
) -> Html<String> {
    workspace_page(&console, &ns, &name, notice.error.as_deref()).await
}

pub async fn workspace_page(console: &Console, ns: &str, name: &str, error: Option<&str>) -> Html<String> {
    let w = match Api::<Workspace>::namespaced(console.client.clone(), ns).get(name).await {
        Ok(w) => w,
        Err(e) => return error_page(ns, name, e),
    };
    let connections =
        Api::<Connection>::namespaced(console.client.clone(), ns).list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    let attachments: Vec<WorkspaceConnection> = Api::<WorkspaceConnection>::namespaced(console.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.into_iter().filter(|a| a.spec.workspace == name).collect())
        .unwrap_or_default();
    let can = allowed(console, ns, &[("workspaceconnections", "create", None), ("workspaceconnections", "delete", None)]).await;
    let s = w.status.clone().unwrap_or_default();
    let aggregators: Vec<&Connection> =
        connections.iter().filter(|c| c.spec.aggregator.is_some() && s.connections.iter().any(|a| a.name == c.name_any())).collect();
    let addable: Vec<String> = connections
        .iter()
        .filter(|c| !is_draft(c) && !attachments.iter().any(|a| a.spec.connection == c.name_any()))
        .map(|c| c.name_any())
        .collect();
    let back = format!("/ns/{ns}/workspaces/{name}");
    page(
        ns,
        name,
        html! {
            h1 { (name) (gitops_tag(&w.metadata)) }
            @if let Some(error) = error { p.error id="error" { (error) } }
            dl {
                dt { "Database" } dd { code { (s.database.clone().unwrap_or_default()) } }
                dt { "Postgres" } dd { (s.postgres_version.clone().unwrap_or_default()) }
                dt { "Ready" } dd { (ready(&s.conditions)) }
                dt { "Search path" } dd { code { (s.search_path.clone().unwrap_or_else(|| "as the database has it".into())) } }
            }
            h2 { "Settings › Connections" }
            (connections_table(console, ns, &attachments, &back, can[1]))
            (add_connection_form(console, ns, name, &addable, can[0]))
            (status_sections(&s, &aggregators))
            (conditions_table(&s.conditions))
        },
    )
}

/// A workspace's attachments, each with a Remove in its row's menu.
fn connections_table(console: &Console, ns: &str, attachments: &[WorkspaceConnection], back: &str, can_remove: bool) -> Markup {
    html! {
        table id="connections" {
            tr { th { "Connection" } th { "Schema" } th { "Tables" } th { "State" } th { "Attachment" } th {} }
            @for a in attachments {
                @let st = a.status.clone().unwrap_or_default();
                tr id=(format!("row-{}", a.name_any())) data-state=(state(&st.conditions)) {
                    td { a href=(format!("/ns/{ns}/connections/{}", a.spec.connection)) { (a.spec.connection) } (gitops_tag(&a.metadata)) }
                    td { code { (st.schema.clone().unwrap_or_default()) } }
                    td { (st.tables.map(|t| t.to_string()).unwrap_or_default()) }
                    td { (ready(&st.conditions)) }
                    td.muted { (a.name_any()) }
                    td { (remove_menu(console, ns, &a.name_any(), back, can_remove)) }
                }
            }
        }
        @if attachments.is_empty() { p.muted { "No connection is attached." } }
    }
}

/// Add Connection: a choice of the `addable` connections, and the button,
/// enabled when there is one and the user `may_create` WorkspaceConnections.
fn add_connection_form(console: &Console, ns: &str, name: &str, addable: &[String], may_create: bool) -> Markup {
    post_form(
        console,
        &format!("/ns/{ns}/workspaces/{name}/attach"),
        "add-connection",
        html! {
            div.bar {
                @if !addable.is_empty() { select name="connection" id="connection" { @for c in addable { option value=(c) { (c) } } } }
                (button("add-connection-button", "Add Connection", may_create && !addable.is_empty(),
                    if may_create { "every connection is attached" } else { "your RBAC does not allow creating WorkspaceConnections" }))
            }
        },
    )
}

/// What a workspace's status tells besides its attachments: the
/// connections its selector takes, its reader roles, and the members of
/// each aggregator attached.
fn status_sections(s: &WorkspaceStatus, aggregators: &[&Connection]) -> Markup {
    html! {
        @if !s.selected.is_empty() {
            h2 { "Selected by label" }
            table { tr { th { "Connection" } th { "Attachment" } th { "State" } } @for m in &s.selected { tr { td { (m.name) } td.muted { (m.attachment) } td { (m.state) } } } }
        }
        @if !s.readers.is_empty() {
            h2 { "Readers" }
            table { tr { th { "Role" } th { "State" } th { "Message" } } @for r in &s.readers { tr { td { code { (r.name) } } td { (r.state) } td { (r.message) } } } }
        }
        @for a in aggregators {
            h2 { "Aggregator " (a.name_any()) }
            table { tr { th { "Member" } th { "State" } } @for m in a.status.as_ref().map(|s| s.members.clone()).unwrap_or_default() { tr { td { (m.name) } td { (m.state) } } } }
        }
    }
}
