//! The catalog queries: what the operator reads of a workspace database.
//! Their inputs travel as bind parameters, never in the text.

/// Whether the type of the `pg_type` row `$t` (an alias in the query) is
/// one Manifold trusts to be read: built in (every object initdb makes has
/// an oid below FirstNormalObjectId, 16384), or a member of one of the
/// extensions named by the text[] expression `$extensions`; an array is
/// judged by its element type. Anything else (a domain, enum, range or
/// composite type a database user made) may run that user's code when a
/// value is read: a domain's CHECK calls any function, as the reading
/// role. Lookups by oid only (`pg_type`'s and `pg_depend`'s indexes): a
/// workspace of thousands of foreign tables has as many row types.
macro_rules! trusted_type {
    ($t:literal, $extensions:literal) => {
        concat!(
            "(SELECT base < 16384 OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
     WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = base
       AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
       AND e.extname = ANY (coalesce(",
            $extensions,
            "::pg_catalog.text[], ARRAY[]::pg_catalog.text[])))
   FROM (SELECT CASE WHEN ",
            $t,
            ".typelem <> 0 AND ",
            $t,
            ".typsubscript = 'pg_catalog.array_subscript_handler'::pg_catalog.regproc THEN ",
            $t,
            ".typelem ELSE ",
            $t,
            ".oid END AS base) b)"
        )
    };
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
  ARRAY(SELECT relname::text || ' ' || description FROM views ORDER BY 1) AS views,
  pg_catalog.has_column_privilege('public', 'pg_catalog.pg_foreign_server', 'srvoptions', 'SELECT') AS server_options_public";

/// The columns of the foreign tables in the given schemas (an aggregator's
/// members), in table order, with their type's name and whether Manifold
/// trusts it (see `trusted_type!`). Parameters: the schemas, as text[];
/// the trusted extensions, as text[].
pub const MEMBER_COLUMNS: &str = concat!(
    "
SELECT n.nspname::text AS schema, c.relname::text AS table, a.attname::text AS name, a.atttypid AS type_oid,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type_name, ",
    trusted_type!("t", "$2"),
    " AS trusted
  FROM pg_catalog.pg_namespace n
  JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = n.oid
   AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
  JOIN pg_catalog.pg_class c ON c.oid = d.objid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE n.nspname = ANY($1) AND c.relkind = 'f' AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY n.nspname, c.relname, a.attnum"
);

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
/// sequence, a constraint), a column whose type Manifold does not trust
/// (see `trusted_type!`) and, in a schema made in this transaction
/// (`fresh`), anything at all but foreign tables. A wrapper builds its
/// CREATE FOREIGN TABLE from the source's answers, and postgres_fdw pastes
/// the remote's type text unquoted. Parameters: schema name, server name,
/// the allowed table options and column options (text[]; NULL: any),
/// whether the schema is fresh, and the extensions whose types are trusted
/// (text[]).
pub const IMPORT_INTRUDERS: &str = concat!(
    "
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
       SELECT pg_catalog.format('column %I.%I has type %s, which is neither built in nor from an extension the cluster admin '
                                'trusts (--type-extensions): reading a value of it could run code a database user wrote',
                                r.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod))
         FROM rels r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
        WHERE r.relkind = 'f' AND NOT ",
    trusted_type!("t", "$6"),
    "
       UNION ALL
       SELECT pg_catalog.format('%I is a relation of kind %s, not a foreign table', r.relname, r.relkind)
         FROM rels r WHERE $5::bool AND r.relkind <> 'f'
       UNION ALL
       SELECT pg_catalog.pg_describe_object(m.classid, m.objid, 0)
         FROM members m WHERE $5::bool AND m.classid <> 'pg_catalog.pg_class'::pg_catalog.regclass)
SELECT ARRAY(SELECT what FROM found ORDER BY 1 LIMIT 10)"
);

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
  ARRAY[]::text[] AS views,
  pg_catalog.has_column_privilege('public', 'pg_catalog.pg_foreign_server', 'srvoptions', 'SELECT') AS server_options_public";

/// Whether the role can use a wrapper, where its extension lives, and who
/// the role is, and whether it is a superuser: what a test needs before it
/// plans. Parameters: wrapper name, extension name.
pub const OBSERVE_WRAPPER: &str = "
SELECT
  (SELECT CASE WHEN pg_catalog.has_foreign_data_wrapper_privilege(w.oid, 'USAGE') THEN 'usable' ELSE 'no-usage' END
     FROM pg_catalog.pg_foreign_data_wrapper w WHERE w.fdwname = $1) AS wrapper,
  (SELECT n.nspname::text FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = $2) AS extension_schema,
  CURRENT_USER::text AS role,
  (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER) AS superuser,
  pg_catalog.has_column_privilege('public', 'pg_catalog.pg_foreign_server', 'srvoptions', 'SELECT') AS server_options_public";

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
/// `OBSERVE_ALL`, with `$extra` (text beginning with a comma) as more
/// columns of its one row.
macro_rules! observe_all {
    ($extra:literal) => {
        concat!("
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
       coalesce((SELECT pg_catalog.json_agg(pg_catalog.row_to_json(e)) FROM entries e), '[]'::json) AS schemas,
       -- Every session of this role in this database, to tell Manifold's
       -- own from others' (see `postgres::Database::others`).
       coalesce((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                   'pid', a.pid, 'started', (EXTRACT(epoch FROM a.backend_start) * 1000000)::bigint,
                   'application', a.application_name, 'client', pg_catalog.host(a.client_addr)) ORDER BY a.pid)
                   FROM pg_catalog.pg_stat_activity a
                  WHERE a.usesysid = (SELECT oid FROM me) AND a.backend_type = 'client backend'
                    AND a.datid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())),
                '[]'::json) AS sessions", $extra)
    };
}

pub const OBSERVE_ALL: &str = observe_all!(
    ",
       pg_catalog.pg_backend_pid() AS pid"
);

/// `OBSERVE_ALL` and, in the same round trip, the Workspace's pin: this
/// session's pid, and the token stored for the Workspace whose uid is $2.
/// Only for a database whose pin table this process has already found to
/// be the workspace role's own (`pin::PinState::owned`): reading a table
/// another role made could run that role's row-level security policies. A
/// database where the table is gone fails the query (`undefined_table`):
/// then the session checks the pin as a new session does.
pub const OBSERVE_ALL_PINNED: &str = observe_all!(
    ",
       pg_catalog.pg_backend_pid() AS pid,
       (SELECT token FROM manifold.workspace_pin WHERE workspace = $2) AS pin_token"
);

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
