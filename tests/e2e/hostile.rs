//! Bad and hostile input, one row per case: each is stored literally and
//! harmlessly or refused with a clear error, and nothing anyone else made is
//! damaged.

use kube::api::DeleteParams;
use manifold::api::conditions;
use postgres_protocol::escape::escape_literal;

use crate::attach::world;
use crate::support::world::{as_is, include};
use crate::support::world::{count, foreign_tables, schema_exists};
use crate::support::{secret_yaml, stdout_ok};

/// Values that break naive quoting, each as an option value and as a
/// password. (Schema names are refused by the CRD itself: see
/// crds::each_validation_rule_rejects_a_bad_object.)
fn hostile_values() -> Vec<(&'static str, String)> {
    vec![
        ("single quote", "it's".into()),
        ("double quote", "say \"hi\"".into()),
        ("backslash", "back\\slash\\".into()),
        ("semicolon", "x'; DROP TABLE public.canary; --".into()),
        ("comment", "x -- y /* z */".into()),
        ("dollar quotes", "$$ x $$ $tag$".into()),
        ("newlines", "line1\nline2\r\n".into()),
        // 3000 bytes: application_name travels in libpq's startup packet,
        // which Postgres caps at 10000 bytes.
        ("very long", "é".repeat(1500)),
    ]
}

pub async fn hostile_values_are_stored_literally_and_harmlessly() {
    let w = world("hostile").await;
    w.workspace("ws");
    let ws = w.ws().await;
    ws.batch_execute("CREATE TABLE public.canary (x int); INSERT INTO public.canary VALUES (1), (2)").await.unwrap();
    let admin = w.pg.connect("postgres").await;
    let source = w.pg.connect(&w.src.db).await;

    for (i, (what, value)) in hostile_values().into_iter().enumerate() {
        // A role whose password is the hostile value, so that the import
        // (which logs in with it) really succeeds.
        let role = format!("{}_h{i}", w.src.user);
        admin.batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD {}", escape_literal(&value))).await.unwrap();
        source
            .batch_execute(&format!("GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
            .await
            .unwrap();
        let name = format!("h{i}");
        w.apply(&secret_yaml(&format!("{name}-creds"), &[("user", &role), ("password", &value)]));
        w.apply(&format!(
            "apiVersion: manifold.dev/v1alpha1\nkind: Connection\nmetadata: {{ name: {name} }}\nspec:\n\
             \x20 plugin:\n    postgres: {{ host: 127.0.0.1, port: {}, database: {}, options: {{ application_name: {} }} }}\n\
             \x20 credentials: {{ secretRef: {{ name: {name}-creds }} }}\n",
            w.pg.port,
            w.src.db,
            serde_json::to_string(&value).unwrap()
        ));
        w.attach(&format!("ws-{name}"), "ws", &name, as_is);
        w.wait_ready(&format!("ws-{name}")).await;
        let row = ws
            .query_one(
                "SELECT s.srvoptions::text[], um.umoptions::text[] FROM pg_foreign_server s
                   JOIN pg_user_mappings um ON um.srvid = s.oid WHERE s.srvname = $1",
                &[&name],
            )
            .await
            .unwrap();
        let (server, mapping): (Vec<String>, Vec<String>) = (row.get(0), row.get(1));
        assert!(server.contains(&format!("application_name={value}")), "{what}: option stored as it is: {server:?}");
        assert!(mapping.contains(&format!("password={value}")), "{what}: password stored as it is");
        assert_eq!(count(&ws, &format!("SELECT count(*) FROM {name}.orders")).await, 3, "{what}: the import worked");
    }
    assert_eq!(count(&ws, "SELECT count(*) FROM public.canary").await, 2, "nothing else ran");

    // NUL cannot be stored by Postgres: refused, with a message that names
    // the option and not its value.
    w.apply(&secret_yaml("nul-creds", &[("user", &w.src.user), ("password", "before\0after")]));
    w.connection_only("nul", as_is);
    w.attach("ws-nul", "ws", "nul", as_is);
    let refused = w.wait_reason("ws-nul", "InvalidSpec").await;
    let message = &conditions::find(&refused.status.as_ref().unwrap().conditions, "Ready").unwrap().message;
    assert!(message.contains("NUL") && message.contains("password") && !message.contains("before"), "{message}");
    assert!(!schema_exists(&ws, "nul").await);
}

pub async fn two_connections_wanting_one_schema() {
    let w = world("same-schema").await;
    w.workspace("ws");
    w.connection("first", |c| c.spec.schema = Some("shared_name".into()));
    w.attach("ws-first", "ws", "first", as_is);
    w.wait_ready("ws-first").await;
    w.connection("second", |c| {
        c.spec.schema = Some("shared_name".into());
        include(&["customers"])(c);
    });
    w.attach("ws-second", "ws", "second", as_is);
    let conflict = w.wait_reason("ws-second", "SchemaConflict").await;
    let message = &conditions::find(&conflict.status.as_ref().unwrap().conditions, "Ready").unwrap().message;
    assert!(message.contains("ws-first"), "names the owner: {message}");
    let ws = w.ws().await;
    assert_eq!(foreign_tables(&ws, "shared_name").await, ["customers", "orders"], "the first keeps it as it was");

    w.attachments().delete("ws-second", &DeleteParams::default()).await.unwrap();
    w.wait_gone("ws-second").await;
    assert_eq!(foreign_tables(&ws, "shared_name").await, ["customers", "orders"], "deleting the second never touches it");
    w.wait_ready("ws-first").await;
}

pub async fn a_reference_into_another_namespace_reaches_nothing() {
    let mine = world("ref-mine").await;
    let theirs = world("ref-theirs").await;
    theirs.workspace("private");
    theirs.connection("secret-data", as_is);
    theirs.attach("private-data", "private", "secret-data", as_is);
    theirs.wait_ready("private-data").await;

    // The same names, from another namespace: they resolve in that
    // namespace only, where they do not exist.
    mine.attach("steal", "private", "secret-data", as_is);
    mine.wait_reason("steal", "WorkspaceNotFound").await;
    mine.workspace("private");
    mine.wait_reason("steal", "ConnectionNotFound").await;
    // And a name cannot carry a namespace.
    let out = mine.t.apply(
        &format!("apiVersion: manifold.dev/v1alpha1\nkind: WorkspaceConnection\nmetadata: {{ name: x }}\nspec: {{ workspace: {}/private, connection: c }}\n", theirs.t.ns),
    );
    assert!(!out.status.success());
    assert_eq!(count(&theirs.ws().await, "SELECT count(*) FROM pg_namespace WHERE nspname = 'secret_data'").await, 1);
    assert!(!schema_exists(&mine.ws().await, "secret_data").await);
}

pub async fn what_others_made_is_never_altered_or_dropped() {
    let w = world("others").await;
    w.workspace("ws");
    let ws = w.ws().await;
    // A schema made by hand, with a real table full of rows.
    ws.batch_execute(
        "CREATE SCHEMA handmade; CREATE TABLE handmade.rows AS SELECT g AS id FROM generate_series(1, 100) g;
         COMMENT ON SCHEMA handmade IS 'ours, not Manifold''s'",
    )
    .await
    .unwrap();
    w.connection("handmade", as_is);
    w.attach("ws-handmade", "ws", "handmade", as_is);
    w.wait_reason("ws-handmade", "SchemaConflict").await;

    // A table someone put inside our schema holds its detach.
    w.connection("mixed", as_is);
    w.attach("ws-mixed", "ws", "mixed", as_is);
    w.wait_ready("ws-mixed").await;
    ws.batch_execute("CREATE TABLE mixed.notes AS SELECT 'keep me'::text AS body").await.unwrap();
    w.attachments().delete("ws-mixed", &DeleteParams::default()).await.unwrap();
    let held = w.wait_reason("ws-mixed", "DependentObjects").await;
    let message = &conditions::find(&held.status.as_ref().unwrap().conditions, "Ready").unwrap().message;
    assert!(message.contains("notes"), "{message}");
    assert_eq!(foreign_tables(&ws, "mixed").await, ["customers", "orders"], "nothing was dropped");

    // Every scenario over, the hand-made data is all there.
    w.attachments().delete("ws-handmade", &DeleteParams::default()).await.unwrap();
    w.wait_gone("ws-handmade").await;
    assert_eq!(count(&ws, "SELECT count(*) FROM handmade.rows").await, 100);
    assert_eq!(count(&ws, "SELECT count(*) FROM mixed.notes").await, 1);
    let comment: String = ws.query_one("SELECT obj_description('handmade'::regnamespace, 'pg_namespace')", &[]).await.unwrap().get(0);
    assert_eq!(comment, "ours, not Manifold's");
    // Removing the table lets the held detach finish.
    ws.batch_execute("DROP TABLE mixed.notes").await.unwrap();
    w.wait_gone("ws-mixed").await;
    assert!(!schema_exists(&ws, "mixed").await);
    let events = stdout_ok(&w.t.kubectl(&["get", "events", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"]));
    assert!(events.lines().any(|r| r == "SchemaConflict") && events.lines().any(|r| r == "DependentObjects"), "{events}");
}
