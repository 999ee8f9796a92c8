//! Quoting is proven, not assumed: generated strings, rendered by the SQL
//! module as identifiers, literals and server options, round-trip through
//! the real Postgres byte for byte, and nothing else is executed.

use manifold::plugins::Wrapper;
use manifold::postgres::plan::{AttachPlan, Owner, PlanInput, SecretString, Statement, TableFilter};
use manifold::postgres::sql;
use postgres_protocol::escape::{escape_identifier, escape_literal};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio_postgres::SimpleQueryMessage;

use crate::support::postgres;

/// Strings that stress quoting: anything (but NUL, which Postgres cannot
/// store), plus the characters and sequences that break naive quoting.
fn hostile() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "'",
        "\"",
        "\\",
        ";",
        "--",
        "$$",
        "$x$",
        "\n",
        "\r\n",
        "\t",
        "E'",
        "/*",
        "*/",
        "%s",
        "${x}",
        " ",
        "é",
        "😀",
        "DROP TABLE canary",
        "'); DROP TABLE canary; --",
    ]);
    prop_oneof![any::<String>().prop_map(|s| s.replace('\0', "")), prop::collection::vec(pieces, 0..12).prop_map(|p| p.concat()),]
}

/// Runs one statement with the simple protocol; returns its rows and the
/// number of statements Postgres completed.
async fn simple(c: &tokio_postgres::Client, query: &str) -> (Vec<Vec<Option<String>>>, usize, Vec<String>) {
    let messages = c.simple_query(query).await.unwrap_or_else(|e| panic!("{e}: {query:?}"));
    let mut rows = Vec::new();
    let mut completed = 0;
    let mut columns = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::Row(row) => {
                columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
                rows.push((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect());
            }
            SimpleQueryMessage::CommandComplete(_) => completed += 1,
            _ => {}
        }
    }
    (rows, completed, columns)
}

fn plan_with_option(value: &str) -> AttachPlan {
    AttachPlan::new(PlanInput {
        owner: Owner { namespace: "ns".into(), name: "quoting".into() },
        uid: "u",
        schema: "quoting_probe",
        wrapper: Wrapper {
            label: "postgres".into(),
            extension: "postgres_fdw".into(),
            wrapper: "postgres_fdw".into(),
            server_options: vec![("application_name".into(), SecretString::public(value.to_owned()))],
            mapping_options: vec![("password".into(), SecretString::new(value.to_owned()))],
            remote_schema: "public".into(),
            embedded_secrets: Vec::new(),
        },
        tables: TableFilter::All,
        credentials_version: None,
        connection: "quoting",
        readers: Vec::new(),
        source_hash: None,
    })
}

/// Cuts `s` to at most 63 bytes, Postgres's identifier length, on a char
/// boundary.
fn identifier_sized(s: &str) -> &str {
    let mut end = s.len().min(63);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub async fn generated_strings_round_trip_through_postgres() {
    let pg = postgres();
    let db = pg.database("quoting").await;
    // Connect on a runtime of its own, on a thread of its own, so that the
    // property runner can block on each case.
    let uri = pg.admin_uri(&db);
    let cases = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw; CREATE TABLE canary (x int); INSERT INTO canary VALUES (1)")
                .await
                .unwrap();
            client
        });
        let mut runner = TestRunner::new(Config { cases: 300, failure_persistence: None, ..Config::default() });
        let result = runner.run(&hostile(), |value| {
            runtime.block_on(async {
                // A literal comes back identical, from exactly one statement.
                let (rows, completed, _) = simple(&client, &format!("SELECT {}", escape_literal(&value))).await;
                prop_assert_eq!(completed, 1);
                prop_assert_eq!(rows, vec![vec![Some(value.clone())]]);

                // An identifier names exactly that column.
                let ident = identifier_sized(&value);
                if !ident.is_empty() {
                    let (_, completed, columns) = simple(&client, &format!("SELECT 1 AS {}", escape_identifier(ident))).await;
                    prop_assert_eq!(completed, 1);
                    prop_assert_eq!(columns, vec![ident.to_owned()]);
                }

                // The SQL module's own statements store option values as
                // they are (checked in the catalog), in one transaction that
                // is rolled back.
                let plan = plan_with_option(&value);
                let foreign = plan.foreign().unwrap();
                // The option values go as a bind parameter, not in any text.
                let create = [
                    Statement::CreateServer {
                        server: foreign.server.clone(),
                        wrapper: foreign.wrapper.clone(),
                        options: foreign.server_options.clone(),
                    },
                    Statement::CreateUserMapping { server: foreign.server.clone(), options: foreign.mapping_options.clone() },
                ];
                let specs: Vec<_> = create.iter().filter_map(sql::options_spec).collect();
                simple(&client, "BEGIN").await;
                client.execute(sql::SET_OPTIONS, &[&sql::options_parameter(&specs)]).await.unwrap();
                let statements = [
                    sql::create_with_options(0),
                    sql::create_with_options(1),
                    sql::RESET_OPTIONS.to_owned(),
                    sql::comment_on_server(&foreign.server, &value),
                ];
                let (_, completed, _) = simple(&client, &statements.join(";\n")).await;
                prop_assert_eq!(completed, statements.len(), "no statement more, none less");
                let stored = client
                    .query_one(
                        "SELECT s.srvoptions::text[], um.umoptions::text[], obj_description(s.oid, 'pg_foreign_server')
                           FROM pg_foreign_server s JOIN pg_user_mappings um ON um.srvid = s.oid
                          WHERE s.srvname = 'quoting_probe'",
                        &[],
                    )
                    .await
                    .unwrap();
                let (server, mapping, comment): (Vec<String>, Vec<String>, Option<String>) = (stored.get(0), stored.get(1), stored.get(2));
                client.batch_execute("ROLLBACK").await.unwrap();
                prop_assert_eq!(server, vec![format!("application_name={value}")]);
                prop_assert_eq!(mapping, vec![format!("password={value}")]);
                prop_assert_eq!(comment.unwrap_or_default(), value.clone());
                let (rows, _, _) = simple(&client, "SELECT count(*) FROM canary").await;
                prop_assert_eq!(rows, vec![vec![Some("1".to_owned())]], "the canary table is untouched");
                Ok(())
            })
        });
        result.map(|_| runner.config().cases)
    })
    .join()
    .unwrap();
    match cases {
        Ok(n) => println!("quoting: {n} generated strings round-tripped"),
        Err(e) => panic!("quoting failed: {e}"),
    }
}
