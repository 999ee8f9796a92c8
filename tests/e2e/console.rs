//! `manifold console`, the read-only first slice: the Connections and
//! Workspaces screens and a connection's and a workspace's page, served on
//! 127.0.0.1 behind a one-time token, acting as the kubeconfig's user.
//! Driven over HTTP here (curl); screenshots are taken by hand for now.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::attach::world;
use crate::support::world::as_is;
use crate::support::{control_plane, stdout_ok};

struct Console {
    child: Child,
    base: String,
    token: String,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn console(kubeconfig: &Path, ns: &str) -> Console {
    let mut child = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["console", "-n", ns])
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("Manifold console: ").unwrap_or_else(|| panic!("no URL in {line:?}")).to_string();
    let (base, token) = url.split_once("/?token=").unwrap();
    Console { child, base: base.to_string(), token: token.to_string() }
}

/// `curl` with the session cookie; returns (status line and headers, body).
fn curl(c: &Console, path: &str, extra: &[&str]) -> (String, String) {
    let cookie = format!("manifold_console={}", c.token);
    let mut args = vec!["-s", "-i", "--max-time", "5", "-b", &cookie];
    args.extend_from_slice(extra);
    let url = format!("{}{path}", c.base);
    args.push(&url);
    let out = Command::new("curl").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) => (head.to_string(), body.to_string()),
        None => (text, String::new()),
    }
}

pub async fn the_console_shows_connections_as_the_user_sees_them() {
    let w = world("console").await;
    let ns = w.t.ns.clone();
    w.workspace_with("ws", |ws| ws.spec.readers = vec!["<b>not-a-role</b>".into()]);
    w.connection("sales", as_is);
    w.connection("orders", as_is);
    w.attach("ws-sales", "ws", "sales", as_is);
    w.wait_ready("ws-sales").await;
    w.wait_test("sales", "the attach's proof", |_| true).await;
    w.wait_workspace("ws", "readers and connections listed", |ws| {
        ws.status.as_ref().is_some_and(|s| !s.readers.is_empty() && s.connections.iter().any(|c| c.name == "sales"))
    })
    .await;
    let c = console(&control_plane().kubeconfig, &ns);

    // Without the token's cookie, nothing; the token sets it once.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/ns/{ns}/connections", c.base)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    let out = Command::new("curl").args(["-s", "-i", &format!("{}/?token={}", c.base, c.token)]).output().unwrap();
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.contains("HttpOnly") && head.contains("SameSite=Strict"), "{head}");
    let out =
        Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/?token=wrong", c.base)]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");

    // The Connections screen: name, plugin, schema, test, workspaces.
    let (head, body) = curl(&c, &format!("/ns/{ns}/connections"), &[]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for part in ["Connections", "sales", "orders", "postgres", "Passed", "ws"] {
        assert!(body.contains(part), "{part} in the Connections screen");
    }
    let (_, filtered) = curl(&c, &format!("/ns/{ns}/connections?q=ord"), &[]);
    assert!(filtered.contains("/connections/orders") && !filtered.contains("/connections/sales"), "the filter");

    // A connection's page and a workspace's page.
    let (_, page) = curl(&c, &format!("/ns/{ns}/connections/sales"), &[]);
    assert!(page.contains("Workspaces") && page.contains("/workspaces/ws") && page.contains("ws-sales"), "{page}");
    let (_, page) = curl(&c, &format!("/ns/{ns}/workspaces/ws"), &[]);
    assert!(page.contains("/connections/sales") && page.contains("RoleNotFound"), "{page}");
    // Every value is text: a role name that is markup is escaped.
    assert!(page.contains("&lt;b&gt;not-a-role&lt;/b&gt;") && !page.contains("<b>not-a-role"), "escaped");

    // Live: a watch streamed as server-sent events.
    let (head, events) = curl(&c, &format!("/ns/{ns}/events"), &["-N", "--max-time", "2"]);
    assert!(head.contains("text/event-stream"), "{head}");
    assert!(events.contains("data: changed"), "{events}");

    // Only GET, only the Host it listens on.
    let (head, _) = curl(&c, &format!("/ns/{ns}/connections"), &["-X", "POST"]);
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    let (head, _) = curl(&c, &format!("/ns/{ns}/connections"), &["-H", "Host: attacker.example"]);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    // No Secret value in any page.
    for path in ["connections", "connections/sales", "workspaces", "workspaces/ws"] {
        let (_, body) = curl(&c, &format!("/ns/{ns}/{path}"), &[]);
        assert!(!body.contains(&w.src.password), "a password in {path}");
    }

    // The user's own identity: a ServiceAccount that may not list
    // Connections sees the apiserver's refusal, not the operator's view.
    w.apply("apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: nobody }\n");
    let nobody = control_plane().token_kubeconfig(&ns, "nobody");
    let c = console(&nobody, &ns);
    let (_, body) = curl(&c, &format!("/ns/{ns}/connections"), &[]);
    assert!(body.contains("forbidden") && body.contains("nobody") && !body.contains("/connections/sales"), "{body}");
    stdout_ok(&w.t.kubectl(&["get", "conn", "sales"]));
}
