//! `kubectl manifold`: the binary installed as a kubectl plugin, driven
//! through the real kubectl (plugin discovery, completion) against the
//! real apiserver and the shared operator, and its `--dry-run=client -o
//! yaml` applied back with `kubectl apply`.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use manifold::api::SECRET_LABEL;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::attach::{World, world};
use crate::support::devenv::bin_dir;
use crate::support::world::{as_is, schema_exists};
use crate::support::{control_plane, stdout_ok, unique};

/// A directory holding `kubectl-manifold` and `kubectl_complete-manifold`,
/// both the built binary, as `hack/install-plugin` (or krew) installs them.
fn plugin_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("kubectl-plugins"));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["kubectl-manifold", "kubectl_complete-manifold"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_manifold"), dir.join(name)).unwrap();
    }
    dir
}

/// `kubectl ARGS` with the plugin on the PATH, `input` on its stdin.
fn kubectl(dir: &Path, args: &[&str], input: &str) -> Output {
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut child = Command::new(bin_dir().join("kubectl"))
        .args(args)
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn postgres_flags(w: &World) -> Vec<String> {
    [
        "--plugin",
        "postgres",
        "--set",
        "host=127.0.0.1",
        "--set",
        &format!("port={}", w.pg.port),
        "--set",
        &format!("database={}", w.src.db),
        "--set",
        "remote_schema=public",
    ]
    .map(String::from)
    .to_vec()
}

pub async fn the_plugin_verbs_work_through_kubectl() {
    let w = world("plugin").await;
    let dir = plugin_dir();
    let ns = w.t.ns.clone();
    w.workspace("ws");
    w.wait_workspace_ready("ws").await;
    let run = |args: &[&str], input: &str| {
        let mut all = vec!["manifold", "-n", ns.as_str()];
        all.extend_from_slice(args);
        kubectl(&dir, &all, input)
    };

    // create connection with its credentials from literals and an attach.
    let mut create: Vec<String> = ["create", "connection", "sales"].map(String::from).to_vec();
    create.extend(postgres_flags(&w));
    create.extend([
        "--from-literal".into(),
        format!("user={}", w.src.user),
        "--from-literal".into(),
        format!("password={}", w.src.password),
    ]);
    create.extend(["--workspace".into(), "ws".into()]);
    let args: Vec<&str> = create.iter().map(String::as_str).collect();
    let out = run(&args, "");
    assert!(out.status.success(), "create failed: {}", String::from_utf8_lossy(&out.stderr));
    let printed = text(&out);
    for line in
        ["secret/sales-credentials created", "connection.manifold.dev/sales created", "workspaceconnection.manifold.dev/ws-sales created"]
    {
        assert!(printed.contains(line), "{line} in {printed}");
    }
    assert!(!printed.contains(&w.src.password));
    let secret = Api::<Secret>::namespaced(w.t.client.clone(), &ns).get("sales-credentials").await.unwrap();
    assert_eq!(secret.metadata.labels.unwrap()[SECRET_LABEL], "true");
    assert_eq!(secret.data.unwrap()["password"].0, w.src.password.as_bytes());
    let conn = w.connections().get("sales").await.unwrap();
    assert!(!serde_json::to_string(&conn.spec).unwrap().contains(&w.src.password), "no credential in the spec");
    w.wait_ready("ws-sales").await;

    // get: a connection with its workspaces and test; a workspace with its
    // connections and search path.
    w.wait_test("sales", "the attach's proof", |_| true).await;
    let shown = stdout_ok(&run(&["get", "connection", "sales"], ""));
    assert!(shown.contains("Plugin:      postgres"), "{shown}");
    assert!(shown.contains("Ready:       True"), "{shown}");
    assert!(shown.contains("Test:        Passed"), "{shown}");
    assert!(shown.lines().any(|l| l.trim_start().starts_with("ws ") && l.contains("sales") && l.contains("True")), "{shown}");
    // The workspace's list of connections is written a moment after the
    // attachment reports (it is batched during bulk applies).
    w.wait_workspace("ws", "sales listed", |ws| ws.status.as_ref().is_some_and(|s| s.connections.iter().any(|c| c.name == "sales"))).await;
    let shown = stdout_ok(&run(&["status", "mws", "ws"], ""));
    assert!(shown.lines().any(|l| l.trim_start().starts_with("sales") && l.contains("Ready")), "{shown}");
    assert!(shown.contains("Search path:"), "{shown}");
    let listed = stdout_ok(&run(&["get", "conns"], ""));
    assert!(listed.starts_with("NAME") && listed.contains("sales"), "{listed}");
    let as_json: serde_json::Value = serde_json::from_str(&stdout_ok(&run(&["get", "conn", "sales", "-o", "json"], ""))).unwrap();
    assert_eq!(as_json["status"]["schema"], "sales");

    // test, with and without waiting.
    let tested = run(&["test", "sales"], "");
    assert_eq!(tested.status.code(), Some(0), "{}", text(&tested));
    assert!(text(&tested).contains("Passed: 2 tables"));
    let asked = run(&["test", "sales", "--wait=false"], "");
    assert!(text(&asked).contains("test requested"), "{}", text(&asked));

    // get -w follows the connection: the answer to a new test request is
    // printed again without asking.
    let mut follow = Command::new(bin_dir().join("kubectl"))
        .args(["manifold", "-n", &ns, "get", "connection", "sales", "-w"])
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .env("PATH", format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let (stdout, seen) = (follow.stdout.take().unwrap(), seen.clone());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                seen.lock().unwrap().push_str(&(line + "\n"));
            }
        })
    };
    crate::support::wait_for("get -w prints the connection", std::time::Duration::from_secs(20), || async {
        if seen.lock().unwrap().contains("Connection:") { Ok(()) } else { Err(String::new()) }
    })
    .await;
    stdout_ok(&run(&["test", "sales", "--wait=false"], ""));
    crate::support::wait_for("get -w prints the change", std::time::Duration::from_secs(30), || async {
        let text = seen.lock().unwrap().clone();
        if text.matches("Connection:").count() >= 2 { Ok(()) } else { Err(text) }
    })
    .await;
    follow.kill().unwrap();
    follow.wait().unwrap();
    reader.join().unwrap();

    // detach, attach again, each waiting for the database.
    let out = run(&["detach", "sales", "--workspace", "ws", "--wait"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!schema_exists(&w.ws().await, "sales").await, "detach --wait returns once the schema is gone");
    let out = run(&["attach", "sales", "--workspace", "ws", "--wait"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Ready: 2 tables in schema sales"), "{}", text(&out));
    assert!(schema_exists(&w.ws().await, "sales").await);
    let again = run(&["attach", "sales", "--workspace", "ws"], "");
    assert!(!again.status.success() && text(&again).contains("already exists"), "{}", text(&again));

    // Shell completion through kubectl itself: kubectl runs
    // kubectl_complete-manifold and the names come from the cluster.
    let completed = stdout_ok(&kubectl(&dir, &["__complete", "manifold", "-n", &ns, "get", "conn", ""], ""));
    assert!(completed.lines().any(|l| l == "sales"), "{completed}");
    let completed = stdout_ok(&kubectl(&dir, &["__complete", "manifold", "-n", &ns, "attach", "sales", "--workspace", ""], ""));
    assert!(completed.lines().any(|l| l == "ws"), "{completed}");

    // delete asks for the name; a wrong answer deletes nothing.
    let refused = run(&["delete", "connection", "sales"], "salse\n");
    assert!(!refused.status.success());
    assert!(text(&refused).contains("ws (workspaceconnection ws-sales)"), "it lists the workspaces: {}", text(&refused));
    assert!(w.connections().get("sales").await.is_ok());
    let out = run(&["delete", "connection", "sales", "--wait"], "sales\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(w.connections().get_opt("sales").await.unwrap().is_none());
    assert!(w.attachments().get_opt("ws-sales").await.unwrap().is_none());
    assert!(!schema_exists(&w.ws().await, "sales").await);
    std::fs::remove_dir_all(dir).ok();
}

pub async fn dry_run_yaml_applies_back_and_converges() {
    let w = world("plugin-yaml").await;
    let ns = w.t.ns.clone();
    w.workspace("ws");
    w.credentials("orders", &w.src.password);
    let manifold = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_manifold")).args(args).env("KUBECONFIG", &control_plane().kubeconfig).output().unwrap()
    };
    let mut create: Vec<String> = ["-n", &ns, "create", "connection", "orders"].map(String::from).to_vec();
    create.extend(postgres_flags(&w));
    create.extend(
        ["--credentials", "orders-creds", "--include", "orders", "--workspace", "ws", "--dry-run=client", "-o", "yaml"].map(String::from),
    );
    let args: Vec<&str> = create.iter().map(String::as_str).collect();
    let yaml = stdout_ok(&manifold(&args));
    assert!(yaml.contains("kind: Connection") && yaml.contains("kind: WorkspaceConnection"), "{yaml}");

    // A server dry run and a client dry run write nothing.
    let server: Vec<&str> = args[..args.len() - 3].iter().copied().chain(["--dry-run=server"]).collect();
    let out = manifold(&server);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("connection.manifold.dev/orders created (server dry run)"), "{}", text(&out));
    assert!(w.connections().get_opt("orders").await.unwrap().is_none(), "a dry run creates nothing");

    // Applied as a GitOps tool would, the YAML converges.
    stdout_ok(&w.t.apply(&yaml));
    let attached = w.wait_ready("ws-orders").await;
    assert_eq!(attached.status.unwrap().tables, Some(1), "--include reached the spec");

    // attach --dry-run prints the same kind of manifest.
    let yaml = stdout_ok(&manifold(&[
        "-n",
        &ns,
        "attach",
        "orders",
        "--workspace",
        "ws2",
        "--deletion-policy",
        "Orphan",
        "--dry-run=client",
        "-o",
        "yaml",
    ]));
    assert!(yaml.contains("name: ws2-orders") && yaml.contains("deletionPolicy: Orphan"), "{yaml}");
}

pub async fn plugin_errors_say_what_to_do() {
    let w = world("plugin-errors").await;
    let ns = w.t.ns.clone();
    w.workspace("ws");
    w.connection("prod", as_is);
    w.apply(&crate::support::unlabelled_secret_yaml("plain", &[("user", "u"), ("password", "p")]));
    let manifold = |kubeconfig: &PathBuf, args: &[&str]| {
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        Command::new(env!("CARGO_BIN_EXE_manifold")).args(&all).env("KUBECONFIG", kubeconfig).output().unwrap()
    };
    let admin = control_plane().kubeconfig.clone();

    let mut create: Vec<String> = ["create", "connection", "c"].map(String::from).to_vec();
    create.extend(postgres_flags(&w));
    create.extend(["--credentials".into(), "plain".into()]);
    let args: Vec<&str> = create.iter().map(String::as_str).collect();
    let out = manifold(&admin, &args);
    assert!(!out.status.success());
    assert!(text(&out).contains(&format!("not opted in: Manifold reads only Secrets labelled {SECRET_LABEL}=true")), "{}", text(&out));
    assert!(w.connections().get_opt("c").await.unwrap().is_none());

    // A tenant who may write the kinds but not attach prod: the plugin
    // names the verb and the resource, and creates nothing.
    w.apply(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: tenant }\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: { name: tenant }\nrules:\n\
         - apiGroups: [manifold.dev]\n  resources: [connections, workspaces, workspaceconnections]\n  verbs: [get, list, watch, create, delete]\n\
---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: { name: tenant }\n\
         roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: tenant }\nsubjects: [{ kind: ServiceAccount, name: tenant }]\n",
    );
    let tenant = control_plane().token_kubeconfig(&ns, "tenant");
    let out = manifold(&tenant, &["attach", "prod", "--workspace", "ws"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("may not attach Connection prod") && said.contains("verb attach on connections.manifold.dev"), "{said}");
    assert!(w.attachments().get_opt("ws-prod").await.unwrap().is_none());

    // --as impersonates as kubectl's flag does: the admin acting as the
    // tenant is refused the same way.
    let out = manifold(&admin, &["--as", &format!("system:serviceaccount:{ns}:tenant"), "attach", "prod", "--workspace", "ws"]);
    assert!(text(&out).contains("may not attach Connection prod"), "{}", text(&out));

    // Not there: said plainly.
    let out = manifold(&admin, &["attach", "nope", "--workspace", "ws"]);
    assert!(text(&out).contains("Connection nope not found in namespace"), "{}", text(&out));
    let out = manifold(&admin, &["detach", "prod", "--workspace", "ws"]);
    assert!(text(&out).contains("Connection prod is not attached to workspace ws"), "{}", text(&out));
}
