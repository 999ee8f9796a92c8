//! Who may use the console, checked before any handler runs: the person who
//! started it, in the browser that first opened the URL it printed.
//!
//! - The URL carries a token that is good for one exchange. The first visit
//!   with it gets the session cookie (HttpOnly, SameSite=Strict) and a
//!   redirect to the same path without the token. After that the token is
//!   refused, so a URL left in shell history, a terminal's scrollback or the
//!   browser's history opens nothing. A second browser needs a restarted
//!   console, which prints a new URL.
//! - The session cookie's value is a random value of its own, never the
//!   URL's token.
//! - Every request needs the session cookie and a Host header naming the
//!   address the console listens on (no DNS rebinding).
//! - Only GET and form POSTs are served. A POST must come from the
//!   console's own origin and carry the page's anti-forgery token.
//!
//! Each token is 32 bytes from the operating system (`getrandom`), encoded
//! as base64url, and is compared in constant time (`subtle`). Cookies are
//! read and written with the `cookie` crate. Queries and forms are decoded
//! by axum's `Query` and `Form`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, body};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// The largest form a POST may send. New Connection's form, the largest,
/// is a few kilobytes.
const FORM_LIMIT: usize = 256 * 1024;

/// 32 random bytes, as base64url: safe in a URL, a cookie and a form.
struct Token(String);

impl Token {
    fn new() -> Result<Token, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Token(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Whether `given` is this token. The time taken does not depend on how
    /// much of `given` is right.
    fn matches(&self, given: &str) -> bool {
        self.0.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

/// The console's credentials and the addresses it answers to.
pub struct Gate {
    /// The Host headers a request may carry.
    hosts: Vec<String>,
    /// The session cookie's name. It carries the port: browsers share
    /// cookies between the ports of one host, and two consoles (two users,
    /// two clusters) must not log each other out.
    cookie: String,
    /// The URL's token.
    token: Token,
    /// Set by the one exchange of `token` for the session.
    exchanged: AtomicBool,
    /// The session cookie's value.
    session: Token,
    /// The anti-forgery token every form carries.
    csrf: Token,
}

impl Gate {
    /// A gate for a console listening on `address`, with fresh tokens.
    pub fn new(address: SocketAddr) -> Result<Gate, getrandom::Error> {
        Ok(Gate {
            hosts: vec![address.to_string(), format!("localhost:{}", address.port())],
            cookie: format!("manifold_console_{}", address.port()),
            token: Token::new()?,
            exchanged: AtomicBool::new(false),
            session: Token::new()?,
            csrf: Token::new()?,
        })
    }

    /// The URL to print, with the token.
    pub fn url(&self) -> String {
        format!("http://{}/?token={}", self.hosts[0], self.token.0)
    }

    /// The anti-forgery token, for the page's forms.
    pub fn csrf(&self) -> &str {
        &self.csrf.0
    }

    /// The session cookie for the URL's token, once; then a refusal.
    fn exchange(&self, given: &str, path: &str) -> Response {
        if !self.token.matches(given) {
            return (StatusCode::UNAUTHORIZED, "wrong token").into_response();
        }
        if self.exchanged.swap(true, Ordering::SeqCst) {
            let page = html! {
                meta charset="utf-8";
                title { "Link used · Manifold" }
                p { "This link of " code { "manifold console" } " has been used already: it opens one browser session, once." }
                p {
                    "Go on in the browser that opened it (" a href=(path) id="go-on" { "open the console" } "), or restart "
                    code { "manifold console" } " for a new link."
                }
            };
            return (StatusCode::FORBIDDEN, Html(page.into_string())).into_response();
        }
        let cookie = Cookie::build((self.cookie.as_str(), self.session.0.as_str())).http_only(true).same_site(SameSite::Strict).path("/");
        let mut response = Redirect::to(path).into_response();
        let value = HeaderValue::from_str(&cookie.to_string()).expect("a cookie of base64url is a valid header");
        response.headers_mut().insert(header::SET_COOKIE, value);
        response
    }

    /// Whether the request carries the session cookie.
    fn has_session(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .any(|c| c.name() == self.cookie && self.session.matches(c.value()))
    }
}

/// The query of the URL the console printed.
#[derive(Deserialize)]
struct Login {
    token: Option<String>,
}

/// The one field of a POSTed form that the guard reads.
#[derive(Deserialize)]
struct AntiForgery {
    #[serde(default)]
    csrf: String,
}

/// A cross-site write: a POST whose Origin is not the console's own, or
/// that has no Origin and no `Sec-Fetch-Site: same-origin` (browsers send
/// one of them with every form).
fn cross_site(headers: &HeaderMap, hosts: &[String]) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => !hosts.iter().any(|h| origin == format!("http://{h}")),
        None => headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) != Some("same-origin"),
    }
}

/// The Host header, the token or the session cookie, and for a write its
/// origin and anti-forgery token, checked before any handler.
pub async fn guard(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !gate.hosts.iter().any(|h| h == host) {
        return (StatusCode::FORBIDDEN, "unexpected Host header").into_response();
    }
    let write = match *request.method() {
        Method::GET => false,
        Method::POST => true,
        _ => return (StatusCode::METHOD_NOT_ALLOWED, "the console serves GET and form POSTs only").into_response(),
    };
    if !write {
        match Query::<Login>::try_from_uri(request.uri()) {
            Ok(Query(Login { token: Some(given) })) => return gate.exchange(&given, request.uri().path()),
            Ok(_) => {}
            Err(rejection) => return rejection.into_response(),
        }
    }
    if !gate.has_session(request.headers()) {
        let page =
            "<p>Open the URL that <code>manifold console</code> printed. It works once: for another browser, restart the console.</p>";
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }
    if !write {
        return next.run(request).await;
    }
    if cross_site(request.headers(), &gate.hosts) {
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    // The handler reads the form again, with its own `Form`: the body is
    // read here once and handed on.
    let (parts, body) = request.into_parts();
    let Ok(bytes) = body::to_bytes(body, FORM_LIMIT).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
    };
    let checked = Form::<AntiForgery>::from_request(Request::from_parts(parts.clone(), Body::from(bytes.clone())), &()).await;
    match checked {
        Ok(Form(form)) if gate.csrf.matches(&form.csrf) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(_) => {
            (StatusCode::FORBIDDEN, "cross-site request refused: the form's token is missing or wrong; reload the page").into_response()
        }
        Err(rejection) => rejection.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::Router;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::super::Fields;
    use super::*;

    const HOST: &str = "127.0.0.1:8080";

    /// A console's gate in front of a page, and of a form that answers with
    /// the fields its handler got.
    fn console() -> (Arc<Gate>, Router) {
        let gate = Arc::new(Gate::new(HOST.parse().unwrap()).unwrap());
        let app = Router::new()
            .route("/ns/team/connections", get(|| async { "the connections" }))
            .route("/form", post(|Form(fields): Form<Fields>| async move { serde_json::to_string(&fields.0).unwrap() }))
            .layer(axum::middleware::from_fn_with_state(gate.clone(), guard));
        (gate, app)
    }

    async fn send(app: &Router, request: axum::http::request::Builder, body: &str) -> (StatusCode, HeaderMap, String) {
        let request = request.header(header::HOST, HOST).body(Body::from(body.to_string())).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn visit(uri: &str) -> axum::http::request::Builder {
        Request::get(uri)
    }

    /// The session cookie the URL's token is exchanged for, as `name=value`.
    async fn log_in(gate: &Gate, app: &Router) -> String {
        let (status, headers, _) = send(app, visit(&format!("/ns/team/connections?token={}", gate.token.0)), "").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let set = headers[header::SET_COOKIE].to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    }

    /// A form POST with the session cookie, from nowhere in particular.
    fn posted(cookie: &str) -> axum::http::request::Builder {
        Request::post("/form").header(header::COOKIE, cookie).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
    }

    /// A form POST from the console's own page.
    fn from_the_page(cookie: &str) -> axum::http::request::Builder {
        posted(cookie).header(header::ORIGIN, format!("http://{HOST}"))
    }

    #[tokio::test]
    async fn the_urls_token_opens_one_session_once() {
        let (gate, app) = console();
        let url = format!("/ns/team/connections?token={}", gate.token.0);
        let (status, headers, _) = send(&app, visit(&url), "").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/ns/team/connections", "the same path, without the token");
        let set = Cookie::parse(headers[header::SET_COOKIE].to_str().unwrap().to_string()).unwrap();
        assert_eq!(set.name(), "manifold_console_8080");
        assert_eq!((set.http_only(), set.same_site(), set.path()), (Some(true), Some(SameSite::Strict), Some("/")));
        assert_ne!(set.value(), gate.token.0, "the session is not the URL's token");
        assert_eq!(set.value().len(), 43, "32 bytes as base64url");

        let cookie = format!("{}={}", set.name(), set.value());
        let (status, _, body) = send(&app, visit("/ns/team/connections").header(header::COOKIE, &cookie), "").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "the connections"));

        // The URL again, from the shell's history: refused, with what to do.
        let (status, headers, body) = send(&app, visit(&url), "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(headers.get(header::SET_COOKIE).is_none());
        assert!(body.contains("used already") && body.contains("restart"), "{body}");
        // The token itself is no cookie either.
        let (status, _, _) =
            send(&app, visit("/ns/team/connections").header(header::COOKIE, format!("manifold_console_8080={}", gate.token.0)), "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // The session goes on.
        let (status, _, _) = send(&app, visit("/ns/team/connections").header(header::COOKIE, &cookie), "").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_wrong_token_or_cookie_is_refused() {
        let (gate, app) = console();
        let (status, headers, _) = send(&app, visit("/ns/team/connections?token=wrong"), "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.get(header::SET_COOKIE).is_none());
        let session = format!("manifold_console_8080={}", gate.session.0);
        let wrong = [
            None,
            Some("manifold_console_8080=wrong".to_string()),
            Some(format!("manifold_console_8080={}", &gate.session.0[..42])),
            // Another console's cookie, on another port of the same host.
            Some(format!("manifold_console_9090={}", gate.session.0)),
        ];
        for cookie in wrong {
            let request = match &cookie {
                Some(c) => visit("/ns/team/connections").header(header::COOKIE, c),
                None => visit("/ns/team/connections"),
            };
            let (status, _, body) = send(&app, request, "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{cookie:?}");
            assert!(body.contains("Open the URL"), "{body}");
        }
        // A wrong token spends nothing: the right one still opens a session,
        // among the page's other cookies.
        let cookie = log_in(&gate, &app).await;
        assert_eq!(cookie, session);
        let (status, _, _) =
            send(&app, visit("/ns/team/connections").header(header::COOKIE, format!("theme=dark; {cookie}; lang=en")), "").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_wrong_anti_forgery_token_is_refused() {
        let (gate, app) = console();
        let cookie = log_in(&gate, &app).await;
        for body in ["name=shop".to_string(), "csrf=forged&name=shop".into(), format!("csrf={}&name=shop", &gate.csrf.0[1..])] {
            let (status, _, answer) = send(&app, from_the_page(&cookie), &body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert!(answer.contains("the form's token is missing or wrong"), "{answer}");
        }
        let (status, _, _) = send(&app, from_the_page(&cookie), &format!("csrf={}&name=shop", gate.csrf.0)).await;
        assert_eq!(status, StatusCode::OK);
        // The page's token without the session cookie is not enough.
        let (status, _, _) = send(&app, from_the_page("manifold_console_8080=wrong"), &format!("csrf={}", gate.csrf.0)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_cross_site_post_is_refused() {
        let (gate, app) = console();
        let cookie = log_in(&gate, &app).await;
        let form = format!("csrf={}", gate.csrf.0);
        let from = |origin: &str| posted(&cookie).header(header::ORIGIN, origin);
        let (status, _, body) = send(&app, from("http://evil.example"), &form).await;
        assert_eq!((status, body.as_str()), (StatusCode::FORBIDDEN, "cross-site request refused"));
        let (status, _, _) = send(&app, from("null"), &form).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // No Origin: the browser's Sec-Fetch-Site decides.
        let bare = || posted(&cookie);
        let (status, _, _) = send(&app, bare(), &form).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = send(&app, bare().header("sec-fetch-site", "cross-site"), &form).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = send(&app, bare().header("sec-fetch-site", "same-origin"), &form).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn only_its_own_host_and_get_or_post() {
        let (gate, app) = console();
        let cookie = log_in(&gate, &app).await;
        let request = Request::get("/ns/team/connections").header(header::COOKIE, &cookie).header(header::HOST, "attacker.example");
        let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let (status, _, _) = send(&app, Request::put("/ns/team/connections").header(header::COOKIE, &cookie), "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn forms_decode() {
        let (gate, app) = console();
        let cookie = log_in(&gate, &app).await;
        let body = format!("csrf={}&name=a+b&pw=%26%3D%25+%2B&empty=&flag&plugin.host=caf%C3%A9&cred%2Evalue%2Euser=r", gate.csrf.0);
        let (status, _, answer) = send(&app, from_the_page(&cookie), &body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let fields: BTreeMap<String, String> = serde_json::from_str(&answer).unwrap();
        assert_eq!(fields["name"], "a b");
        assert_eq!(fields["pw"], "&=% +");
        assert_eq!(fields["empty"], "");
        assert_eq!(fields["flag"], "");
        assert_eq!(fields["plugin.host"], "café");
        assert_eq!(fields["cred.value.user"], "r");
        assert_eq!(fields["csrf"], gate.csrf.0, "the handler gets the whole form");
    }

    #[test]
    fn a_write_from_another_origin_is_cross_site() {
        let hosts = vec!["127.0.0.1:8080".to_string()];
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(!cross_site(&headers(&[("origin", "http://127.0.0.1:8080")]), &hosts));
        assert!(cross_site(&headers(&[("origin", "http://evil.example")]), &hosts));
        assert!(cross_site(&headers(&[("origin", "null")]), &hosts));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")]), &hosts));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")]), &hosts));
        assert!(cross_site(&headers(&[]), &hosts));
    }
}
