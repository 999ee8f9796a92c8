//! What the planner reads and writes: the catalog's observation of an
//! attachment, the locked state, and the statements it decides.

use super::*;

/// What the at-rest observation shows of one attachment's schema and server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The schema's comment, if the schema exists (empty if it has none).
    pub schema_comment: Option<String>,
    /// Foreign tables (and, in an aggregator's schema, views) in the schema.
    pub foreign_tables: i64,
    /// The server's comment, if the server exists.
    pub server_comment: Option<String>,
    /// Whether the current user has a mapping for the server.
    pub mapping: bool,
}

impl Observed {
    pub fn schema_marker(&self) -> Option<Marker> {
        self.schema_comment.as_deref().and_then(Marker::parse)
    }
}

/// Whether the workspace role can use a wrapper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrapperState {
    /// The wrapper exists and the role has USAGE on it.
    Usable,
    /// The wrapper exists; the role has no USAGE on it.
    NoUsage,
    /// No such wrapper: its extension is not installed.
    Missing,
}

/// What one catalog read under the schema's advisory lock shows: the
/// observation, plus what a change needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locked {
    pub observed: Observed,
    /// The foreign tables of the schema that use the attachment's server:
    /// the ones it imported, and the only ones it ever drops.
    pub owned_tables: Vec<String>,
    pub wrapper: WrapperState,
    /// The workspace role, for messages.
    pub role: String,
    /// Roles the workspace role granted USAGE on the schema to: the
    /// readers it made, whose grants and mappings it may take back.
    pub readers: Vec<String>,
    /// The views in the schema that carry this attachment's marker.
    pub views: Vec<String>,
    /// For an aggregator: the columns of its members' foreign tables.
    pub columns: Vec<Column>,
    /// Every role of the database reads every server's options
    /// (`pg_foreign_server.srvoptions` is granted to PUBLIC, Postgres's
    /// default): a server whose options carry a Secret's values may not be
    /// made there.
    pub server_options_public: bool,
}

/// One column of a member's foreign table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub schema: String,
    pub table: String,
    pub name: String,
    /// The type's oid: columns of one name and different types across
    /// members become jsonb.
    pub type_oid: u32,
}

/// The work that brings an attachment to its plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing to do.
    None,
    /// Only the schema's comment differs.
    Recomment,
    /// (Re)create the user mappings if `remap`, re-import if `reimport`,
    /// grant and take back reader access if `regrant`.
    Update { remap: bool, reimport: bool, regrant: bool },
    /// Build everything: extension, server, mapping, schema, import. Whatever
    /// of ours exists is dropped first.
    Rebuild,
}

/// One statement, as data. `sql::render` turns it into SQL text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement {
    /// Serializes the creation of an extension across sessions, so that
    /// parallel first attaches do not race on `pg_extension`'s unique index.
    LockExtension {
        extension: String,
    },
    CreateExtension {
        extension: String,
        schema: String,
    },
    CreateServer {
        server: String,
        wrapper: String,
        options: Vec<(String, SecretString)>,
    },
    CommentOnServer {
        server: String,
        marker: Marker,
    },
    CreateUserMapping {
        server: String,
        options: Vec<(String, SecretString)>,
    },
    DropUserMapping {
        server: String,
    },
    /// A reader's own user mapping, with the same credentials.
    CreateReaderMapping {
        server: String,
        role: String,
        options: Vec<(String, SecretString)>,
    },
    DropReaderMapping {
        server: String,
        role: String,
    },
    DropServer {
        server: String,
    },
    CreateSchema {
        schema: String,
    },
    DropSchema {
        schema: String,
    },
    DropForeignTables {
        schema: String,
        tables: Vec<String>,
    },
    Import {
        remote_schema: String,
        filter: TableFilter,
        server: String,
        schema: String,
    },
    /// A minimal re-import, which the executor carries out in steps, each
    /// decided by `reimport`: import into a staging schema, then add the new
    /// tables, replace the changed ones, drop the ones gone from the source
    /// (each drop RESTRICT, alone, so that a table a user's object depends
    /// on stays and is reported while the rest goes through).
    Reimport {
        schema: String,
        server: String,
        remote_schema: String,
        filter: TableFilter,
    },
    /// Moves a staged foreign table into the attachment's schema.
    MoveForeignTable {
        from: String,
        name: String,
        to: String,
    },
    /// USAGE on the schema and SELECT on everything in it, to the roles.
    GrantReaders {
        schema: String,
        roles: Vec<String>,
    },
    /// Takes back what `GrantReaders` gave one role.
    RevokeReader {
        schema: String,
        role: String,
    },
    CreateView(View),
    DropView {
        schema: String,
        name: String,
    },
    /// Redefines one of our views to return no row, with its columns as
    /// they are, so that it depends on nothing: what a member's change does
    /// to an aggregator's views instead of dropping them, since another
    /// session's temporary view on one would hold a drop.
    EmptyView {
        schema: String,
        name: String,
    },
    /// Writes the schema's marker. A marker without `tables` gets the count
    /// of foreign tables and views in the schema once the statements before
    /// it ran: the one fact the planner cannot know in advance.
    MarkSchema {
        schema: String,
        marker: Marker,
    },
    /// The database's search path (empty: reset it).
    SetSearchPath {
        database: String,
        path: Vec<String>,
    },
    /// After the transaction, on the same session: close the remote
    /// connections a wrapper keeps open (postgres_fdw), whose function is
    /// in `extension_schema`.
    DisconnectFdw {
        extension_schema: String,
    },
}

impl Statement {
    /// Statements that change the catalog, for the metrics.
    pub fn is_ddl(&self) -> bool {
        !matches!(self, Statement::LockExtension { .. })
    }
}

/// An aggregator's view of one table: the `UNION ALL` of that table in
/// each member that has it, with the union of their columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub schema: String,
    pub name: String,
    /// The view's columns after `_manifold_connection`.
    pub columns: Vec<String>,
    pub branches: Vec<Branch>,
    pub marker: Marker,
}

/// One member's part of a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Branch {
    pub connection: String,
    pub schema: String,
    /// One expression per view column.
    pub values: Vec<Value>,
}

/// What a member gives for a view column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Its own column of that name.
    Column(String),
    /// Its column, as jsonb: the members disagree on the type.
    Jsonb(String),
    /// It has no such column.
    Null,
}

/// The column that names the member a row came from.
pub const CONNECTION_COLUMN: &str = "_manifold_connection";
