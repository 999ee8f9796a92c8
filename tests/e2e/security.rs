//! The database side of the security model: the operator is a
//! least-privilege deputy that no spec, source or database user can turn.
//! Each test is one way it was turned before, now refused or harmless.

use std::time::Duration;

use kube::api::DeleteParams;
use manifold::api::{Workspace, conditions};

use crate::attach::{World, world};
use crate::support::world::{as_is, interval};
use crate::support::world::{count, schema_exists};
use crate::support::{Postgres, operator, secret_yaml, stdout_ok, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// A Workspace whose role is the superuser, on a database with no extension.
async fn superuser_workspace(w: &World, name: &str) -> String {
    let db = w.pg.bare_database(&format!("{name}-su")).await;
    w.workspace_uri(name, &w.pg.admin_uri(&db));
    db
}

async fn wait_workspace(w: &World, name: &str, what: &str, check: impl Fn(&Workspace) -> bool) -> Workspace {
    let api = w.t.api::<Workspace>();
    wait_for(&format!("Workspace {name}: {what}"), WAIT, || async {
        let ws = api.get(name).await.map_err(|e| e.to_string())?;
        if check(&ws) { Ok(ws) } else { Err(format!("{:?}", ws.status)) }
    })
    .await
}

fn condition(ws: &Workspace, type_: &str) -> Option<(String, String, String)> {
    let c = conditions::find(&ws.status.as_ref()?.conditions, type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn ready_message(att: &manifold::api::WorkspaceConnection) -> String {
    conditions::find(&att.status.as_ref().unwrap().conditions, "Ready").unwrap().message.clone()
}

fn warnings(w: &World) -> Vec<String> {
    let printed = stdout_ok(&w.t.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "type=Warning",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]));
    printed.lines().map(str::to_owned).collect()
}

/// Functions planted where the operator's role would find them first (a
/// schema named like the role, which `"$user"` puts first on the default
/// search path) and in `public`, with the names and argument types the
/// operator's statements use. None of them runs during an attach, a test,
/// the resyncs, or a detach: sessions pin `search_path` and every call is
/// qualified.
pub async fn planted_functions_never_run_as_the_operator() {
    let w = world("planted").await;
    let (role, _) = Postgres::owner(&w.ws_db);
    let admin = w.ws_admin().await;
    let plant = |schema: &str| {
        format!(
            "CREATE FUNCTION {schema}.pg_advisory_xact_lock(integer) RETURNS void LANGUAGE sql
               AS $$ INSERT INTO public.hijacked VALUES ('{schema}.pg_advisory_xact_lock') $$;
             CREATE FUNCTION {schema}.obj_description(oid, text) RETURNS text LANGUAGE sql
               AS $$ INSERT INTO public.hijacked VALUES ('{schema}.obj_description') RETURNING 'x' $$;"
        )
    };
    admin
        .batch_execute(&format!(
            "CREATE TABLE public.hijacked (what text); GRANT INSERT ON public.hijacked TO PUBLIC;
             CREATE SCHEMA \"{role}\"; GRANT USAGE ON SCHEMA \"{role}\" TO PUBLIC;
             {}
             CREATE FUNCTION \"{role}\".postgres_fdw_disconnect_all() RETURNS boolean LANGUAGE sql
               AS $$ INSERT INTO public.hijacked VALUES ('postgres_fdw_disconnect_all') RETURNING true $$;
             {}",
            plant(&format!("\"{role}\"")),
            plant("public")
        ))
        .await
        .unwrap();
    w.workspace("ws");
    w.connection("src", as_is);
    w.attach("ws-src", "ws", "src", as_is);
    w.wait_ready("ws-src").await;
    w.wait_test_reason("src", "Passed").await;
    // A few resyncs at rest, then a detach.
    tokio::time::sleep(Duration::from_secs(crate::support::RESYNC_SECS * 2 + 1)).await;
    w.attachments().delete("ws-src", &DeleteParams::default()).await.unwrap();
    w.wait_gone("ws-src").await;
    assert!(!schema_exists(&w.ws().await, "src").await);
    let ran: Vec<String> = admin.query("SELECT what FROM public.hijacked", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert!(ran.is_empty(), "planted functions ran as the operator: {ran:?}");
}

/// The `fdw` plugin creates only extensions a cluster admin allowed: dblink
/// behind the name of a wrapper is refused before any SQL, even on a
/// superuser workspace that could install it.
pub async fn the_fdw_plugin_installs_only_what_an_admin_allowed() {
    let w = world("fdw-allow").await;
    let db = superuser_workspace(&w, "ws").await;
    w.apply(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: { name: sneaky }\nspec:\n\
         \x20 plugin: { fdw: { extension: dblink, wrapper: postgres_fdw, serverOptions: { host: 127.0.0.1 }, remoteSchema: public } }\n",
    );
    w.attach("ws-sneaky", "ws", "sneaky", as_is);
    let att = w.wait_reason("ws-sneaky", "InvalidSpec").await;
    let message = ready_message(&att);
    assert!(message.contains("not allowed by the cluster admin"), "{message}");
    w.wait_test_reason("sneaky", "InvalidSpec").await;
    let installed = count(&w.pg.connect(&db).await, "SELECT count(*) FROM pg_extension WHERE extname IN ('dblink', 'postgres_fdw')").await;
    assert_eq!(installed, 0, "no extension was created");
}

/// A source is reached with a password, always: the workspace server's own
/// address with the superuser's name and no password is refused before
/// anything connects, even on a superuser workspace, where postgres_fdw
/// itself would not ask for one.
pub async fn a_password_is_required_even_for_a_superuser_workspace() {
    let w = world("nopw").await;
    let db = superuser_workspace(&w, "ws").await;
    w.apply(&secret_yaml("su-creds", &[("user", "postgres")]));
    w.apply(&format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: other }}\nspec:\n\
         \x20 plugin: {{ postgres: {{ host: 127.0.0.1, port: {}, database: {} }} }}\n\
         \x20 credentials: {{ secretRef: {{ name: su-creds }} }}\n",
        w.pg.port, w.src.db
    ));
    w.attach("ws-other", "ws", "other", as_is);
    let att = w.wait_reason("ws-other", "SecretKeyMissing").await;
    let message = ready_message(&att);
    assert!(message.contains("password"), "{message}");
    w.wait_test_reason("other", "SecretKeyMissing").await;
    assert!(!schema_exists(&w.pg.connect(&db).await, "other").await, "nothing was imported");
}

/// A clean first start with a superuser workspace and no extension yet:
/// eight attachments at once create the extension once, in `public`, with
/// no race and no Warning but the one about the superuser, which the
/// Workspace also says in `LeastPrivilege`.
pub async fn first_attaches_create_the_extension_once_and_a_superuser_is_warned_about() {
    let w = world("ext-race").await;
    let db = superuser_workspace(&w, "ws").await;
    w.credentials("shared", &w.src.password);
    let mut yaml = String::new();
    for i in 0..8 {
        yaml.push_str(&format!(
            "---\napiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: c{i} }}\nspec:\n\
             \x20 plugin: {{ postgres: {{ host: 127.0.0.1, port: {}, database: {} }} }}\n\
             \x20 credentials: {{ secretRef: {{ name: shared-creds }} }}\n\
             ---\napiVersion: manifold.dev/v1alpha1\nkind: WorkspaceConnection\nmetadata: {{ name: a{i} }}\n\
             spec: {{ workspace: ws, connection: c{i} }}\n",
            w.pg.port, w.src.db
        ));
    }
    w.apply(&yaml);
    for i in 0..8 {
        w.wait_ready(&format!("a{i}")).await;
    }
    let c = w.pg.connect(&db).await;
    let row = c
        .query_one("SELECT count(*), min(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'postgres_fdw'", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, Option<String>>(1)), (1, Some("public".to_owned())));
    let ws = wait_workspace(&w, "ws", "LeastPrivilege False", |ws| condition(ws, "LeastPrivilege").is_some_and(|c| c.0 == "False")).await;
    let (_, reason, message) = condition(&ws, "LeastPrivilege").unwrap();
    assert_eq!(reason, "SuperuserRole");
    assert!(message.contains("superuser"), "{message}");
    let warnings = warnings(&w);
    assert!(warnings.iter().any(|e| e.starts_with("SuperuserRole")), "{warnings:?}");
    let others: Vec<_> = warnings.iter().filter(|e| !e.starts_with("SuperuserRole")).collect();
    assert!(others.is_empty(), "a clean start has no other Warning: {others:?}");
}

/// A least-privilege role that lacks what it needs is told what to grant:
/// first the extension, then USAGE on the wrapper; each fix is picked up
/// without touching any Kubernetes object.
pub async fn a_least_privilege_role_is_told_what_to_grant() {
    let w = world("grants").await;
    let (role, _) = Postgres::owner(&w.ws_db);
    let admin = w.ws_admin().await;
    admin.batch_execute("DROP EXTENSION postgres_fdw").await.unwrap();
    w.workspace("ws");
    w.connection("src", as_is);
    w.attach("ws-src", "ws", "src", as_is);
    let att = w.wait_reason("ws-src", "ExtensionMissing").await;
    let message = ready_message(&att);
    assert!(message.contains("CREATE EXTENSION postgres_fdw SCHEMA public"), "{message}");

    admin.batch_execute("CREATE EXTENSION postgres_fdw SCHEMA public").await.unwrap();
    let att = w.wait_reason("ws-src", "PermissionDenied").await;
    let message = ready_message(&att);
    assert!(message.contains(&format!("GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {role}")), "{message}");

    admin.batch_execute(&format!("GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {role}")).await.unwrap();
    w.wait_ready("ws-src").await;
    assert_eq!(count(&w.ws().await, "SELECT count(*) FROM src.orders").await, 3);
    let ws = wait_workspace(&w, "ws", "LeastPrivilege True", |ws| condition(ws, "LeastPrivilege").is_some_and(|c| c.0 == "True")).await;
    assert_eq!(condition(&ws, "LeastPrivilege").unwrap().1, "LeastPrivilege");
}

/// TLS to the workspace database as libpq's sslmode defines it, against a
/// Postgres whose certificate (for `localhost` only) is signed by a CA the
/// test made, as CloudNativePG's `<cluster>-ca` would be.
pub async fn tls_to_a_workspace_honours_sslmode_and_its_ca() {
    operator();
    // Its own instance, alive until the test binary ends.
    let tls: &'static Postgres = Box::leak(Box::new(Postgres::start_tls()));
    let w = crate::support::world::world_on(tls, "tls").await;
    let (role, password) = Postgres::owner(&w.ws_db);
    w.apply(&secret_yaml("pg-ca", &[("ca.crt", &tls.ca_pem())]));
    let workspace = |name: &str, host: &str, mode: &str, ca: bool| {
        let uri = format!("postgresql://{role}:{password}@{host}:{}/{}?sslmode={mode}", tls.port, w.ws_db);
        w.apply(&secret_yaml(&format!("{name}-db"), &[("uri", &uri)]));
        let ca = if ca { ", caSecretRef: { name: pg-ca }" } else { "" };
        w.apply(&format!(
            "apiVersion: manifold.dev/v1alpha1\nkind: Workspace\nmetadata: {{ name: {name} }}\n\
             spec: {{ database: {{ secretRef: {{ name: {name}-db }}{ca} }} }}\n"
        ));
    };
    workspace("full", "localhost", "verify-full", true);
    workspace("noca", "localhost", "verify-full", false);
    workspace("byip", "127.0.0.1", "verify-full", true);
    workspace("caonly", "127.0.0.1", "verify-ca", true);
    workspace("encrypted", "127.0.0.1", "require", false);

    for ready in ["full", "caonly", "encrypted"] {
        w.wait_workspace_ready(ready).await;
    }
    let unreachable = |name: &'static str| {
        wait_workspace(&w, name, "WorkspaceUnreachable", |ws| condition(ws, "Ready").is_some_and(|c| c.1 == "WorkspaceUnreachable"))
    };
    let noca = condition(&unreachable("noca").await, "Ready").unwrap().2;
    assert!(noca.to_lowercase().contains("certificate") || noca.contains("UnknownIssuer"), "without the CA: {noca}");
    let byip = condition(&unreachable("byip").await, "Ready").unwrap().2;
    assert!(byip.contains("NotValidForName") || byip.to_lowercase().contains("not valid for name"), "wrong host name: {byip}");

    // The whole attach path over verify-full, and every session encrypted.
    w.connection("src", as_is);
    w.attach("full-src", "full", "src", as_is);
    w.wait_ready("full-src").await;
    let admin = tls.connect(&w.ws_db).await;
    let row = admin
        .query_one(
            "SELECT count(*), bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'manifold'",
            &[],
        )
        .await
        .unwrap();
    let (sessions, all_tls): (i64, Option<bool>) = (row.get(0), row.get(1));
    assert!(sessions > 0 && all_tls == Some(true), "{sessions} sessions, all TLS: {all_tls:?}");
}

/// What the catalog shows other roles: a postgres_fdw server's options (no
/// password among them), and no user mapping's options. The password lives
/// only in the user mapping. (A steampipe server's `config` option is a
/// server option, readable by every role: docs/src/security.md says so.)
pub async fn credentials_stay_out_of_what_other_roles_can_read() {
    let w = world("catalog").await;
    w.workspace("ws");
    w.connection("src", as_is);
    w.attach("ws-src", "ws", "src", as_is);
    w.wait_ready("ws-src").await;
    let nosy = format!("{}_nosy", w.ws_db);
    w.pg.connect("postgres").await.batch_execute(&format!("CREATE ROLE {nosy} LOGIN PASSWORD 'nosy'")).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&w.pg.uri(&nosy, "nosy", &w.ws_db), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let options: Vec<String> =
        client.query_one("SELECT srvoptions::text[] FROM pg_foreign_server WHERE srvname = 'src'", &[]).await.unwrap().get(0);
    assert!(options.iter().any(|o| o.starts_with("host=")), "{options:?}");
    assert!(!options.iter().any(|o| o.contains(&w.src.password) || o.starts_with("password")), "{options:?}");
    let mapping: Option<Vec<String>> =
        client.query_one("SELECT umoptions::text[] FROM pg_user_mappings WHERE srvname = 'src'", &[]).await.unwrap().get(0);
    assert_eq!(mapping, None, "another role sees no mapping options");
    assert!(client.query("SELECT umoptions FROM pg_user_mapping", &[]).await.is_err(), "the raw catalog is not readable");
}

/// The longest durations the CRD accepts, and a connect timeout far above
/// the operator's: the operator neither panics nor waits that long.
pub async fn the_longest_accepted_durations_do_not_crash_the_operator() {
    let w = world("durations").await;
    w.workspace("ws");
    w.connection("long", interval("999999h999999h999999h999999h"));
    w.credentials("slow", &w.src.password);
    w.apply(&format!(
        "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: slow }}\nspec:\n\
         \x20 plugin: {{ postgres: {{ host: 127.0.0.1, port: {}, database: {}, options: {{ connect_timeout: \"999999\" }} }} }}\n\
         \x20 credentials: {{ secretRef: {{ name: slow-creds }} }}\n",
        w.pg.port, w.src.db
    ));
    w.attach("ws-long", "ws", "long", as_is);
    w.attach("ws-slow", "ws", "slow", as_is);
    w.wait_ready("ws-long").await;
    w.wait_ready("ws-slow").await;
    w.wait_test_reason("long", "Passed").await;
    let options: Vec<String> =
        w.ws_admin().await.query_one("SELECT srvoptions::text[] FROM pg_foreign_server WHERE srvname = 'slow'", &[]).await.unwrap().get(0);
    assert!(options.contains(&"connect_timeout=10".to_owned()), "clamped to the operator's bound: {options:?}");
    assert_eq!(operator().admin_get("/healthz").0, 200, "the operator is alive");
    assert!(!operator().logs().contains("panicked"), "no panic in the operator's log");
}
