//! `manifold console`: the web console, a local server in the way of
//! `kubectl proxy` and Headlamp's desktop app. It acts with the user's own
//! kubeconfig identity, never the operator's: what the user may not do,
//! the console cannot do, and the buttons the user's RBAC forbids are
//! disabled (asked of the apiserver with SelfSubjectAccessReviews).
//!
//! Screens: Connections, New Connection (a form generated from the CRD's
//! schema, Test Connection before Create through a draft, then Add to
//! Workspace or Skip), a connection's page (Workspaces, Remove, Test,
//! Delete confirmed by typing its name), Workspaces and a workspace's page
//! (Add Connection, Remove). Objects applied by Flux, Argo CD or Helm, and
//! every object of a namespace annotated `manifold.dev/gitops-only`, get
//! the YAML to commit instead of a write. Pages are rendered on the server
//! with `maud`, whose templates are Rust checked at compile time and escape
//! every value by default; a watch of the namespace is streamed to the page
//! as server-sent events and the page swaps in its new content. No asset
//! is fetched at run time.
//!
//! Safety (`gate.rs`): it binds 127.0.0.1 by default. The URL it prints
//! carries a token that is exchanged once: the first visit with it gets an
//! HttpOnly, SameSite=Strict session cookie (as Jupyter does), whose value
//! is a random value of its own, and is redirected to the same path without
//! the token. Unlike Jupyter's, the token is refused after that, with a
//! page that says to go on in the browser that opened it or to restart the
//! console: a URL left in shell or browser history is worthless. Every
//! request needs the cookie and a Host header naming the address it listens
//! on (no DNS rebinding); every write is a POST that must come from the
//! console's own origin and carry the page's anti-forgery token. Tokens
//! come from `getrandom` and are compared with `subtle`; cookies, queries
//! and forms are read by the `cookie` crate and axum's `Query` and `Form`.
//! Secret values are never read, and the credentials a form sends go to the
//! apiserver only.

mod form;
mod gate;
mod new;
mod view;
mod write;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use clap::Args;
use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use manifold::api::{Connection, Workspace, WorkspaceConnection};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use self::gate::Gate;
use super::{KubeFlags, Result};

/// The namespace annotation that makes every console action produce YAML.
pub const GITOPS_ONLY_ANNOTATION: &str = "manifold.dev/gitops-only";

#[derive(Args, Debug)]
pub struct ConsoleArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub address: SocketAddr,
    /// Append every response body the console serves to this file (event
    /// streams excepted): for audits and the tests that scan it.
    #[arg(long, hide = true)]
    pub record_responses: Option<PathBuf>,
    /// The ConfigMap (namespace/name) that lists the wrappers the cluster
    /// admin allowed for the `fdw` plugin; the chart publishes it as
    /// `<release namespace>/<fullname>-wrappers`.
    #[arg(long, env = "MANIFOLD_WRAPPERS_CONFIGMAP", default_value = "manifold-system/manifold-wrappers")]
    pub wrappers_configmap: String,
}

pub struct Console {
    client: Client,
    namespace: String,
    /// Who may use the console; it holds the anti-forgery token the forms
    /// carry.
    gate: Arc<Gate>,
    record: Option<std::sync::Mutex<std::fs::File>>,
    /// Where the allowed wrappers are published: (namespace, name).
    wrappers: (String, String),
}

type Shared = Arc<Console>;

/// The fields of a POSTed form (whose anti-forgery token the guard
/// checked), read with axum's `Form`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Fields(pub form::Values);

impl Fields {
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or_default()
    }
}

pub async fn run(flags: &KubeFlags, args: ConsoleArgs) -> Result<()> {
    if !args.address.ip().is_loopback() {
        eprintln!(
            "warning: the console listens on {}, which is not loopback: anyone who can reach it and has the URL acts as you",
            args.address
        );
    }
    let wrappers = match args.wrappers_configmap.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => (ns.to_owned(), name.to_owned()),
        _ => return Err(format!("--wrappers-configmap {:?}: want namespace/name", args.wrappers_configmap).into()),
    };
    let (client, namespace) = flags.client().await?;
    let listener = tokio::net::TcpListener::bind(args.address).await?;
    let address = listener.local_addr()?;
    let gate = Arc::new(Gate::new(address)?);
    let record = match &args.record_responses {
        Some(path) => Some(std::sync::Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)),
        None => None,
    };
    let console = Arc::new(Console { client, namespace, gate, record, wrappers });
    println!("Manifold console: {}", console.gate.url());
    let app = Router::new()
        .route("/", get(home))
        .route("/ns/{ns}/connections", get(view::connections))
        .route("/ns/{ns}/connections/{name}", get(view::connection))
        .route("/ns/{ns}/connections/{name}/add", get(write::add_page))
        .route("/ns/{ns}/connections/{name}/attach", post(write::attach_connection))
        .route("/ns/{ns}/connections/{name}/test", post(write::test))
        .route("/ns/{ns}/connections/{name}/delete", post(write::delete_connection))
        .route("/ns/{ns}/attachments/{name}/remove", post(write::remove))
        .route("/ns/{ns}/new", get(new::plugins))
        .route("/ns/{ns}/new/{plugin}", get(new::new_form).post(write::test_draft))
        .route("/ns/{ns}/new/{plugin}/create", post(write::create))
        .route("/ns/{ns}/new/{plugin}/discard", post(write::discard))
        .route("/ns/{ns}/workspaces", get(view::workspaces))
        .route("/ns/{ns}/workspaces/{name}", get(view::workspace))
        .route("/ns/{ns}/workspaces/{name}/attach", post(write::attach_workspace))
        .route("/ns/{ns}/events", get(events))
        .layer(middleware::from_fn_with_state(console.gate.clone(), gate::guard))
        .layer(middleware::from_fn_with_state(console.clone(), record_bodies))
        .with_state(console);
    axum::serve(listener, app).await?;
    Ok(())
}

/// With `--record-responses`, every body served (event streams excepted)
/// goes to the file as well.
async fn record_bodies(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let Some(file) = &console.record else { return response };
    let streaming = response.headers().get(header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    {
        use std::io::Write;
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = file.write_all(&bytes).and_then(|()| file.write_all(b"\n"));
    }
    Response::from_parts(parts, Body::from(bytes))
}

async fn home(State(console): State<Shared>) -> Redirect {
    Redirect::to(&format!("/ns/{}/connections", console.namespace))
}

/// The page around every screen; it asks the server for changes and swaps
/// `main` in place when there are some (unless the user is typing in it).
pub fn page(ns: &str, title: &str, body: Markup) -> Html<String> {
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

/// A form that POSTs to `action` with the anti-forgery token.
pub fn post_form(console: &Console, action: &str, id: &str, inner: Markup) -> Markup {
    html! {
        form method="post" action=(action) id=(id) {
            input type="hidden" name="csrf" value=(console.gate.csrf());
            (inner)
        }
    }
}

/// A button the user's RBAC may forbid: disabled, saying why.
pub fn button(id: &str, label: &str, allowed: bool, why: &str) -> Markup {
    html! {
        @if allowed { button type="submit" id=(id) { (label) } }
        @else { button type="submit" id=(id) disabled title=(why) { (label) } " " span.muted.why { (why) } }
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0;color:#1d2330}header{display:flex;gap:1.5em;align-items:center;\
padding:.8em 1.5em;background:#1d2330;color:#fff}header a{color:#cfe0ff;margin-right:1em;text-decoration:none}.ns code{color:#fff}\
main{padding:1em 1.5em;max-width:70em}table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}th,td{text-align:left;\
padding:.4em .6em;border-bottom:1px solid #e3e6ee;vertical-align:top}th{font-weight:600;color:#5a6275}.ok{color:#137333}\
.bad{color:#b3261e}.muted{color:#6b7280}h2{margin-top:1.5em;font-size:1.1em}dl{display:grid;grid-template-columns:10em auto;\
gap:.3em 1em}dt{color:#5a6275}input[type=search]{padding:.4em;width:20em}.error{background:#fdecea;padding:.8em;border-radius:4px}\
.notice{background:#e8f0fe;padding:.8em;border-radius:4px}button{padding:.35em .9em;border:1px solid #1a56db;background:#1a56db;\
color:#fff;border-radius:4px;cursor:pointer}button[disabled]{background:#c7cbd4;border-color:#c7cbd4;cursor:not-allowed}\
button.secondary{background:#fff;color:#1a56db}button.danger{background:#b3261e;border-color:#b3261e}.bar{display:flex;gap:.6em;\
align-items:center;margin:.8em 0}.field{margin:.7em 0}.field label{display:block;font-weight:600}.field small{display:block;\
color:#6b7280;max-width:50em}.field input,.field textarea,.field select{padding:.35em;width:28em;max-width:100%;font:inherit}\
.field textarea{height:4.5em}.plugins a{display:block;padding:.8em;border:1px solid #e3e6ee;border-radius:6px;margin:.5em 0;\
text-decoration:none;color:inherit;max-width:40em}.plugins a:hover{border-color:#1a56db}pre{background:#f5f6f8;padding:1em;\
overflow:auto}details.menu{display:inline-block}fieldset{border:1px solid #e3e6ee;border-radius:6px;margin:1em 0;max-width:46em}\
.tag{font-size:.8em;background:#fff4e5;color:#8a4b00;border-radius:3px;padding:.1em .4em}\
.field label.choice{font-weight:400}.field input[type=radio]{width:auto;margin-right:.4em}summary{cursor:pointer;color:#1a56db}";

/// Server-sent events say that something in the namespace changed; the
/// page fetches itself again and swaps its `main`, unless the user has
/// touched a field of it (a form being filled in is never replaced) or has
/// a row's menu open.
///
/// A browser keeps at most six HTTP/1.1 connections to one host, and each
/// open stream holds one: the stream is closed when the page is left
/// (`pagehide`, including into the back-forward cache) or hidden (another
/// tab), and opened again, with a refresh, when the page is shown. Without
/// this, a few pages or tabs use up the connections and the next page
/// waits for one.
const LIVE: &str = "(function(){var t,s=null,dirty=false;function touch(e){if(e.target.closest&&e.target.closest('main')){dirty=true}}\
document.addEventListener('input',touch,true);document.addEventListener('change',touch,true);\
function busy(){return dirty||document.querySelector('main details.menu[open]')}function refresh(){if(busy()){return}fetch(location.href).then(function(r){return r.text()}).then(function(h){if(busy()){return}\
var d=new DOMParser().parseFromString(h,'text/html');var m=d.querySelector('main');if(m){document.querySelector('main').replaceWith(m)}})}\
function open(){if(s){return}s=new EventSource(document.body.dataset.events);s.onmessage=function(){clearTimeout(t);t=setTimeout(refresh,300)}}\
function close(){if(s){s.close();s=null}}\
document.addEventListener('visibilitychange',function(){if(document.hidden){close()}else{open();refresh()}});\
addEventListener('pagehide',close);addEventListener('pageshow',function(e){if(e.persisted){open();refresh()}});\
if(!document.hidden){open()}})();";

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
