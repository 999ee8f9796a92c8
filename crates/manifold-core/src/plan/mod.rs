//! The planner: from the desired state of one attachment and what one
//! locked catalog read shows, the statements that bring a workspace
//! database there, or the refusal to touch it. Pure: `sql` renders the
//! statements and `Database` (the manifold crate's `postgres`) only runs them in one
//! transaction and records the result.
//!
//! Every decision about DDL is made here: what to build, what to drop,
//! whether a schema is ours, whether the wrapper can be used.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::api::{Failure, Reason};
use crate::plugins::{EXTENSION_SCHEMA, Wrapper};

mod attach;
mod detach;
mod source;
mod state;

pub use crate::secret::SecretString;
pub use attach::*;
pub use detach::*;
pub use source::*;
pub use state::*;

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

#[cfg(test)]
mod tests;
