//! Attaching connections to workspaces, end to end: a real apiserver, the
//! operator as its own process, a real Postgres with a real postgres_fdw
//! source.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use manifold::api::{Connection, Workspace, conditions};

pub use crate::support::world::*;
use crate::support::{self, Postgres, operator, secret_yaml, stdout_ok, wait_for};

/// A world watched by the test binary's shared operator.
pub async fn world(prefix: &str) -> World {
    operator();
    world_without_operator(prefix).await
}

pub async fn attach_imports_the_source_tables_and_queries_return_its_rows() {
    let w = world("attach").await;
    w.workspace("analytics");
    w.connection("sales-db", as_is);
    w.attach("analytics-sales", "analytics", "sales-db", as_is);

    let att = w.wait_ready("analytics-sales").await;
    let status = att.status.unwrap();
    assert_eq!(status.schema.as_deref(), Some("sales_db"));
    assert_eq!(status.tables, Some(2));
    assert!(status.last_applied_at.is_some());

    let ws = w.ws().await;
    assert_eq!(foreign_tables(&ws, "sales_db").await, ["customers", "orders"]);
    assert_eq!(count(&ws, "SELECT count(*) FROM sales_db.orders").await, 3);
    let total: String = ws.query_one("SELECT sum(amount)::text FROM sales_db.orders", &[]).await.unwrap().get(0);
    assert_eq!(total, "37.75");
    let comment: String = ws.query_one("SELECT obj_description('sales_db'::regnamespace, 'pg_namespace')", &[]).await.unwrap().get(0);
    assert!(comment.starts_with(&format!("manifold.dev/owner={}/analytics-sales uid=", w.t.ns)), "{comment}");

    // Both ends list the attachment.
    let workspaces: Api<Workspace> = w.t.api();
    let ws_status = wait_for("workspace lists the connection", WAIT, || async {
        let s = workspaces.get("analytics").await.unwrap().status.unwrap_or_default();
        if s.connection_count == 1 { Ok(s) } else { Err(format!("{s:?}")) }
    })
    .await;
    assert!(conditions::is_ready(&ws_status.conditions));
    assert!(ws_status.postgres_version.as_deref().is_some_and(|v| v.starts_with(char::is_numeric)));
    assert_eq!(ws_status.connections[0].name, "sales-db");
    assert_eq!(ws_status.connections[0].schema, "sales_db");
    assert_eq!(ws_status.connections[0].state, "Ready");
    assert_eq!(ws_status.connections[0].tables, 2);

    let connections: Api<Connection> = w.t.api();
    let conn_status = wait_for("connection lists the workspace", WAIT, || async {
        let s = connections.get("sales-db").await.unwrap().status.unwrap_or_default();
        if s.workspace_count == 1 { Ok(s) } else { Err(format!("{s:?}")) }
    })
    .await;
    assert_eq!(conn_status.workspaces[0].name, "analytics");
    assert_eq!(conn_status.plugin.as_deref(), Some("postgres"));
    assert_eq!(conn_status.schema.as_deref(), Some("sales_db"));

    // What a person sees.
    let printed = stdout_ok(&w.t.kubectl(&["get", "wsconn", "analytics-sales"]));
    let row = printed.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(&row[..7], ["analytics-sales", "analytics", "sales-db", "sales_db", "2", "True", "Attached"], "{printed}");
    let events = stdout_ok(&w.t.kubectl(&["get", "events", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"]));
    assert!(events.lines().any(|r| r == "Attached"), "{events}");
}

pub async fn one_connection_in_two_workspaces() {
    let w = world("two-ws").await;
    let second_db = w.pg.database("two-ws-second").await;
    w.workspace("alpha");
    w.workspace_on("beta", w.pg, &second_db);
    w.connection("shared", as_is);
    w.attach("alpha-shared", "alpha", "shared", as_is);
    w.attach("beta-shared", "beta", "shared", as_is);
    w.wait_ready("alpha-shared").await;
    w.wait_ready("beta-shared").await;

    assert_eq!(count(&w.ws().await, "SELECT count(*) FROM shared.customers").await, 2);
    assert_eq!(count(&w.pg.connect_owner(&second_db).await, "SELECT count(*) FROM shared.customers").await, 2);

    let connections: Api<Connection> = w.t.api();
    let conn = wait_for("both workspaces listed", WAIT, || async {
        let s = connections.get("shared").await.unwrap().status.unwrap_or_default();
        if s.workspace_count == 2 { Ok(s) } else { Err(format!("{s:?}")) }
    })
    .await;
    let names: Vec<_> = conn.workspaces.iter().map(|u| (u.name.as_str(), u.schema.as_str(), u.state.as_str())).collect();
    assert_eq!(names, [("alpha", "shared", "Ready"), ("beta", "shared", "Ready")]);
    let printed = wait_for("kubectl shows the test result", WAIT, || async {
        let printed = stdout_ok(&w.t.kubectl(&["get", "conn", "shared"]));
        if printed.contains("Passed") { Ok(printed) } else { Err(printed) }
    })
    .await;
    let row: Vec<_> = printed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..5], ["shared", "postgres", "shared", "Passed", "2"], "{printed}");
}

pub async fn detach_drops_the_schema_and_orphan_keeps_it() {
    let w = world("detach").await;
    w.workspace("ws");
    w.connection("drop-me", as_is);
    w.connection("keep-me", as_is);
    w.attach("a-drop", "ws", "drop-me", as_is);
    w.attach("a-keep", "ws", "keep-me", orphan);
    w.wait_ready("a-drop").await;
    w.wait_ready("a-keep").await;
    let ws = w.ws().await;
    assert!(schema_exists(&ws, "drop_me").await && server_exists(&ws, "drop_me").await);

    let api = w.attachments();
    api.delete("a-drop", &DeleteParams::default()).await.unwrap();
    api.delete("a-keep", &DeleteParams::default()).await.unwrap();
    w.wait_gone("a-drop").await;
    w.wait_gone("a-keep").await;

    assert!(!schema_exists(&ws, "drop_me").await, "detach drops the schema");
    assert!(!server_exists(&ws, "drop_me").await, "and the server");
    assert_eq!(count(&ws, "SELECT count(*) FROM pg_user_mappings WHERE srvname = 'drop_me'").await, 0);
    assert!(schema_exists(&ws, "keep_me").await, "Orphan leaves the schema");
    assert_eq!(count(&ws, "SELECT count(*) FROM keep_me.orders").await, 3);
    let events = stdout_ok(&w.t.kubectl(&["get", "events", "-o", "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}"]));
    assert!(events.lines().any(|r| r == "Detached"), "{events}");
}

/// The finalizer goes on in the reconcile that first changes the database,
/// just before it does: an attachment that has not touched a database
/// (its workspace does not exist) carries none and is deleted at once. A
/// finalizer taken off by hand comes back at the next resync, and still
/// detaches.
pub async fn the_finalizer_goes_on_with_the_first_change_and_comes_back() {
    use kube::api::{Patch, PatchParams};
    let w = world("finalizer").await;
    w.connection("src", as_is);
    w.attach("nowhere", "missing", "src", as_is);
    let waiting = w.wait_reason("nowhere", "WorkspaceNotFound").await;
    assert!(waiting.finalizers().is_empty(), "{:?}", waiting.finalizers());
    let api = w.attachments();
    api.delete("nowhere", &DeleteParams::default()).await.unwrap();
    w.wait_gone("nowhere").await;

    w.workspace("ws");
    w.attach("ws-src", "ws", "src", as_is);
    let ready = w.wait_ready("ws-src").await;
    assert_eq!(ready.finalizers(), ["manifold.dev/detach"]);
    // Its field manager names the operator, as kubectl shows it.
    let managers: Vec<&str> = ready
        .managed_fields()
        .iter()
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:metadata/f:finalizers").is_some()))
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert_eq!(managers, ["manifold"]);
    let ws = w.ws().await;
    assert!(schema_exists(&ws, "src").await);

    let off = serde_json::json!({ "metadata": { "finalizers": null } });
    api.patch("ws-src", &PatchParams::default(), &Patch::Merge(&off)).await.unwrap();
    wait_for("the finalizer back on", WAIT, || async {
        let att = api.get("ws-src").await.map_err(|e| e.to_string())?;
        if att.finalizers().iter().any(|f| f == "manifold.dev/detach") { Ok(()) } else { Err(format!("{:?}", att.finalizers())) }
    })
    .await;
    api.delete("ws-src", &DeleteParams::default()).await.unwrap();
    w.wait_gone("ws-src").await;
    assert!(!schema_exists(&ws, "src").await, "the finalizer that came back detached");
}

pub async fn a_view_on_a_foreign_table_holds_the_detach() {
    let w = world("dependent").await;
    w.workspace("ws");
    w.connection("sales", as_is);
    w.attach("ws-sales", "ws", "sales", as_is);
    w.wait_ready("ws-sales").await;
    let ws = w.ws().await;
    ws.batch_execute("CREATE VIEW public.big_orders AS SELECT * FROM sales.orders WHERE amount > 10").await.unwrap();

    w.attachments().delete("ws-sales", &DeleteParams::default()).await.unwrap();
    let held = w.wait_reason("ws-sales", "DependentObjects").await;
    let message = &conditions::find(&held.status.as_ref().unwrap().conditions, "Ready").unwrap().message;
    assert!(message.contains("big_orders"), "{message}");
    // Held visibly: what holds it, and what to do, where kubectl describe
    // shows it.
    assert!(message.contains("deletion held") && message.contains("To go on: drop or move"), "{message}");
    let described = stdout_ok(&w.t.kubectl(&["describe", "wsconn", "ws-sales"]));
    assert!(described.contains("kubectl patch wsconn ws-sales"), "{described}");
    // Nothing was dropped, and the object waits for its finalizer.
    assert_eq!(foreign_tables(&ws, "sales").await, ["customers", "orders"]);
    assert_eq!(count(&ws, "SELECT count(*) FROM public.big_orders").await, 2);
    assert!(held.metadata.deletion_timestamp.is_some());
    let stalled = conditions::find(&held.status.as_ref().unwrap().conditions, "Stalled").unwrap();
    assert_eq!(stalled.status, "True");

    // Once the view is gone, the detach goes through on the next retry.
    ws.batch_execute("DROP VIEW public.big_orders").await.unwrap();
    w.wait_gone("ws-sales").await;
    assert!(!schema_exists(&ws, "sales").await);
}

pub async fn changes_to_the_connection_reach_the_workspace() {
    let w = world("change").await;
    w.workspace("ws");
    w.connection("src", as_is);
    w.attach("ws-src", "ws", "src", as_is);
    let first = w.wait_ready("ws-src").await;
    let ws = w.ws().await;
    let oid_sql = "SELECT 'src.orders'::regclass::oid";
    let orders_oid: u32 = ws.query_one(oid_sql, &[]).await.unwrap().get(0);

    // A rotated password: the source role gets a new one, then the Secret.
    let new_password = "rotated-Pa55";
    w.pg.connect("postgres").await.batch_execute(&format!("ALTER ROLE {} PASSWORD '{new_password}'", w.src.user)).await.unwrap();
    w.credentials("src", new_password);
    let mapping_sql = "SELECT umoptions::text[] FROM pg_user_mappings WHERE srvname = 'src'";
    wait_for("the user mapping holds the new password", WAIT, || async {
        let options: Vec<String> = ws.query_one(mapping_sql, &[]).await.unwrap().get(0);
        if options.contains(&format!("password={new_password}")) { Ok(()) } else { Err("old password".into()) }
    })
    .await;
    let after = w.wait_ready("ws-src").await;
    assert!(after.status.unwrap().last_applied_at >= first.status.unwrap().last_applied_at);
    // A fresh session, so that postgres_fdw cannot reuse a cached remote
    // connection opened with the old password.
    let fresh = w.ws().await;
    assert_eq!(count(&fresh, "SELECT count(*) FROM src.orders").await, 3);
    let oid_after: u32 = fresh.query_one(oid_sql, &[]).await.unwrap().get(0);
    assert_eq!(oid_after, orders_oid, "a new password updates the mapping; it does not re-import");

    // tables.include narrows the import.
    w.connection_only("src", include(&["orders"]));
    w.wait_attachment("ws-src", "one table", |a| a.status.as_ref().is_some_and(|s| s.tables == Some(1))).await;
    assert_eq!(foreign_tables(&ws, "src").await, ["orders"]);

    // A new remoteSchema re-imports from there (and, applied whole, drops
    // tables.include).
    w.connection_only("src", |c| c.spec.plugin.as_mut().unwrap().postgres.as_mut().unwrap().remote_schema = "archive".into());
    w.wait_attachment("ws-src", "archive imported", |a| {
        a.status.as_ref().is_some_and(|s| s.tables == Some(1) && conditions::is_ready(&s.conditions))
    })
    .await;
    wait_for("old_orders imported", WAIT, || async {
        let t = foreign_tables(&ws, "src").await;
        if t == ["old_orders"] { Ok(()) } else { Err(format!("{t:?}")) }
    })
    .await;
    assert_eq!(count(&ws, "SELECT count(*) FROM src.old_orders").await, 1);
}

pub async fn drift_heals_and_a_schema_made_by_hand_is_a_conflict() {
    let w = world("drift").await;
    w.workspace("ws");
    w.connection("healme", as_is);
    w.attach("ws-healme", "ws", "healme", as_is);
    w.wait_ready("ws-healme").await;
    let ws = w.ws().await;
    let resync = Duration::from_secs(support::RESYNC_SECS);

    // A dropped schema comes back.
    ws.batch_execute("DROP SCHEMA healme CASCADE").await.unwrap();
    wait_for("schema recreated", WAIT + resync, || async {
        let t = foreign_tables(&ws, "healme").await;
        if t.len() == 2 { Ok(()) } else { Err(format!("{t:?}")) }
    })
    .await;

    // A dropped foreign table comes back.
    ws.batch_execute("DROP FOREIGN TABLE healme.customers").await.unwrap();
    wait_for("table re-imported", WAIT + resync, || async {
        let t = foreign_tables(&ws, "healme").await;
        if t.len() == 2 { Ok(()) } else { Err(format!("{t:?}")) }
    })
    .await;

    // A changed comment is rewritten.
    let comment_sql = "SELECT obj_description('healme'::regnamespace, 'pg_namespace')";
    let original: String = ws.query_one(comment_sql, &[]).await.unwrap().get(0);
    let edited = original.replace("fingerprint=", "fingerprint=0");
    ws.batch_execute(&format!("COMMENT ON SCHEMA healme IS '{edited}'")).await.unwrap();
    wait_for("comment restored", WAIT + resync, || async {
        let now: String = ws.query_one(comment_sql, &[]).await.unwrap().get(0);
        if now == original { Ok(()) } else { Err(now) }
    })
    .await;

    // A schema someone made by hand, with a real table, is never touched.
    ws.batch_execute(
        "CREATE SCHEMA mine; CREATE TABLE mine.notes (id int, body text);
         INSERT INTO mine.notes VALUES (1, 'keep'), (2, 'me');",
    )
    .await
    .unwrap();
    w.connection("mine", as_is);
    w.attach("ws-mine", "ws", "mine", as_is);
    let conflict = w.wait_reason("ws-mine", "SchemaConflict").await;
    let message = &conditions::find(&conflict.status.as_ref().unwrap().conditions, "Ready").unwrap().message;
    assert!(message.contains("not created by Manifold"), "{message}");
    tokio::time::sleep(resync * 2).await;
    assert_eq!(count(&ws, "SELECT count(*) FROM mine.notes").await, 2);
    assert_eq!(count(&ws, "SELECT count(*) FROM pg_class WHERE relnamespace = 'mine'::regnamespace").await, 1);
    // Deleting the conflicting attachment leaves it alone too.
    w.attachments().delete("ws-mine", &DeleteParams::default()).await.unwrap();
    w.wait_gone("ws-mine").await;
    assert_eq!(count(&ws, "SELECT count(*) FROM mine.notes").await, 2);
}

pub async fn deleting_a_connection_detaches_it_and_recreating_reattaches() {
    let w = world("conn-delete").await;
    let second_db = w.pg.database("conn-delete-2").await;
    w.workspace("one");
    w.workspace_on("two", w.pg, &second_db);
    w.connection("src", as_is);
    w.attach("one-src", "one", "src", as_is);
    w.attach("two-src", "two", "src", as_is);
    w.wait_ready("one-src").await;
    w.wait_ready("two-src").await;

    let connections: Api<Connection> = w.t.api();
    connections.delete("src", &DeleteParams::default()).await.unwrap();
    w.wait_reason("one-src", "ConnectionNotFound").await;
    w.wait_reason("two-src", "ConnectionNotFound").await;
    let (one, two) = (w.ws().await, w.pg.connect_owner(&second_db).await);
    wait_for("schemas dropped", WAIT, || async {
        let (a, b) = (schema_exists(&one, "src").await, schema_exists(&two, "src").await);
        if !a && !b { Ok(()) } else { Err(format!("one={a} two={b}")) }
    })
    .await;
    assert!(!server_exists(&one, "src").await && !server_exists(&two, "src").await);
    // The attachments stay.
    assert!(w.attachments().get_opt("one-src").await.unwrap().is_some());

    w.connection_only("src", as_is);
    w.wait_ready("one-src").await;
    w.wait_ready("two-src").await;
    assert_eq!(count(&one, "SELECT count(*) FROM src.orders").await, 3);
}

pub async fn applying_in_reverse_order_converges() {
    let w = world("reverse").await;
    w.attach("ws-rev", "ws", "rev", as_is);
    let waiting = w.wait_reason("ws-rev", "WorkspaceNotFound").await;
    let reconciling = conditions::find(&waiting.status.as_ref().unwrap().conditions, "Reconciling").unwrap();
    assert_eq!(reconciling.status, "True", "a missing reference is progress, not a failure");
    w.connection_only("rev", as_is);
    w.apply(
        "apiVersion: manifold.dev/v1alpha1\nkind: Workspace\nmetadata: { name: ws }\n\
         spec: { database: { secretRef: { name: ws-db } } }\n",
    );
    w.wait_reason("ws-rev", "SecretNotFound").await;
    w.apply(&secret_yaml("ws-db", &[("uri", &w.pg.owner_uri(&w.ws_db))]));
    w.wait_reason("ws-rev", "SecretNotFound").await; // now the connection's credentials
    w.credentials("rev", &w.src.password);
    w.wait_ready("ws-rev").await;
    assert_eq!(count(&w.ws().await, "SELECT count(*) FROM rev.orders").await, 3);
}

pub async fn an_unreachable_workspace_recovers_without_a_restart() {
    let w = world("unreachable").await;
    // Its own Postgres, so that stopping it disturbs no other test.
    let own = Postgres::start();
    let db = own.database("ws").await;
    w.workspace_on("ws", &own, &db);
    w.connection("src", as_is);
    w.attach("ws-src", "ws", "src", as_is);
    w.wait_ready("ws-src").await;

    own.devenv.command("stop");
    let workspaces: Api<Workspace> = w.t.api();
    wait_for("Workspace WorkspaceUnreachable", WAIT, || async {
        let ws = workspaces.get("ws").await.unwrap();
        let reason = ws.status.as_ref().and_then(|s| conditions::find(&s.conditions, "Ready")).map(|c| c.reason.clone());
        if reason.as_deref() == Some("WorkspaceUnreachable") { Ok(()) } else { Err(format!("{reason:?}")) }
    })
    .await;

    own.devenv.command("start");
    wait_for("Workspace Ready again", WAIT, || async {
        let ws = workspaces.get("ws").await.unwrap();
        if ws.status.as_ref().is_some_and(|s| conditions::is_ready(&s.conditions)) { Ok(()) } else { Err(format!("{:?}", ws.status)) }
    })
    .await;
    w.wait_ready("ws-src").await;
    assert_eq!(count(&own.connect_owner(&db).await, "SELECT count(*) FROM src.orders").await, 3);
}

/// At rest, a resync of a workspace is one catalog query: no DDL, no other
/// statement, and no status write. pg_stat_statements counts what the
/// operator ran in the workspace database.
pub async fn a_resync_at_rest_costs_one_query_and_writes_nothing() {
    let w = world("at-rest").await;
    w.workspace("ws");
    w.connection("first", as_is);
    w.connection("second", as_is);
    w.attach("ws-first", "ws", "first", as_is);
    w.attach("ws-second", "ws", "second", as_is);
    w.wait_ready("ws-first").await;
    w.wait_ready("ws-second").await;
    let resync = Duration::from_secs(support::RESYNC_SECS);
    // Let the aggregated statuses settle.
    tokio::time::sleep(resync * 2).await;

    let admin = w.pg.connect("postgres").await;
    let _ = admin.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await;
    let dbid: u32 = admin.query_one("SELECT oid FROM pg_database WHERE datname = $1", &[&w.ws_db]).await.unwrap().get(0);
    let versions = || async {
        let mut v = Vec::new();
        for a in ["ws-first", "ws-second"] {
            v.push(w.attachments().get(a).await.unwrap().resource_version());
        }
        let workspaces: Api<Workspace> = w.t.api();
        v.push(workspaces.get("ws").await.unwrap().resource_version());
        let connections: Api<Connection> = w.t.api();
        for c in ["first", "second"] {
            v.push(connections.get(c).await.unwrap().resource_version());
        }
        v
    };
    let before = versions().await;
    admin.execute("SELECT pg_stat_statements_reset(0, $1, 0)", &[&dbid]).await.unwrap();
    tokio::time::sleep(resync * 3 + Duration::from_secs(1)).await;

    let rows = admin
        .query("SELECT query, calls FROM pg_stat_statements WHERE dbid = $1 AND query NOT LIKE '%pg_stat_statements%'", &[&dbid])
        .await
        .unwrap();
    let seen: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(!seen.is_empty(), "the resync runs");
    for (query, _) in &seen {
        // pg_stat_statements shows constants as $n.
        assert!(query.contains("AS version") && query.contains("AS schemas"), "only the catalog query runs at rest, not: {query}");
    }
    let calls: i64 = seen.iter().map(|(_, c)| c).sum();
    assert!((2..=4).contains(&calls), "one query per resync interval over three intervals, got {calls}");
    assert_eq!(versions().await, before, "no status write at rest");
}

pub async fn deleting_a_workspace_removes_its_schemas() {
    let w = world("ws-delete").await;
    w.workspace("ws");
    w.connection("gone", as_is);
    w.connection("stays", as_is);
    w.attach("ws-gone", "ws", "gone", as_is);
    w.attach("ws-stays", "ws", "stays", orphan);
    w.wait_ready("ws-gone").await;
    w.wait_ready("ws-stays").await;

    // Status is written by one field manager, whole, in one JSON patch.
    let managers = stdout_ok(&w.t.kubectl(&[
        "get",
        "wsconn",
        "ws-gone",
        "--show-managed-fields",
        "-o",
        "jsonpath={range .metadata.managedFields[?(@.subresource==\"status\")]}{.manager}/{.operation} {end}",
    ]));
    assert_eq!(managers.trim(), "manifold/Update");

    let workspaces: Api<Workspace> = w.t.api();
    workspaces.delete("ws", &DeleteParams::default()).await.unwrap();
    wait_for("workspace deleted", WAIT, || async {
        match workspaces.get_opt("ws").await.unwrap() {
            None => Ok(()),
            Some(ws) => Err(format!("{:?}", ws.status)),
        }
    })
    .await;
    let ws = w.ws().await;
    assert!(!schema_exists(&ws, "gone").await, "the Delete attachment's schema is removed");
    assert!(!server_exists(&ws, "gone").await);
    assert!(schema_exists(&ws, "stays").await, "the Orphan attachment's schema stays");
    w.wait_reason("ws-gone", "WorkspaceNotFound").await;
}
