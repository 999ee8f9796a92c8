//! Every SQL statement Manifold runs, rendered in this one module. Each
//! identifier goes through `escape_identifier` and each literal through
//! `escape_literal`; values from a spec or a Secret are never interpolated
//! raw. Catalog queries take their inputs as bind parameters.
//!
//! Every session pins `search_path` to `pg_catalog, pg_temp` (see
//! `SESSION_SEARCH_PATH`), and every function named here is qualified too,
//! so that nothing a database user plants in `"$user"` or `public` runs as
//! the operator.

use postgres_protocol::escape::{escape_identifier as ident, escape_literal as literal};

use crate::plan::{SecretString, Statement, TableFilter, Value, View};

mod catalog;
pub mod lex;
mod pin;
pub use catalog::*;
pub use pin::*;

/// The search path of every session the operator opens. `pg_temp` is
/// listed last so that it is not searched first; functions and operators
/// are never looked up in it.
pub const SESSION_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// The text of one planned statement.
pub fn render(statement: &Statement) -> String {
    match statement {
        Statement::LockExtension { extension } => lock_extension(extension),
        Statement::DisconnectFdw { extension_schema } => disconnect_fdw(extension_schema),
        Statement::CreateExtension { extension, schema } => create_extension(extension, schema),
        Statement::CreateServer { .. } | Statement::CreateUserMapping { .. } | Statement::CreateReaderMapping { .. } => {
            create_with_options(0)
        }
        Statement::CommentOnServer { server, marker } => comment_on_server(server, &marker.render()),
        Statement::DropUserMapping { server } => drop_user_mapping(server),
        Statement::DropServer { server } => drop_server(server),
        Statement::CreateSchema { schema } => create_schema(schema),
        Statement::DropSchema { schema } => drop_schema(schema),
        Statement::DropForeignTables { schema, tables } => drop_foreign_tables(schema, tables).unwrap_or_default(),
        Statement::Import { remote_schema, filter, server, schema } => import_foreign_schema(remote_schema, filter, server, schema),
        Statement::MarkSchema { schema, marker } => comment_on_schema(schema, &marker.render()),
        Statement::DropReaderMapping { server, role } => {
            format!("DROP USER MAPPING IF EXISTS FOR {} SERVER {}", ident(role), ident(server))
        }
        Statement::GrantReaders { schema, roles } => {
            let roles = roles.iter().map(|r| ident(r)).collect::<Vec<_>>().join(", ");
            format!("GRANT USAGE ON SCHEMA {s} TO {roles}; GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {roles}", s = ident(schema))
        }
        Statement::RevokeReader { schema, role } => format!(
            "REVOKE SELECT ON ALL TABLES IN SCHEMA {s} FROM {r}; REVOKE USAGE ON SCHEMA {s} FROM {r}",
            s = ident(schema),
            r = ident(role)
        ),
        Statement::CreateView(view) => create_view(view),
        Statement::MoveForeignTable { from, name, to } => {
            format!("ALTER FOREIGN TABLE {} SET SCHEMA {}", qualified(from, name), ident(to))
        }
        // The executor carries a re-import out in steps; as one statement it
        // is the import into the staging schema.
        Statement::Reimport { schema, server, remote_schema, filter } => {
            import_foreign_schema(remote_schema, filter, server, &super::plan::stage_schema(schema))
        }
        Statement::DropView { schema, name } => format!("DROP VIEW {} RESTRICT", qualified(schema, name)),
        Statement::EmptyView { schema, name } => empty_view(schema, name),
        Statement::SetSearchPath { database, path } if path.is_empty() => {
            format!("ALTER DATABASE {} RESET search_path", ident(database))
        }
        Statement::SetSearchPath { database, path } => {
            let path = path.iter().map(|p| ident(p)).collect::<Vec<_>>().join(", ");
            format!("ALTER DATABASE {} SET search_path = {path}", ident(database))
        }
    }
}

/// An aggregator's view, and the comment that marks it as ours. No type
/// name is ever written: a member without a column gives an untyped NULL,
/// which the `UNION` resolves from the other members, and members that
/// disagree give jsonb.
fn create_view(view: &View) -> String {
    let branches: Vec<String> = view
        .branches
        .iter()
        .map(|b| {
            let mut columns = vec![format!("{}::pg_catalog.text AS {}", literal(&b.connection), ident(super::plan::CONNECTION_COLUMN))];
            for (value, name) in b.values.iter().zip(&view.columns) {
                columns.push(match value {
                    Value::Column(c) => format!("{} AS {}", ident(c), ident(name)),
                    Value::Jsonb(c) => format!("pg_catalog.to_jsonb({}) AS {}", ident(c), ident(name)),
                    Value::Null => format!("NULL AS {}", ident(name)),
                });
            }
            format!("SELECT {} FROM {}", columns.join(", "), qualified(&b.schema, &view.name))
        })
        .collect();
    let name = qualified(&view.schema, &view.name);
    format!("CREATE VIEW {name} AS {}; COMMENT ON VIEW {name} IS {}", branches.join(" UNION ALL "), literal(&view.marker.render()))
}

// Options travel apart from the statement text
//
// A server's and a user mapping's option values (passwords, a steampipe
// `config`) never appear in the text of a statement: Postgres writes the
// text of a failing statement to its log (`log_min_error_statement`, whole
// multi-statement batch included), shows it in `pg_stat_activity` and
// keeps it in `pg_stat_statements`. They go as a bind parameter (which the
// log leaves out on error by default) into a transaction-local setting,
// seen by this session only; a DO block of fixed text builds each
// statement from it with `format('%I')`/`%L` and runs it, and re-raises
// its error without the executed text (PL/pgSQL would put it in the
// error's CONTEXT). The setting is emptied right after the last one.
// `pg_stat_statements.track = all` (not the default) records statements
// nested in functions, and so the executed text: only to superusers,
// `pg_read_all_stats` and the workspace role itself, who reads its
// mappings anyway.

/// The transaction-local setting that carries the option values.
const OPTIONS_SETTING: &str = "manifold.ddl_options";

/// Sets the options of the statements that follow (a JSON array of
/// `options_spec`), for the rest of the transaction. Parameter: the JSON.
pub const SET_OPTIONS: &str = "SELECT pg_catalog.set_config('manifold.ddl_options', $1, true)";

/// Empties the setting once the statements that read it ran.
pub const RESET_OPTIONS: &str = "SELECT pg_catalog.set_config('manifold.ddl_options', '', true)";

/// What a statement that creates a server or a user mapping carries apart
/// from its text (see `create_with_options`); None for other statements.
pub fn options_spec(statement: &Statement) -> Option<serde_json::Value> {
    let pairs = |options: &[(String, SecretString)]| -> serde_json::Value {
        options.iter().map(|(k, v)| serde_json::json!([k, v.expose()])).collect()
    };
    match statement {
        Statement::CreateServer { server, wrapper, options } => {
            Some(serde_json::json!({"kind": "server", "server": server, "wrapper": wrapper, "options": pairs(options)}))
        }
        Statement::CreateUserMapping { server, options } => {
            Some(serde_json::json!({"kind": "mapping", "server": server, "role": null, "options": pairs(options)}))
        }
        Statement::CreateReaderMapping { server, role, options } => {
            Some(serde_json::json!({"kind": "mapping", "server": server, "role": role, "options": pairs(options)}))
        }
        _ => None,
    }
}

/// The parameter of `SET_OPTIONS`: the specs of `options_spec`, in order.
pub fn options_parameter(specs: &[serde_json::Value]) -> String {
    serde_json::Value::Array(specs.to_vec()).to_string()
}

/// Creates the server or user mapping that entry `index` of the options
/// set by `SET_OPTIONS` describes. The text holds no value of a spec or a
/// Secret: only the index.
pub fn create_with_options(index: usize) -> String {
    format!(
        "DO $manifold$
DECLARE
  spec pg_catalog.jsonb := pg_catalog.current_setting('{OPTIONS_SETTING}')::pg_catalog.jsonb -> {index};
  ddl pg_catalog.text;
BEGIN
  IF spec ->> 'kind' = 'server' THEN
    ddl := pg_catalog.format('CREATE SERVER %I FOREIGN DATA WRAPPER %I', spec ->> 'server', spec ->> 'wrapper');
  ELSIF spec ->> 'role' IS NULL THEN
    ddl := pg_catalog.format('CREATE USER MAPPING FOR CURRENT_USER SERVER %I', spec ->> 'server');
  ELSE
    ddl := pg_catalog.format('CREATE USER MAPPING FOR %I SERVER %I', spec ->> 'role', spec ->> 'server');
  END IF;
  IF pg_catalog.jsonb_array_length(spec -> 'options') > 0 THEN
    ddl := ddl || ' OPTIONS (' || (SELECT pg_catalog.string_agg(pg_catalog.format('%I %L', o ->> 0, o ->> 1), ', ' ORDER BY n)
                                     FROM pg_catalog.jsonb_array_elements(spec -> 'options') WITH ORDINALITY AS t(o, n)) || ')';
  END IF;
  EXECUTE ddl;
EXCEPTION WHEN OTHERS THEN
  RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = SQLERRM;
END
$manifold$"
    )
}

/// An aggregator's view again, in place: its privileges, comment and the
/// views others built on it stay. Postgres refuses when a column would go
/// or change its type; the caller then drops and creates it.
pub fn replace_view(view: &View) -> String {
    let created = create_view(view);
    let rest = created.strip_prefix("CREATE VIEW ").expect("create_view begins so");
    format!("CREATE OR REPLACE VIEW {rest}")
}

/// Redefines a view to return no row, with the columns (names and types)
/// it has, read from the catalog: it then depends on no table. The type
/// names are Postgres's own `format_type`, never text of ours.
fn empty_view(schema: &str, name: &str) -> String {
    format!(
        "DO $manifold$
DECLARE
  target pg_catalog.regclass := pg_catalog.format('%I.%I', {schema}, {name})::pg_catalog.regclass;
  columns pg_catalog.text;
BEGIN
  SELECT pg_catalog.string_agg(pg_catalog.format('NULL::%s AS %I', pg_catalog.format_type(a.atttypid, a.atttypmod), a.attname), ', '
                               ORDER BY a.attnum)
    INTO columns FROM pg_catalog.pg_attribute a WHERE a.attrelid = target AND a.attnum > 0 AND NOT a.attisdropped;
  EXECUTE pg_catalog.format('CREATE OR REPLACE VIEW %s AS SELECT %s WHERE false', target, columns);
END
$manifold$",
        schema = literal(schema),
        name = literal(name)
    )
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// Into a fixed schema: with the search path pinned, there is no default
/// creation schema to fall back on, and none should be guessed.
pub fn create_extension(extension: &str, schema: &str) -> String {
    format!("CREATE EXTENSION IF NOT EXISTS {} SCHEMA {}", ident(extension), ident(schema))
}

/// A transaction-scoped lock on an extension's name.
pub fn lock_extension(extension: &str) -> String {
    format!("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext({}))", literal(&format!("manifold.dev/extension/{extension}")))
}

pub fn drop_user_mapping(server: &str) -> String {
    format!("DROP USER MAPPING IF EXISTS FOR CURRENT_USER SERVER {}", ident(server))
}

/// Never CASCADE: if anything else uses the server, Postgres refuses, and the
/// refusal is reported as `DependentObjects`.
pub fn drop_server(server: &str) -> String {
    format!("DROP SERVER {} RESTRICT", ident(server))
}

pub fn create_schema(schema: &str) -> String {
    format!("CREATE SCHEMA {}", ident(schema))
}

/// Never CASCADE: a schema that still holds anything we did not create stays.
pub fn drop_schema(schema: &str) -> String {
    format!("DROP SCHEMA {} RESTRICT", ident(schema))
}

/// Drops the listed foreign tables of a schema, refusing if anything (a view
/// someone built on them) depends on them. None if there are none.
pub fn drop_foreign_tables(schema: &str, tables: &[String]) -> Option<String> {
    if tables.is_empty() {
        return None;
    }
    let names: Vec<String> = tables.iter().map(|t| qualified(schema, t)).collect();
    Some(format!("DROP FOREIGN TABLE {} RESTRICT", names.join(", ")))
}

pub fn import_foreign_schema(remote_schema: &str, filter: &TableFilter, server: &str, schema: &str) -> String {
    let list = |tables: &[String]| tables.iter().map(|t| ident(t)).collect::<Vec<_>>().join(", ");
    let filter = match filter {
        TableFilter::All => String::new(),
        TableFilter::LimitTo(t) => format!(" LIMIT TO ({})", list(t)),
        TableFilter::Except(t) => format!(" EXCEPT ({})", list(t)),
    };
    format!("IMPORT FOREIGN SCHEMA {}{} FROM SERVER {} INTO {}", ident(remote_schema), filter, ident(server), ident(schema))
}

/// Reads one row of a foreign table: proves access, not only syntax.
pub fn read_one_row(schema: &str, table: &str) -> String {
    format!("SELECT * FROM {} LIMIT 1", qualified(schema, table))
}

pub fn comment_on_schema(schema: &str, comment: &str) -> String {
    format!("COMMENT ON SCHEMA {} IS {}", ident(schema), literal(comment))
}

pub fn comment_on_server(server: &str, comment: &str) -> String {
    format!("COMMENT ON SERVER {} IS {}", ident(server), literal(comment))
}

/// Closes the remote connections postgres_fdw keeps in this session, so that
/// pooled sessions do not hold one to every source they ever imported from.
/// The function is called in the schema its extension is installed in.
pub fn disconnect_fdw(extension_schema: &str) -> String {
    format!("SELECT {}.postgres_fdw_disconnect_all()", ident(extension_schema))
}

/// Bounds every statement of the transaction; values are plain integers.
pub fn set_timeouts(statement_ms: u64, lock_ms: u64) -> String {
    format!("SET LOCAL statement_timeout = {statement_ms}; SET LOCAL lock_timeout = {lock_ms}")
}

#[cfg(test)]
mod tests;
