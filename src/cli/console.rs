//! `manifold console`: the web console, a local server in the way of
//! `kubectl proxy` and Headlamp's desktop app. It acts with the user's own
//! kubeconfig identity, never the operator's, so that what the user may
//! not see, the console cannot show.
//!
//! This first slice is read-only: the Connections and Workspaces screens, a
//! connection's page and a workspace's page, updated live from a watch
//! (server-sent events). Pages are rendered on the server with `maud`,
//! whose templates are Rust checked at compile time and escape every value
//! by default: names, messages and remote error text all reach the page as
//! text. No asset is fetched at run time.
//!
//! Safety: it binds 127.0.0.1 by default; the URL it prints carries a
//! one-time token, exchanged on the first visit for an HttpOnly,
//! SameSite=Strict cookie (as Jupyter does); every request needs that
//! cookie and a Host header naming the loopback address it listens on (no
//! DNS rebinding); anything but GET is refused. Secret values are never
//! read: the console lists Secrets' names only where it needs them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use clap::Args;
use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use manifold::api::{Connection, Workspace, WorkspaceConnection, conditions};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{KubeFlags, Result};

const COOKIE: &str = "manifold_console";

#[derive(Args, Debug)]
pub struct ConsoleArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub address: SocketAddr,
}

struct Console {
    client: Client,
    namespace: String,
    token: String,
    /// The Host headers a request may carry.
    hosts: Vec<String>,
}

type Shared = Arc<Console>;

/// 32 random bytes from the kernel, as hex.
fn token() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub async fn run(flags: &KubeFlags, args: ConsoleArgs) -> Result<()> {
    if !args.address.ip().is_loopback() {
        eprintln!(
            "warning: the console listens on {}, which is not loopback: anyone who can reach it and has the URL acts as you",
            args.address
        );
    }
    let (client, namespace) = flags.client().await?;
    let listener = tokio::net::TcpListener::bind(args.address).await?;
    let address = listener.local_addr()?;
    let hosts = vec![address.to_string(), format!("localhost:{}", address.port())];
    let console = Arc::new(Console { client, namespace, token: token()?, hosts });
    println!("Manifold console: http://{address}/?token={}", console.token);
    let app = Router::new()
        .route("/", get(home))
        .route("/ns/{ns}/connections", get(connections))
        .route("/ns/{ns}/connections/{name}", get(connection))
        .route("/ns/{ns}/workspaces", get(workspaces))
        .route("/ns/{ns}/workspaces/{name}", get(workspace))
        .route("/ns/{ns}/events", get(events))
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console);
    axum::serve(listener, app).await?;
    Ok(())
}

fn query_param(uri: &axum::http::Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The token, the cookie, the Host header and the method, checked before
/// any page.
async fn guard(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !console.hosts.iter().any(|h| h == host) {
        return (StatusCode::FORBIDDEN, "unexpected Host header").into_response();
    }
    if request.method() != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, "the console is read-only").into_response();
    }
    if let Some(given) = query_param(request.uri(), "token") {
        if constant_time_eq(given.as_bytes(), console.token.as_bytes()) {
            let mut response = Redirect::to(request.uri().path()).into_response();
            let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", console.token);
            response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("hex is a valid header"));
            return response;
        }
        return (StatusCode::UNAUTHORIZED, "wrong token").into_response();
    }
    if !has_cookie(request.headers(), &console.token) {
        return (StatusCode::UNAUTHORIZED, Html("<p>Open the URL that <code>manifold console</code> printed.</p>")).into_response();
    }
    next.run(request).await
}

fn has_cookie(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .any(|c| c.trim().split_once('=').is_some_and(|(k, v)| k == COOKIE && constant_time_eq(v.as_bytes(), token.as_bytes())))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn home(State(console): State<Shared>) -> Redirect {
    Redirect::to(&format!("/ns/{}/connections", console.namespace))
}

/// The page around every screen; it asks the server for changes and swaps
/// `main` in place when there are some.
fn page(ns: &str, title: &str, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · Manifold" }
                style { (PreEscaped(STYLE)) }
            }
            body data-events=(format!("/ns/{ns}/events")) {
                header {
                    strong { "Manifold" }
                    span.ns { "namespace " code { (ns) } }
                    nav {
                        a href=(format!("/ns/{ns}/connections")) { "Connections" }
                        a href=(format!("/ns/{ns}/workspaces")) { "Workspaces" }
                    }
                }
                main { (body) }
                script { (PreEscaped(LIVE)) }
            }
        }
    };
    Html(markup.into_string())
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0;color:#1d2330}header{display:flex;gap:1.5em;align-items:center;\
padding:.8em 1.5em;background:#1d2330;color:#fff}header a{color:#cfe0ff;margin-right:1em;text-decoration:none}.ns code{color:#fff}\
main{padding:1em 1.5em}table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}th,td{text-align:left;padding:.4em .6em;\
border-bottom:1px solid #e3e6ee}th{font-weight:600;color:#5a6275}.ok{color:#137333}.bad{color:#b3261e}.muted{color:#6b7280}\
h2{margin-top:1.5em;font-size:1.1em}dl{display:grid;grid-template-columns:10em auto;gap:.3em 1em}dt{color:#5a6275}\
input[type=search]{padding:.4em;width:20em}.error{background:#fdecea;padding:.8em;border-radius:4px}";

/// Server-sent events say that something in the namespace changed; the
/// page fetches itself again and swaps its `main`, keeping the filter.
const LIVE: &str = "(function(){var t;var s=new EventSource(document.body.dataset.events);s.onmessage=function(){clearTimeout(t);\
t=setTimeout(function(){fetch(location.href).then(function(r){return r.text()}).then(function(h){var d=new DOMParser()\
.parseFromString(h,'text/html');var m=d.querySelector('main');if(m){document.querySelector('main').replaceWith(m)}})},300)}})();";

fn error_page(ns: &str, title: &str, error: kube::Error) -> Html<String> {
    let message = match &error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    };
    page(ns, title, html! { h1 { (title) } p.error { (message) } })
}

fn ready(list: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> Markup {
    match conditions::find(list, conditions::READY) {
        Some(c) if c.status == "True" => html! { span.ok { "Ready" } },
        Some(c) => html! { span.bad title=(c.message) { (c.reason) } },
        None => html! { span.muted { "Pending" } },
    }
}

/// A test's result, green when it passed, its message on hover.
fn outcome(t: &manifold::api::TestResult) -> Markup {
    let class = if t.result == manifold::api::TestOutcome::Passed { "ok" } else { "bad" };
    html! { span class=(class) title=(t.message) { (format!("{:?}", t.result)) } }
}

fn conditions_table(list: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> Markup {
    html! {
        h2 { "Conditions" }
        table {
            tr { th { "Type" } th { "Status" } th { "Reason" } th { "Message" } }
            @for c in list { tr { td { (c.type_) } td { (c.status) } td { (c.reason) } td { (c.message) } } }
        }
    }
}

async fn connections(State(console): State<Shared>, Path(ns): Path<String>, request: Request) -> Html<String> {
    let filter = query_param(request.uri(), "q").unwrap_or_default();
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
    let now = jiff::Timestamp::now();
    let shown: Vec<&Connection> = list.iter().filter(|c| filter.is_empty() || c.name_any().contains(&filter)).collect();
    page(
        &ns,
        "Connections",
        html! {
            h1 { "Connections" }
            form method="get" { input type="search" name="q" value=(filter) placeholder="Filter by name"; }
            table id="connections" {
                tr { th { "Name" } th { "Plugin" } th { "Schema" } th { "Test" } th { "Workspaces" } th { "Ready" } }
                @for c in &shown {
                    @let status = c.status.clone().unwrap_or_default();
                    @let used: Vec<String> = attachments.iter().filter(|a| a.spec.connection == c.name_any()).map(|a| a.spec.workspace.clone()).collect();
                    tr {
                        td { a href=(format!("/ns/{ns}/connections/{}", c.name_any())) { (c.name_any()) } }
                        td { (status.plugin.clone().unwrap_or_else(|| if c.spec.aggregator.is_some() { "aggregator".into() } else { String::new() })) }
                        td { code { (status.schema.clone().unwrap_or_default()) } }
                        td {
                            @if let Some(t) = &status.test {
                                (outcome(t))
                                " " span.muted { (super::get::age(Some(&t.tested_at), now)) " ago" }
                            } @else { span.muted { "not tested" } }
                        }
                        td { (used.join(", ")) }
                        td { (ready(&status.conditions)) }
                    }
                }
            }
            @if shown.is_empty() { p.muted { "No connections" @if !filter.is_empty() { " match " code { (filter) } } "." } }
        },
    )
}

async fn connection(State(console): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Html<String> {
    let c = match Api::<Connection>::namespaced(console.client.clone(), &ns).get(&name).await {
        Ok(c) => c,
        Err(e) => return error_page(&ns, &name, e),
    };
    let attachments: Vec<WorkspaceConnection> = Api::<WorkspaceConnection>::namespaced(console.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.into_iter().filter(|a| a.spec.connection == name).collect())
        .unwrap_or_default();
    let status = c.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    page(
        &ns,
        &name,
        html! {
            h1 { (name) }
            dl {
                dt { "Plugin" } dd { (status.plugin.clone().unwrap_or_else(|| "aggregator".into())) }
                dt { "Schema" } dd { code { (status.schema.clone().unwrap_or_default()) } }
                dt { "Ready" } dd { (ready(&status.conditions)) }
                @if let Some(secret) = &c.spec.credentials { dt { "Credentials" } dd { "Secret " code { (secret.secret_ref.name) } } }
            }
            h2 { "Workspaces" }
            table id="workspaces" {
                tr { th { "Workspace" } th { "Schema" } th { "Tables" } th { "Ready" } th { "Attachment" } }
                @for a in &attachments {
                    @let s = a.status.clone().unwrap_or_default();
                    tr {
                        td { a href=(format!("/ns/{ns}/workspaces/{}", a.spec.workspace)) { (a.spec.workspace) } }
                        td { code { (s.schema.clone().unwrap_or_default()) } }
                        td { (s.tables.map(|t| t.to_string()).unwrap_or_default()) }
                        td { (ready(&s.conditions)) }
                        td.muted { (a.name_any()) }
                    }
                }
            }
            @if attachments.is_empty() { p.muted { "Attached to no workspace." } }
            h2 { "Test" }
            @if let Some(t) = &status.test {
                dl {
                    dt { "Result" } dd { (outcome(t)) " (" (t.reason) ")" }
                    dt { "When" } dd { (super::get::age(Some(&t.tested_at), now)) " ago, " (t.duration_ms) " ms" @if let Some(w) = &t.workspace { ", in workspace " (w) } }
                    dt { "Message" } dd { (t.message) }
                }
            } @else { p.muted { "Not tested yet." } }
            @if let Some(source) = &status.source_schema {
                h2 { "Source schema" }
                p { (source.tables) " tables, changed " (super::get::age(Some(&source.changed_at), now)) " ago" }
            }
            @if !status.members.is_empty() {
                h2 { "Members" }
                table { tr { th { "Connection" } th { "State" } } @for m in &status.members { tr { td { (m.name) } td { (m.state) } } } }
            }
            (conditions_table(&status.conditions))
        },
    )
}

async fn workspaces(State(console): State<Shared>, Path(ns): Path<String>) -> Html<String> {
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
                        td { a href=(format!("/ns/{ns}/workspaces/{}", w.name_any())) { (w.name_any()) } }
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

async fn workspace(State(console): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Html<String> {
    let w = match Api::<Workspace>::namespaced(console.client.clone(), &ns).get(&name).await {
        Ok(w) => w,
        Err(e) => return error_page(&ns, &name, e),
    };
    let connections =
        Api::<Connection>::namespaced(console.client.clone(), &ns).list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    let s = w.status.clone().unwrap_or_default();
    let aggregators: Vec<&Connection> =
        connections.iter().filter(|c| c.spec.aggregator.is_some() && s.connections.iter().any(|a| a.name == c.name_any())).collect();
    page(
        &ns,
        &name,
        html! {
            h1 { (name) }
            dl {
                dt { "Database" } dd { code { (s.database.clone().unwrap_or_default()) } }
                dt { "Postgres" } dd { (s.postgres_version.clone().unwrap_or_default()) }
                dt { "Ready" } dd { (ready(&s.conditions)) }
                dt { "Search path" } dd { code { (s.search_path.clone().unwrap_or_else(|| "as the database has it".into())) } }
            }
            h2 { "Connections" }
            table id="connections" {
                tr { th { "Connection" } th { "Schema" } th { "Tables" } th { "State" } }
                @for c in &s.connections {
                    tr {
                        td { a href=(format!("/ns/{ns}/connections/{}", c.name)) { (c.name) } }
                        td { code { (c.schema) } } td { (c.tables) }
                        td { @if c.state == "Ready" { span.ok { "Ready" } } @else { span.bad { (c.state) } } }
                    }
                }
            }
            @if !s.selected.is_empty() {
                h2 { "Selected by label" }
                table { tr { th { "Connection" } th { "Attachment" } th { "State" } } @for m in &s.selected { tr { td { (m.name) } td.muted { (m.attachment) } td { (m.state) } } } }
            }
            @if !s.readers.is_empty() {
                h2 { "Readers" }
                table { tr { th { "Role" } th { "State" } th { "Message" } } @for r in &s.readers { tr { td { code { (r.name) } } td { (r.state) } td { (r.message) } } } }
            }
            @for a in &aggregators {
                h2 { "Aggregator " (a.name_any()) }
                table { tr { th { "Member" } th { "State" } } @for m in a.status.as_ref().map(|s| s.members.clone()).unwrap_or_default() { tr { td { (m.name) } td { (m.state) } } } }
            }
            (conditions_table(&s.conditions))
        },
    )
}

/// One message per change of any of the three kinds in the namespace, as
/// the user's own watches see them.
async fn events(State(console): State<Shared>, Path(ns): Path<String>) -> impl IntoResponse {
    let config = watcher::Config::default;
    let ping = |_| Ok::<Event, std::convert::Infallible>(Event::default().data("changed"));
    let changes = futures::stream::select_all([
        watcher(Api::<Connection>::namespaced(console.client.clone(), &ns), config()).default_backoff().map(|e| e.is_ok()).boxed(),
        watcher(Api::<Workspace>::namespaced(console.client.clone(), &ns), config()).default_backoff().map(|e| e.is_ok()).boxed(),
        watcher(Api::<WorkspaceConnection>::namespaced(console.client.clone(), &ns), config()).default_backoff().map(|e| e.is_ok()).boxed(),
    ])
    .filter(|ok| futures::future::ready(*ok))
    .map(ping);
    Sse::new(changes).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
