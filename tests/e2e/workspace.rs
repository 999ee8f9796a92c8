//! The workspace as Steampipe users know it: people query as themselves
//! (readers), without naming a schema (the search path), and across
//! connections at once (aggregators).

use std::time::Duration;

use kube::api::DeleteParams;
use manifold::api::{SearchPathMode, SearchPathSpec, conditions};

use crate::attach::{World, world};
use crate::support::objects;
use crate::support::postgres::psql;
use crate::support::world::{as_is, include, ready_reason};
use crate::support::{Source, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn auto_path(readers: &[&str]) -> impl FnOnce(&mut manifold::api::Workspace) {
    let readers: Vec<String> = readers.iter().map(|r| r.to_string()).collect();
    move |ws| {
        ws.spec.readers = readers;
        ws.spec.search_path = Some(SearchPathSpec { mode: SearchPathMode::Auto, ..Default::default() });
    }
}

/// A reader role queries a connection through psql as itself, without
/// naming a schema; a reader that does not exist is reported and harms no
/// one; a reader taken off the list loses its access.
pub async fn readers_query_as_themselves_without_naming_a_schema() {
    let w = world("readers").await;
    let analyst = format!("{}_analyst", w.ws_db);
    w.pg.login_role(&analyst, "analyst-pw").await;
    let as_analyst = w.pg.uri(&analyst, "analyst-pw", &w.ws_db);
    w.workspace_with("ws", auto_path(&[&analyst, "no_such_role"]));
    w.connection("sales", as_is);
    w.attach("ws-sales", "ws", "sales", as_is);
    w.wait_ready("ws-sales").await;
    let ws = w
        .wait_workspace("ws", "its search path set", |ws| {
            ws.status.as_ref().and_then(|s| s.search_path.as_deref()) == Some("public, sales")
        })
        .await;
    let status = ws.status.unwrap();
    let states: Vec<(&str, &str)> = status.readers.iter().map(|r| (r.name.as_str(), r.state.as_str())).collect();
    assert_eq!(states, [(analyst.as_str(), "Ready"), ("no_such_role", "RoleNotFound")]);
    let readers = conditions::find(&status.conditions, "Readers").unwrap();
    assert_eq!((readers.status.as_str(), readers.reason.as_str()), ("False", "RoleNotFound"));
    assert!(conditions::is_ready(&status.conditions), "a missing reader does not make the workspace fail");

    assert_eq!(psql(&as_analyst, "SHOW search_path").unwrap(), "public, sales");
    assert_eq!(psql(&as_analyst, "SELECT count(*) FROM orders").unwrap(), "3", "no schema named, as the reader");
    assert_eq!(psql(&as_analyst, "SELECT name FROM customers ORDER BY id LIMIT 1").unwrap(), "Ada");

    // A new table in a re-import is readable too.
    w.connection_only("sales", include(&["orders"]));
    w.wait_attachment("ws-sales", "re-imported", |a| a.status.as_ref().is_some_and(|s| s.tables == Some(1))).await;
    assert_eq!(psql(&as_analyst, "SELECT count(*) FROM orders").unwrap(), "3");

    // Off the list: no USAGE, no SELECT, no mapping.
    w.workspace_with("ws", auto_path(&[]));
    let denied = wait_for("the reader's access taken away", WAIT, || async {
        match psql(&as_analyst, "SELECT count(*) FROM sales.orders") {
            Err(e) => Ok(e),
            Ok(n) => Err(format!("still reads {n} rows")),
        }
    })
    .await;
    assert!(denied.contains("permission denied"), "{denied}");
    let mappings = psql(&w.pg.admin_uri(&w.ws_db), &format!("SELECT count(*) FROM pg_user_mappings WHERE usename = '{analyst}'")).unwrap();
    assert_eq!(mappings, "0");
}

/// One source per member, each with its own role and its own version of
/// `orders`: the same columns, one more column, one column of another type.
async fn member(w: &World, name: &str, alter: &str) -> Source {
    let src = w.pg.source(name).await;
    if !alter.is_empty() {
        w.pg.connect(&src.db).await.batch_execute(alter).await.unwrap();
    }
    w.apply_object(&objects::secret(&format!("{name}-creds"), &[("user", &src.user), ("password", &src.password)]));
    w.apply_object(&objects::postgres_connection(name, "127.0.0.1", w.pg.port, &src.db, &format!("{name}-creds")));
    w.attach(&format!("ws-{name}"), "ws", name, as_is);
    src
}

fn rows(w: &World, role_uri: &str, sql: &str) -> Vec<String> {
    let _ = w;
    psql(role_uri, sql).unwrap().lines().map(str::to_owned).collect()
}

/// An aggregator over three sources whose `orders` differ: every member's
/// rows, tagged with the member, NULL where a member lacks a column, jsonb
/// where the members disagree on its type, readable by a reader without a
/// schema named. A member attached later appears; a detached one goes; a
/// re-import and a rotation pass through; a broken member is left out and
/// reported; a glob that matches nothing is a warning.
pub async fn an_aggregator_unions_its_members_as_steampipe_does() {
    let w = world("aggregate").await;
    let analyst = format!("{}_viewer", w.ws_db);
    w.pg.login_role(&analyst, "viewer-pw").await;
    let as_analyst = w.pg.uri(&analyst, "viewer-pw", &w.ws_db);
    let admin = w.pg.admin_uri(&w.ws_db);
    w.workspace_with("ws", auto_path(&[&analyst]));
    let a = member(&w, "aws-a", "").await;
    member(&w, "aws-b", "ALTER TABLE orders ADD COLUMN region text DEFAULT 'eu'").await;
    let c = member(&w, "aws-c", "ALTER TABLE orders ALTER COLUMN amount TYPE text").await;
    w.apply_object(&objects::aggregator("all-aws", &["aws-*"]));
    w.attach("ws-all", "ws", "all-aws", as_is);
    w.apply_object(&objects::aggregator("none", &["gcp-*"]));

    let count = |expected: &'static str| {
        let uri = as_analyst.clone();
        async move {
            wait_for(&format!("the aggregate's rows by member: {expected}"), WAIT, || async {
                let got = psql(&uri, "SELECT string_agg(_manifold_connection || '=' || n, ',' ORDER BY _manifold_connection) FROM (SELECT _manifold_connection, count(*) n FROM orders GROUP BY 1) c").unwrap_or_else(|e| e);
                if got == expected { Ok(()) } else { Err(got) }
            })
            .await
        }
    };
    for name in ["ws-aws-a", "ws-aws-b", "ws-aws-c", "ws-all"] {
        w.wait_ready(name).await;
    }
    // The search path puts the aggregator before the connections.
    w.wait_workspace("ws", "aggregators first", |ws| {
        ws.status.as_ref().and_then(|s| s.search_path.as_deref()) == Some("public, all_aws, aws_a, aws_b, aws_c")
    })
    .await;
    count("aws-a=3,aws-b=3,aws-c=3").await;
    let columns = rows(
        &w,
        &admin,
        "SELECT attname || ':' || format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'all_aws.orders'::regclass AND attnum > 0 ORDER BY attnum",
    );
    assert_eq!(columns, ["_manifold_connection:text", "id:integer", "customer_id:integer", "amount:jsonb", "region:text"]);
    assert_eq!(
        rows(&w, &as_analyst, "SELECT DISTINCT _manifold_connection || ':' || coalesce(region, 'null') FROM all_aws.orders ORDER BY 1"),
        ["aws-a:null", "aws-b:eu", "aws-c:null"]
    );
    assert_eq!(rows(&w, &as_analyst, "SELECT amount FROM all_aws.orders WHERE _manifold_connection = 'aws-c' AND id = 3"), ["\"7.25\""]);

    // A fourth member, attached later, appears.
    member(&w, "aws-d", "").await;
    w.wait_ready("ws-aws-d").await;
    count("aws-a=3,aws-b=3,aws-c=3,aws-d=3").await;

    // A member's re-import and its credentials' rotation pass through.
    let mut narrowed = objects::postgres_connection("aws-a", "127.0.0.1", w.pg.port, &a.db, "aws-a-creds");
    include(&["orders"])(&mut narrowed);
    w.apply_object(&narrowed);
    w.wait_attachment("ws-aws-a", "re-imported", |a| a.status.as_ref().is_some_and(|s| s.tables == Some(1))).await;
    let rotated = format!("rotated-{}", crate::support::secret_marker());
    w.pg.connect("postgres").await.batch_execute(&format!("ALTER ROLE {} PASSWORD '{rotated}'", c.user)).await.unwrap();
    w.apply_object(&objects::secret("aws-c-creds", &[("user", &c.user), ("password", &rotated)]));
    w.wait_test("aws-c", "passed with the new password", |t| {
        t.result == manifold::api::TestOutcome::Passed && t.credentials.as_deref().is_some_and(|v| !v.is_empty())
    })
    .await;
    count("aws-a=3,aws-b=3,aws-c=3,aws-d=3").await;

    // A detached member goes, and is not held by the aggregator's views.
    w.attachments().delete("ws-aws-b", &DeleteParams::default()).await.unwrap();
    w.wait_gone("ws-aws-b").await;
    count("aws-a=3,aws-c=3,aws-d=3").await;

    // A broken member is left out, and the aggregator says which and why.
    w.apply_object(&objects::secret("aws-e-creds", &[("user", "nobody"), ("password", "wrong")]));
    w.apply_object(&objects::postgres_connection("aws-e", "127.0.0.1", w.pg.port, &w.src.db, "aws-e-creds"));
    w.attach("ws-aws-e", "ws", "aws-e", as_is);
    w.wait_attachment("ws-aws-e", "failing", |a| matches!(ready_reason(a), Some(r) if r != "Attached")).await;
    let agg = w
        .wait_test_or_status("all-aws", |c| {
            c.status.as_ref().is_some_and(|s| s.members.iter().any(|m| m.name == "aws-e" && m.state != "Ready"))
        })
        .await;
    let members: Vec<(String, String)> = agg.status.unwrap().members.into_iter().map(|m| (m.name, m.state)).collect();
    assert!(members.iter().any(|(n, s)| n == "aws-a" && s == "Ready"), "{members:?}");
    count("aws-a=3,aws-c=3,aws-d=3").await;

    // A glob that matches nothing: a warning, not a failure.
    let none = w
        .wait_test_or_status("none", |c| {
            c.status.as_ref().is_some_and(|s| conditions::find(&s.conditions, "Members").is_some_and(|m| m.reason == "NoMembers"))
        })
        .await;
    assert!(conditions::is_ready(&none.status.unwrap().conditions));
}

/// A view that a user built on an aggregator holds the aggregator's
/// detach with DependentObjects; once it is dropped, the detach completes.
pub async fn a_users_view_on_an_aggregator_holds_its_detach() {
    let w = world("agg-view").await;
    w.workspace("ws");
    member(&w, "m1", "").await;
    w.apply_object(&objects::aggregator("every", &["m*"]));
    w.attach("ws-every", "ws", "every", as_is);
    w.wait_ready("ws-m1").await;
    w.wait_ready("ws-every").await;
    let ws = w.ws().await;
    wait_for("the aggregate view", WAIT, || async {
        ws.query_one("SELECT count(*) FROM every.orders", &[]).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    ws.batch_execute("CREATE VIEW public.mine AS SELECT * FROM every.orders").await.unwrap();
    w.attachments().delete("ws-every", &DeleteParams::default()).await.unwrap();
    let held = w.wait_reason("ws-every", "DependentObjects").await;
    let message = conditions::find(&held.status.unwrap().conditions, "Ready").unwrap().message.clone();
    assert!(message.contains("mine"), "{message}");
    ws.batch_execute("DROP VIEW public.mine").await.unwrap();
    w.wait_gone("ws-every").await;
    let left: i64 = ws.query_one("SELECT count(*) FROM pg_namespace WHERE nspname = 'every'", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);
}
