//! The screens that write: New Connection with Test Connection before
//! Create, Add to Workspace or Skip, Add Connection, Remove, Test and
//! Delete Connection. Each write is the user's own request to the
//! apiserver, so the admission policy and RBAC judge it as they judge
//! kubectl; an object that a GitOps tool applied (or any object of a
//! GitOps-only namespace) gets the YAML to commit instead.
//!
//! Test Connection before Create: the form creates the Connection as a
//! draft (annotation `manifold.dev/draft`), which the operator tests as it
//! tests any connection, in the cluster admin's test database while it is
//! attached nowhere, and which it attaches nowhere and no selector picks.
//! Create removes the annotation; Discard deletes the draft and the Secret
//! the form made for it. The test is the operator's real one, and the
//! tenancy rules hold: the draft is the user's own write, admitted as any
//! Connection is.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use manifold::api::{Connection, DRAFT_ANNOTATION, TEST_REQUEST_ANNOTATION, Workspace, WorkspaceConnection, is_draft};
use maud::html;
use serde_json::{Value, json};

use super::form::{self, Values};
use super::new::form_page;
use super::view::{allowed, connection_page, gitops_only, managed_by};
use super::{Console, Fields, Shared, button, page, post_form};

const MANAGER: &str = "manifold-console";

fn see_other(path: &str) -> Response {
    Redirect::to(path).into_response()
}

fn message(error: kube::Error) -> String {
    super::super::explain(error).to_string()
}

/// `s` as a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `back` if it is a path of this console, else the namespace's list.
fn back_to(ns: &str, back: &str, error: Option<&str>) -> Response {
    let path =
        if back.starts_with(&format!("/ns/{ns}/")) && !back.contains("//") { back.to_string() } else { format!("/ns/{ns}/connections") };
    match error {
        Some(e) => see_other(&format!("{path}?error={}", encode(e))),
        None => see_other(&path),
    }
}

/// The YAML to commit (or to remove from Git) instead of a write.
fn yaml_page(ns: &str, title: &str, why: &str, objects: &[Value], remove: bool) -> Response {
    let yaml = manifold::import::to_yaml(&objects.iter().map(form::for_git).collect::<Vec<_>>());
    let file = format!("{}.yaml", objects.first().and_then(|o| o["metadata"]["name"].as_str()).unwrap_or("manifold"));
    let download = format!("data:application/yaml;charset=utf-8,{}", encode(&yaml));
    page(
        ns,
        title,
        html! {
            h1 { (title) }
            p.notice id="gitops" { (why) }
            p { @if remove { "Remove these objects from the Git repository:" } @else { "Commit this to the Git repository that the namespace is applied from:" } }
            pre id="yaml" { (yaml) }
            div.bar {
                button type="button" id="copy" onclick="navigator.clipboard.writeText(document.getElementById('yaml').textContent)" { "Copy" }
                a href=(download) download=(file) id="download" { "Download " (file) }
                a href=(format!("/ns/{ns}/connections")) { "Back to Connections" }
            }
        },
    )
    .into_response()
}

/// Why a write gives YAML, or `None` when it may be written.
async fn gitops_reason(
    console: &Console,
    ns: &str,
    objects: &[&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta],
) -> Option<String> {
    if let Some((tool, name)) = objects.iter().find_map(|m| managed_by(m).map(|t| (t, m.name.clone().unwrap_or_default()))) {
        return Some(format!("{name} was applied by {tool}, which would revert a change made here: the change belongs in Git."));
    }
    gitops_only(console, ns)
        .await
        .then(|| format!("Namespace {ns} is GitOps-only (annotation {}): every change belongs in Git.", super::GITOPS_ONLY_ANNOTATION))
}

/// The form's values without a credential value, to show the form again.
fn without_credentials(values: &Values) -> Values {
    values.iter().filter(|(k, _)| !k.starts_with("cred.value.") && k.as_str() != "csrf").map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Test Connection: writes the draft (and its Secret), asks for a test,
/// and shows the form with the result to come.
pub async fn test_draft(State(console): State<Shared>, Path((ns, kind)): Path<(String, String)>, Form(fields): Form<Fields>) -> Response {
    let shown = without_credentials(&fields.0);
    let existing = |name: &str| {
        let api = Api::<Connection>::namespaced(console.client.clone(), &ns);
        let name = name.to_string();
        async move { api.get_opt(&name).await }
    };
    let fail = |e: String| {
        let console = console.clone();
        let (ns, kind, shown) = (ns.clone(), kind.clone(), shown.clone());
        async move {
            let draft = Api::<Connection>::namespaced(console.client.clone(), &ns)
                .get_opt(shown.get("name").map(String::as_str).unwrap_or(""))
                .await
                .ok()
                .flatten()
                .filter(is_draft);
            form_page(&console, &ns, &kind, &shown, draft.as_ref(), Some(&e)).await
        }
    };
    let draft = match form::draft(&ns, &kind, &fields.0) {
        Ok(d) => d,
        Err(e) => return fail(e).await,
    };
    match existing(&draft.name).await {
        Ok(Some(c)) if !is_draft(&c) => return fail(format!("Connection {} already exists in namespace {ns}", draft.name)).await,
        Err(e) => return fail(message(e)).await,
        _ => {}
    }
    if let Err(e) = store_drafts_secret(&console, &ns, &draft).await {
        return fail(e).await;
    }
    if let Err(e) = apply_for_test(&console, &ns, &draft).await {
        return fail(message(e)).await;
    }
    see_other(&format!("/ns/{ns}/new/{kind}?draft={}", encode(&draft.name)))
}

/// Stores the credentials a draft's form gave in the Secret the form names
/// for it: creates the Secret, or patches in new values when the Secret is
/// the one made for this draft. A Secret that exists for anything else is
/// left alone, with an error for the form.
async fn store_drafts_secret(console: &Console, ns: &str, draft: &form::Draft) -> Result<(), String> {
    let Some((secret, data)) = &draft.secret else {
        return Ok(());
    };
    let api = Api::<Secret>::namespaced(console.client.clone(), ns);
    match api.get_metadata_opt(secret).await {
        Ok(None) if data.is_empty() => Err("Credentials: give the values to store".to_string()),
        Ok(None) => {
            let manifest: Secret = serde_json::from_value(form::secret_manifest(ns, secret, &draft.name, data)).expect("a Secret");
            api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &manifest)
                .await
                .map(|_| ())
                .map_err(message)
        }
        Ok(Some(s)) if s.annotations().get(DRAFT_ANNOTATION) == Some(&draft.name) => {
            if data.is_empty() {
                Ok(())
            } else {
                let patch = json!({ "stringData": data });
                api.patch(secret, &PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
                    .map_err(message)
            }
        }
        Ok(Some(_)) => Err(format!("Secret {secret} already exists and was not made for this draft: choose \"Use an opted-in Secret\"")),
        Err(e) => Err(message(e)),
    }
}

/// Applies the draft Connection with a fresh test request, so that the
/// operator tests it (again).
async fn apply_for_test(console: &Console, ns: &str, draft: &form::Draft) -> Result<(), kube::Error> {
    let mut connection = draft.connection.clone();
    let request = format!("{}-console", jiff::Timestamp::now());
    connection["metadata"]["annotations"][TEST_REQUEST_ANNOTATION] = json!(request);
    let params = PatchParams::apply(MANAGER).force();
    Api::<Connection>::namespaced(console.client.clone(), ns).patch(&draft.name, &params, &Patch::Apply(&connection)).await.map(|_| ())
}

/// The draft a Create or Discard names, if it is one.
async fn the_draft(console: &Console, ns: &str, name: &str) -> Result<Connection, Response> {
    match Api::<Connection>::namespaced(console.client.clone(), ns).get(name).await {
        Ok(c) if is_draft(&c) => Ok(c),
        Ok(_) => Err(see_other(&format!("/ns/{ns}/connections/{name}"))),
        Err(e) => Err(super::view::error_page(ns, "New Connection", e).into_response()),
    }
}

/// The draft's Secret, if the form made one for it.
async fn drafts_secret(console: &Console, ns: &str, conn: &Connection) -> Option<String> {
    let name = conn.spec.credentials.as_ref()?.secret_ref.name.clone();
    let secret = Api::<Secret>::namespaced(console.client.clone(), ns).get_metadata_opt(&name).await.ok()??;
    (secret.annotations().get(DRAFT_ANNOTATION) == Some(&conn.name_any())).then_some(name)
}

pub async fn create(State(console): State<Shared>, Path((ns, _kind)): Path<(String, String)>, Form(fields): Form<Fields>) -> Response {
    let name = fields.get("name").to_string();
    let conn = match the_draft(&console, &ns, &name).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let secret = drafts_secret(&console, &ns, &conn).await;
    let unmark = json!({ "metadata": { "annotations": { DRAFT_ANNOTATION: null } } });
    let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    if let Some(secret) = &secret
        && let Err(e) = Api::<Secret>::namespaced(console.client.clone(), &ns).patch(secret, &params, &Patch::Merge(&unmark)).await
    {
        return back_to(&ns, &format!("/ns/{ns}/connections"), Some(&message(e)));
    }
    if let Some(why) = gitops_reason(&console, &ns, &[]).await {
        let object = serde_json::to_value(&conn).unwrap_or_default();
        // A draft left behind would look like a Connection made outside
        // Git: say so rather than show the YAML as if all were well.
        let deleted = Api::<Connection>::namespaced(console.client.clone(), &ns).delete(&name, &DeleteParams::default()).await;
        let left = match deleted {
            Ok(_) => String::new(),
            Err(e) => format!(" The draft could not be deleted ({}): delete Connection {name} before Git applies it.", message(e)),
        };
        let kept = secret.map(|s| format!(" Secret {s} keeps the credentials in the cluster; its values are not shown here: keep it outside Git, or seal it (Sealed Secrets, SOPS).")).unwrap_or_default();
        return yaml_page(
            &ns,
            &format!("Create {name}"),
            &format!("{why} The draft was tested{}.{left}{kept}", if left.is_empty() { " and deleted" } else { "" }),
            &[object],
            false,
        );
    }
    // The draft's own annotations go with the draft field manager's: the
    // Connection is the user's from here on.
    let created = Api::<Connection>::namespaced(console.client.clone(), &ns).patch(&name, &params, &Patch::Merge(&unmark)).await;
    match created {
        Ok(_) => see_other(&format!("/ns/{ns}/connections/{}/add", encode(&name))),
        Err(e) => back_to(&ns, &format!("/ns/{ns}/connections"), Some(&message(e))),
    }
}

pub async fn discard(State(console): State<Shared>, Path((ns, _kind)): Path<(String, String)>, Form(fields): Form<Fields>) -> Response {
    let name = fields.get("name").to_string();
    let conn = match the_draft(&console, &ns, &name).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(secret) = drafts_secret(&console, &ns, &conn).await {
        let _ = Api::<Secret>::namespaced(console.client.clone(), &ns).delete(&secret, &DeleteParams::default()).await;
    }
    match Api::<Connection>::namespaced(console.client.clone(), &ns).delete(&name, &DeleteParams::default()).await {
        Ok(_) => see_other(&format!("/ns/{ns}/connections")),
        Err(e) => back_to(&ns, &format!("/ns/{ns}/connections"), Some(&message(e))),
    }
}

/// After Create: Add to Workspace (one, as in the seed) or Skip.
pub async fn add_page(State(console): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Html<String> {
    let workspaces: Vec<String> = Api::<Workspace>::namespaced(console.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.iter().map(|w| w.name_any()).collect())
        .unwrap_or_default();
    let can =
        allowed(&console, &ns, &[("workspaceconnections", "create", None)]).await[0] && super::view::may_attach(&console, &ns, &name).await;
    page(
        &ns,
        "Add to Workspace",
        html! {
            h1 { "Connection " (name) " created" }
            p { "Add it to a workspace now, or skip and add it later from its page." }
            (post_form(&console, &format!("/ns/{ns}/connections/{name}/attach"), "add-to-workspace", html! {
                input type="hidden" name="back" value=(format!("/ns/{ns}/connections/{name}"));
                div.bar {
                    select name="workspace" id="workspace" { @for w in &workspaces { option value=(w) { (w) } } }
                    (button("add-to-workspace-button", "Add to Workspace", can && !workspaces.is_empty(), "your RBAC does not allow attaching this Connection"))
                    a href=(format!("/ns/{ns}/connections/{name}")) id="skip" { "Skip" }
                }
            }))
        },
    )
}

/// Attaches `connection` to `workspace`, or gives the YAML to commit.
async fn attach(console: &Console, ns: &str, connection: &str, workspace: &str, back: &str) -> Response {
    let conn = Api::<Connection>::namespaced(console.client.clone(), ns).get_metadata_opt(connection).await.ok().flatten();
    let ws = Api::<Workspace>::namespaced(console.client.clone(), ns).get_metadata_opt(workspace).await.ok().flatten();
    let metas: Vec<_> = conn.iter().map(|c| &c.metadata).chain(ws.iter().map(|w| &w.metadata)).collect();
    let manifest = match super::super::attach::attachment(connection, workspace, None, None, Some(ns)) {
        Ok(m) => m,
        Err(e) => return back_to(ns, back, Some(&e.to_string())),
    };
    if let Some(why) = gitops_reason(console, ns, &metas).await {
        return yaml_page(ns, &format!("Add {connection} to {workspace}"), &why, &[manifest], false);
    }
    let object: WorkspaceConnection = serde_json::from_value(manifest).expect("a WorkspaceConnection");
    let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    match Api::<WorkspaceConnection>::namespaced(console.client.clone(), ns).create(&params, &object).await {
        Ok(_) => back_to(ns, back, None),
        Err(e) => back_to(ns, back, Some(&message(e))),
    }
}

pub async fn attach_connection(
    State(console): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    Form(fields): Form<Fields>,
) -> Response {
    let back = format!("/ns/{ns}/connections/{name}");
    attach(&console, &ns, &name, fields.get("workspace"), &back).await
}

pub async fn attach_workspace(
    State(console): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    Form(fields): Form<Fields>,
) -> Response {
    let back = format!("/ns/{ns}/workspaces/{name}");
    attach(&console, &ns, fields.get("connection"), &name, &back).await
}

/// Remove, from a connection's or a workspace's list.
pub async fn remove(State(console): State<Shared>, Path((ns, name)): Path<(String, String)>, Form(fields): Form<Fields>) -> Response {
    let api = Api::<WorkspaceConnection>::namespaced(console.client.clone(), &ns);
    let back = fields.get("back");
    let attachment = match api.get(&name).await {
        Ok(a) => a,
        Err(e) => return back_to(&ns, back, Some(&message(e))),
    };
    if let Some(why) = gitops_reason(&console, &ns, &[&attachment.metadata]).await {
        let object = serde_json::to_value(&attachment).unwrap_or_default();
        return yaml_page(&ns, &format!("Remove {} from {}", attachment.spec.connection, attachment.spec.workspace), &why, &[object], true);
    }
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => back_to(&ns, back, None),
        Err(e) => back_to(&ns, back, Some(&message(e))),
    }
}

/// Test Connection on an existing connection: a new test request.
pub async fn test(State(console): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    let patch = json!({ "metadata": { "annotations": { TEST_REQUEST_ANNOTATION: format!("{}-console", jiff::Timestamp::now()) } } });
    let params = PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    let back = format!("/ns/{ns}/connections/{name}");
    match Api::<Connection>::namespaced(console.client.clone(), &ns).patch(&name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => back_to(&ns, &back, None),
        Err(e) => back_to(&ns, &back, Some(&message(e))),
    }
}

/// Delete Connection, confirmed by typing its name: its attachments first,
/// then the Connection; its Secret is kept.
pub async fn delete_connection(
    State(console): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    Form(fields): Form<Fields>,
) -> Response {
    if fields.get("confirm") != name {
        return connection_page(&console, &ns, &name, Some(&format!("Not deleted: type the connection's name, {name}, to delete it.")))
            .await
            .into_response();
    }
    let api = Api::<Connection>::namespaced(console.client.clone(), &ns);
    let conn = match api.get(&name).await {
        Ok(c) => c,
        Err(e) => return back_to(&ns, "", Some(&message(e))),
    };
    let attachments = super::super::attach::attachments_of(&console.client, &ns, &name, &[]).await.map_err(|e| e.to_string());
    let attachments = match attachments {
        Ok(a) => a,
        Err(e) => return connection_page(&console, &ns, &name, Some(&e)).await.into_response(),
    };
    let metas: Vec<_> = std::iter::once(&conn.metadata).chain(attachments.iter().map(|a| &a.metadata)).collect();
    if let Some(why) = gitops_reason(&console, &ns, &metas).await {
        let objects: Vec<Value> = std::iter::once(serde_json::to_value(&conn).unwrap_or_default())
            .chain(attachments.iter().map(|a| serde_json::to_value(a).unwrap_or_default()))
            .collect();
        return yaml_page(&ns, &format!("Delete {name}"), &why, &objects, true);
    }
    let attachment_api = Api::<WorkspaceConnection>::namespaced(console.client.clone(), &ns);
    for a in &attachments {
        if let Err(e) = attachment_api.delete(&a.name_any(), &DeleteParams::default()).await
            && !super::super::is_not_found(&e)
        {
            return connection_page(&console, &ns, &name, Some(&message(e))).await.into_response();
        }
    }
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => see_other(&format!("/ns/{ns}/connections")),
        Err(e) => connection_page(&console, &ns, &name, Some(&message(e))).await.into_response(),
    }
}
