//! New Connection's screens: the plugin list (postgres, steampipe and the
//! wrappers the cluster admin allowed), then the form of the chosen plugin's
//! settings, generated from the Connection CRD's schema, with its
//! credentials step and, once a draft exists, its test result with Create
//! and Discard. The writes behind the form are in `write.rs`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use manifold::api::{Connection, SECRET_LABEL, TEST_REQUEST_ANNOTATION, is_draft};
use manifold::plugins::AllowedWrapper;
use maud::{Markup, html};
use serde::Deserialize;

use super::form::{self, Input, PLUGINS, Values};
use super::view::{allowed, outcome};
use super::{Console, Shared, button, page, post_form};

/// The key of the published ConfigMap that holds the wrappers, as JSON.
pub const WRAPPERS_KEY: &str = "wrappers.json";

/// The wrappers the cluster admin allowed for the `fdw` plugin, read as the
/// user from the ConfigMap the chart publishes; why not, when it cannot be.
pub async fn allowed_wrappers(console: &Console) -> Result<Vec<AllowedWrapper>, String> {
    let (ns, name) = &console.wrappers;
    let map = Api::<ConfigMap>::namespaced(console.client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| format!("the list of allowed wrappers (ConfigMap {ns}/{name}) cannot be read: {}", super::super::explain(e)))?;
    let json = map.data.unwrap_or_default().remove(WRAPPERS_KEY).unwrap_or_else(|| "[]".into());
    serde_json::from_str(&json).map_err(|e| format!("ConfigMap {ns}/{name} does not hold a list of wrappers: {e}"))
}

pub async fn plugins(State(console): State<Shared>, Path(ns): Path<String>) -> Html<String> {
    let can = allowed(&console, &ns, &[("connections", "create", None)]).await;
    let wrappers = allowed_wrappers(&console).await;
    let entry = |id: String, href: String, title: &str, about: Markup| {
        html! { a href=(href) id=(id) { strong { (title) } br; span.muted { (about) } } }
    };
    page(
        &ns,
        "New Connection",
        html! {
            h1 { "New Connection" }
            @if !can[0] { p.error { "Your RBAC does not allow creating Connections in namespace " code { (ns) } "." } }
            p { "Choose a plugin." }
            div.plugins id="plugins" {
                @for (kind, about) in PLUGINS.iter().filter(|(kind, _)| *kind != "fdw") {
                    (entry(format!("plugin-{kind}"), format!("/ns/{ns}/new/{kind}"), kind, html! { (about) }))
                }
                @if let Ok(list) = &wrappers {
                    @for w in list {
                        (entry(format!("plugin-fdw-{}", w.wrapper), format!("/ns/{ns}/new/fdw?wrapper={}", w.wrapper), &w.wrapper,
                            html! { "Allowed by your cluster admin (extension " (w.extension) ")." }))
                    }
                } @else {
                    (entry("plugin-fdw".into(), format!("/ns/{ns}/new/fdw"), "fdw", html! { (PLUGINS[2].1) }))
                }
            }
            @match &wrappers {
                Ok(list) if list.is_empty() => p.muted id="wrappers-note" { "Your cluster admin allowed no other foreign-data wrapper." },
                Err(why) => p.muted id="wrappers-note" { "Other wrappers: " (why) "." },
                Ok(_) => {},
            }
        },
    )
}

/// The query of New Connection's form: the draft it shows (after Test
/// Connection), or the allowed wrapper chosen from the plugin list.
#[derive(Deserialize)]
pub struct Chosen {
    draft: Option<String>,
    wrapper: Option<String>,
}

pub async fn new_form(State(console): State<Shared>, Path((ns, plugin)): Path<(String, String)>, Query(chosen): Query<Chosen>) -> Response {
    let draft = match chosen.draft {
        Some(name) => match Api::<Connection>::namespaced(console.client.clone(), &ns).get(&name).await {
            Ok(c) if is_draft(&c) => Some(c),
            Ok(_) => return Redirect::to(&format!("/ns/{ns}/connections/{name}")).into_response(),
            Err(e) => return super::view::error_page(&ns, "New Connection", e).into_response(),
        },
        None => None,
    };
    let mut values = draft.as_ref().map(form::values_of).unwrap_or_default();
    // A wrapper chosen from the list; the form fills in its extension.
    if let (None, Some(wrapper)) = (&draft, chosen.wrapper) {
        values.insert("plugin.wrapper".into(), wrapper);
    }
    form_page(&console, &ns, &plugin, &values, draft.as_ref(), None).await
}

fn field_input(field: &form::Field, values: &Values, wrapper: Option<&AllowedWrapper>) -> Markup {
    let name = format!("plugin.{}", field.name);
    let value = values.get(&name).cloned().unwrap_or_default();
    let placeholder = field.default.clone().unwrap_or_default();
    let pairs = match (wrapper, field.name.as_str()) {
        (Some(w), "serverOptions") => w.server_options.iter().map(|o| format!("{o}=")).collect::<Vec<_>>().join("\n"),
        _ => "key=value, one per line".into(),
    };
    html! {
        div.field {
            label for=(name) { (field.name) @if field.required { " *" } }
            @match field.input {
                Input::Number => input type="number" name=(name) id=(name) value=(value) placeholder=(placeholder) required[field.required];
                Input::Text => input type="text" name=(name) id=(name) value=(value) placeholder=(placeholder) required[field.required];
                Input::Pairs => textarea name=(name) id=(name) placeholder=(pairs) { (value) },
                Input::Lines => textarea name=(name) id=(name) { (value) },
            }
            small {
                (super::view::doc(&field.description))
                @if let (Some(w), "serverOptions") = (wrapper, field.name.as_str()) {
                    " Allowed: " code { (w.server_options.join(", ")) } "."
                }
            }
        }
    }
}

/// What the form needs to draw itself.
struct Form<'a> {
    ns: &'a str,
    kind: &'a str,
    values: &'a Values,
    draft: Option<&'a Connection>,
    /// The allowed wrapper that the form's `wrapper` names (fdw only).
    wrapper: Option<AllowedWrapper>,
}

impl Form<'_> {
    fn v(&self, key: &str) -> String {
        self.values.get(key).cloned().unwrap_or_default()
    }
}

/// New Connection's form for a plugin kind, with the draft's test result
/// when there is a draft. Credential values are never put in the page.
pub async fn form_page(
    console: &Console,
    ns: &str,
    kind: &str,
    values: &Values,
    draft: Option<&Connection>,
    error: Option<&str>,
) -> Response {
    let Some(fields) = form::fields(kind) else {
        return (StatusCode::NOT_FOUND, format!("no plugin {kind:?}")).into_response();
    };
    let can = allowed(console, ns, &[("connections", "create", None), ("secrets", "create", None)]).await;
    let secrets: Vec<String> = Api::<Secret>::namespaced(console.client.clone(), ns)
        .list_metadata(&ListParams::default().labels(&format!("{SECRET_LABEL}=true")))
        .await
        .map(|l| l.items.iter().map(|s| s.name_any()).collect())
        .unwrap_or_default();
    let wrapper = match kind {
        "fdw" => {
            let chosen = values.get("plugin.wrapper").cloned().unwrap_or_default();
            allowed_wrappers(console).await.unwrap_or_default().into_iter().find(|w| w.wrapper == chosen)
        }
        _ => None,
    };
    // An allowed wrapper's extension, where the form does not name one.
    let mut values = values.clone();
    if let Some(w) = &wrapper
        && values.get("plugin.extension").is_none_or(|e| e.trim().is_empty())
    {
        values.insert("plugin.extension".into(), w.extension.clone());
    }
    let values = &values;
    let f = Form { ns, kind, values, draft, wrapper };
    let cred_mode = values.get("cred.mode").cloned().unwrap_or_else(|| "new".into());
    let action = format!("/ns/{ns}/new/{kind}");
    page(
        ns,
        "New Connection",
        html! {
            h1 { "New Connection: " (kind) }
            @if let Some(error) = error { p.error id="error" { (error) } }
            (post_form(console, &action, "connection-form", html! {
                (connection_fieldset(&f))
                fieldset id="settings" {
                    legend { (kind) " settings" }
                    @for field in &fields { (field_input(field, values, f.wrapper.as_ref())) }
                }
                (tables_fieldset(&f))
                (credentials_fieldset(&f, &cred_mode, &secrets))
                div.bar {
                    (button("test-button", "Test Connection", can[0] && (can[1] || cred_mode != "new"), "your RBAC does not allow creating Connections (and Secrets)"))
                    span.muted { "Tests the settings as a draft, which is attached nowhere until you create it." }
                }
            }))
            @if let Some(d) = draft { (draft_section(console, &action, d, can[0])) }
        },
    )
    .into_response()
}

fn connection_fieldset(f: &Form) -> Markup {
    html! {
        fieldset {
            legend { "Connection" }
            div.field {
                label for="name" { "Name *" }
                input type="text" name="name" id="name" value=(f.v("name")) required readonly[f.draft.is_some()];
                small { "The Connection's name in namespace " (f.ns) "." }
            }
            div.field {
                label for="schema" { "Schema" }
                input type="text" name="schema" id="schema" value=(f.v("schema")) placeholder="the name, with - turned to _";
                small { "The schema that holds its tables in every workspace." }
            }
        }
    }
}

fn tables_fieldset(f: &Form) -> Markup {
    html! {
        fieldset {
            legend { "Tables" }
            div.field {
                select name="tables.mode" id="tables.mode" {
                    @for (mode, label) in [("all", "Import every table"), ("include", "Import only"), ("exclude", "Import all but")] {
                        option value=(mode) selected[f.v("tables.mode") == mode] { (label) }
                    }
                }
                textarea name="tables.list" id="tables.list" placeholder="table names, one per line" { (f.v("tables.list")) }
            }
            div.field {
                label for="test.interval" { "Test every" }
                input type="text" name="test.interval" id="test.interval" value=(f.v("test.interval")) placeholder="1h";
            }
        }
    }
}

/// The credentials step: new values into the form's own Secret (never
/// shown again), an existing opted-in Secret, or none. An allowed wrapper's
/// user mapping options name the rows.
fn credentials_fieldset(f: &Form, cred_mode: &str, secrets: &[String]) -> Markup {
    let keys = form::credential_keys(f.kind);
    let named: Vec<String> = f.wrapper.as_ref().map(|w| w.user_mapping_options.clone()).unwrap_or_default();
    let rows = named.len().max(form::FREE_CREDENTIAL_ROWS);
    html! {
        fieldset id="credentials" {
            legend { "Credentials" }
            div.field {
                label.choice { input type="radio" name="cred.mode" value="new" checked[cred_mode == "new"]; " Store new values in Secret " code { (form::secret_name(&f.v("name"))) } }
                small { "The values go into the Secret only (labelled " (SECRET_LABEL) "=true) and are never shown again."
                    @if f.draft.is_some() { " Leave a value empty to keep the one stored." } }
            }
            @for key in keys {
                div.field {
                    label for=(format!("cred.value.{key}")) { (key) }
                    input type=(if *key == "user" { "text" } else { "password" }) name=(format!("cred.value.{key}")) id=(format!("cred.value.{key}")) autocomplete="off";
                }
            }
            @if keys.is_empty() {
                @for i in 0..rows {
                    div.bar {
                        input type="text" name=(format!("cred.key.{i}")) id=(format!("cred.key.{i}")) placeholder="key" value=(named.get(i).cloned().unwrap_or_default());
                        input type="password" name=(format!("cred.value.{i}")) id=(format!("cred.value.{i}")) placeholder="value" autocomplete="off";
                    }
                }
            }
            div.field {
                label.choice { input type="radio" name="cred.mode" value="existing" checked[cred_mode == "existing"]; " Use an opted-in Secret" }
                input type="text" name="cred.secret" id="cred.secret" list="secrets" value=(if cred_mode == "existing" { f.v("cred.secret") } else { String::new() });
                datalist id="secrets" { @for s in secrets { option value=(s) {} } }
            }
            div.field { label.choice { input type="radio" name="cred.mode" value="none" checked[cred_mode == "none"]; " None" } }
        }
    }
}

/// A draft's test result (the one its latest request asked for), with
/// Create and Discard.
fn draft_section(console: &Console, action: &str, d: &Connection, can_create: bool) -> Markup {
    let request = d.annotations().get(TEST_REQUEST_ANNOTATION).cloned();
    let test = d.status.as_ref().and_then(|s| s.test.clone()).filter(|t| t.request == request);
    html! {
        h2 { "Test" }
        div id="test-result" {
            @match &test {
                Some(t) => { p { (outcome(t)) @if t.reason != format!("{:?}", t.result) { " " strong { (t.reason) } } @if let Some(n) = t.tables { " · " (n) " tables" } " · " (t.duration_ms) " ms" } p { (t.message) } },
                None => p.muted { "Testing…" },
            }
        }
        div.bar {
            (post_form(console, &format!("{action}/create"), "create-form", html! {
                input type="hidden" name="name" value=(d.name_any());
                (button("create-button", "Create", can_create, "your RBAC does not allow creating Connections"))
            }))
            (post_form(console, &format!("{action}/discard"), "discard-form", html! {
                input type="hidden" name="name" value=(d.name_any());
                button.secondary type="submit" id="discard-button" { "Discard" }
            }))
        }
    }
}
