//! The planner: from the desired state of one attachment and what one
//! locked catalog read shows, the statements that bring a workspace
//! database there, or the refusal to touch it. Pure: `sql` renders the
//! statements and `Database` (in `mod.rs`) only runs them in one
//! transaction and records the result.
//!
//! Every decision about DDL is made here: what to build, what to drop,
//! whether a schema is ours, whether the wrapper can be used.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::api::{Failure, Reason};
use crate::plugins::{EXTENSION_SCHEMA, Wrapper};
pub use crate::secret::SecretString;

/// The attachment that owns a schema: what the ownership marker records.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Hashes of the independent parts of the desired state, by name. Each part
/// that changes implies its own work: a new `server` means a rebuild, a new
/// `mapping` a new user mapping, a new `import` a re-import. Parts this
/// version does not know are ignored, so a later version can add one
/// without sending every existing schema into a rebuild.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<String, String>);

/// The parts this version knows, in the order it writes them. A part
/// that does not apply (`readers` with none, `members` of a foreign
/// schema) is left out.
const PARTS: [&str; 6] = ["server", "mapping", "import", "source", "members", "readers"];

impl Fingerprint {
    pub fn part(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn with(mut self, name: &str, value: String) -> Self {
        self.0.insert(name.to_owned(), value);
        self
    }

    /// Sets a part: what the executor learns only once statements ran.
    pub fn set(&mut self, name: &str, value: String) {
        self.0.insert(name.to_owned(), value);
    }

    /// `server:…,mapping:…,import:…`, or the first format,
    /// `<server>.<mapping>.<import>`.
    fn parse(text: &str) -> Fingerprint {
        if !text.contains(':') {
            let parts: Vec<&str> = text.split('.').collect();
            if parts.len() == 3 {
                return PARTS[..3].iter().zip(parts).fold(Fingerprint::default(), |f, (k, v)| f.with(k, v.to_owned()));
            }
            return Fingerprint::default();
        }
        Fingerprint(
            text.split(',')
                .filter_map(|kv| kv.split_once(':'))
                .filter(|(k, _)| PARTS.contains(k))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = PARTS.iter().filter_map(|k| self.part(k).map(|v| format!("{k}:{v}"))).collect();
        f.write_str(&parts.join(","))
    }
}

/// The ownership marker, kept in the comment of the schema (and, without
/// fingerprint and tables, of the server):
/// `manifold.dev/owner=<ns>/<name> uid=<uid> fingerprint=server:…,mapping:…,import:… tables=<n>`,
/// and ` orphaned=true` once an attachment with `deletionPolicy: Orphan`
/// let it go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub owner: Owner,
    pub uid: String,
    pub fingerprint: Option<Fingerprint>,
    pub tables: Option<i64>,
    pub orphaned: bool,
    /// An aggregator's members, so that a member's own transaction can
    /// rebuild the aggregator's views from the catalog alone.
    pub members: Option<Vec<Member>>,
}

pub const MARKER_PREFIX: &str = "manifold.dev/owner=";

impl Marker {
    pub fn render(&self) -> String {
        let mut s = format!("{MARKER_PREFIX}{} uid={}", self.owner, self.uid);
        if let Some(fp) = &self.fingerprint {
            s.push_str(&format!(" fingerprint={fp}"));
        }
        if let Some(tables) = self.tables {
            s.push_str(&format!(" tables={tables}"));
        }
        if let Some(members) = &self.members {
            let list: Vec<String> = members.iter().map(|m| format!("{}:{}", m.connection, m.schema)).collect();
            s.push_str(&format!(" members={}", list.join(",")));
        }
        if self.orphaned {
            s.push_str(" orphaned=true");
        }
        s
    }

    /// Parses a comment. A comment that does not begin with the marker is
    /// not ours, whatever else it says. Unknown words are ignored.
    pub fn parse(comment: &str) -> Option<Marker> {
        let rest = comment.strip_prefix(MARKER_PREFIX)?;
        let mut words = rest.split(' ');
        let (namespace, name) = words.next()?.split_once('/')?;
        let mut marker = Marker {
            owner: Owner { namespace: namespace.to_owned(), name: name.to_owned() },
            uid: String::new(),
            fingerprint: None,
            tables: None,
            orphaned: false,
            members: None,
        };
        for word in words {
            match word.split_once('=') {
                Some(("uid", uid)) => marker.uid = uid.to_owned(),
                Some(("fingerprint", fp)) => marker.fingerprint = Some(Fingerprint::parse(fp)),
                Some(("tables", n)) => marker.tables = n.parse().ok(),
                Some(("orphaned", v)) => marker.orphaned = v == "true",
                Some(("members", list)) => {
                    marker.members = Some(
                        list.split(',')
                            .filter_map(|m| m.split_once(':'))
                            .map(|(c, s)| Member { connection: c.to_owned(), schema: s.to_owned() })
                            .collect(),
                    )
                }
                _ => {}
            }
        }
        Some(marker)
    }
}

/// Which remote tables to import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableFilter {
    All,
    LimitTo(Vec<String>),
    Except(Vec<String>),
}

/// Everything one attachment needs in a workspace database: its schema,
/// who owns it, and where the schema's tables come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachPlan {
    pub owner: Owner,
    pub uid: String,
    /// The connection attached: what an aggregator's views name a member by.
    pub connection: String,
    pub schema: String,
    pub source: Source,
    /// The workspace's reader roles that exist, sorted: each gets USAGE
    /// and SELECT, and for a foreign schema a user mapping of its own.
    pub readers: Vec<String>,
    pub fingerprint: Fingerprint,
}

/// Where an attachment's tables come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A wrapper's foreign server, its user mapping, and an import.
    Foreign(Foreign),
    /// Views over the same tables of other attachments' schemas.
    Aggregate(Aggregate),
}

/// An aggregator's members in one workspace, sorted by connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aggregate {
    pub members: Vec<Member>,
}

/// One member of an aggregator: a connection and its schema.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub connection: String,
    pub schema: String,
}

/// A foreign server of a wrapper, imported into the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Foreign {
    /// The foreign server, named like the schema.
    pub server: String,
    pub extension: String,
    pub wrapper: String,
    pub server_options: Vec<(String, SecretString)>,
    pub mapping_options: Vec<(String, SecretString)>,
    pub remote_schema: String,
    pub tables: TableFilter,
    /// Secret values inside other values, for cleaning messages.
    pub embedded_secrets: Vec<SecretString>,
}

/// The inputs of a plan, from resolved Kubernetes objects.
pub struct PlanInput<'a> {
    pub owner: Owner,
    pub uid: &'a str,
    pub connection: &'a str,
    pub schema: &'a str,
    pub wrapper: Wrapper,
    pub tables: TableFilter,
    /// Identifies the version of the credentials (the Secret's uid and
    /// resourceVersion), so that the fingerprint changes when they do
    /// without ever hashing a secret value into a comment anyone can read.
    pub credentials_version: Option<&'a str>,
    /// The workspace's reader roles that exist.
    pub readers: Vec<String>,
    /// The hash of the source's schema as the connection's last test saw it.
    pub source_hash: Option<&'a str>,
}

fn sorted<T: Ord>(mut list: Vec<T>) -> Vec<T> {
    list.sort();
    list.dedup();
    list
}

/// The `readers` part, only when there are readers: a schema without any
/// keeps the fingerprint it had before readers existed.
fn with_readers(fingerprint: Fingerprint, readers: &[String]) -> Fingerprint {
    if readers.is_empty() {
        return fingerprint;
    }
    let parts: Vec<&str> = readers.iter().map(String::as_str).collect();
    fingerprint.with("readers", short_hash(&parts))
}

fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

impl AttachPlan {
    pub fn new(input: PlanInput<'_>) -> AttachPlan {
        let w = input.wrapper;
        let version = input.credentials_version.unwrap_or("none");
        let mut server_parts = vec![w.extension.as_str(), w.wrapper.as_str()];
        for (k, v) in &w.server_options {
            server_parts.push(k);
            // A secret server option (steampipe's config) is represented by
            // the credentials' version, never by its value.
            server_parts.push(if v.is_secret() { version } else { v.expose() });
        }
        let mut mapping_parts = vec![version];
        mapping_parts.extend(w.mapping_options.iter().map(|(k, _)| k.as_str()));
        let mut import_parts = vec![w.remote_schema.as_str()];
        match &input.tables {
            TableFilter::All => import_parts.push("all"),
            TableFilter::LimitTo(t) => {
                import_parts.push("limit");
                import_parts.extend(t.iter().map(String::as_str));
            }
            TableFilter::Except(t) => {
                import_parts.push("except");
                import_parts.extend(t.iter().map(String::as_str));
            }
        }
        let readers = sorted(input.readers);
        let mut fingerprint = Fingerprint::default()
            .with("server", short_hash(&server_parts))
            .with("mapping", short_hash(&mapping_parts))
            .with("import", short_hash(&import_parts));
        if let Some(hash) = input.source_hash {
            fingerprint = fingerprint.with("source", hash.to_owned());
        }
        AttachPlan {
            fingerprint: with_readers(fingerprint, &readers),
            readers,
            owner: input.owner,
            uid: input.uid.to_owned(),
            connection: input.connection.to_owned(),
            schema: input.schema.to_owned(),
            source: Source::Foreign(Foreign {
                server: input.schema.to_owned(),
                extension: w.extension,
                wrapper: w.wrapper,
                server_options: w.server_options,
                mapping_options: w.mapping_options,
                remote_schema: w.remote_schema,
                tables: input.tables,
                embedded_secrets: w.embedded_secrets,
            }),
        }
    }

    /// An aggregator's plan: one view per table name across `members`.
    pub fn aggregate(owner: Owner, uid: &str, connection: &str, schema: &str, members: Vec<Member>, readers: Vec<String>) -> AttachPlan {
        let members = sorted(members);
        let listed: Vec<String> = members.iter().map(|m| format!("{}:{}", m.connection, m.schema)).collect();
        let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
        let readers = sorted(readers);
        AttachPlan {
            fingerprint: with_readers(Fingerprint::default().with("members", short_hash(&listed)), &readers),
            readers,
            owner,
            uid: uid.to_owned(),
            connection: connection.to_owned(),
            schema: schema.to_owned(),
            source: Source::Aggregate(Aggregate { members }),
        }
    }

    /// The foreign server the schema's tables come from, if it has one.
    pub fn foreign(&self) -> Option<&Foreign> {
        match &self.source {
            Source::Foreign(foreign) => Some(foreign),
            Source::Aggregate(_) => None,
        }
    }

    /// The schema's marker once the plan is applied with `tables` imported
    /// (`None`: counted when the statements have run).
    pub fn schema_marker(&self, tables: Option<i64>) -> Marker {
        Marker {
            owner: self.owner.clone(),
            uid: self.uid.clone(),
            fingerprint: Some(self.fingerprint.clone()),
            tables,
            orphaned: false,
            members: self.members(),
        }
    }

    /// The schema's marker, with the `source` part the last import found
    /// (`imported`'s), which the plan does not decide.
    pub fn schema_marker_as_imported(&self, tables: Option<i64>, imported: &Fingerprint) -> Marker {
        let mut marker = self.schema_marker(tables);
        if let Some(fp) = marker.fingerprint.as_mut() {
            fp.0.remove("source");
            if let Some(source) = imported.part("source") {
                fp.0.insert("source".into(), source.into());
            }
        }
        marker
    }

    /// The server's marker, and each view's.
    pub fn server_marker(&self) -> Marker {
        Marker { owner: self.owner.clone(), uid: self.uid.clone(), fingerprint: None, tables: None, orphaned: false, members: None }
    }

    /// Every secret value the plan's statements carry.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.foreign()
            .into_iter()
            .flat_map(|f| f.server_options.iter().chain(&f.mapping_options).map(|(_, v)| v).chain(&f.embedded_secrets))
            .filter(|v| v.is_secret())
            .map(SecretString::expose)
    }

    fn members(&self) -> Option<Vec<Member>> {
        match &self.source {
            Source::Aggregate(a) => Some(a.members.clone()),
            Source::Foreign(_) => None,
        }
    }

    /// The state an attach leaves, as the at-rest observation would show
    /// it: `tables` imported, and the marker's `source` part set to
    /// `source_hash`, the hash of what the import found, when it wrote one.
    pub fn observed_after(&self, tables: i64, source_hash: Option<&str>) -> Observed {
        let mut marker = self.schema_marker(Some(tables));
        if let (Some(hash), Some(fp)) = (source_hash, marker.fingerprint.as_mut()) {
            fp.set("source", hash.to_owned());
        }
        Observed {
            schema_comment: Some(marker.render()),
            foreign_tables: tables,
            server_comment: self.foreign().map(|_| self.server_marker().render()),
            mapping: self.foreign().is_some(),
        }
    }
}

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

/// Decides the change from what the catalog shows. Refuses to touch a schema
/// or server that does not carry this attachment's marker.
pub fn decide(plan: &AttachPlan, observed: &Observed) -> Result<Change, Failure> {
    check_ownership(plan, observed)?;
    let Some(marker) = observed.schema_marker() else {
        return Ok(Change::Rebuild); // no schema yet
    };
    let Some(fp) = marker.fingerprint.as_ref() else {
        return Ok(Change::Rebuild);
    };
    let differs = |part: &str| fp.part(part) != plan.fingerprint.part(part);
    // The source's schema, as its last test saw it, against what the last
    // import brought: a new table or column at the source re-imports. Not
    // known yet (no test has run): nothing to compare.
    let source_changed = plan.fingerprint.part("source").is_some_and(|want| fp.part("source") != Some(want));
    let regrant = differs("readers");
    let tables_drifted = marker.tables != Some(observed.foreign_tables);
    match &plan.source {
        Source::Foreign(_) => {
            if observed.server_comment.is_none() || differs("server") {
                return Ok(Change::Rebuild);
            }
            let remap = differs("mapping") || !observed.mapping;
            let reimport = differs("import") || tables_drifted || source_changed;
            if remap || reimport || regrant {
                return Ok(Change::Update { remap, reimport, regrant });
            }
        }
        Source::Aggregate(_) => {
            if differs("members") || tables_drifted || marker.members.as_ref() != plan.members().as_ref() {
                return Ok(Change::Rebuild);
            }
            if regrant {
                return Ok(Change::Update { remap: false, reimport: false, regrant });
            }
        }
    }
    if marker != plan.schema_marker_as_imported(Some(observed.foreign_tables), fp) {
        return Ok(Change::Recomment);
    }
    Ok(Change::None)
}

fn check_ownership(plan: &AttachPlan, observed: &Observed) -> Result<(), Failure> {
    let conflict = |message: String| Err(Failure::new(Reason::SchemaConflict, message));
    if let Some(comment) = &observed.schema_comment {
        match Marker::parse(comment) {
            Some(m) if m.owner == plan.owner => {}
            Some(m) => return conflict(format!("schema {:?} is already managed by attachment {}", plan.schema, m.owner)),
            None => {
                return conflict(format!("schema {:?} exists and was not created by Manifold; it is left untouched", plan.schema));
            }
        }
    }
    if let (Some(comment), Some(foreign)) = (&observed.server_comment, plan.foreign()) {
        match Marker::parse(comment) {
            Some(m) if m.owner == plan.owner => {}
            _ => {
                return conflict(format!(
                    "foreign server {:?} exists and is not managed by this attachment; it is left untouched",
                    foreign.server
                ));
            }
        }
    }
    Ok(())
}

/// What makes the wrapper usable: nothing, the extension (created under a
/// lock, into `EXTENSION_SCHEMA`), or a refusal that says what to grant.
fn ensure_wrapper(plan: &Foreign, locked: &Locked) -> Result<Vec<Statement>, Failure> {
    match locked.wrapper {
        WrapperState::Usable => Ok(Vec::new()),
        WrapperState::Missing => Ok(vec![
            Statement::LockExtension { extension: plan.extension.clone() },
            Statement::CreateExtension { extension: plan.extension.clone(), schema: EXTENSION_SCHEMA.to_owned() },
        ]),
        WrapperState::NoUsage => Err(Failure::new(
            Reason::PermissionDenied,
            format!(
                "role {:?} has no USAGE on foreign-data wrapper {:?}: GRANT USAGE ON FOREIGN DATA WRAPPER {} TO {} \
                 (CloudNativePG: Database spec.fdws[].usage)",
                locked.role, plan.wrapper, plan.wrapper, locked.role
            ),
        )),
    }
}

/// Reader access as the plan wants it: what readers who left had is taken
/// back (their mappings first), and every reader gets USAGE, SELECT on
/// everything now in the schema, and, on a foreign server, its own user
/// mapping with the current credentials.
fn sync_readers(plan: &AttachPlan, locked: &Locked) -> Vec<Statement> {
    let schema = &plan.schema;
    let mut statements = Vec::new();
    for role in locked.readers.iter().filter(|r| !plan.readers.contains(r)) {
        if let Some(f) = plan.foreign() {
            statements.push(Statement::DropReaderMapping { server: f.server.clone(), role: role.clone() });
        }
        statements.push(Statement::RevokeReader { schema: schema.clone(), role: role.clone() });
    }
    if plan.readers.is_empty() {
        return statements;
    }
    statements.push(Statement::GrantReaders { schema: schema.clone(), roles: plan.readers.clone() });
    if let Some(f) = plan.foreign() {
        for role in &plan.readers {
            statements.push(Statement::DropReaderMapping { server: f.server.clone(), role: role.clone() });
            statements.push(Statement::CreateReaderMapping {
                server: f.server.clone(),
                role: role.clone(),
                options: f.mapping_options.clone(),
            });
        }
    }
    statements
}

/// The statements that bring an attachment to its plan, and the change they
/// make. Nothing of someone else's is ever touched: the ownership check
/// comes first, only the tables the attachment's own server imported and
/// the views that carry its marker are dropped, always RESTRICT.
pub fn attach(plan: &AttachPlan, locked: &Locked) -> Result<(Change, Vec<Statement>), Failure> {
    let observed = &locked.observed;
    let change = decide(plan, observed)?;
    let mut statements = match &plan.source {
        Source::Foreign(foreign) => attach_foreign(plan, foreign, &change, locked)?,
        Source::Aggregate(aggregate) => attach_aggregate(plan, aggregate, &change, locked),
    };
    if change == Change::None {
        return Ok((change, statements));
    }
    if !matches!(change, Change::Recomment) {
        statements.extend(sync_readers(plan, locked));
    }
    let marker = match (&change, observed.schema_marker().and_then(|m| m.fingerprint)) {
        // Nothing was imported: the last import's `source` stays.
        (Change::Recomment | Change::Update { reimport: false, .. }, Some(fp)) if plan.foreign().is_some() => {
            plan.schema_marker_as_imported(Some(observed.foreign_tables), &fp)
        }
        // The count (and the source's hash) once the statements ran.
        _ => plan.schema_marker(None),
    };
    statements.push(Statement::MarkSchema { schema: plan.schema.clone(), marker });
    Ok((change, statements))
}

fn attach_foreign(plan: &AttachPlan, foreign: &Foreign, change: &Change, locked: &Locked) -> Result<Vec<Statement>, Failure> {
    let observed = &locked.observed;
    let (schema, server) = (&plan.schema, &foreign.server);
    let drop_owned = || Statement::DropForeignTables { schema: schema.clone(), tables: locked.owned_tables.clone() };
    let create_mapping = || Statement::CreateUserMapping { server: server.clone(), options: foreign.mapping_options.clone() };
    let import = || Statement::Import {
        remote_schema: foreign.remote_schema.clone(),
        filter: foreign.tables.clone(),
        server: server.clone(),
        schema: schema.clone(),
    };
    let mut statements = Vec::new();
    match change {
        Change::None | Change::Recomment => {}
        Change::Update { remap, reimport, regrant: _ } => {
            if *remap {
                statements.push(Statement::DropUserMapping { server: server.clone() });
                statements.push(create_mapping());
            }
            if *reimport {
                statements.push(Statement::Reimport {
                    schema: schema.clone(),
                    server: server.clone(),
                    remote_schema: foreign.remote_schema.clone(),
                    filter: foreign.tables.clone(),
                });
            }
        }
        Change::Rebuild => {
            statements.extend(ensure_wrapper(foreign, locked)?);
            if observed.schema_comment.is_some() {
                statements.push(drop_owned());
            }
            if observed.server_comment.is_some() {
                for role in &locked.readers {
                    statements.push(Statement::DropReaderMapping { server: server.clone(), role: role.clone() });
                }
                statements.push(Statement::DropUserMapping { server: server.clone() });
                statements.push(Statement::DropServer { server: server.clone() });
            }
            statements.push(Statement::CreateServer {
                server: server.clone(),
                wrapper: foreign.wrapper.clone(),
                options: foreign.server_options.clone(),
            });
            statements.push(Statement::CommentOnServer { server: server.clone(), marker: plan.server_marker() });
            statements.push(create_mapping());
            if observed.schema_comment.is_none() {
                statements.push(Statement::CreateSchema { schema: schema.clone() });
            }
            statements.push(import());
        }
    }
    statements.retain(|s| !matches!(s, Statement::DropForeignTables { tables, .. } if tables.is_empty()));
    Ok(statements)
}

fn attach_aggregate(plan: &AttachPlan, aggregate: &Aggregate, change: &Change, locked: &Locked) -> Vec<Statement> {
    let mut statements = Vec::new();
    if *change == Change::Rebuild {
        if locked.observed.schema_comment.is_none() {
            statements.push(Statement::CreateSchema { schema: plan.schema.clone() });
        }
        statements.extend(drop_views(&plan.schema, &locked.views));
        statements.extend(views(plan, aggregate, &locked.columns).into_iter().map(Statement::CreateView));
    }
    statements
}

fn drop_views(schema: &str, views: &[String]) -> Vec<Statement> {
    views.iter().map(|name| Statement::DropView { schema: schema.to_owned(), name: name.clone() }).collect()
}

/// An aggregator's views, as Steampipe makes them: for every table name in
/// at least one member, the `UNION ALL` of the members that have it, with a
/// leading column naming the member, the union of the columns (in the order
/// they first appear), NULL where a member lacks a column, and jsonb where
/// the members disagree on its type.
pub fn views(plan: &AttachPlan, aggregate: &Aggregate, columns: &[Column]) -> Vec<View> {
    let mut tables: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for member in &aggregate.members {
        let mut seen = std::collections::BTreeSet::new();
        for c in columns.iter().filter(|c| c.schema == member.schema) {
            if seen.insert(c.table.as_str()) {
                tables.entry(c.table.as_str()).or_default().push(member);
            }
        }
    }
    let marker = plan.server_marker();
    tables
        .into_iter()
        .map(|(table, members)| {
            fn of<'c>(columns: &'c [Column], m: &Member, table: &str) -> Vec<&'c Column> {
                columns.iter().filter(|c| c.schema == m.schema && c.table == table && c.name != CONNECTION_COLUMN).collect()
            }
            let mut names: Vec<&str> = Vec::new();
            let mut types: BTreeMap<&str, std::collections::BTreeSet<u32>> = BTreeMap::new();
            for m in &members {
                for c in of(columns, m, table) {
                    if !names.contains(&c.name.as_str()) {
                        names.push(&c.name);
                    }
                    types.entry(&c.name).or_default().insert(c.type_oid);
                }
            }
            let branches = members
                .iter()
                .map(|m| Branch {
                    connection: m.connection.clone(),
                    schema: m.schema.clone(),
                    values: names
                        .iter()
                        .map(|name| match of(columns, m, table).into_iter().find(|c| c.name == *name) {
                            None => Value::Null,
                            Some(_) if types[name].len() > 1 => Value::Jsonb(name.to_string()),
                            Some(_) => Value::Column(name.to_string()),
                        })
                        .collect(),
                })
                .collect();
            View {
                schema: plan.schema.clone(),
                name: table.to_owned(),
                columns: names.iter().map(|n| n.to_string()).collect(),
                branches,
                marker: marker.clone(),
            }
        })
        .collect()
}

/// An aggregator's views rebuilt inside a member's transaction, over the
/// columns as they are after the member's change, with the readers' SELECT
/// on them and the marker with the members.
pub fn rebuild_views(plan: &AttachPlan, locked: &Locked) -> Vec<Statement> {
    let Source::Aggregate(aggregate) = &plan.source else { return Vec::new() };
    let mut statements = drop_views(&plan.schema, &locked.views);
    statements.extend(views(plan, aggregate, &locked.columns).into_iter().map(Statement::CreateView));
    if !plan.readers.is_empty() {
        statements.push(Statement::GrantReaders { schema: plan.schema.clone(), roles: plan.readers.clone() });
    }
    statements.push(Statement::MarkSchema { schema: plan.schema.clone(), marker: plan.schema_marker(None) });
    statements
}

/// An aggregator in a member's transaction: its views let go of the
/// member's tables before they change (RESTRICT would refuse otherwise) by
/// returning no row for a moment, and are redefined after, over `members`
/// (with or without the member, as it is joining, staying or leaving). A
/// view is not dropped here: a temporary view of a reader's session on it
/// would hold the member's change.
pub fn aggregate_teardown(schema: &str, locked: &Locked) -> Vec<Statement> {
    locked.views.iter().map(|name| Statement::EmptyView { schema: schema.to_owned(), name: name.clone() }).collect()
}

/// A foreign table's definition, as the catalog gives it: columns, their
/// types and options, and the table's options. Two definitions are the same
/// table when these are equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDef {
    pub name: String,
    pub definition: String,
}

/// What a re-import changes, table by table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReimportDiff {
    /// New at the source: moved in from the staging schema.
    pub add: Vec<String>,
    /// Changed at the source: dropped, then moved in.
    pub replace: Vec<String>,
    /// Gone from the source (or no longer wanted): dropped.
    pub remove: Vec<String>,
}

/// Compares what the schema holds with what a fresh import staged.
/// Unchanged tables are left alone, so that nothing that depends on them
/// is disturbed.
pub fn reimport(existing: &[TableDef], staged: &[TableDef]) -> ReimportDiff {
    let mut diff = ReimportDiff::default();
    for s in staged {
        match existing.iter().find(|e| e.name == s.name) {
            None => diff.add.push(s.name.clone()),
            Some(e) if e.definition != s.definition => diff.replace.push(s.name.clone()),
            Some(_) => {}
        }
    }
    diff.remove = existing.iter().filter(|e| !staged.iter().any(|s| s.name == e.name)).map(|e| e.name.clone()).collect();
    diff.add.sort();
    diff.replace.sort();
    diff.remove.sort();
    diff
}

/// The schema a re-import stages its fresh import in, inside the
/// attachment's transaction (and dropped before it commits).
pub fn stage_schema(schema: &str) -> String {
    format!("manifold_stage_{}", short_hash(&[schema]))
}

/// The hash of a source's schema: its tables, their columns and types, in
/// order. What a test and an import each compute, over their own schema.
pub fn source_hash(columns: &[(String, String, String)]) -> String {
    let mut sorted: Vec<&(String, String, String)> = columns.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<&str> = sorted.iter().flat_map(|(t, c, ty)| [t.as_str(), c.as_str(), ty.as_str()]).collect();
    short_hash(&parts)
}

/// One table of a source's schema as an import found it: its name, its
/// number of columns, and a hash of their names and types in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableShape {
    pub name: String,
    pub columns: usize,
    pub hash: String,
}

/// The shape of each table in `columns` (table, column, type rows, in the
/// catalog's order within a table), sorted by name.
pub fn table_shapes(columns: &[(String, String, String)]) -> Vec<TableShape> {
    let mut by_table: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (table, column, ty) in columns {
        by_table.entry(table).or_default().extend([column.as_str(), ty.as_str()]);
    }
    by_table
        .into_iter()
        .map(|(name, parts)| TableShape { name: name.to_owned(), columns: parts.len() / 2, hash: short_hash(&parts) })
        .collect()
}

/// The statements of a connection test: what an attach of a fresh schema
/// runs, in a transaction that is always rolled back.
pub fn test(plan: &AttachPlan, wrapper: WrapperState, role: &str) -> Result<Vec<Statement>, Failure> {
    let locked = Locked {
        observed: Observed::default(),
        owned_tables: Vec::new(),
        wrapper,
        role: role.to_owned(),
        readers: Vec::new(),
        views: Vec::new(),
        columns: Vec::new(),
    };
    let (_, mut statements) = attach(plan, &locked)?;
    statements.retain(|s| !matches!(s, Statement::MarkSchema { .. } | Statement::CommentOnServer { .. } | Statement::GrantReaders { .. }));
    Ok(statements)
}

/// The reader roles that statements grant to, revoke from or map.
pub fn reader_roles(statements: &[Statement]) -> Vec<String> {
    let mut roles: Vec<String> = statements
        .iter()
        .flat_map(|s| match s {
            Statement::GrantReaders { roles, .. } => roles.clone(),
            Statement::RevokeReader { role, .. }
            | Statement::CreateReaderMapping { role, .. }
            | Statement::DropReaderMapping { role, .. } => vec![role.clone()],
            _ => Vec::new(),
        })
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// The statements without what concerns a reader role that does not exist
/// (`existing`: the roles that do): a role dropped since the workspace was
/// observed, or never created, holds no attach, re-import or detach. Its
/// grants and mappings went with it.
pub fn without_missing_roles(statements: Vec<Statement>, existing: &std::collections::BTreeSet<String>) -> Vec<Statement> {
    statements
        .into_iter()
        .filter_map(|s| match s {
            Statement::GrantReaders { schema, roles } => {
                let roles: Vec<String> = roles.into_iter().filter(|r| existing.contains(r)).collect();
                (!roles.is_empty()).then_some(Statement::GrantReaders { schema, roles })
            }
            Statement::RevokeReader { ref role, .. }
            | Statement::CreateReaderMapping { ref role, .. }
            | Statement::DropReaderMapping { ref role, .. }
                if !existing.contains(role) =>
            {
                None
            }
            other => Some(other),
        })
        .collect()
}

/// What a detach takes first, in a transaction of its own that nothing
/// can hold: the readers' grants on the schema and their user mappings, if
/// schema and server carry this attachment's marker. Whatever then holds
/// the drop (a reader's temporary view on a foreign table), no reader can
/// read through it any more.
pub fn revoke_readers(owner: &Owner, schema: &str, locked: &Locked) -> Vec<Statement> {
    let ours = |comment: &Option<String>| comment.as_deref().and_then(Marker::parse).is_some_and(|m| &m.owner == owner);
    let mut statements = Vec::new();
    if ours(&locked.observed.server_comment) {
        statements.extend(locked.readers.iter().map(|role| Statement::DropReaderMapping { server: schema.to_owned(), role: role.clone() }));
    }
    if ours(&locked.observed.schema_comment) {
        statements.extend(locked.readers.iter().map(|role| Statement::RevokeReader { schema: schema.to_owned(), role: role.clone() }));
    }
    statements
}

/// What a detach drops: only what carries this attachment's marker. The
/// tables only if the server is ours too (they are the ones it imported),
/// our views, then the schema; the readers' mappings, ours and the server
/// if the server is ours. Every drop is RESTRICT, so anything someone else
/// made that depends on ours holds the whole detach.
pub fn detach(owner: &Owner, schema: &str, locked: &Locked) -> Vec<Statement> {
    let ours = |comment: &Option<String>| comment.as_deref().and_then(Marker::parse).is_some_and(|m| &m.owner == owner);
    let (schema_ours, server_ours) = (ours(&locked.observed.schema_comment), ours(&locked.observed.server_comment));
    let mut statements = Vec::new();
    if schema_ours {
        if server_ours && !locked.owned_tables.is_empty() {
            statements.push(Statement::DropForeignTables { schema: schema.to_owned(), tables: locked.owned_tables.clone() });
        }
        statements.extend(drop_views(schema, &locked.views));
        statements.push(Statement::DropSchema { schema: schema.to_owned() });
    }
    if server_ours {
        statements.extend(forget_credentials(owner, schema, locked));
        statements.push(Statement::DropServer { server: schema.to_owned() });
    }
    statements
}

/// The credentials of an attachment whose removal is held: its user
/// mappings (the workspace role's and its readers'), if its server is ours.
/// Nothing depends on a user mapping, so this never fails for a dependent
/// object, and no password stays behind a deletion.
pub fn forget_credentials(owner: &Owner, server: &str, locked: &Locked) -> Vec<Statement> {
    let ours = locked.observed.server_comment.as_deref().and_then(Marker::parse).is_some_and(|m| &m.owner == owner);
    if !ours {
        return Vec::new();
    }
    let mut statements: Vec<Statement> =
        locked.readers.iter().map(|role| Statement::DropReaderMapping { server: server.to_owned(), role: role.clone() }).collect();
    statements.push(Statement::DropUserMapping { server: server.to_owned() });
    statements
}

/// The database's search path, if it is not already `path`.
pub fn search_path(database: &str, path: &[String], current: &[String]) -> Option<Statement> {
    (current != path).then(|| Statement::SetSearchPath { database: database.to_owned(), path: path.to_vec() })
}

/// A `search_path` setting as Postgres stores it (`a, "B c", public`), as
/// a list of names.
pub fn parse_search_path(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        name.push('"');
                    } else {
                        break;
                    }
                } else {
                    name.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                name.push(c);
                chars.next();
            }
            name = name.trim().to_owned();
        }
        while chars.peek().is_some_and(|c| *c != ',') {
            chars.next();
        }
        if !name.is_empty() {
            names.push(name);
        }
        if chars.next().is_none() {
            return names;
        }
    }
}

/// What an attachment with `deletionPolicy: Orphan` leaves behind: its
/// schema marked as orphaned, so that deleting the workspace (or the
/// namespace) keeps it, and an attachment of the same name adopts it again.
pub fn orphan(owner: &Owner, schema: &str, observed: &Observed) -> Vec<Statement> {
    match observed.schema_marker() {
        Some(mut marker) if &marker.owner == owner && !marker.orphaned => {
            marker.orphaned = true;
            vec![Statement::MarkSchema { schema: schema.to_owned(), marker }]
        }
        _ => Vec::new(),
    }
}

/// What a workspace's deletion does to the managed schemas of its
/// namespace: each one is dropped (schema, server and mapping), or marked
/// orphaned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WorkspaceRemoval {
    pub drop: Vec<(Owner, String)>,
    pub orphan: Vec<(Owner, String)>,
}

/// A live attachment, as a workspace's deletion needs to know it.
pub struct LiveAttachment {
    pub workspace: String,
    pub orphan: bool,
}

/// Decides a workspace's deletion from the catalog, not from which
/// attachments are still around: every schema (or server whose schema is
/// gone) whose marker names an attachment of `namespace` is dropped, except
/// what another workspace's attachment owns (two Workspaces may share a
/// database) and what is already orphaned. What an attachment with
/// `deletionPolicy: Orphan` owns is marked orphaned instead: once the
/// workspace is gone, the attachment has no way in to do that itself.
pub fn workspace_removal<'a>(
    namespace: &str,
    workspace: &str,
    catalog: impl IntoIterator<Item = (&'a String, &'a Observed)>,
    attachment: impl Fn(&str) -> Option<LiveAttachment>,
) -> WorkspaceRemoval {
    let mut removal = WorkspaceRemoval::default();
    for (schema, observed) in catalog {
        let Some(marker) = observed.schema_marker().or_else(|| observed.server_comment.as_deref().and_then(Marker::parse)) else {
            continue;
        };
        if marker.owner.namespace != namespace || marker.orphaned {
            continue;
        }
        match attachment(&marker.owner.name) {
            Some(a) if a.workspace != workspace => {}
            Some(a) if a.orphan => {
                if observed.schema_comment.is_some() {
                    removal.orphan.push((marker.owner, schema.clone()));
                }
            }
            _ => removal.drop.push((marker.owner, schema.clone())),
        }
    }
    removal.drop.sort();
    removal.orphan.sort();
    removal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_removes_its_namespaces_schemas_whoever_is_still_around() {
        let marked = |owner: &str, extra: &str| Observed {
            schema_comment: Some(format!("{MARKER_PREFIX}{owner} uid=u tables=1{extra}")),
            server_comment: Some(format!("{MARKER_PREFIX}{owner} uid=u")),
            foreign_tables: 1,
            mapping: true,
        };
        let server_only = Observed { schema_comment: None, ..marked("ns/lost", "") };
        let catalog: Vec<(String, Observed)> = vec![
            ("gone".into(), marked("ns/gone", "")),
            ("live".into(), marked("ns/live", "")),
            ("keep".into(), marked("ns/keep", "")),
            ("kept".into(), marked("ns/kept", " orphaned=true")),
            ("other_ws".into(), marked("ns/elsewhere", "")),
            ("other_ns".into(), marked("them/gone", "")),
            ("lost".into(), server_only),
            ("hand_made".into(), Observed { schema_comment: Some("mine".into()), ..Default::default() }),
        ];
        let live = |name: &str| match name {
            "live" => Some(LiveAttachment { workspace: "ws".into(), orphan: false }),
            "keep" => Some(LiveAttachment { workspace: "ws".into(), orphan: true }),
            "elsewhere" => Some(LiveAttachment { workspace: "other".into(), orphan: false }),
            _ => None,
        };
        let removal = workspace_removal("ns", "ws", catalog.iter().map(|(k, v)| (k, v)), live);
        fn names(list: &[(Owner, String)]) -> Vec<&str> {
            list.iter().map(|(_, s)| s.as_str()).collect()
        }
        assert_eq!(names(&removal.drop), ["gone", "live", "lost"]);
        assert_eq!(names(&removal.orphan), ["keep"]);
    }

    fn owner() -> Owner {
        Owner { namespace: "org".into(), name: "analytics-sales".into() }
    }

    fn plan_with(password_version: &str, tables: TableFilter, host: &str) -> AttachPlan {
        AttachPlan::new(PlanInput {
            owner: owner(),
            uid: "u-1",
            schema: "sales",
            wrapper: Wrapper {
                label: "postgres".into(),
                extension: "postgres_fdw".into(),
                wrapper: "postgres_fdw".into(),
                server_options: vec![("host".into(), SecretString::public(host.into()))],
                mapping_options: vec![("password".into(), SecretString::new("hunter2".into()))],
                remote_schema: "public".into(),
                embedded_secrets: Vec::new(),
            },
            tables,
            credentials_version: Some(password_version),
            connection: "sales",
            readers: Vec::new(),
            source_hash: None,
        })
    }

    fn plan() -> AttachPlan {
        plan_with("v1", TableFilter::All, "db")
    }

    fn applied(plan: &AttachPlan, tables: i64) -> Observed {
        plan.observed_after(tables, None)
    }

    fn locked(observed: Observed, owned: &[&str]) -> Locked {
        Locked {
            observed,
            owned_tables: owned.iter().map(|t| t.to_string()).collect(),
            wrapper: WrapperState::Usable,
            role: "app".into(),
            readers: Vec::new(),
            views: Vec::new(),
            columns: Vec::new(),
        }
    }

    /// The statement kinds of a plan, in order: the table of transitions
    /// reads as a list of words.
    fn kinds(statements: &[Statement]) -> Vec<&'static str> {
        statements
            .iter()
            .map(|s| match s {
                Statement::LockExtension { .. } => "lock-extension",
                Statement::CreateExtension { .. } => "create-extension",
                Statement::CreateServer { .. } => "create-server",
                Statement::CommentOnServer { .. } => "comment-server",
                Statement::CreateUserMapping { .. } => "create-mapping",
                Statement::DropUserMapping { .. } => "drop-mapping",
                Statement::CreateReaderMapping { .. } => "create-reader-mapping",
                Statement::DropReaderMapping { .. } => "drop-reader-mapping",
                Statement::GrantReaders { .. } => "grant",
                Statement::RevokeReader { .. } => "revoke",
                Statement::CreateView(_) => "create-view",
                Statement::DropView { .. } => "drop-view",
                Statement::EmptyView { .. } => "empty-view",
                Statement::SetSearchPath { .. } => "search-path",
                Statement::Reimport { .. } => "reimport",
                Statement::MoveForeignTable { .. } => "move",
                Statement::DropServer { .. } => "drop-server",
                Statement::CreateSchema { .. } => "create-schema",
                Statement::DropSchema { .. } => "drop-schema",
                Statement::DropForeignTables { .. } => "drop-tables",
                Statement::Import { .. } => "import",
                Statement::MarkSchema { .. } => "mark",
            })
            .collect()
    }

    #[test]
    fn markers_round_trip() {
        let m = plan().schema_marker(Some(20));
        assert_eq!(Marker::parse(&m.render()), Some(m.clone()));
        let orphaned = Marker { orphaned: true, ..m };
        assert_eq!(Marker::parse(&orphaned.render()), Some(orphaned));
        assert_eq!(Marker::parse("sales schema, do not touch"), None);
        assert_eq!(Marker::parse("prefix manifold.dev/owner=a/b"), None);
    }

    /// A marker exactly as the first version wrote it is read as the same
    /// state, so an upgrade rebuilds nothing and rewrites nothing.
    #[test]
    fn a_marker_of_the_first_format_is_read_without_a_rebuild() {
        let p = plan();
        let [s, m, i] = ["server", "mapping", "import"].map(|k| p.fingerprint.part(k).unwrap().to_owned());
        let legacy = format!("manifold.dev/owner=org/analytics-sales uid=u-1 fingerprint={s}.{m}.{i} tables=20");
        let observed = Observed { schema_comment: Some(legacy), ..applied(&p, 20) };
        assert_eq!(decide(&p, &observed), Ok(Change::None));
        // A real marker string of that format, as a workspace holds it.
        let real = Marker::parse("manifold.dev/owner=default/analytics-sales uid=0b1f9a52-2c1e-4d0e-9d7c-5b0f3f1e2a11 fingerprint=3f2a9c1b7d4e.a1b2c3d4e5f6.9e8d7c6b5a41 tables=2").unwrap();
        let fp = real.fingerprint.unwrap();
        assert_eq!(
            (fp.part("server"), fp.part("mapping"), fp.part("import")),
            (Some("3f2a9c1b7d4e"), Some("a1b2c3d4e5f6"), Some("9e8d7c6b5a41"))
        );
        assert_eq!(real.tables, Some(2));
    }

    #[test]
    fn unknown_parts_and_words_are_ignored() {
        let p = plan();
        let mut comment = p.schema_marker(Some(20)).render().replace("import:", "grants:0011,import:");
        comment.push_str(" future=yes");
        let observed = Observed { schema_comment: Some(comment), ..applied(&p, 20) };
        assert_eq!(decide(&p, &observed), Ok(Change::None));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let shown = format!("{:?}", plan());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"db\""));
    }

    /// Every transition of an attach, as the statements it runs.
    #[test]
    fn the_transition_table() {
        let p = plan();
        let rows: Vec<(&str, AttachPlan, Locked, Change, Vec<&str>)> = vec![
            (
                "fresh database",
                p.clone(),
                locked(Observed::default(), &[]),
                Change::Rebuild,
                vec!["create-server", "comment-server", "create-mapping", "create-schema", "import", "mark"],
            ),
            ("at rest", p.clone(), locked(applied(&p, 20), &["a"]), Change::None, vec![]),
            (
                "new credentials only remap",
                plan_with("v2", TableFilter::All, "db"),
                locked(applied(&p, 20), &["a"]),
                Change::Update { remap: true, reimport: false, regrant: false },
                vec!["drop-mapping", "create-mapping", "mark"],
            ),
            (
                "new tables re-import",
                plan_with("v1", TableFilter::LimitTo(vec!["orders".into()]), "db"),
                locked(applied(&p, 20), &["a", "b"]),
                Change::Update { remap: false, reimport: true, regrant: false },
                vec!["reimport", "mark"],
            ),
            (
                "a dropped table re-imports",
                p.clone(),
                locked(Observed { foreign_tables: 19, ..applied(&p, 20) }, &["a"]),
                Change::Update { remap: false, reimport: true, regrant: false },
                vec!["reimport", "mark"],
            ),
            (
                "a dropped mapping is restored",
                p.clone(),
                locked(Observed { mapping: false, ..applied(&p, 20) }, &["a"]),
                Change::Update { remap: true, reimport: false, regrant: false },
                vec!["drop-mapping", "create-mapping", "mark"],
            ),
            (
                "new server settings rebuild",
                plan_with("v1", TableFilter::All, "db2"),
                locked(applied(&p, 20), &["a"]),
                Change::Rebuild,
                vec!["drop-tables", "drop-mapping", "drop-server", "create-server", "comment-server", "create-mapping", "import", "mark"],
            ),
            (
                "a dropped server rebuilds",
                p.clone(),
                locked(Observed { server_comment: None, ..applied(&p, 0) }, &[]),
                Change::Rebuild,
                vec!["create-server", "comment-server", "create-mapping", "import", "mark"],
            ),
            (
                "an edited uid is rewritten",
                p.clone(),
                locked(
                    Observed { schema_comment: Some(p.schema_marker(Some(20)).render().replace("uid=u-1", "uid=u-0")), ..applied(&p, 20) },
                    &["a"],
                ),
                Change::Recomment,
                vec!["mark"],
            ),
            (
                "an orphaned schema is adopted",
                p.clone(),
                locked(
                    Observed { schema_comment: Some(format!("{} orphaned=true", p.schema_marker(Some(20)).render())), ..applied(&p, 20) },
                    &["a"],
                ),
                Change::Recomment,
                vec!["mark"],
            ),
            (
                "a marker without fingerprint rebuilds",
                p.clone(),
                locked(
                    Observed { schema_comment: Some(format!("{MARKER_PREFIX}org/analytics-sales uid=u-1 tables=20")), ..applied(&p, 20) },
                    &["a"],
                ),
                Change::Rebuild,
                vec!["drop-tables", "drop-mapping", "drop-server", "create-server", "comment-server", "create-mapping", "import", "mark"],
            ),
            (
                "a missing extension is created under a lock",
                p.clone(),
                Locked { wrapper: WrapperState::Missing, ..locked(Observed::default(), &[]) },
                Change::Rebuild,
                vec![
                    "lock-extension",
                    "create-extension",
                    "create-server",
                    "comment-server",
                    "create-mapping",
                    "create-schema",
                    "import",
                    "mark",
                ],
            ),
        ];
        for (what, desired, observed, change, statements) in rows {
            let (got_change, got) = attach(&desired, &observed).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(got_change, change, "{what}");
            assert_eq!(kinds(&got), statements, "{what}");
        }
    }

    #[test]
    fn a_reimport_changes_only_what_changed() {
        let def = |name: &str, d: &str| TableDef { name: name.into(), definition: d.into() };
        let existing = [def("kept", "a int"), def("changed", "a int"), def("gone", "a int")];
        let staged = [def("kept", "a int"), def("changed", "a int|b text"), def("new", "x text")];
        assert_eq!(
            reimport(&existing, &staged),
            ReimportDiff { add: vec!["new".into()], replace: vec!["changed".into()], remove: vec!["gone".into()] }
        );
        assert_eq!(reimport(&existing, &existing), ReimportDiff::default());
    }

    #[test]
    fn each_table_has_a_shape_that_changes_with_its_columns_only() {
        let rows =
            |rows: &[(&str, &str, &str)]| rows.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect::<Vec<_>>();
        let before = table_shapes(&rows(&[("u", "b", "text"), ("t", "a", "integer"), ("t", "c", "text")]));
        assert_eq!(before.iter().map(|t| (t.name.as_str(), t.columns)).collect::<Vec<_>>(), [("t", 2), ("u", 1)]);
        let after = table_shapes(&rows(&[("t", "a", "bigint"), ("t", "c", "text"), ("u", "b", "text")]));
        assert_ne!(before[0].hash, after[0].hash, "a column's type changed");
        assert_eq!(before[1].hash, after[1].hash, "u did not change");
        let reordered = table_shapes(&rows(&[("t", "c", "text"), ("t", "a", "integer"), ("u", "b", "text")]));
        assert_ne!(before[0].hash, reordered[0].hash, "the column order is part of the shape");
    }

    #[test]
    fn a_new_source_schema_reimports_and_an_unknown_one_does_not() {
        let with_source = |hash: Option<&str>| {
            let mut p = plan();
            if let Some(h) = hash {
                p.fingerprint.set("source", h.into());
            }
            p
        };
        let imported = |hash: &str| {
            let mut m = plan().schema_marker(Some(20));
            m.fingerprint.as_mut().unwrap().set("source", hash.into());
            Observed { schema_comment: Some(m.render()), ..applied(&plan(), 20) }
        };
        assert_eq!(decide(&with_source(None), &imported("h1")), Ok(Change::None), "no test yet: nothing to compare");
        assert_eq!(decide(&with_source(Some("h1")), &imported("h1")), Ok(Change::None));
        assert_eq!(decide(&with_source(Some("h2")), &imported("h1")), Ok(Change::Update { remap: false, reimport: true, regrant: false }));
        // What an attach records after its import is what the marker says:
        // the source's hash as the import found it. The Connection's first
        // test then reports the same hash, and nothing is to be done.
        let recorded = plan().observed_after(20, Some("h1"));
        assert_eq!(recorded, imported("h1"));
        assert_eq!(decide(&with_source(Some("h1")), &recorded), Ok(Change::None));
        let source_hash_of = |rows: &[(&str, &str, &str)]| {
            source_hash(&rows.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect::<Vec<_>>())
        };
        assert_ne!(source_hash_of(&[("t", "a", "integer")]), source_hash_of(&[("t", "a", "text")]));
        assert_eq!(
            source_hash_of(&[("t", "a", "integer"), ("u", "b", "text")]),
            source_hash_of(&[("u", "b", "text"), ("t", "a", "integer")])
        );
    }

    #[test]
    fn drops_are_only_of_the_tables_its_server_imported() {
        let p = plan();
        let (_, statements) = attach(&plan_with("v1", TableFilter::All, "db2"), &locked(applied(&p, 2), &["orders", "customers"])).unwrap();
        assert_eq!(
            statements[0],
            Statement::DropForeignTables { schema: "sales".into(), tables: vec!["orders".into(), "customers".into()] }
        );
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let p = plan();
        let refused = |observed: Observed| attach(&p, &locked(observed, &[])).unwrap_err();
        let manual = refused(Observed { schema_comment: Some(String::new()), ..Default::default() });
        assert_eq!(manual.reason, Reason::SchemaConflict);
        assert!(manual.message.contains("not created by Manifold"));
        let other = refused(Observed {
            schema_comment: Some(applied(&p, 20).schema_comment.unwrap().replace("analytics-sales", "other")),
            ..applied(&p, 20)
        });
        assert!(other.message.contains("org/other"));
        let server_only = refused(Observed { server_comment: Some("theirs".into()), ..Default::default() });
        assert!(server_only.message.contains("foreign server"));
        let no_usage = attach(&p, &Locked { wrapper: WrapperState::NoUsage, ..locked(Observed::default(), &[]) }).unwrap_err();
        assert_eq!(no_usage.reason, Reason::PermissionDenied);
        assert!(no_usage.message.contains("GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO app"), "{}", no_usage.message);
    }

    #[test]
    fn detach_touches_only_what_is_ours() {
        let p = plan();
        let ours = locked(applied(&p, 2), &["a", "b"]);
        assert_eq!(kinds(&detach(&p.owner, "sales", &ours)), ["drop-tables", "drop-schema", "drop-mapping", "drop-server"]);
        let read = Locked { readers: vec!["analyst".into()], ..locked(applied(&p, 2), &["a"]) };
        assert_eq!(
            kinds(&detach(&p.owner, "sales", &read)),
            ["drop-tables", "drop-schema", "drop-reader-mapping", "drop-mapping", "drop-server"]
        );
        let theirs =
            locked(Observed { schema_comment: Some("x".into()), server_comment: Some(String::new()), ..Default::default() }, &["a"]);
        assert!(detach(&p.owner, "sales", &theirs).is_empty());
        let schema_only = locked(Observed { server_comment: None, ..applied(&p, 2) }, &[]);
        assert_eq!(kinds(&detach(&p.owner, "sales", &schema_only)), ["drop-schema"]);
    }

    #[test]
    fn a_detach_revokes_readers_first_and_only_on_what_is_ours() {
        let p = plan();
        let read = Locked { readers: vec!["analyst".into()], ..locked(applied(&p, 2), &["a"]) };
        assert_eq!(kinds(&revoke_readers(&p.owner, "sales", &read)), ["drop-reader-mapping", "revoke"]);
        assert!(revoke_readers(&p.owner, "sales", &locked(applied(&p, 2), &["a"])).is_empty());
        let theirs = Locked {
            readers: vec!["analyst".into()],
            ..locked(Observed { schema_comment: Some("x".into()), server_comment: Some(String::new()), ..Default::default() }, &[])
        };
        assert!(revoke_readers(&p.owner, "sales", &theirs).is_empty());
    }

    #[test]
    fn held_removals_still_forget_credentials() {
        let p = plan();
        assert_eq!(kinds(&forget_credentials(&p.owner, "sales", &locked(applied(&p, 2), &[]))), ["drop-mapping"]);
        let with_readers = Locked { readers: vec!["analyst".into()], ..locked(applied(&p, 2), &[]) };
        assert_eq!(kinds(&forget_credentials(&p.owner, "sales", &with_readers)), ["drop-reader-mapping", "drop-mapping"]);
        let theirs = locked(Observed { server_comment: Some("not ours".into()), ..applied(&p, 2) }, &[]);
        assert!(forget_credentials(&p.owner, "sales", &theirs).is_empty());
    }

    #[test]
    fn orphaning_marks_only_our_schema_once() {
        let p = plan();
        let statements = orphan(&p.owner, "sales", &applied(&p, 2));
        let [Statement::MarkSchema { marker, .. }] = statements.as_slice() else { panic!("{statements:?}") };
        assert!(marker.orphaned && marker.tables == Some(2));
        let marked = Observed { schema_comment: Some(marker.render()), ..applied(&p, 2) };
        assert!(orphan(&p.owner, "sales", &marked).is_empty());
        assert!(orphan(&Owner { namespace: "org".into(), name: "x".into() }, "sales", &applied(&p, 2)).is_empty());
    }

    #[test]
    fn a_test_builds_without_markers() {
        let statements = test(&plan(), WrapperState::Usable, "app").unwrap();
        assert_eq!(kinds(&statements), ["create-server", "create-mapping", "create-schema", "import"]);
        assert_eq!(test(&plan(), WrapperState::NoUsage, "app").unwrap_err().reason, Reason::PermissionDenied);
    }

    #[test]
    fn a_missing_reader_role_is_skipped() {
        let statements = vec![
            Statement::GrantReaders { schema: "s".into(), roles: vec!["ann".into(), "ghost".into()] },
            Statement::GrantReaders { schema: "t".into(), roles: vec!["ghost".into()] },
            Statement::DropReaderMapping { server: "s".into(), role: "ghost".into() },
            Statement::CreateReaderMapping { server: "s".into(), role: "ghost".into(), options: Vec::new() },
            Statement::RevokeReader { schema: "s".into(), role: "ghost".into() },
            Statement::RevokeReader { schema: "s".into(), role: "ann".into() },
            Statement::DropSchema { schema: "s".into() },
        ];
        assert_eq!(reader_roles(&statements), ["ann", "ghost"]);
        let existing = ["ann".to_owned()].into_iter().collect();
        assert_eq!(
            without_missing_roles(statements, &existing),
            [
                Statement::GrantReaders { schema: "s".into(), roles: vec!["ann".into()] },
                Statement::RevokeReader { schema: "s".into(), role: "ann".into() },
                Statement::DropSchema { schema: "s".into() },
            ]
        );
    }
}
