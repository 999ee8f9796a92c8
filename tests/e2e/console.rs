//! `manifold console`: served on 127.0.0.1 behind a token exchanged once
//! for a session cookie, acting as the kubeconfig's user. The first test drives it over HTTP (curl); the
//! second drives every flow of the seed in headless Chromium through
//! WebDriver (Debian's chromium and chromium-driver, installed by
//! hack/setup), saves a screenshot of each screen under
//! target/console-screenshots/, and scans every response the console
//! served for the test's Secret values.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::attach::world;
use crate::support::world::as_is;
use crate::support::{control_plane, stdout_ok};

struct Console {
    child: Child,
    base: String,
    token: String,
    /// The session cookie as `name=value`, once the token is exchanged.
    session: OnceLock<String>,
}

impl Console {
    /// The session cookie's name: it carries the port.
    fn cookie_name(&self) -> String {
        format!("manifold_console_{}", self.base.rsplit(':').next().unwrap())
    }

    /// The session cookie, as `name=value`: the one a browser got, or else
    /// the URL's token exchanged for it now, as a browser's first visit does.
    fn session(&self) -> &str {
        self.session.get_or_init(|| {
            let out = Command::new("curl")
                .args(["-s", "-i", "--max-time", "5", &format!("{}/?token={}", self.base, self.token)])
                .output()
                .unwrap();
            set_cookie(&String::from_utf8_lossy(&out.stdout))
        })
    }
}

/// The `name=value` of a response's Set-Cookie.
fn set_cookie(head: &str) -> String {
    let line = head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie")));
    let (_, value) = line.unwrap_or_else(|| panic!("no Set-Cookie in {head}"));
    value.trim().split(';').next().unwrap().to_string()
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn console(kubeconfig: &Path, ns: &str) -> Console {
    console_with(kubeconfig, ns, &[])
}

fn console_with(kubeconfig: &Path, ns: &str, extra: &[&str]) -> Console {
    let mut child = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["console", "-n", ns])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("Manifold console: ").unwrap_or_else(|| panic!("no URL in {line:?}")).to_string();
    let (base, token) = url.split_once("/?token=").unwrap();
    Console { child, base: base.to_string(), token: token.to_string(), session: OnceLock::new() }
}

/// `curl` with the session cookie; returns (status line and headers, body).
fn curl(c: &Console, path: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["-s", "-i", "--max-time", "5", "-b", c.session()];
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

    // Without the session cookie, nothing. A wrong token gets nothing
    // either, and spends nothing.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/ns/{ns}/connections", c.base)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    let out =
        Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/?token=wrong", c.base)]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    // The URL's token is exchanged once for the session cookie, a value of
    // its own, and the browser is sent to the same path without the token.
    let url = format!("{}/ns/{ns}/connections?token={}", c.base, c.token);
    let out = Command::new("curl").args(["-s", "-i", &url]).output().unwrap();
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    assert!(head.contains("HttpOnly") && head.contains("SameSite=Strict"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("location: /ns/{ns}/connections\r\n")), "{head}");
    let session = set_cookie(&head);
    assert!(session.starts_with(&format!("{}=", c.cookie_name())) && !session.contains(&c.token), "{session}");
    c.session.set(session).unwrap();
    // Then the URL, from the shell's history, opens nothing.
    let out = Command::new("curl").args(["-s", "-i", &url]).output().unwrap();
    let again = String::from_utf8_lossy(&out.stdout);
    assert!(
        again.starts_with("HTTP/1.1 403") && again.contains("restart") && !again.to_ascii_lowercase().contains("set-cookie"),
        "{again}"
    );

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

    // GET and form POSTs only, only the Host it listens on.
    let (head, _) = curl(&c, &format!("/ns/{ns}/connections"), &["-X", "PUT"]);
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

/// chromedriver on a free port and a headless Chromium session through it.
struct Browser {
    driver: Child,
    client: Option<fantoccini::Client>,
    profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver's browser processes are in its process group: kill
        // them all, or each run leaves a headless Chromium behind.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.driver.id())]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver, installed by hack/setup)");
        let profile = std::env::temp_dir().join(crate::support::unique("chromium-profile"));
        let mut browser = Browser { driver, client: None, profile };
        let options = serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,1700",
                format!("--user-data-dir={}", browser.profile.display()),
            ],
        });
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let mut builder = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            builder.capabilities(caps.clone());
            match builder.connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(client) => {
                    browser.client = Some(client);
                    return browser;
                }
                Err(e) if std::time::Instant::now() > deadline => panic!("no WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }

    fn c(&self) -> &fantoccini::Client {
        self.client.as_ref().unwrap()
    }

    async fn goto(&self, url: &str) {
        self.c().goto(url).await.unwrap();
    }

    async fn el(&self, id: &str) -> fantoccini::elements::Element {
        let css = format!("[id=\"{id}\"]");
        self.c()
            .wait()
            .at_most(std::time::Duration::from_secs(20))
            .for_element(fantoccini::Locator::Css(&css))
            .await
            .unwrap_or_else(|e| panic!("no element #{id}: {e}"))
    }

    /// Types into a field. A live update may replace the page's content
    /// between finding a field and typing (until a field is touched), so
    /// a stale element is found again.
    async fn fill(&self, id: &str, text: &str) {
        for attempt in 0.. {
            let el = self.el(id).await;
            match async {
                el.clear().await?;
                el.send_keys(text).await
            }
            .await
            {
                Ok(()) => return,
                Err(e) if attempt >= 5 => panic!("typing into #{id}: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
            }
        }
    }

    async fn click(&self, id: &str) {
        for attempt in 0.. {
            match self.el(id).await.click().await {
                Ok(()) => return,
                Err(e) if attempt >= 5 => panic!("clicking #{id}: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
            }
        }
    }

    async fn select(&self, id: &str, value: &str) {
        self.el(id).await.select_by_value(value).await.unwrap();
    }

    async fn enabled(&self, id: &str) -> bool {
        self.el(id).await.is_enabled().await.unwrap()
    }

    async fn body(&self) -> String {
        self.c().source().await.unwrap()
    }

    /// Waits until the page (as it is now, swapped live or not) contains
    /// every one of `parts`.
    async fn wait_for(&self, what: &str, parts: &[&str]) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let body = self.body().await;
            if parts.iter().all(|p| body.contains(p)) {
                return body;
            }
            if std::time::Instant::now() > deadline {
                panic!("{what}: the page never showed {parts:?}:\n{body}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), self.c().screenshot().await.unwrap()).unwrap();
    }
}

/// New Connection for the test's source, as a person fills it in.
async fn fill_postgres(b: &Browser, w: &crate::support::world::World, name: &str, password: &str) {
    b.fill("name", name).await;
    b.fill("plugin.host", "127.0.0.1").await;
    b.fill("plugin.port", &w.pg.port.to_string()).await;
    b.fill("plugin.database", &w.src.db).await;
    b.fill("plugin.remoteSchema", "public").await;
    b.fill("cred.value.user", &w.src.user).await;
    b.fill("cred.value.password", password).await;
}

pub async fn every_flow_of_the_seed_works_in_a_browser() {
    let w = world("console-ui").await;
    let ns = w.t.ns.clone();
    w.workspace("ws");
    w.wait_workspace_ready("ws").await;
    // A connection that Flux applied: its changes give YAML.
    w.connection("flux-conn", |c| {
        c.metadata.labels = Some([("kustomize.toolkit.fluxcd.io/name".to_string(), "apps".to_string())].into());
    });
    // The chart publishes the operator's wrappers for the console, readable
    // by every authenticated user: the test operator's own list.
    let chart = crate::support::repo_root().join("charts/manifold");
    let published = stdout_ok(&control_plane().helm(&[
        "template",
        "mf",
        &chart.to_string_lossy(),
        "-n",
        &ns,
        "--show-only",
        "templates/wrappers.yaml",
        "--set-json",
        &format!("wrappers={}", crate::support::MYSQL_FDW),
    ]));
    stdout_ok(&control_plane().kubectl_stdin(&["apply", "--server-side", "-n", &ns, "-f", "-"], &published));
    let wrappers = format!("{ns}/mf-manifold-wrappers");
    let record = std::env::temp_dir().join(crate::support::unique("console-responses"));
    let c = console_with(
        &control_plane().kubeconfig,
        &ns,
        &["--record-responses", record.to_str().unwrap(), "--wrappers-configmap", &wrappers],
    );
    let b = Browser::start().await;
    let base = c.base.clone();
    let wrong = "wrong-password-for-the-console-test";

    // The Connections screen, then New Connection: the plugin list and the
    // form generated from the CRD's schema.
    b.goto(&format!("{base}/?token={}", c.token)).await;
    b.wait_for("the Connections screen", &["Connections", "flux-conn"]).await;
    b.screenshot("connections").await;
    // The URL again, as from the shell's history: refused, with a link that
    // goes on in the session this browser has.
    b.goto(&format!("{base}/?token={}", c.token)).await;
    b.wait_for("the spent token's page", &["used already", "restart"]).await;
    b.screenshot("token-used").await;
    b.click("go-on").await;
    b.wait_for("the Connections screen again", &["Connections", "flux-conn"]).await;
    b.click("new-connection").await;
    b.wait_for("the plugin list", &["plugin-postgres", "plugin-steampipe", "plugin-fdw-mysql_fdw"]).await;
    b.screenshot("plugins").await;
    // An allowed wrapper's form comes filled with its extension and its
    // user mapping options.
    b.click("plugin-fdw-mysql_fdw").await;
    b.wait_for("the mysql_fdw form", &["Allowed: <code>host, port</code>"]).await;
    assert_eq!(b.el("plugin.extension").await.prop("value").await.unwrap().as_deref(), Some("mysql_fdw"));
    assert_eq!(b.el("cred.key.0").await.prop("value").await.unwrap().as_deref(), Some("username"));
    b.screenshot("new-mysql-connection").await;
    b.goto(&format!("{base}/ns/{ns}/new")).await;
    b.click("plugin-postgres").await;
    b.wait_for("the postgres form", &["remoteSchema", "TCP port of the remote server"]).await;
    b.screenshot("new-connection").await;

    // Test Connection with a wrong password: a draft, tested for real in
    // the admin's test database, and attached nowhere.
    fill_postgres(&b, &w, "shop", wrong).await;
    b.click("test-button").await;
    b.wait_for("the failed test", &["Failed", "AuthenticationFailed"]).await;
    b.screenshot("test-failed").await;
    let draft = stdout_ok(&w.t.kubectl(&["get", "conn", "shop", "-o", "jsonpath={.metadata.annotations}"]));
    assert!(draft.contains("manifold.dev/draft"), "{draft}");
    w.apply("apiVersion: manifold.dev/v1alpha1\nkind: WorkspaceConnection\nmetadata: { name: early }\nspec: { workspace: ws, connection: shop }\n");
    let early = w.wait_reason("early", "ConnectionDraft").await;
    assert!(early.status.unwrap().schema.is_none_or(|s| s.is_empty()), "a draft is attached nowhere");
    stdout_ok(&w.t.kubectl(&["delete", "wsconn", "early", "--wait=true"]));

    // The right password: the same draft passes; Create; Add to Workspace.
    b.fill("cred.value.password", &w.src.password).await;
    b.click("test-button").await;
    b.wait_for("the passed test", &["Passed", "tables"]).await;
    b.screenshot("test-passed").await;
    let tested = w.connections().get("shop").await.unwrap().status.unwrap().test.unwrap();
    assert!(tested.workspace.is_none(), "tested in the admin's test database");
    b.click("create-button").await;
    b.select("workspace", "ws").await;
    b.screenshot("add-to-workspace").await;
    b.click("add-to-workspace-button").await;
    w.wait_ready("ws-shop").await;
    b.wait_for("the connection's page, live", &["id=\"row-ws-shop\" data-state=\"Ready\"", "Settings"]).await;
    // The tests the draft had (failed, then passed) are its history, and
    // the source's tables are listed with when each changed.
    b.wait_for(
        "the test history and the source's tables",
        &["id=\"test-history\"", "AuthenticationFailed", "<code>orders</code>", "<code>customers</code>"],
    )
    .await;
    b.screenshot("connection").await;
    let annotations = stdout_ok(&w.t.kubectl(&["get", "conn", "shop", "-o", "jsonpath={.metadata.annotations}"]));
    assert!(!annotations.contains("manifold.dev/draft"), "{annotations}");

    // Create and Skip; then Add Connection from the workspace's side.
    b.goto(&format!("{base}/ns/{ns}/new/postgres")).await;
    fill_postgres(&b, &w, "shop2", &w.src.password).await;
    b.click("test-button").await;
    b.wait_for("shop2's test", &["Passed"]).await;
    b.click("create-button").await;
    b.click("skip").await;
    b.wait_for("shop2's page", &["Attached to no workspace."]).await;
    assert!(w.attachments().get_opt("ws-shop2").await.unwrap().is_none());
    b.goto(&format!("{base}/ns/{ns}/workspaces")).await;
    b.wait_for("the Workspaces screen", &["/workspaces/ws"]).await;
    b.screenshot("workspaces").await;
    b.goto(&format!("{base}/ns/{ns}/workspaces/ws")).await;
    b.select("connection", "shop2").await;
    b.click("add-connection-button").await;
    w.wait_ready("ws-shop2").await;
    b.wait_for("the workspace's page", &["id=\"row-ws-shop2\" data-state=\"Ready\"", "id=\"row-ws-shop\" data-state=\"Ready\""]).await;
    b.screenshot("workspace").await;

    // Remove from the workspace's side, then from the connection's side,
    // each from its row's menu.
    b.click("menu-ws-shop2").await;
    b.click("remove-button-ws-shop2").await;
    w.wait_gone("ws-shop2").await;
    b.goto(&format!("{base}/ns/{ns}/connections/shop")).await;
    b.click("menu-ws-shop").await;
    b.click("remove-button-ws-shop").await;
    w.wait_gone("ws-shop").await;

    // Delete with the typed confirmation: a wrong name deletes nothing.
    b.goto(&format!("{base}/ns/{ns}/connections/shop2")).await;
    b.fill("confirm", "shop").await;
    b.click("delete-button").await;
    b.wait_for("the refusal", &["Not deleted: type the connection"]).await;
    assert!(w.connections().get_opt("shop2").await.unwrap().is_some());
    b.fill("confirm", "shop2").await;
    b.screenshot("delete").await;
    b.click("delete-button").await;
    b.wait_for("the list without shop2", &["New Connection"]).await;
    crate::support::wait_for("shop2 deleted", std::time::Duration::from_secs(30), || async {
        match w.connections().get_opt("shop2").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|c| c.map(|c| c.metadata.deletion_timestamp)))),
        }
    })
    .await;

    // A Flux-managed connection: Add to Workspace gives YAML, writes nothing.
    b.goto(&format!("{base}/ns/{ns}/connections/flux-conn")).await;
    b.select("workspace", "ws").await;
    b.click("add-to-workspace-button").await;
    let yaml = b.wait_for("the YAML to commit", &["applied by Flux", "kind: WorkspaceConnection", "connection: flux-conn"]).await;
    assert!(yaml.contains("name: ws-flux-conn"), "{yaml}");
    b.screenshot("gitops-yaml").await;
    assert!(w.attachments().get_opt("ws-flux-conn").await.unwrap().is_none(), "nothing written");

    // A GitOps-only namespace: New Connection tests a draft, then gives the
    // Connection's YAML and leaves no Connection behind.
    stdout_ok(&control_plane().kubectl(&["annotate", "ns", &ns, "manifold.dev/gitops-only=true"]));
    b.goto(&format!("{base}/ns/{ns}/new/postgres")).await;
    fill_postgres(&b, &w, "in-git", &w.src.password).await;
    b.click("test-button").await;
    b.wait_for("in-git's test", &["Passed"]).await;
    b.click("create-button").await;
    let yaml = b.wait_for("the Connection's YAML", &["GitOps-only", "kind: Connection", "name: in-git"]).await;
    assert!(!yaml.contains("manifold.dev/draft") && !yaml.contains(&w.src.password), "{yaml}");
    crate::support::wait_for("the draft deleted", std::time::Duration::from_secs(30), || async {
        match w.connections().get_opt("in-git").await {
            Ok(None) => Ok(()),
            other => Err(format!("{:?}", other.map(|c| c.is_some()))),
        }
    })
    .await;
    stdout_ok(&control_plane().kubectl(&["annotate", "ns", &ns, "manifold.dev/gitops-only-"]));

    // A user whose RBAC allows reading only: its buttons are disabled.
    w.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: viewer }\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: { name: viewer }\nrules:\n- apiGroups: [manifold.dev]\n  resources: [connections, workspaces, workspaceconnections]\n  \
         verbs: [get, list, watch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: { name: viewer }\n\
         roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: viewer }\nsubjects: [{ kind: ServiceAccount, name: viewer }]\n",
    );
    let viewer = console_with(&control_plane().token_kubeconfig(&ns, "viewer"), &ns, &["--record-responses", record.to_str().unwrap()]);
    b.goto(&format!("{}/?token={}", viewer.base, viewer.token)).await;
    b.wait_for("the viewer's list", &["shop", "flux-conn"]).await;
    assert!(!b.enabled("new-connection").await, "New Connection is disabled");
    // The published wrappers are readable by any authenticated user.
    let viewer_console = console_with(&control_plane().token_kubeconfig(&ns, "viewer"), &ns, &["--wrappers-configmap", &wrappers]);
    let (_, list) = curl(&viewer_console, &format!("/ns/{ns}/new"), &[]);
    assert!(list.contains("plugin-fdw-mysql_fdw"), "{list}");
    drop(viewer_console);
    b.goto(&format!("{}/ns/{ns}/connections/shop", viewer.base)).await;
    assert!(!b.enabled("add-to-workspace-button").await && !b.enabled("delete-button").await && !b.enabled("test-button").await);
    b.screenshot("viewer").await;
    // The admin's console offers the same buttons.
    b.goto(&format!("{base}/ns/{ns}/connections/shop")).await;
    assert!(b.enabled("add-to-workspace-button").await && b.enabled("test-button").await);

    // A cross-site request is refused, even with the cookie and the
    // page's token; the same request from the console's origin goes through.
    // curl goes on with the browser's session: the URL's token is spent.
    let cookie = b.c().get_named_cookie(&c.cookie_name()).await.unwrap();
    c.session.set(format!("{}={}", cookie.name(), cookie.value())).unwrap();
    let page = b.body().await;
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
    let path = format!("/ns/{ns}/connections/shop/test");
    let origin = format!("Origin: {base}");
    let (head, _) = curl(&c, &path, &["-X", "POST", "-H", "Origin: http://evil.example", "--data", &format!("csrf={csrf}")]);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (head, _) = curl(&c, &path, &["-X", "POST", "-H", &origin, "--data", "csrf=forged"]);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (head, _) = curl(&c, &path, &["-X", "POST", "--data", &format!("csrf={csrf}")]);
    assert!(head.starts_with("HTTP/1.1 403"), "no Origin and no Sec-Fetch-Site: {head}");
    let (head, _) = curl(&c, &path, &["-X", "POST", "-H", &origin, "--data", &format!("csrf={csrf}")]);
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");

    // No Secret value in anything the two consoles served.
    drop(b);
    drop(viewer);
    drop(c);
    let served = std::fs::read_to_string(&record).unwrap();
    assert!(served.contains("New Connection") && served.contains("Passed"), "the record holds the pages");
    for secret in [w.src.password.as_str(), wrong] {
        assert!(!served.contains(secret), "a Secret value in a response");
    }
    let _ = std::fs::remove_file(&record);
}
