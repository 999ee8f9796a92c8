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

use super::plan::{SecretString, Statement, TableFilter, Value, View};

/// The search path of every session the operator opens. `pg_temp` is
/// listed last so that it is not searched first; functions and operators
/// are never looked up in it.
pub const SESSION_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// The text of one planned statement.
pub fn render(statement: &Statement) -> String {
    match statement {
        Statement::LockExtension { extension } => lock_extension(extension),
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

/// Serializes work on one schema across operator replicas and workers, for
/// the rest of the transaction. Parameter: the schema name.
pub const LOCK_SCHEMA: &str = "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext(pg_catalog.concat('manifold.dev/', $1::text)))";

/// What the catalog shows of one schema and its server, for the current
/// user, under the schema's lock. Parameters: schema name, server name,
/// wrapper name, extension name. Foreign tables are counted from
/// pg_foreign_table, which is small and indexed: pg_class has no index on
/// the namespace, and a scan of it grows with every attachment.
pub const OBSERVE_ONE: &str = "
WITH nsp AS (SELECT oid, nspowner FROM pg_catalog.pg_namespace WHERE nspname = $1),
     srv AS (SELECT oid, srvowner FROM pg_catalog.pg_foreign_server WHERE srvname = $2),
     me AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER),
     rels AS MATERIALIZED (
       -- The schema's relations, through pg_depend's index: pg_class has no
       -- index on the namespace, and a scan of it grows with every schema.
       SELECT c.oid, c.relname, c.relkind, c.relowner FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid
        WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = (SELECT oid FROM nsp)
          AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass),
     views AS (
       -- A marker counts only on what the workspace role owns: any role
       -- with CREATE can copy one onto its own objects.
       SELECT r.relname, d.description FROM rels r
         JOIN pg_catalog.pg_description d ON d.objoid = r.oid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0
        WHERE r.relkind = 'v' AND r.relowner = (SELECT oid FROM me) AND pg_catalog.starts_with(d.description, 'manifold.dev/owner='))
SELECT
  (SELECT CASE WHEN nspowner = (SELECT oid FROM me) THEN coalesce(pg_catalog.obj_description(oid, 'pg_namespace'), '') ELSE '' END
     FROM nsp) AS schema_comment,
  (SELECT pg_catalog.count(*) FROM rels WHERE relkind = 'f') + (SELECT pg_catalog.count(*) FROM views) AS foreign_tables,
  (SELECT CASE WHEN srvowner = (SELECT oid FROM me) THEN coalesce(pg_catalog.obj_description(oid, 'pg_foreign_server'), '') ELSE '' END
     FROM srv) AS server_comment,
  EXISTS (SELECT 1 FROM pg_catalog.pg_user_mappings m WHERE m.srvid = (SELECT oid FROM srv)
            AND m.umuser = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER)) AS mapping,
  ARRAY(SELECT r.relname::text FROM rels r JOIN pg_catalog.pg_foreign_table ft ON ft.ftrelid = r.oid
         WHERE ft.ftserver = (SELECT oid FROM srv) ORDER BY 1) AS owned_tables,
  (SELECT CASE WHEN pg_catalog.has_foreign_data_wrapper_privilege(w.oid, 'USAGE') THEN 'usable' ELSE 'no-usage' END
     FROM pg_catalog.pg_foreign_data_wrapper w WHERE w.fdwname = $3) AS wrapper,
  (SELECT n.nspname::text FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = $4) AS extension_schema,
  CURRENT_USER::text AS role,
  ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
          JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
         WHERE n.nspname = $1 AND a.privilege_type = 'USAGE' AND a.grantee <> a.grantor
           AND a.grantor = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) ORDER BY 1) AS readers,
  ARRAY(SELECT relname::text || ' ' || description FROM views ORDER BY 1) AS views";

/// The columns of the foreign tables in the given schemas (an aggregator's
/// members), in table order. Parameter: the schemas, as text[].
pub const MEMBER_COLUMNS: &str = "
SELECT n.nspname::text AS schema, c.relname::text AS table, a.attname::text AS name, a.atttypid AS type_oid
  FROM pg_catalog.pg_namespace n
  JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = n.oid
   AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
  JOIN pg_catalog.pg_class c ON c.oid = d.objid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
 WHERE n.nspname = ANY($1) AND c.relkind = 'f' AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY n.nspname, c.relname, a.attnum";

/// The foreign tables of a schema that use a server, with their
/// definitions (columns, types, options) as one comparable text each.
/// Parameters: schema name, server name.
pub const TABLE_DEFS: &str = "
SELECT c.relname::text AS name,
       pg_catalog.concat_ws('#', pg_catalog.array_to_string(ft.ftoptions, ','),
         (SELECT pg_catalog.string_agg(pg_catalog.concat_ws(' ', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                                         a.attnotnull::text, pg_catalog.array_to_string(a.attfdwoptions, ',')), '|' ORDER BY a.attnum)
            FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)) AS definition
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_class c ON c.oid = d.objid
  JOIN pg_catalog.pg_foreign_table ft ON ft.ftrelid = c.oid
 WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
   AND ft.ftserver = (SELECT oid FROM pg_catalog.pg_foreign_server WHERE srvname = $2)
 ORDER BY 1";

/// The tables, columns and types of a schema's foreign tables: what the
/// source's hash is made of. Parameter: schema name.
pub const SOURCE_COLUMNS: &str = "
SELECT c.relname::text, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_class c ON c.oid = d.objid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
 WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
   AND c.relkind = 'f' AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY c.relname, a.attnum";

/// What an import left in a schema that the import cannot have been asked
/// for, at most 10, described for a person: a foreign table on a server
/// other than the attachment's own, a table or column option other than
/// those the wrapper's import sets, anything depending on one of its
/// foreign tables but their row types and defaults (a `serial` column's
/// sequence, a constraint) and, in a schema made in this transaction
/// (`fresh`), anything at all but foreign tables. A wrapper builds its
/// CREATE FOREIGN TABLE from the source's answers, and postgres_fdw pastes
/// the remote's type text unquoted. Parameters: schema name, server name,
/// the allowed table options and column options (text[]; NULL: any), and
/// whether the schema is fresh.
pub const IMPORT_INTRUDERS: &str = "
WITH nsp AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1),
     members AS MATERIALIZED (
       SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
        WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = (SELECT oid FROM nsp)),
     rels AS MATERIALIZED (
       SELECT c.oid, c.relname, c.relkind, s.srvname, ft.ftoptions FROM members m
         JOIN pg_catalog.pg_class c ON c.oid = m.objid
         LEFT JOIN pg_catalog.pg_foreign_table ft ON ft.ftrelid = c.oid
         LEFT JOIN pg_catalog.pg_foreign_server s ON s.oid = ft.ftserver
        WHERE m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass),
     found AS (
       SELECT pg_catalog.format('foreign table %I reads through server %I', r.relname, r.srvname) AS what
         FROM rels r WHERE r.relkind = 'f' AND r.srvname <> $2
       UNION ALL
       SELECT pg_catalog.format('foreign table %I has option %I', r.relname, pg_catalog.split_part(o, '=', 1))
         FROM rels r, pg_catalog.unnest(r.ftoptions) o
        WHERE $3::text[] IS NOT NULL AND pg_catalog.split_part(o, '=', 1) <> ALL ($3::text[])
       UNION ALL
       SELECT pg_catalog.format('column %I.%I has option %I', r.relname, a.attname, pg_catalog.split_part(o, '=', 1))
         FROM rels r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid, pg_catalog.unnest(a.attfdwoptions) o
        WHERE r.relkind = 'f' AND $4::text[] IS NOT NULL AND pg_catalog.split_part(o, '=', 1) <> ALL ($4::text[])
       UNION ALL
       SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
         FROM rels r JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = r.oid
        WHERE r.relkind = 'f' AND r.srvname = $2
          AND d.classid NOT IN ('pg_catalog.pg_type'::pg_catalog.regclass, 'pg_catalog.pg_attrdef'::pg_catalog.regclass)
       UNION ALL
       SELECT pg_catalog.format('%I is a relation of kind %s, not a foreign table', r.relname, r.relkind)
         FROM rels r WHERE $5::bool AND r.relkind <> 'f'
       UNION ALL
       SELECT pg_catalog.pg_describe_object(m.classid, m.objid, 0)
         FROM members m WHERE $5::bool AND m.classid <> 'pg_catalog.pg_class'::pg_catalog.regclass)
SELECT ARRAY(SELECT what FROM found ORDER BY 1 LIMIT 10)";

/// What holds a schema's drop: the views elsewhere built on its relations,
/// each with its owner, and whether it is another session's temporary
/// object (which goes when that session ends). Parameter: schema name.
pub const HOLDERS: &str = "
SELECT ARRAY(
  SELECT DISTINCT pg_catalog.format('%s of role %I%s', pg_catalog.pg_describe_object('pg_catalog.pg_class'::pg_catalog.regclass, v.oid, 0),
           r.rolname, CASE WHEN pg_catalog.pg_is_other_temp_schema(v.relnamespace)
                           THEN ' (temporary: it goes when that session ends)' ELSE '' END)
    FROM pg_catalog.pg_class t
    JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = t.oid
     AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
    JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid
    JOIN pg_catalog.pg_class v ON v.oid = rw.ev_class
    JOIN pg_catalog.pg_roles r ON r.oid = v.relowner
   WHERE t.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1) AND v.relnamespace <> t.relnamespace
   ORDER BY 1 LIMIT 10)";

/// Which of the roles ($1, text[]) exist, now.
pub const EXISTING_ROLES: &str = "SELECT ARRAY(SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[]))";

/// Whether a schema exists, whoever owns it. Parameter: schema name.
pub const SCHEMA_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)";

/// The aggregators' schemas whose marker lists a member schema: the ones a
/// member's change must rebuild. Parameter: the member schema.
pub const AGGREGATES_OF: &str = "
SELECT n.nspname::text AS schema, d.description AS comment
  FROM pg_catalog.pg_description d JOIN pg_catalog.pg_namespace n ON n.oid = d.objoid
 WHERE d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objsubid = 0
   AND n.nspowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER)
   AND pg_catalog.starts_with(d.description, 'manifold.dev/owner=')
   AND pg_catalog.strpos(d.description, pg_catalog.concat(':', $1::text)) > 0
 ORDER BY 1";

/// `OBSERVE_ONE` for a schema and a server that do not exist (a new
/// attachment), in its columns, and whether either does (`present`): then
/// `OBSERVE_ONE` runs. In a bulk apply nearly every attach is new, and
/// `OBSERVE_ONE`'s plan is rebuilt on every call (every schema or server
/// created in the database resets every session's cached plans), which
/// was a fifth of Postgres's CPU at 12,000 attachments. Parameters as for
/// `OBSERVE_ONE`.
pub const OBSERVE_ABSENT: &str = "
SELECT
  EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server WHERE srvname = $2) AS present,
  NULL::text AS schema_comment,
  0::bigint AS foreign_tables,
  NULL::text AS server_comment,
  false AS mapping,
  ARRAY[]::text[] AS owned_tables,
  (SELECT CASE WHEN pg_catalog.has_foreign_data_wrapper_privilege(w.oid, 'USAGE') THEN 'usable' ELSE 'no-usage' END
     FROM pg_catalog.pg_foreign_data_wrapper w WHERE w.fdwname = $3) AS wrapper,
  (SELECT n.nspname::text FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = $4) AS extension_schema,
  CURRENT_USER::text AS role,
  ARRAY[]::text[] AS readers,
  ARRAY[]::text[] AS views";

/// Whether the role can use a wrapper, where its extension lives, and who
/// the role is: what a test needs before it plans. Parameters: wrapper
/// name, extension name.
pub const OBSERVE_WRAPPER: &str = "
SELECT
  (SELECT CASE WHEN pg_catalog.has_foreign_data_wrapper_privilege(w.oid, 'USAGE') THEN 'usable' ELSE 'no-usage' END
     FROM pg_catalog.pg_foreign_data_wrapper w WHERE w.fdwname = $1) AS wrapper,
  (SELECT n.nspname::text FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = $2) AS extension_schema,
  CURRENT_USER::text AS role";

/// The foreign tables of a schema that use a server, by name: the ones an
/// attachment imported. Parameters: schema name, server name.
pub const OWNED_FOREIGN_TABLES: &str = "
SELECT c.relname::text FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_class c ON c.oid = d.objid
  JOIN pg_catalog.pg_foreign_table ft ON ft.ftrelid = c.oid
 WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1)
   AND ft.ftserver = (SELECT oid FROM pg_catalog.pg_foreign_server WHERE srvname = $2)
 ORDER BY 1";

/// The whole at-rest resync of a workspace in one round trip: the server
/// version, the role (and whether it is a superuser), the database and its
/// settings, which of the readers ($1, text[]) exist, and every schema that
/// carries a Manifold marker with its comment, its count of foreign tables
/// and our views, and whether its server and the current user's mapping
/// exist; a marked server whose schema is gone is listed under its name
/// too, so that nothing of ours goes unseen (as one JSON array).
pub const OBSERVE_ALL: &str = "
WITH me AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER
), managed AS (
  -- A marker counts only on what the workspace role owns: any role with
  -- CREATE on the database can copy one onto a schema of its own.
  SELECT d.objoid AS nsp, d.description FROM pg_catalog.pg_description d
    JOIN pg_catalog.pg_namespace n ON n.oid = d.objoid AND n.nspowner = (SELECT oid FROM me)
   WHERE d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objsubid = 0
     AND pg_catalog.starts_with(d.description, 'manifold.dev/owner=')
), foreign_tables AS MATERIALIZED (
  -- One scan of pg_class, hash-joined by schema below (a join to pg_class
  -- itself was planned as a nested loop, quadratic in the number of
  -- schemas; a JSON object of the counts cost a third more than this).
  SELECT relnamespace, pg_catalog.count(*) AS n FROM pg_catalog.pg_class WHERE relkind = 'f' GROUP BY relnamespace
), views AS MATERIALIZED (
  -- Our views (an aggregator's), counted like foreign tables.
  SELECT pg_catalog.jsonb_object_agg(relnamespace::text, n) AS by_schema
    FROM (SELECT c.relnamespace, pg_catalog.count(*) AS n FROM pg_catalog.pg_class c
            JOIN pg_catalog.pg_description d ON d.objoid = c.oid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0
           WHERE c.relkind = 'v' AND c.relowner = (SELECT oid FROM me)
             AND pg_catalog.starts_with(d.description, 'manifold.dev/owner=') GROUP BY c.relnamespace) v
), servers AS MATERIALIZED (
  SELECT s.oid, s.srvname, CASE WHEN s.srvowner = (SELECT oid FROM me) THEN coalesce(sd.description, '') ELSE '' END AS comment
    FROM pg_catalog.pg_foreign_server s
    LEFT JOIN pg_catalog.pg_description sd ON sd.objoid = s.oid
     AND sd.classoid = 'pg_catalog.pg_foreign_server'::pg_catalog.regclass AND sd.objsubid = 0
), mappings AS (
  SELECT srvid FROM pg_catalog.pg_user_mappings WHERE umuser = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER)
), entries AS (
  SELECT n.nspname::text AS schema, m.description AS comment,
         coalesce(ft.n, 0)
         + coalesce((SELECT (by_schema ->> n.oid::text)::bigint FROM views), 0) AS foreign_tables,
         s.comment AS server_comment, s.oid IS NOT NULL AND s.oid IN (SELECT srvid FROM mappings) AS mapping
    FROM managed m
    JOIN pg_catalog.pg_namespace n ON n.oid = m.nsp
    LEFT JOIN servers s ON s.srvname = n.nspname
    LEFT JOIN foreign_tables ft ON ft.relnamespace = n.oid
  UNION ALL
  SELECT s.srvname::text, NULL, 0, s.comment, s.oid IN (SELECT srvid FROM mappings)
    FROM servers s
   WHERE pg_catalog.starts_with(s.comment, 'manifold.dev/owner=')
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = s.srvname)
)
SELECT pg_catalog.current_setting('server_version') AS version,
       CURRENT_USER::text AS role,
       (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) AS superuser,
       pg_catalog.current_database()::text AS database,
       ARRAY(SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[]) ORDER BY 1) AS roles,
       (SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s
         WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())) AS database_settings,
       coalesce((SELECT pg_catalog.json_agg(pg_catalog.row_to_json(e)) FROM entries e), '[]'::json) AS schemas";

/// What an attach needs after its import, in one statement (each statement
/// is planned afresh, as every schema created resets the cached plans):
/// the count of foreign tables (and, in an aggregator's schema, of its
/// marked views), `SOURCE_COLUMNS` as a JSON array of [table, column,
/// type] in table and column order, and the first of
/// `OWNED_FOREIGN_TABLES`. Parameters: schema name, server name.
pub const AFTER_IMPORT: &str = "
WITH rels AS MATERIALIZED (
  SELECT c.oid, c.relname, c.relkind, c.relowner FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid
   WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
     AND d.refobjid = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1))
SELECT
  (SELECT pg_catalog.count(*) FILTER (WHERE r.relkind = 'f' OR (r.relkind = 'v'
          AND r.relowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) AND pg_catalog.starts_with(
          pg_catalog.obj_description(r.oid, 'pg_class'), 'manifold.dev/owner='))) FROM rels r) AS tables,
  (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(r.relname::text, a.attname::text,
          pg_catalog.format_type(a.atttypid, a.atttypmod)) ORDER BY r.relname, a.attnum)
     FROM rels r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid
    WHERE r.relkind = 'f' AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
  (SELECT r.relname::text FROM rels r JOIN pg_catalog.pg_foreign_table ft ON ft.ftrelid = r.oid
    WHERE ft.ftserver = (SELECT oid FROM pg_catalog.pg_foreign_server WHERE srvname = $2) ORDER BY 1 LIMIT 1) AS first_owned";

/// A lexer of exactly what this module renders: words, quoted identifiers,
/// string literals (plain and `E''`), and punctuation. The tests and the
/// fuzz target (fuzz/) lex rendered statements back, to prove that every
/// value stays one token and nothing else appears.
pub mod lex {
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Token {
        Word(String),
        Ident(String),
        Literal(String),
        Punct(char),
    }

    pub fn tokens(sql: &str) -> Result<Vec<Token>, String> {
        let chars: Vec<char> = sql.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        // Reads a quoted token whose quote is doubled inside; with
        // `backslash`, `\\` is one backslash (E'' strings).
        let quoted = |i: &mut usize, quote: char, backslash: bool| -> Result<String, String> {
            let mut value = String::new();
            *i += 1;
            loop {
                match chars.get(*i) {
                    None => return Err("unterminated quote".into()),
                    Some(&c) if c == quote => {
                        if chars.get(*i + 1) == Some(&quote) {
                            value.push(quote);
                            *i += 2;
                        } else {
                            *i += 1;
                            return Ok(value);
                        }
                    }
                    Some('\\') if backslash => match chars.get(*i + 1) {
                        Some('\\') => {
                            value.push('\\');
                            *i += 2;
                        }
                        _ => return Err("a backslash escape other than \\\\".into()),
                    },
                    Some(&c) => {
                        value.push(c);
                        *i += 1;
                    }
                }
            }
        };
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '"' {
                out.push(Token::Ident(quoted(&mut i, '"', false)?));
            } else if c == '\'' {
                out.push(Token::Literal(quoted(&mut i, '\'', false)?));
            } else if c == 'E' && chars.get(i + 1) == Some(&'\'') {
                i += 1;
                out.push(Token::Literal(quoted(&mut i, '\'', true)?));
            } else if c.is_ascii_alphanumeric() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            } else if "(),.;=".contains(c) {
                out.push(Token::Punct(c));
                i += 1;
            } else {
                return Err(format!("unexpected character {c:?}"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_travel_apart_from_the_statement_text() {
        let opts =
            vec![("user".to_owned(), SecretString::new("o'brien".into())), ("pass\"word".to_owned(), SecretString::new("a\\b".into()))];
        let statements = [
            Statement::CreateServer { server: "sa\"les".into(), wrapper: "postgres_fdw".into(), options: opts.clone() },
            Statement::CreateUserMapping { server: "sa\"les".into(), options: opts.clone() },
            Statement::CreateReaderMapping { server: "sa\"les".into(), role: "ann".into(), options: opts.clone() },
        ];
        let specs: Vec<serde_json::Value> = statements.iter().filter_map(options_spec).collect();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[1]["options"], serde_json::json!([["user", "o'brien"], ["pass\"word", "a\\b"]]));
        assert_eq!(specs[1]["role"], serde_json::Value::Null);
        assert_eq!(specs[2]["role"], "ann");
        assert_eq!(specs[0]["wrapper"], "postgres_fdw");
        let parameter = options_parameter(&specs);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&parameter).unwrap(), serde_json::Value::Array(specs));
        for (i, statement) in statements.iter().enumerate() {
            let text = if i == 0 { render(statement) } else { create_with_options(i) };
            assert!(!text.contains("brien") && !text.contains("a\\b") && !text.contains("sa\""), "{text}");
            assert!(text.contains(&format!("::pg_catalog.jsonb -> {i};")), "{text}");
            assert!(text.contains("EXCEPTION WHEN OTHERS THEN\n  RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = SQLERRM;"));
        }
        assert_eq!(options_spec(&Statement::DropServer { server: "x".into() }), None);
        assert!(SET_OPTIONS.contains("$1") && RESET_OPTIONS.ends_with("'', true)"));
    }

    #[test]
    fn import_renders_filters() {
        let t = vec!["orders".to_owned(), "Line Items".to_owned()];
        assert_eq!(
            import_foreign_schema("public", &TableFilter::LimitTo(t.clone()), "s", "sales"),
            r#"IMPORT FOREIGN SCHEMA "public" LIMIT TO ("orders", "Line Items") FROM SERVER "s" INTO "sales""#
        );
        assert_eq!(
            import_foreign_schema("public", &TableFilter::Except(t), "s", "sales"),
            r#"IMPORT FOREIGN SCHEMA "public" EXCEPT ("orders", "Line Items") FROM SERVER "s" INTO "sales""#
        );
        assert_eq!(drop_foreign_tables("s", &[]), None);
        assert_eq!(drop_foreign_tables("s", &["a".into()]).unwrap(), r#"DROP FOREIGN TABLE "s"."a" RESTRICT"#);
    }

    use super::lex::{Token, tokens};
    use proptest::prelude::*;

    fn words(s: &str) -> Vec<Token> {
        s.split(' ').map(|w| Token::Word(w.into())).collect()
    }

    proptest! {
        /// Any name and value renders as exactly one identifier or literal
        /// token holding it: no statement can be smuggled in.
        #[test]
        fn rendered_statements_lex_back_to_their_inputs(server in "\\PC*", key in "\\PC*", value in "\\PC*", schema in "\\PC*") {
            let mut want = words("COMMENT ON SCHEMA");
            want.extend([Token::Ident(schema.clone()), Token::Word("IS".into()), Token::Literal(value.clone())]);
            prop_assert_eq!(tokens(&comment_on_schema(&schema, &value)).unwrap(), want);

            let mut want = words("DROP FOREIGN TABLE");
            want.extend([Token::Ident(schema.clone()), Token::Punct('.'), Token::Ident(key.clone()), Token::Word("RESTRICT".into())]);
            prop_assert_eq!(tokens(&drop_foreign_tables(&schema, std::slice::from_ref(&key)).unwrap()).unwrap(), want);

            let mut want = words("IMPORT FOREIGN SCHEMA");
            want.extend([Token::Ident(key.clone()), Token::Word("LIMIT".into()), Token::Word("TO".into()), Token::Punct('('),
                         Token::Ident(value.clone()), Token::Punct(')'), Token::Word("FROM".into()), Token::Word("SERVER".into()),
                         Token::Ident(server.clone()), Token::Word("INTO".into()), Token::Ident(schema.clone())]);
            prop_assert_eq!(tokens(&import_foreign_schema(&key, &TableFilter::LimitTo(vec![value.clone()]), &server, &schema)).unwrap(), want);
        }
    }

    #[test]
    fn drops_never_cascade() {
        for stmt in [drop_server("x"), drop_schema("x"), drop_foreign_tables("x", &["t".into()]).unwrap()] {
            assert!(stmt.ends_with("RESTRICT") && !stmt.contains("CASCADE"), "{stmt}");
        }
    }

    /// Every function the catalog queries call is qualified with
    /// pg_catalog: pinning the search path is the first guard, this the
    /// second.
    #[test]
    fn catalog_queries_qualify_every_function() {
        let calls = [
            "obj_description(",
            "count(",
            "has_foreign_data_wrapper_privilege(",
            "pg_advisory_xact_lock(",
            "hashtext(",
            "starts_with(",
            "json_agg(",
            "json_build_object(",
            "jsonb_object_agg(",
            "current_setting(",
            "concat(",
            "aclexplode(",
            "current_database(",
            "strpos(",
            "to_jsonb(",
            "row_to_json(",
            "concat_ws(",
            "array_to_string(",
            "format_type(",
            "string_agg(",
            "jsonb_agg(",
            "jsonb_build_array(",
            "format(",
            "set_config(",
            "jsonb_array_length(",
            "jsonb_array_elements(",
            "split_part(",
            "unnest(",
            "pg_describe_object(",
            "pg_is_other_temp_schema(",
        ];
        for query in [
            OBSERVE_ONE,
            OBSERVE_ABSENT,
            AFTER_IMPORT,
            OBSERVE_WRAPPER,
            OWNED_FOREIGN_TABLES,
            OBSERVE_ALL,
            LOCK_SCHEMA,
            MEMBER_COLUMNS,
            AGGREGATES_OF,
            TABLE_DEFS,
            SOURCE_COLUMNS,
            IMPORT_INTRUDERS,
            HOLDERS,
            EXISTING_ROLES,
            SCHEMA_EXISTS,
            &lock_extension("x"),
            &create_with_options(0),
            &empty_view("s", "v"),
            SET_OPTIONS,
            RESET_OPTIONS,
        ] {
            for call in calls {
                for (i, _) in query.match_indices(call) {
                    assert!(query[..i].ends_with("pg_catalog."), "unqualified {call} in {query}");
                }
            }
            for word in ["FROM pg_", "JOIN pg_"] {
                for (i, _) in query.match_indices(word) {
                    assert!(query[i + word.len() - 3..].starts_with("pg_catalog."), "unqualified catalog in {query}");
                }
            }
        }
        assert_eq!(create_extension("postgres_fdw", "public"), r#"CREATE EXTENSION IF NOT EXISTS "postgres_fdw" SCHEMA "public""#);
        assert_eq!(disconnect_fdw("ext"), r#"SELECT "ext".postgres_fdw_disconnect_all()"#);
    }
}
