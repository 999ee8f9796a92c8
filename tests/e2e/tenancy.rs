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
pub(crate) fn tenant_rbac(name: &str) -> String {
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
pub(crate) fn secret_reader_rbac(sa: &str, secret: &str) -> String {
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

pub(crate) fn workspace_with(name: &str, secret: &str) -> String {
    format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: Workspace\nmetadata: {{ name: {name} }}\n\
         spec: {{ database: {{ secretRef: {{ name: {secret} }} }} }}\n"
    )
}

pub(crate) fn ws_reason(ws: &Workspace) -> Option<String> {
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
    // Attaching a Connection sends its credentials to the workspace
    // database: that takes `attach` on it.
    let out = as_tenant(&attachment_yaml("ws-legit", "ws", "legit"));
    assert!(!out.status.success(), "attached without the attach permission");
    w.apply(&attacher_rbac("tenant"));
    wait_for("the attach permission in effect", Duration::from_secs(20), || async {
        let out = as_tenant(&attachment_yaml("ws-legit-probe", "ws", "legit"));
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    })
    .await;
    stdout_ok(&w.t.kubectl(&["delete", "wsconn", "ws-legit-probe"]));
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

/// `attach` on one Connection (or on all), as the chart's attacher
/// ClusterRole grants it, in a Role of the namespace.
pub(crate) fn attacher_rbac(sa: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{ name: attach-{sa} }}\nrules:\n\
         - apiGroups: [manifold.dev]\n  resources: [connections]\n  verbs: [attach]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{ name: attach-{sa} }}\n\
         roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: attach-{sa} }}\n\
         subjects: [{{ kind: ServiceAccount, name: {sa} }}]\n"
    )
}

pub(crate) fn attachment_yaml(name: &str, workspace: &str, connection: &str) -> String {
    format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: WorkspaceConnection\nmetadata: {{ name: {name} }}\n\
         spec: {{ workspace: {workspace}, connection: {connection} }}\n"
    )
}

/// Everything of `prod`'s that the tenant's own database could hold: user
/// mappings (their options are the password), and the password anywhere
/// in its server log, which logs every statement of that database.
pub(crate) async fn tenant_holds_nothing(own: &crate::support::Postgres, db: &str, password: &str) {
    let admin = own.connect(db).await;
    let mappings = admin.query_one("SELECT count(*) FROM pg_user_mappings", &[]).await.unwrap().get::<_, i64>(0);
    assert_eq!(mappings, 0, "a user mapping reached the tenant's database");
    let servers = admin.query_one("SELECT count(*) FROM pg_foreign_server", &[]).await.unwrap().get::<_, i64>(0);
    assert_eq!(servers, 0, "a server reached the tenant's database");
    let log = std::fs::read_to_string(own.data_dir().parent().unwrap().join("postgres.log")).unwrap_or_default();
    assert!(!log.contains(password), "prod's password is in the tenant's server log");
    assert!(!log.contains("USER MAPPING"), "a user mapping was attempted in the tenant's database");
}

/// The deputy across objects, tried as a tenant with a real token who may
/// write Manifold objects and read only its own Secret, against a database
/// it owns (every statement there logged): it cannot attach someone else's
/// Connection to a Workspace on its database, re-point a Workspace, steer
/// a test there by naming a Workspace, or have attachments follow a
/// Workspace re-created on its database. With `attach`, it may attach.
pub async fn a_tenant_cannot_carry_another_connections_credentials() {
    let cp = control_plane();
    let w: World = world("deputy").await;
    let own = crate::support::Postgres::start();
    let tenant_db = own.database("tenant").await;
    own.connect("postgres").await.batch_execute(&format!("ALTER DATABASE {tenant_db} SET log_statement = 'all'")).await.unwrap();
    let prod_password = format!("prod-{}", secret_marker());
    w.workspace("ws");
    w.credentials("prod", &prod_password);
    // prod's credentials are the source's, under a password of its own.
    w.pg.connect("postgres").await.batch_execute(&format!("ALTER ROLE \"{}\" PASSWORD '{prod_password}'", w.src.user)).await.unwrap();
    w.connection_only("prod", as_is);
    w.attach("ws-prod", "ws", "prod", as_is);
    w.wait_ready("ws-prod").await;
    w.wait_workspace_ready("ws").await;

    w.apply(&tenant_rbac("tenant"));
    w.apply(&secret_yaml("t-db", &[("uri", &own.owner_uri(&tenant_db))]));
    w.apply(&secret_reader_rbac("tenant", "t-db"));
    let kubeconfig = cp.token_kubeconfig(&w.t.ns, "tenant");
    let as_tenant = |args: &[&str], yaml: &str| {
        let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap(), "-n", w.t.ns.as_str()];
        all.extend_from_slice(args);
        cp.kubectl_stdin(&all, yaml)
    };
    let apply = |yaml: &str| as_tenant(&["apply", "-f", "-"], yaml);

    // A Workspace on its own database is the tenant's to make.
    stdout_ok(&apply(&workspace_with("t", "t-db")));
    // Attaching prod there is not.
    let out = apply(&attachment_yaml("t-prod", "t", "prod"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the tenant attached prod to its own database");
    assert!(stderr.contains("may not attach Connection prod") && stderr.contains("attach on connections.manifold.dev"), "{stderr}");

    // Re-pointing the Workspace prod is attached to: refused by the CRD.
    let out = as_tenant(&["patch", "mws", "ws", "--type", "merge", "-p", r#"{"spec":{"database":{"secretRef":{"name":"t-db"}}}}"#], "");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && stderr.contains("database is immutable"), "{stderr}");

    // A test steered by a name: a Workspace "a0" (first by name) on the
    // tenant's database, and a test request, which the tenant may set.
    stdout_ok(&apply(&workspace_with("a0", "t-db")));
    let api = w.t.api::<Workspace>();
    wait_for("Workspace a0 Ready", Duration::from_secs(30), || async {
        let ws = api.get("a0").await.map_err(|e| e.to_string())?;
        if ws_reason(&ws).as_deref() == Some("Reachable") { Ok(()) } else { Err(format!("{:?}", ws.status)) }
    })
    .await;
    stdout_ok(&as_tenant(&["annotate", "--overwrite", "conn", "prod", "manifold.dev/test-request=steer"], ""));
    let conn = w.wait_test("prod", "the requested test", |t| t.request.as_deref() == Some("steer")).await;
    let test = conn.status.unwrap().test.unwrap();
    assert_eq!(test.workspace.as_deref(), Some("ws"), "the test ran where prod is attached: {test:?}");
    assert_eq!(test.reason, "Passed", "{test:?}");

    // The Workspace prod is attached to, deleted and made again on the
    // tenant's database: the attachment does not follow.
    stdout_ok(&as_tenant(&["delete", "mws", "ws", "--wait=true", "--timeout=60s"], ""));
    stdout_ok(&apply(&workspace_with("ws", "t-db")));
    let att = w.wait_reason("ws-prod", "WorkspaceNotFound").await;
    let ready = conditions::find(&att.status.as_ref().unwrap().conditions, conditions::READY).unwrap().message.clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let att = w.wait_reason("ws-prod", "WorkspaceNotFound").await;
    let still = conditions::find(&att.status.as_ref().unwrap().conditions, conditions::READY).unwrap().message.clone();
    assert!(still.contains("created again"), "{ready} / {still}");
    tenant_holds_nothing(&own, &tenant_db, &prod_password).await;

    // With `attach`, the same ServiceAccount may attach prod, to its own
    // database too: that is what the permission means.
    w.apply(&attacher_rbac("tenant"));
    wait_for("the attachment admitted", Duration::from_secs(20), || async {
        let out = apply(&attachment_yaml("t-prod", "t", "prod"));
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    })
    .await;
    w.wait_ready("t-prod").await;
}

/// The Secret of a Workspace changed to name another database (by whoever
/// may write it): the Workspace stays the database it was, says so, and
/// no credentials follow; restoring the Secret heals it.
pub async fn a_workspace_database_does_not_move_under_its_attachments() {
    let w: World = world("pinned").await;
    let own = crate::support::Postgres::start();
    let other = own.database("other").await;
    own.connect("postgres").await.batch_execute(&format!("ALTER DATABASE {other} SET log_statement = 'all'")).await.unwrap();
    w.workspace("ws");
    w.connection("src", as_is);
    w.attach("ws-src", "ws", "src", as_is);
    w.wait_ready("ws-src").await;
    let api = w.t.api::<Workspace>();
    let ws = wait_for("the database pinned", Duration::from_secs(30), || async {
        let ws = api.get("ws").await.map_err(|e| e.to_string())?;
        if ws.status.as_ref().is_some_and(|s| s.database.is_some()) { Ok(ws) } else { Err(format!("{:?}", ws.status)) }
    })
    .await;
    let pinned = ws.status.unwrap().database.unwrap();
    assert!(pinned.ends_with(&format!("/{}", w.ws_db)), "{pinned}");

    w.apply(&secret_yaml("ws-db", &[("uri", &own.owner_uri(&other))]));
    wait_for("the Workspace refuses the other database", Duration::from_secs(30), || async {
        let ws = api.get("ws").await.map_err(|e| e.to_string())?;
        let ready = ws.status.as_ref().and_then(|s| conditions::find(&s.conditions, conditions::READY)).cloned();
        match ready {
            Some(c) if c.reason == "InvalidSpec" && c.message.contains("is fixed") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // A credential change reaches the attachments, which must not carry it
    // to the new database either.
    w.credentials("src", &w.src.password);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let admin = own.connect(&other).await;
    assert_eq!(admin.query_one("SELECT count(*) FROM pg_user_mappings", &[]).await.unwrap().get::<_, i64>(0), 0);
    let log = std::fs::read_to_string(own.data_dir().parent().unwrap().join("postgres.log")).unwrap_or_default();
    assert!(!log.contains("USER MAPPING"), "nothing was attempted in the other database");

    // Restored, it is the same database again.
    w.workspace("ws");
    w.wait_workspace_ready("ws").await;
    w.wait_ready("ws-src").await;
}

/// A GitOps controller's ServiceAccount, as Flux or Argo CD run it: it may
/// write the three kinds and the Secrets it manages, read those Secrets,
/// and attach (the chart's attacher role). It applies a whole repository
/// in one call with the attachments first, as a sync in any order does,
/// and everything converges.
pub async fn a_gitops_service_account_with_attach_converges_in_any_order() {
    let cp = control_plane();
    let w: World = world("gitops-sa").await;
    w.apply(&tenant_rbac("flux"));
    w.apply(&attacher_rbac("flux"));
    w.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: { name: flux-secrets }\nrules:\n\
         - apiGroups: [\"\"]\n  resources: [secrets]\n  resourceNames: [repo-db, repo-creds]\n  verbs: [get, patch, update]\n\
         - apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [create]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: { name: flux-secrets }\n\
         roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: flux-secrets }\n\
         subjects: [{ kind: ServiceAccount, name: flux }]\n",
    );
    let kubeconfig = cp.token_kubeconfig(&w.t.ns, "flux");
    // The repository, attachments first: nothing they need exists yet.
    let mut repo = String::new();
    for c in ["orders", "customers"] {
        repo.push_str(&format!("---\n{}", attachment_yaml(&format!("repo-{c}"), "repo", c)));
    }
    for c in ["orders", "customers"] {
        repo.push_str(&format!(
            "---\napiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: {c} }}\nspec:\n\
             \x20 plugin:\n    postgres: {{ host: 127.0.0.1, port: {}, database: {} }}\n\
             \x20 credentials: {{ secretRef: {{ name: repo-creds }} }}\n\
             \x20 tables: {{ include: [{c}] }}\n",
            w.pg.port, w.src.db
        ));
    }
    repo.push_str(&format!("---\n{}", workspace_with("repo", "repo-db")));
    repo.push_str(&format!("---\n{}", secret_yaml("repo-db", &[("uri", &w.pg.owner_uri(&w.ws_db))])));
    repo.push_str(&format!("---\n{}", secret_yaml("repo-creds", &[("user", &w.src.user), ("password", &w.src.password)])));
    let args = ["--kubeconfig", kubeconfig.to_str().unwrap(), "-n", w.t.ns.as_str(), "apply", "--server-side", "-f", "-"];
    stdout_ok(&cp.kubectl_stdin(&args, &repo));
    w.wait_ready("repo-orders").await;
    w.wait_ready("repo-customers").await;
    let ws = w.ws().await;
    assert_eq!(crate::support::world::count(&ws, "SELECT count(*) FROM customers.customers").await, 2);
}
