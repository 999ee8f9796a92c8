//! The pin of a workspace database: a random token Manifold writes on
//! first contact into a table only the workspace role can read, and
//! reads back on every new session before anything that carries a secret
//! is sent. A server that is not that database cannot show the token,
//! whatever it answers to a `system_identifier` or an OID. The token is
//! derived from the Workspace's uid with a key only the operator holds, so
//! nothing per workspace is stored outside the database.
//!
//! The schema is `manifold`, which no Connection may take (see
//! `api::is_reserved_schema`), and both it and the table must be owned by
//! the workspace role: a schema someone else made first is a conflict, not
//! a place to write the token.

/// The schema of the pin table.
pub const PIN_SCHEMA: &str = "manifold";

/// Who this session is, and whether the pin schema and table exist and
/// are the workspace role's own: `schema_ours` and `table_ours` are NULL
/// when absent. `pid` and `started` (the backend's start, in microseconds
/// since the epoch) name this session among the database's sessions.
pub const PIN_STATE: &str = "
WITH me AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER),
     nsp AS (SELECT oid, nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'manifold')
SELECT pg_catalog.pg_backend_pid() AS pid,
       (SELECT (EXTRACT(epoch FROM backend_start) * 1000000)::bigint FROM pg_catalog.pg_stat_activity
         WHERE pid = pg_catalog.pg_backend_pid()) AS started,
       (SELECT nspowner = (SELECT oid FROM me) FROM nsp) AS schema_ours,
       (SELECT c.relowner = (SELECT oid FROM me) FROM pg_catalog.pg_class c
         WHERE c.relnamespace = (SELECT oid FROM nsp) AND c.relname = 'workspace_pin' AND c.relkind = 'r') AS table_ours";

/// `PIN_STATE` and the token of the Workspace whose uid is $1 in one
/// round trip: only where the schema and table are known to be the
/// workspace role's own (reading a table another role made could run its
/// row-level security policies as the operator). Where they are gone the
/// query fails (`undefined_table`), and the session checks as a first one.
pub const PIN_STATE_AND_TOKEN: &str = "
WITH me AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER),
     nsp AS (SELECT oid, nspowner FROM pg_catalog.pg_namespace WHERE nspname = 'manifold')
SELECT pg_catalog.pg_backend_pid() AS pid,
       (SELECT (EXTRACT(epoch FROM backend_start) * 1000000)::bigint FROM pg_catalog.pg_stat_activity
         WHERE pid = pg_catalog.pg_backend_pid()) AS started,
       (SELECT nspowner = (SELECT oid FROM me) FROM nsp) AS schema_ours,
       (SELECT c.relowner = (SELECT oid FROM me) FROM pg_catalog.pg_class c
         WHERE c.relnamespace = (SELECT oid FROM nsp) AND c.relname = 'workspace_pin' AND c.relkind = 'r') AS table_ours,
       (SELECT token FROM manifold.workspace_pin WHERE workspace = $1) AS token";

/// The token stored for a Workspace. Parameter: the Workspace's uid.
pub const PIN_READ: &str = "SELECT token FROM manifold.workspace_pin WHERE workspace = $1";

/// Creates the pin schema and table where they are absent, closed to
/// every other role, under a lock so that two first sessions do not race.
/// Runs in a transaction, before `PIN_WRITE`.
pub const PIN_CREATE: &str = "
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('manifold.dev/pin'));
CREATE SCHEMA IF NOT EXISTS manifold;
REVOKE ALL ON SCHEMA manifold FROM PUBLIC;
COMMENT ON SCHEMA manifold IS 'manifold.dev/pin: the tokens that prove this is the database each Workspace was first sent to; do not drop';
CREATE TABLE IF NOT EXISTS manifold.workspace_pin (
  workspace pg_catalog.text PRIMARY KEY,
  token pg_catalog.bytea NOT NULL,
  pinned_at pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now());
REVOKE ALL ON TABLE manifold.workspace_pin FROM PUBLIC";

/// Writes a Workspace's token (a first contact, or an admin's re-pin).
/// Parameters: the Workspace's uid, the token.
pub const PIN_WRITE: &str = "
INSERT INTO manifold.workspace_pin (workspace, token) VALUES ($1, $2)
ON CONFLICT (workspace) DO UPDATE SET token = excluded.token, pinned_at = pg_catalog.now()";

/// Forgets a deleted Workspace's token, and whether any other Workspace's
/// is left. Parameter: its uid.
pub const PIN_FORGET: &str = "
WITH gone AS (DELETE FROM manifold.workspace_pin WHERE workspace = $1 RETURNING workspace)
SELECT EXISTS (SELECT 1 FROM manifold.workspace_pin WHERE workspace NOT IN (SELECT workspace FROM gone)) AS others";

/// Drops the pin table and schema once no Workspace's pin is left. Never
/// CASCADE: a schema that holds anything else stays.
pub const PIN_DROP: &str = "DROP TABLE manifold.workspace_pin RESTRICT; DROP SCHEMA manifold RESTRICT";
