//! Tenants hold only what RBAC gives them. A tenant who may write Manifold
//! objects but not read Secrets cannot have the operator use a Secret for
//! it (the admission policy in admission/), and the operator itself uses
//! only Secrets that were opted in (the label), so a Secret nobody opted in
//! is never read, whoever names it. A source that lies in its error text
//! cannot write into status either.

use std::time::Duration;

use manifold::api::{Workspace, conditions};

use crate::attach::{World, world};
use crate::support::world::as_is;
use crate::support::{FakeSource, control_plane, secret_marker, secret_yaml, stdout_ok, unlabelled_secret_yaml, wait_for};

/// A ServiceAccount that may write the three kinds, and nothing else.
fn tenant_rbac(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{ name: {name} }}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{ name: {name} }}\nrules:\n\
         - apiGroups: [manifold.dev]\n  resources: [connections, workspaces, workspaceconnections]\n  \
           verbs: [get, list, watch, create, update, patch, delete]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{ name: {name} }}\n\
         roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name} }}\n\
         subjects: [{{ kind: ServiceAccount, name: {name} }}]\n"
    )
}

/// `get` on one Secret, as a GitOps controller's ServiceAccount has it for
/// the Secrets it manages.
fn secret_reader_rbac(sa: &str, secret: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{ name: read-{secret} }}\nrules:\n\
         - apiGroups: [\"\"]\n  resources: [secrets]\n  resourceNames: [{secret}]\n  verbs: [get]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{ name: read-{secret} }}\n\
         roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-{secret} }}\n\
         subjects: [{{ kind: ServiceAccount, name: {sa} }}]\n"
    )
}

fn connection_to(name: &str, port: u16, secret: &str) -> String {
    format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: {name} }}\nspec:\n\
         \x20 plugin:\n    postgres: {{ host: 127.0.0.1, port: {port}, database: anything }}\n\
         \x20 credentials: {{ secretRef: {{ name: {secret} }} }}\n"
    )
}

fn workspace_with(name: &str, secret: &str) -> String {
    format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: Workspace\nmetadata: {{ name: {name} }}\n\
         spec: {{ database: {{ secretRef: {{ name: {secret} }} }} }}\n"
    )
}

fn ws_reason(ws: &Workspace) -> Option<String> {
    ws.status.as_ref().and_then(|s| conditions::find(&s.conditions, conditions::READY)).map(|c| c.reason.clone())
}

/// The attack of the issue, with a real ServiceAccount token: the
/// namespace's database-admin Secret (opted in for Manifold by an admin)
/// named in a Connection that points at the tenant's own server, and in a
/// Workspace. Refused at admission, with a message that names the Secret and
/// never its value; nothing reaches the tenant's server. The same
/// ServiceAccount with `get` on that Secret succeeds.
pub async fn a_tenant_cannot_name_a_secret_it_cannot_read() {
    let cp = control_plane();
    let w: World = world("tenant").await;
    w.workspace("ws");
    w.wait_workspace_ready("ws").await;
    let trap = FakeSource::start("password authentication failed for user \"postgres\"").await;
    let admin_password = format!("admin-{}", secret_marker());
    w.apply(&secret_yaml("db-admin", &[("user", "postgres"), ("password", &admin_password), ("uri", &w.pg.admin_uri(&w.ws_db))]));
    w.connection("legit", as_is);
    w.apply(&tenant_rbac("tenant"));
    let kubeconfig = cp.token_kubeconfig(&w.t.ns, "tenant");
    let as_tenant = |yaml: &str| cp.kubectl_stdin(&["--kubeconfig", kubeconfig.to_str().unwrap(), "-n", &w.t.ns, "apply", "-f", "-"], yaml);
    let refused = |what: &str, yaml: &str, secret: &str| {
        let out = as_tenant(yaml);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{what} was admitted");
        let user = format!("system:serviceaccount:{}:tenant", w.t.ns);
        assert!(stderr.contains(&format!("may not get Secret {secret}")) && stderr.contains(&user), "{what}: {stderr}");
        assert!(!stderr.contains(&admin_password), "{what}: the message shows the Secret's value");
    };

    refused("a Connection to the tenant's server", &connection_to("steal", trap.port, "db-admin"), "db-admin");
    refused("a Workspace on the admin's URI", &workspace_with("stolen", "db-admin"), "db-admin");
    // Pointing someone else's Connection somewhere else is a new use of its
    // Secret, and checked like one.
    refused("a new host for an existing Connection", &connection_to("legit", trap.port, "legit-creds"), "legit-creds");
    // What names no Secret is the tenant's to do.
    stdout_ok(&as_tenant(
        "apiVersion: manifold.dev/v1alpha1\nkind: WorkspaceConnection\nmetadata: { name: ws-legit }\nspec: { workspace: ws, connection: legit }\n",
    ));
    w.wait_ready("ws-legit").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(trap.received(), "", "nothing was sent to the tenant's server");

    // Given `get` on that one Secret, the same ServiceAccount may use it.
    w.apply(&secret_reader_rbac("tenant", "db-admin"));
    wait_for("the tenant's Connection admitted", Duration::from_secs(20), || async {
        let out = as_tenant(&connection_to("steal", trap.port, "db-admin"));
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    })
    .await;
    // Only now does the operator use it, for someone who could read it.
    w.wait_test("steal", "run against the tenant's server", |t| t.reason == "AuthenticationFailed").await;
    assert!(trap.received().contains(&admin_password), "the password went where its reader pointed it");
}

/// Defense in depth, for clusters without the policy and objects from
/// before it: a Secret nobody opted in is never read and never sent, and
/// the reason says what to do. Labelling it is the opt-in, and takes effect
/// at once. A source's error text, whatever it holds, reaches status as one
/// bounded line.
pub async fn a_secret_nobody_opted_in_is_never_read() {
    let w = world("optin").await;
    w.workspace("ws");
    w.wait_workspace_ready("ws").await;
    let flood = format!("password authentication failed \u{1b}[31mred\r\nforged: Ready\u{7}{}", "x".repeat(5000));
    let trap = FakeSource::start(&flood).await;
    let password = format!("plain-{}", secret_marker());
    w.apply(&unlabelled_secret_yaml("plain", &[("user", "someone"), ("password", &password)]));
    w.apply(&connection_to("plain", trap.port, "plain"));
    w.attach("ws-plain", "ws", "plain", as_is);
    let conn = w.wait_test_reason("plain", "SecretNotPermitted").await;
    let test = conn.status.as_ref().unwrap().test.clone().unwrap();
    assert!(test.message.contains("manifold.dev/credentials=true"), "{}", test.message);
    let ready = conditions::find(&conn.status.as_ref().unwrap().conditions, conditions::READY).unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "SecretNotPermitted"));
    w.wait_reason("ws-plain", "SecretNotPermitted").await;

    // A Workspace on a Secret nobody opted in.
    w.apply(&unlabelled_secret_yaml("plain-db", &[("uri", &w.pg.owner_uri(&w.ws_db))]));
    w.apply(&workspace_with("plain-ws", "plain-db"));
    let api = w.t.api::<Workspace>();
    wait_for("Workspace plain-ws SecretNotPermitted", Duration::from_secs(30), || async {
        let ws = api.get("plain-ws").await.map_err(|e| e.to_string())?;
        if ws_reason(&ws).as_deref() == Some("SecretNotPermitted") { Ok(()) } else { Err(format!("{:?}", ws.status)) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(trap.received(), "", "nothing was sent anywhere");

    // Opting it in is one label, and takes effect without another change.
    stdout_ok(&w.t.kubectl(&["label", "secret", "plain", "manifold.dev/credentials=true"]));
    let conn = w.wait_test_reason("plain", "AuthenticationFailed").await;
    assert!(trap.received().contains("someone"), "the source was reached once the Secret was opted in");
    let message = conn.status.unwrap().test.unwrap().message;
    assert!(message.contains("red forged: Ready x"), "the source's text is kept, on one line: {message}");
    assert!(!message.chars().any(|c| c.is_control()), "no control characters: {message:?}");
    assert!(message.chars().count() < 700, "bounded: {} characters", message.chars().count());
}
