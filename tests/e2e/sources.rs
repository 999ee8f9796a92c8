//! Sources change, and sources are not only Postgres: a table added,
//! changed or dropped at the source reaches every workspace after one
//! refresh request, changing only what changed; and the generic `fdw`
//! plugin attaches a real MariaDB through mysql_fdw.

use std::time::Duration;

use manifold::api::{Connection, FdwPlugin, PluginSpec, TestOutcome, conditions};

use crate::attach::world;
use crate::support::objects;
use crate::support::postgres::psql;
use crate::support::world::{World, as_is, ready_reason};
use crate::support::{Postgres, mariadb, secret_marker, stdout_ok, unique, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn refresh(w: &World, name: &str, request: &str) {
    stdout_ok(&w.t.kubectl(&["annotate", "--overwrite", "conn", name, &format!("manifold.dev/refresh-request={request}")]));
}

async fn tables_of(c: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    crate::support::world::foreign_tables(c, schema).await
}

async fn wait_tables(w: &World, c: &tokio_postgres::Client, schema: &str, want: &[&str]) {
    let _ = w;
    wait_for(&format!("{schema} holds {want:?}"), WAIT, || async {
        let got = tables_of(c, schema).await;
        if got == want { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;
}

/// A source gains a table, a column, loses a table: each reaches both
/// workspaces after one refresh request, and only what changed is touched,
/// so a user's view on an unchanged table is never disturbed. A view on a
/// table the source dropped holds just that table, and says so.
pub async fn a_sources_schema_changes_reach_every_workspace() {
    let w = world("follow").await;
    let second = w.pg.database("follow-two").await;
    w.workspace("one");
    w.workspace_on("two", w.pg, &second);
    w.connection("src", as_is);
    w.attach("one-src", "one", "src", as_is);
    w.attach("two-src", "two", "src", as_is);
    w.wait_ready("one-src").await;
    w.wait_ready("two-src").await;
    let (one, two) = (w.ws().await, w.pg.connect_owner(&second).await);
    let source = w.pg.connect(&w.src.db).await;
    let first = w.wait_test_or_status("src", |c| source_of(c).is_some_and(|s| s.tables == 2)).await;
    let first_hash = source_of(&first).unwrap().hash.clone();
    // A test of the unchanged source finds the hash that the attach's
    // import found: nothing re-imports, and changedAt stays.
    stdout_ok(&w.t.kubectl(&["annotate", "--overwrite", "conn", "src", "manifold.dev/test-request=same"]));
    let retested = w
        .wait_test_or_status("src", |c| {
            c.status.as_ref().and_then(|s| s.test.as_ref()).is_some_and(|t| t.request.as_deref() == Some("same"))
        })
        .await;
    assert_eq!(source_of(&retested).unwrap().hash, first_hash, "the attach and the test hash the source alike");
    assert_eq!(source_of(&retested).unwrap().changed_at, source_of(&first).unwrap().changed_at);
    // A user's view on a table that will not change.
    one.batch_execute("CREATE VIEW public.all_orders AS SELECT * FROM src.orders").await.unwrap();

    // A new table.
    source
        .batch_execute(&format!(
            "CREATE TABLE refunds (id int, amount numeric); INSERT INTO refunds VALUES (1, 5);
             GRANT SELECT ON refunds TO {}",
            w.src.user
        ))
        .await
        .unwrap();
    refresh(&w, "src", "1");
    wait_tables(&w, &one, "src", &["customers", "orders", "refunds"]).await;
    wait_tables(&w, &two, "src", &["customers", "orders", "refunds"]).await;
    assert_eq!(crate::support::world::count(&two, "SELECT count(*) FROM src.refunds").await, 1);
    let conn = w.wait_test_or_status("src", |c| source_of(c).is_some_and(|s| s.tables == 3 && s.request.as_deref() == Some("1"))).await;
    let source_schema = source_of(&conn).unwrap();
    assert_ne!(source_schema.hash, first_hash, "the hash follows the source");

    // A changed column.
    source
        .batch_execute("ALTER TABLE customers ADD COLUMN email text; UPDATE customers SET email = 'ada@example.com' WHERE id = 1")
        .await
        .unwrap();
    refresh(&w, "src", "2");
    for c in [&one, &two] {
        wait_for("the new column", WAIT, || async {
            match c.query_one("SELECT email FROM src.customers WHERE id = 1", &[]).await {
                Ok(row) => Ok(row.get::<_, Option<String>>(0)),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }
    let still: i64 = one.query_one("SELECT count(*) FROM public.all_orders", &[]).await.unwrap().get(0);
    assert_eq!(still, 3, "the view on an unchanged table was not disturbed");

    // A table dropped at the source, while a user's view holds it in one
    // workspace, and a table added in the same change.
    one.batch_execute("CREATE VIEW public.refund_view AS SELECT * FROM src.refunds").await.unwrap();
    source
        .batch_execute(&format!("DROP TABLE refunds; CREATE TABLE returns (id int); GRANT SELECT ON returns TO {}", w.src.user))
        .await
        .unwrap();
    refresh(&w, "src", "3");
    wait_tables(&w, &two, "src", &["customers", "orders", "returns"]).await;
    wait_tables(&w, &one, "src", &["customers", "orders", "refunds", "returns"]).await;
    let held = w.wait_reason("one-src", "DependentObjects").await;
    let message = conditions::find(&held.status.as_ref().unwrap().conditions, "Ready").unwrap().message.clone();
    assert!(message.contains("refund_view") && message.contains("refunds"), "{message}");
    w.wait_ready("two-src").await;

    // Once the view goes, so does the table.
    one.batch_execute("DROP VIEW public.refund_view").await.unwrap();
    wait_tables(&w, &one, "src", &["customers", "orders", "returns"]).await;
    w.wait_ready("one-src").await;
}

fn source_of(c: &Connection) -> Option<&manifold::api::SourceSchema> {
    c.status.as_ref()?.source_schema.as_ref()
}

fn mysql_connection(name: &str, port: u16, database: &str) -> Connection {
    let mut conn = objects::postgres_connection(name, "unused", 1, "unused", &format!("{name}-creds"));
    conn.spec.plugin = Some(PluginSpec {
        postgres: None,
        steampipe: None,
        fdw: Some(FdwPlugin {
            extension: "mysql_fdw".into(),
            wrapper: "mysql_fdw".into(),
            server_options: [("host".to_owned(), "127.0.0.1".to_owned()), ("port".to_owned(), port.to_string())].into(),
            remote_schema: database.into(),
        }),
    });
    conn
}

/// A second real wrapper through the generic `fdw` plugin: mysql_fdw,
/// allowed by the cluster admin, attaches a MariaDB database as a schema,
/// which a reader reads through psql; the test passes with real
/// credentials and fails with AuthenticationFailed with wrong ones.
pub async fn mysql_fdw_attaches_a_mariadb_database() {
    let maria = mariadb();
    let w = world("mysql").await;
    let database = unique("shop").replace('-', "_");
    let (user, password) = (unique("buyer").replace('-', "_"), format!("maria-{}", secret_marker()));
    maria.source(&database, &user, &password);
    // The admin installs the wrapper and lets the workspace role use it,
    // as CloudNativePG's Database would.
    let (role, _) = Postgres::owner(&w.ws_db);
    w.ws_admin()
        .await
        .batch_execute(&format!("CREATE EXTENSION mysql_fdw SCHEMA public; GRANT USAGE ON FOREIGN DATA WRAPPER mysql_fdw TO {role}"))
        .await
        .unwrap();
    let viewer = format!("{}_viewer", w.ws_db);
    w.pg.login_role(&viewer, "viewer-pw").await;
    w.workspace_with("ws", |ws| {
        ws.spec.readers = vec![viewer.clone()];
        ws.spec.search_path = Some(Default::default());
    });

    w.apply_object(&objects::secret("shop-creds", &[("username", &user), ("password", &password)]));
    w.apply_object(&mysql_connection("shop", maria.port, &database));
    w.attach("ws-shop", "ws", "shop", as_is);
    let att = w.wait_ready("ws-shop").await;
    assert_eq!(att.status.unwrap().tables, Some(1));
    let conn = w.wait_test("shop", "Passed", |t| t.result == TestOutcome::Passed).await;
    assert_eq!(conn.status.unwrap().plugin.as_deref(), Some("fdw/mysql_fdw"));
    let as_viewer = w.pg.uri(&viewer, "viewer-pw", &w.ws_db);
    let answer = wait_for("the viewer reads MariaDB without naming a schema", WAIT, || async {
        psql(&as_viewer, "SELECT count(*) || ' ' || max(title) FROM products")
    })
    .await;
    assert_eq!(answer, "3 screen");

    // Wrong credentials: the test says so, in mysql_fdw's words mapped.
    w.apply_object(&objects::secret("bad-creds", &[("username", &user), ("password", "wrong")]));
    w.apply_object(&mysql_connection("bad", maria.port, &database));
    let bad = w.wait_test_reason("bad", "AuthenticationFailed").await;
    let message = bad.status.unwrap().test.unwrap().message;
    assert!(message.to_lowercase().contains("access denied"), "{message}");
    w.attach("ws-bad", "ws", "bad", as_is);
    let att = w.wait_attachment("ws-bad", "AuthenticationFailed", |a| ready_reason(a) == Some("AuthenticationFailed")).await;
    assert!(att.status.unwrap().tables.is_none());
}
