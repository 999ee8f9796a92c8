//! Credentials go only where their owner sent them, on the database side:
//! no secret in any statement's text (the server log, the statement
//! statistics), what a source returns never shapes what is created, a
//! detach ends readers' access at once, markers count only on what the
//! workspace role owns, and a missing reader role holds nothing.

use std::time::Duration;

use kube::api::DeleteParams;
use manifold::api::{TestOutcome, conditions};

use crate::attach::World;
use crate::support::world::{as_is, count, foreign_tables, schema_exists, server_exists, world_on};
use crate::support::{FakePostgres, Postgres, operator, secret_marker, unique, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn remote_schema(schema: &str) -> impl Fn(&mut manifold::api::Connection) {
    let schema = schema.to_owned();
    move |c| c.spec.plugin.as_mut().unwrap().postgres.as_mut().unwrap().remote_schema = schema.clone()
}

/// A Postgres of this test's own: its server log holds only this test's
/// errors, and its statement statistics only this test's statements.
async fn private_world(prefix: &str) -> World {
    let pg: &'static Postgres = Box::leak(Box::new(Postgres::start()));
    operator();
    world_on(pg, prefix).await
}

/// An import that fails (a wrong remote schema), a failed test and a failed
/// re-map (credentials rotated while an admin holds the user mappings'
/// catalog) each leave their error in the server log, which
/// `log_min_error_statement` (the default) writes with the failing
/// statement's whole text: no password is in it, nor in
/// pg_stat_statements.
pub async fn no_password_reaches_the_server_log_or_the_statement_statistics() {
    let w = private_world("nolog").await;
    let admin = w.pg.connect("postgres").await;
    // The default: top-level statements only (see sql.rs on `track = all`).
    admin.batch_execute("ALTER SYSTEM SET pg_stat_statements.track = 'top'").await.unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let ws_admin = w.ws_admin().await;
    ws_admin.batch_execute("CREATE EXTENSION pg_stat_statements").await.unwrap();
    // What set the test up (roles with passwords) is not the operator's.
    ws_admin.batch_execute("SELECT pg_stat_statements_reset()").await.unwrap();

    w.workspace("ws");
    w.connection("good", as_is);
    w.connection("wrong", remote_schema("nope"));
    w.attach("a-good", "ws", "good", as_is);
    w.attach("a-wrong", "ws", "wrong", as_is);
    w.wait_ready("a-good").await;
    w.wait_reason("a-wrong", "RemoteSchemaMissing").await;
    w.wait_test_reason("wrong", "RemoteSchemaMissing").await;

    // A re-map that fails: the mappings' catalog is locked past the
    // operator's lock timeout.
    let locker = w.ws_admin().await;
    locker.batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_user_mapping IN EXCLUSIVE MODE").await.unwrap();
    let rotated = format!("rotated-{}", secret_marker());
    w.credentials("good", &rotated);
    wait_for("a re-map held by the lock, in the server log", WAIT, || async {
        if w.pg.server_log().contains("canceling statement due to lock timeout") { Ok(()) } else { Err("not yet".to_owned()) }
    })
    .await;
    locker.batch_execute("ROLLBACK").await.unwrap();
    wait_for("the rotated password in the workspace role's mapping", WAIT, || async {
        let ws = w.ws().await;
        let options: Vec<String> = ws
            .query_one("SELECT umoptions::text[] FROM pg_user_mappings WHERE srvname = 'good'", &[])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        // Never print the options: they hold the password.
        if options.iter().any(|o| o == &format!("password={rotated}")) { Ok(()) } else { Err("not rotated yet".to_owned()) }
    })
    .await;

    let log = w.pg.server_log();
    for error in ["schema \"nope\" is not present on foreign server", "canceling statement due to lock timeout"] {
        assert!(log.contains(error), "the server log has no {error:?}");
    }
    assert!(log.contains("STATEMENT:"), "the failing statements are logged with their text");
    assert!(!log.contains(secret_marker()), "a password is in the server log");

    let statements: String =
        ws_admin.query_one("SELECT coalesce(string_agg(query, E'\\n'), '') FROM pg_stat_statements", &[]).await.unwrap().get(0);
    assert!(statements.contains("manifold.ddl_options"), "the operator's statements are counted");
    assert!(!statements.contains(secret_marker()), "a password is in pg_stat_statements");
}

/// A source whose answer to postgres_fdw's import re-points a table at
/// another attachment's server (the type text is pasted unquoted into
/// CREATE FOREIGN TABLE): the attach and the test are refused with
/// SourceRefused, and nothing of the import stays.
pub async fn a_source_cannot_point_an_import_at_another_server() {
    let w = crate::attach::world("refused").await;
    w.workspace("ws");
    w.connection("good", as_is);
    w.attach("a-good", "ws", "good", as_is);
    w.wait_ready("a-good").await;

    let repointed = "int4) SERVER good OPTIONS (schema_name 'public', table_name 'customers'); CREATE FOREIGN TABLE pad (x int4";
    let fake = FakePostgres::start(&[("stolen", "id", repointed)]).await;
    w.credentials("evil", &format!("evil-{}", secret_marker()));
    let port = fake.port;
    w.connection_only("evil", move |c| {
        let p = c.spec.plugin.as_mut().unwrap().postgres.as_mut().unwrap();
        p.host = "127.0.0.1".into();
        p.port = i32::from(port);
    });
    w.attach("a-evil", "ws", "evil", as_is);
    let att = w.wait_reason("a-evil", "SourceRefused").await;
    let message = conditions::find(&att.status.as_ref().unwrap().conditions, "Ready").unwrap().message.clone();
    assert!(message.contains("foreign table stolen reads through server good"), "{message}");
    assert!(fake.queries().iter().any(|q| q.contains("attname")), "the wrapper asked the source for its columns");
    let test = w.wait_test_reason("evil", "SourceRefused").await;
    assert_eq!(test.status.unwrap().test.unwrap().result, TestOutcome::Failed);

    let ws = w.ws().await;
    assert!(!schema_exists(&ws, "evil").await, "the refused attach left its schema");
    assert!(!server_exists(&ws, "evil").await, "the refused attach left its server");
    assert_eq!(count(&ws, "SELECT count(*) FROM pg_class WHERE relname IN ('stolen', 'pad')").await, 0);
    assert_eq!(foreign_tables(&ws, "good").await, ["customers", "orders"]);

    // The source answers plainly, and is attached; then a re-import (its
    // staging schema) gets the re-pointed answer, and is refused too.
    fake.answer(&[("stolen", "id", "int4")]);
    w.wait_ready("a-evil").await;
    assert_eq!(foreign_tables(&ws, "evil").await, ["stolen"]);
    fake.answer(&[("stolen", "id", repointed)]);
    w.connection_only("evil", move |c| {
        let p = c.spec.plugin.as_mut().unwrap().postgres.as_mut().unwrap();
        p.host = "127.0.0.1".into();
        p.port = i32::from(port);
        c.spec.tables = Some(manifold::api::TablesSpec { include: vec!["stolen".into()], exclude: Vec::new() });
    });
    let att = w
        .wait_attachment("a-evil", "SourceRefused for its generation", |a| {
            crate::support::world::ready_reason(a) == Some("SourceRefused")
                && a.status.as_ref().and_then(|s| conditions::find(&s.conditions, "Ready")).and_then(|c| c.observed_generation)
                    == a.metadata.generation
        })
        .await;
    let message = conditions::find(&att.status.as_ref().unwrap().conditions, "Ready").unwrap().message.clone();
    assert!(message.contains("foreign table stolen reads through server good"), "{message}");
    let server: String = ws
        .query_one("SELECT s.srvname::text FROM pg_foreign_table t JOIN pg_foreign_server s ON s.oid = t.ftserver WHERE t.ftrelid = 'evil.stolen'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(server, "evil", "the attachment's table still reads through its own server");
    assert_eq!(count(&ws, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'manifold_stage%'").await, 0);
}

/// A reader's session holds a temporary view on an attachment's foreign
/// table, which holds the drop (RESTRICT). The detach takes the readers'
/// grants and user mappings first, in a transaction of its own: the reader
/// cannot read any more, and the held detach names what holds it. When the
/// session ends, the detach completes.
pub async fn a_detach_ends_readers_access_at_once() {
    let w = crate::attach::world("revoke").await;
    let reader = unique("analyst").replace('-', "_");
    let password = unique("analyst-pw");
    w.pg.login_role(&reader, &password).await;
    let readers = vec![reader.clone()];
    w.workspace_with("ws", move |ws| ws.spec.readers = readers);
    w.connection("sales", as_is);
    w.attach("ws-sales", "ws", "sales", as_is);
    w.wait_ready("ws-sales").await;

    let (session, connection) = tokio_postgres::connect(&w.pg.uri(&reader, &password, &w.ws_db), tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    wait_for("the reader reads the attachment", WAIT, || async {
        session.query_one("SELECT count(*) FROM sales.orders", &[]).await.map(|r| r.get::<_, i64>(0)).map_err(|e| e.to_string())
    })
    .await;
    session.batch_execute("CREATE TEMP VIEW keep AS SELECT * FROM sales.orders").await.unwrap();
    assert_eq!(session.query_one("SELECT count(*) FROM keep", &[]).await.unwrap().get::<_, i64>(0), 3);

    w.attachments().delete("ws-sales", &DeleteParams::default()).await.unwrap();
    let held = w.wait_reason("ws-sales", "DependentObjects").await;
    let message = conditions::find(&held.status.as_ref().unwrap().conditions, "Ready").unwrap().message.clone();
    assert!(message.contains("keep") && message.contains(&reader) && message.contains("temporary"), "{message}");
    let refused = session.query_one("SELECT count(*) FROM keep", &[]).await.expect_err("the reader still reads");
    let text = refused.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(text.contains("permission denied") || text.contains("user mapping not found"), "{text}");

    // The session ends, its temporary view with it: the detach completes.
    drop(session);
    connection.abort();
    w.wait_gone("ws-sales").await;
    assert!(!schema_exists(&w.ws().await, "sales").await);
}

/// Another role with CREATE on the database copies an attachment's marker
/// onto schemas of its own: one beside the attachment's (which the
/// operator would take for a stale copy of it, and drop), one with the name
/// another attachment wants, one with the staging name of a re-import.
/// None is dropped or rebuilt; the attachment that wants the taken name is
/// a SchemaConflict; the others converge, re-import included, and their
/// deletion leaves the decoys.
pub async fn markers_count_only_on_what_the_workspace_role_owns() {
    let w = crate::attach::world("decoy").await;
    let mallory = unique("mallory").replace('-', "_");
    let password = unique("mallory-pw");
    w.pg.login_role(&mallory, &password).await;
    w.ws_admin().await.batch_execute(&format!("GRANT CREATE ON DATABASE {} TO {mallory}", w.ws_db)).await.unwrap();
    w.workspace("ws");
    w.connection("sales", as_is);
    w.attach("ws-sales", "ws", "sales", as_is);
    w.wait_ready("ws-sales").await;

    let ws = w.ws().await;
    let marker: String = ws.query_one("SELECT obj_description('sales'::regnamespace, 'pg_namespace')", &[]).await.unwrap().get(0);
    let forged_other = marker.replace("/ws-sales ", "/ws-other ");
    let stage: String = {
        // The staging name of a re-import of `sales`, as the operator makes it.
        manifold::postgres::plan::stage_schema("sales")
    };
    let (m, connection) = tokio_postgres::connect(&w.pg.uri(&mallory, &password, &w.ws_db), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    m.batch_execute(&format!(
        "CREATE SCHEMA decoy; COMMENT ON SCHEMA decoy IS {};
         CREATE SCHEMA other; COMMENT ON SCHEMA other IS {};
         CREATE SCHEMA {stage}; COMMENT ON SCHEMA {stage} IS {};",
        literal(&marker),
        literal(&forged_other),
        literal(&marker)
    ))
    .await
    .unwrap();

    // Resyncs pass: the decoy beside the attachment's schema stays.
    tokio::time::sleep(Duration::from_secs(3 * crate::support::RESYNC_SECS)).await;
    assert!(schema_exists(&ws, "decoy").await, "a decoy with a copied marker was dropped");

    // The name another attachment wants is taken by someone else.
    w.connection("other", as_is);
    w.attach("ws-other", "ws", "other", as_is);
    let conflict = w.wait_reason("ws-other", "SchemaConflict").await;
    let message = conditions::find(&conflict.status.as_ref().unwrap().conditions, "Ready").unwrap().message.clone();
    assert!(message.contains("other"), "{message}");
    assert_eq!(foreign_tables(&ws, "other").await, Vec::<String>::new());

    // A re-import of `sales` while its staging name is taken.
    w.connection("sales", crate::support::world::include(&["orders"]));
    wait_for("sales re-imported with orders only", WAIT, || async {
        let tables = foreign_tables(&ws, "sales").await;
        if tables == ["orders"] { Ok(()) } else { Err(format!("{tables:?}")) }
    })
    .await;
    w.wait_ready("ws-sales").await;

    w.attachments().delete("ws-sales", &DeleteParams::default()).await.unwrap();
    w.wait_gone("ws-sales").await;
    assert!(!schema_exists(&ws, "sales").await);
    for decoy in ["decoy", "other", stage.as_str()] {
        assert!(schema_exists(&ws, decoy).await, "{decoy} was dropped");
    }
    let comment: String = ws.query_one("SELECT obj_description('decoy'::regnamespace, 'pg_namespace')", &[]).await.unwrap().get(0);
    assert_eq!(comment, marker, "the decoy's comment was rewritten");
}

/// `readers: [ghost]`, a role that does not exist: attaches, an
/// aggregator over them, a re-import and a member's detach (which rebuilds
/// the aggregator's views with the workspace's readers) all go through.
pub async fn a_missing_reader_role_holds_nothing() {
    let w = crate::attach::world("ghost").await;
    w.workspace_with("ws", |ws| ws.spec.readers = vec!["ghost".to_owned()]);
    w.connection("aws-a", as_is);
    w.connection("aws-b", as_is);
    w.attach("ws-aws-a", "ws", "aws-a", as_is);
    w.attach("ws-aws-b", "ws", "aws-b", as_is);
    w.apply_object(&crate::support::objects::aggregator("all-aws", &["aws-*"]));
    w.attach("ws-all", "ws", "all-aws", as_is);
    for name in ["ws-aws-a", "ws-aws-b", "ws-all"] {
        w.wait_ready(name).await;
    }
    let ws = w.ws().await;
    w.connection("aws-a", crate::support::world::include(&["orders"]));
    wait_for("aws-a re-imported with orders only", WAIT, || async {
        let tables = foreign_tables(&ws, "aws_a").await;
        if tables == ["orders"] { Ok(()) } else { Err(format!("{tables:?}")) }
    })
    .await;
    w.wait_ready("ws-aws-a").await;
    w.attachments().delete("ws-aws-b", &DeleteParams::default()).await.unwrap();
    w.wait_gone("ws-aws-b").await;
    assert!(!schema_exists(&ws, "aws_b").await);
    wait_for("the aggregator over aws-a alone", WAIT, || async {
        let n: i64 =
            ws.query_one("SELECT count(DISTINCT _manifold_connection) FROM all_aws.orders", &[]).await.map_err(|e| e.to_string())?.get(0);
        if n == 1 { Ok(()) } else { Err(format!("{n} members")) }
    })
    .await;
    w.wait_ready("ws-all").await;
}

/// A reader's temporary view on an aggregator's view holds neither a
/// member's re-import nor a member's detach: the aggregator's views are
/// Manifold's, and are redefined in place rather than dropped, so the
/// reader's view keeps working over the members that remain.
pub async fn a_temporary_view_on_an_aggregator_holds_no_member() {
    let w = crate::attach::world("aggtemp").await;
    let reader = unique("viewer").replace('-', "_");
    let password = unique("viewer-pw");
    w.pg.login_role(&reader, &password).await;
    let readers = vec![reader.clone()];
    w.workspace_with("ws", move |ws| ws.spec.readers = readers);
    w.connection("aws-a", as_is);
    w.connection("aws-b", as_is);
    w.attach("ws-aws-a", "ws", "aws-a", as_is);
    w.attach("ws-aws-b", "ws", "aws-b", as_is);
    w.apply_object(&crate::support::objects::aggregator("all-aws", &["aws-*"]));
    w.attach("ws-all", "ws", "all-aws", as_is);
    for name in ["ws-aws-a", "ws-aws-b", "ws-all"] {
        w.wait_ready(name).await;
    }

    let (session, connection) = tokio_postgres::connect(&w.pg.uri(&reader, &password, &w.ws_db), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = |sql: &'static str, want: i64| {
        let session = &session;
        async move {
            wait_for(&format!("{sql} = {want}"), WAIT, || async {
                let n: i64 = session.query_one(sql, &[]).await.map_err(|e| e.to_string())?.get(0);
                if n == want { Ok(()) } else { Err(format!("{n}")) }
            })
            .await
        }
    };
    rows("SELECT count(*) FROM all_aws.orders", 6).await;
    session.batch_execute("CREATE TEMP VIEW mine AS SELECT * FROM all_aws.orders").await.unwrap();

    // A member's re-import.
    let ws = w.ws().await;
    w.connection("aws-a", crate::support::world::include(&["orders"]));
    wait_for("aws-a re-imported with orders only", WAIT, || async {
        let tables = foreign_tables(&ws, "aws_a").await;
        if tables == ["orders"] { Ok(()) } else { Err(format!("{tables:?}")) }
    })
    .await;
    w.wait_ready("ws-aws-a").await;
    rows("SELECT count(*) FROM mine", 6).await;

    // A member's detach.
    w.attachments().delete("ws-aws-b", &DeleteParams::default()).await.unwrap();
    w.wait_gone("ws-aws-b").await;
    assert!(!schema_exists(&ws, "aws_b").await);
    rows("SELECT count(*) FROM mine", 3).await;
    w.wait_ready("ws-all").await;
}
