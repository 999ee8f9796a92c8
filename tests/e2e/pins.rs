//! Credentials stay with the operator: each path by which a Connection's
//! password could once reach a place its owner never sent it, tried as an
//! attacker would. A test follows the attachment's pin, not a name; a
//! database proves who it is, whatever its address says; a type a database
//! user made never runs as the operator; a label that can join a selector
//! is attaching; and the workspace's login is Manifold's alone.

use std::time::Duration;

use manifold::api::{Workspace, conditions};

use crate::attach::{World, world};
use crate::support::world::{as_is, count, include, schema_exists};
use crate::support::{Postgres, Proxy, control_plane, secret_marker, secret_yaml, stdout_ok, unique, wait_for};
use crate::tenancy::{attacher_rbac, tenant_holds_nothing, tenant_rbac, workspace_with, ws_reason};

const WAIT: Duration = Duration::from_secs(60);

fn condition(ws: &Workspace, type_: &str) -> Option<(String, String, String)> {
    let c = conditions::find(&ws.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_ws(w: &World, name: &str, what: &str, check: impl Fn(&Workspace) -> bool) -> Workspace {
    let api = w.t.api::<Workspace>();
    wait_for(&format!("Workspace {name}: {what}"), WAIT, || async {
        let ws = api.get(name).await.map_err(|e| e.to_string())?;
        if check(&ws) { Ok(ws) } else { Err(format!("{:?}", ws.status)) }
    })
    .await
}

/// A Workspace that a Connection is attached to, deleted and made again
/// under the same name on a database the attacker owns, then a test
/// requested: the test goes where the attachment's pin says (nowhere of
/// the new Workspace's), and the attacker's database holds nothing of the
/// Connection's.
pub async fn a_test_follows_the_attachment_to_the_workspace_it_first_saw() {
    let w = world("pin-test").await;
    let own = Postgres::start();
    let tenant_db = own.database("tenant").await;
    own.connect("postgres").await.batch_execute(&format!("ALTER DATABASE {tenant_db} SET log_statement = 'all'")).await.unwrap();
    let password = format!("prod-{}", secret_marker());
    w.pg.connect("postgres").await.batch_execute(&format!("ALTER ROLE \"{}\" PASSWORD '{password}'", w.src.user)).await.unwrap();
    w.workspace("ws");
    w.credentials("prod", &password);
    w.connection_only("prod", as_is);
    w.attach("ws-prod", "ws", "prod", as_is);
    w.wait_ready("ws-prod").await;
    // One that never becomes Ready is pinned too, from its first report.
    w.credentials("bad", &format!("wrong-{}", secret_marker()));
    w.connection_only("bad", as_is);
    w.attach("ws-bad", "ws", "bad", as_is);
    let bad = w.wait_reason("ws-bad", "AuthenticationFailed").await;
    let uid = wait_ws(&w, "ws", "its uid", |_| true).await.metadata.uid;
    assert_eq!(bad.status.unwrap().workspace_uid, uid, "a failed attachment records the Workspace it saw");

    stdout_ok(&w.t.kubectl(&["delete", "mws", "ws", "--wait=true", "--timeout=60s"]));
    w.apply(&secret_yaml("t-db", &[("uri", &own.owner_uri(&tenant_db))]));
    w.apply(&workspace_with("ws", "t-db"));
    wait_ws(&w, "ws", "the new one Ready", |ws| ws_reason(ws).as_deref() == Some("Reachable")).await;
    w.wait_reason("ws-prod", "WorkspaceNotFound").await;
    w.wait_reason("ws-bad", "WorkspaceNotFound").await;

    stdout_ok(&w.t.kubectl(&["annotate", "--overwrite", "conn", "prod", "manifold.dev/test-request=after-swap"]));
    let conn = w.wait_test("prod", "the requested test", |t| t.request.as_deref() == Some("after-swap")).await;
    let test = conn.status.unwrap().test.unwrap();
    assert_ne!(test.workspace.as_deref(), Some("ws"), "the test ran in the Workspace made again: {test:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    tenant_holds_nothing(&own, &tenant_db, &password).await;
}

/// The Workspace's Secret names a host and port that lead, through a name
/// someone re-points (a proxy here, as a Service or DNS name would be), to
/// another server with a database of the same name, owner and password.
/// Its sessions cannot show the pin: the Workspace says DatabaseMoved,
/// the attachment too, and nothing reaches the other server. Pointed back,
/// everything heals. A `hostaddr=` added to the URI is another database too.
pub async fn a_database_behind_a_repointed_name_is_refused() {
    let w = world("pin-moved").await;
    let proxy = Proxy::start(w.pg.port).await;
    let impostor = Postgres::start();
    impostor.database_named(&w.ws_db).await;
    impostor.connect("postgres").await.batch_execute(&format!("ALTER DATABASE {} SET log_statement = 'all'", w.ws_db)).await.unwrap();
    let (role, password) = Postgres::owner(&w.ws_db);
    let through_proxy = format!("postgresql://{role}:{password}@127.0.0.1:{}/{}", proxy.port, w.ws_db);
    w.workspace_uri("ws", &through_proxy);
    w.connection("src", as_is);
    w.attach("ws-src", "ws", "src", as_is);
    w.wait_ready("ws-src").await;
    let ws = wait_ws(&w, "ws", "pinned", |ws| ws.status.as_ref().is_some_and(|s| s.pinned_at.is_some())).await;
    let pinned = ws.status.unwrap().database.unwrap();

    // Re-pointed, and the sessions open now closed: new ones go to the impostor.
    proxy.retarget(impostor.port);
    w.pg.connect("postgres")
        .await
        .batch_execute(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"))
        .await
        .unwrap();
    let ws = wait_ws(&w, "ws", "DatabaseMoved", |ws| ws_reason(ws).as_deref() == Some("DatabaseMoved")).await;
    assert_eq!(ws.status.as_ref().unwrap().database.as_deref(), Some(pinned.as_str()), "the URI still names the same database");
    let (_, _, message) = condition(&ws, "Ready").unwrap();
    assert!(message.contains("cannot show this Workspace's pin") && message.contains("nothing was sent"), "{message}");
    // A credential change makes the attachment act: it is refused too.
    w.credentials("src", &w.src.password);
    w.apply(&format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: src }}\nspec:\n\
         \x20 plugin: {{ postgres: {{ host: 127.0.0.1, port: {}, database: {}, options: {{ fetch_size: \"500\" }} }} }}\n\
         \x20 credentials: {{ secretRef: {{ name: src-creds }} }}\n",
        w.pg.port, w.src.db
    ));
    w.wait_reason("ws-src", "DatabaseMoved").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let admin = impostor.connect(&w.ws_db).await;
    assert_eq!(count(&admin, "SELECT count(*) FROM pg_user_mappings").await, 0, "a user mapping reached the impostor");
    assert_eq!(count(&admin, "SELECT count(*) FROM pg_foreign_server").await, 0, "a server reached the impostor");
    assert_eq!(count(&admin, "SELECT count(*) FROM pg_namespace WHERE nspname = 'manifold'").await, 0, "a pin was written there");
    let log = impostor.server_log();
    assert!(!log.contains(&w.src.password) && !log.contains("USER MAPPING") && !log.contains("CREATE SERVER"), "{log}");

    // Pointed back: the pin is shown again, and the change goes through.
    proxy.retarget(w.pg.port);
    wait_ws(&w, "ws", "Reachable again", |ws| ws_reason(ws).as_deref() == Some("Reachable")).await;
    w.wait_ready("ws-src").await;

    // The URI itself moved by an address that overrides its host.
    w.apply(&secret_yaml("ws-db", &[("uri", &format!("{through_proxy}?hostaddr=127.0.0.1"))]));
    let ws = wait_ws(&w, "ws", "refusing the hostaddr", |ws| ws_reason(ws).as_deref() == Some("InvalidSpec")).await;
    let (_, _, message) = condition(&ws, "Ready").unwrap();
    assert!(message.contains("hostaddr=127.0.0.1") && message.contains("is fixed"), "{message}");
}

/// A source declares a column of type `public.d`; in the workspace
/// database, a role that may create in `public` has made `public.d` a
/// domain whose CHECK calls its own function, which records the role it
/// runs as and the passwords it can see. Neither an attach, nor a test,
/// nor any resync reads a value through it: the import is refused with
/// SourceRefused naming the table, the column and the type.
pub async fn a_planted_domain_never_runs_as_the_operator() {
    let w = world("pin-domain").await;
    let evil = unique("evil").replace('-', "_");
    w.pg.connect(&w.src.db)
        .await
        .batch_execute(&format!(
            "CREATE DOMAIN public.d AS int; CREATE TABLE readings (id int, v public.d); INSERT INTO readings VALUES (1, 2);
             GRANT SELECT ON readings TO {}",
            w.src.user
        ))
        .await
        .unwrap();
    let admin = w.ws_admin().await;
    admin.batch_execute(&format!("CREATE ROLE {evil}; GRANT CREATE ON SCHEMA public TO {evil}")).await.unwrap();
    admin
        .batch_execute(&format!(
            "SET ROLE {evil};
             CREATE TABLE public.hijacked (who text, passwords bigint); GRANT INSERT ON public.hijacked TO PUBLIC;
             CREATE FUNCTION public.leak(int) RETURNS boolean LANGUAGE sql AS $$
               INSERT INTO public.hijacked SELECT current_user, (SELECT count(*) FROM pg_user_mappings WHERE umoptions IS NOT NULL);
               SELECT true $$;
             CREATE DOMAIN public.d AS int CHECK (public.leak(VALUE));
             RESET ROLE"
        ))
        .await
        .unwrap();
    w.workspace("ws");
    w.connection("readings", include(&["readings"]));
    w.attach("ws-readings", "ws", "readings", as_is);
    let att = w.wait_reason("ws-readings", "SourceRefused").await;
    let message = conditions::find(&att.status.unwrap().conditions, "Ready").unwrap().message.clone();
    assert!(message.contains("column readings.v has type public.d"), "{message}");
    let conn = w.wait_test_reason("readings", "SourceRefused").await;
    assert!(conn.status.unwrap().test.unwrap().message.contains("public.d"));
    tokio::time::sleep(Duration::from_secs(crate::support::RESYNC_SECS * 2)).await;
    assert!(!schema_exists(&w.ws().await, "readings").await, "nothing of the import stays");
    let ran: Vec<(String, i64)> =
        admin.query("SELECT who, passwords FROM public.hijacked", &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(ran.is_empty(), "the planted domain's function ran: {ran:?}");
}

/// A Workspace selects Connections labelled `team: x`. A tenant who may
/// patch Connections, but not `attach` them nor read their Secrets, adds
/// that label to one: refused, naming the verb, and nothing is attached.
/// Given `attach`, the same label attaches it.
pub async fn a_label_that_joins_a_selector_needs_attach() {
    let cp = control_plane();
    let w = world("pin-label").await;
    w.connection("prod", as_is);
    w.workspace_with("ws", |ws| {
        ws.spec.connection_selectors = vec![serde_json::from_value(serde_json::json!({ "matchLabels": { "team": "x" } })).unwrap()];
    });
    w.wait_workspace_ready("ws").await;
    w.apply(&tenant_rbac("tenant"));
    let kubeconfig = cp.token_kubeconfig(&w.t.ns, "tenant");
    let label =
        || cp.kubectl(&["--kubeconfig", kubeconfig.to_str().unwrap(), "-n", &w.t.ns, "label", "--overwrite", "conn", "prod", "team=x"]);
    let out = label();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the tenant labelled prod into the selector");
    assert!(stderr.contains("may not add or change labels of Connection prod") && stderr.contains("attach"), "{stderr}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attached = w.attachments().list(&Default::default()).await.unwrap();
    assert!(
        attached.items.is_empty(),
        "attached without attach: {:?}",
        attached.items.iter().map(|a| a.metadata.name.clone()).collect::<Vec<_>>()
    );

    w.apply(&attacher_rbac("tenant"));
    wait_for("the label admitted with attach", Duration::from_secs(20), || async {
        let out = label();
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    })
    .await;
    let ws = wait_ws(&w, "ws", "prod selected and attached", |ws| {
        ws.status.as_ref().is_some_and(|s| s.selected.iter().any(|c| c.name == "prod" && c.state == "Ready"))
    })
    .await;
    assert_eq!(ws.status.unwrap().connection_count, 1);
}

/// The workspace's login reads every mapping's options, so it is
/// Manifold's alone: a reader, who queries the same tables, sees no
/// password in any catalog view; a session that logs in with the
/// workspace's own login is named on the Workspace (PrivateLogin False,
/// LoginShared, with its application) and in a Warning Event, and once it
/// is gone the condition says so.
pub async fn the_workspace_login_is_manifolds_alone() {
    let w = world("pin-login").await;
    let reader = format!("{}_reader", w.ws_db);
    w.pg.login_role(&reader, "reader-pw").await;
    let password = format!("src-{}", secret_marker());
    w.pg.connect("postgres").await.batch_execute(&format!("ALTER ROLE \"{}\" PASSWORD '{password}'", w.src.user)).await.unwrap();
    w.workspace_with("ws", |ws| ws.spec.readers = vec![reader.clone()]);
    w.credentials("src", &password);
    w.connection_only("src", as_is);
    w.attach("ws-src", "ws", "src", as_is);
    w.wait_ready("ws-src").await;

    let (client, connection) = tokio_postgres::connect(&w.pg.uri(&reader, "reader-pw", &w.ws_db), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    assert_eq!(count(&client, "SELECT count(*) FROM src.orders").await, 3, "the reader queries");
    for (view, query) in [
        ("pg_user_mappings", "SELECT coalesce(string_agg(array_to_string(umoptions, ','), ';'), '') FROM pg_user_mappings"),
        ("pg_foreign_server", "SELECT coalesce(string_agg(array_to_string(srvoptions, ','), ';'), '') FROM pg_foreign_server"),
        ("pg_stat_activity", "SELECT coalesce(string_agg(query, ';'), '') FROM pg_stat_activity"),
    ] {
        let seen: String = client.query_one(query, &[]).await.unwrap().get(0);
        assert!(!seen.contains(&password), "the reader reads a password in {view}");
    }
    let wait_login = |shared: bool| {
        wait_ws(&w, "ws", if shared { "the login shared" } else { "the login private" }, move |ws| {
            condition(ws, "PrivateLogin")
                .is_some_and(|(status, _, message)| (status == "False") == shared && (!shared || message.contains("reporting-app")))
        })
    };
    wait_login(false).await;

    let (role, owner_password) = Postgres::owner(&w.ws_db);
    let uri = format!("{}?application_name=reporting-app", w.pg.uri(&role, &owner_password, &w.ws_db));
    let (app, connection) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await.unwrap();
    let held = tokio::spawn(connection);
    let ws = wait_login(true).await;
    let (_, reason, message) = condition(&ws, "PrivateLogin").unwrap();
    assert_eq!(reason, "LoginShared");
    assert!(message.contains("spec.readers"), "{message}");
    let events = stdout_ok(&w.t.kubectl(&["get", "events", "--field-selector", "type=Warning,reason=LoginShared", "-o", "name"]));
    assert!(!events.trim().is_empty(), "no Warning Event for the shared login");
    assert!(conditions::is_ready(&ws.status.unwrap().conditions), "a shared login is a warning, not a failure");
    drop(app);
    let _ = held.await;
    wait_login(false).await;
}
