//! The desired Postgres state of one attachment, as plain data, and the pure
//! decision of what to change given what the catalog shows. Nothing here does
//! I/O; `sql` renders the statements and `apply` runs them.

use std::fmt;

use sha2::{Digest, Sha256};

/// A string that may hold a secret. Its `Debug` never shows a secret value,
/// so a plan can be logged or put in a panic message safely.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString {
    value: String,
    secret: bool,
}

impl SecretString {
    /// A secret value, from a Secret.
    pub fn new(value: String) -> Self {
        SecretString { value, secret: true }
    }

    /// A value from a spec, safe to show.
    pub fn public(value: String) -> Self {
        SecretString { value, secret: false }
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn is_secret(&self) -> bool {
        self.secret
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret { f.write_str("\"<redacted>\"") } else { fmt::Debug::fmt(&self.value, f) }
    }
}

/// The attachment that owns a schema: what the ownership marker records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Hashes of the three independent parts of the desired state. Each part that
/// changes implies its own work: a new server means a rebuild, new
/// credentials a new user mapping, a new import a re-import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub server: String,
    pub mapping: String,
    pub import: String,
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.server, self.mapping, self.import)
    }
}

/// The ownership marker, kept in the comment of the schema (and, without
/// fingerprint and tables, of the server):
/// `manifold.dev/owner=<ns>/<name> uid=<uid> fingerprint=<s>.<m>.<i> tables=<n>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    pub owner: Owner,
    pub uid: String,
    pub fingerprint: Option<Fingerprint>,
    pub tables: Option<i64>,
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
        s
    }

    /// Parses a comment. A comment that does not begin with the marker is
    /// not ours, whatever else it says.
    pub fn parse(comment: &str) -> Option<Marker> {
        let rest = comment.strip_prefix(MARKER_PREFIX)?;
        let mut words = rest.split(' ');
        let (namespace, name) = words.next()?.split_once('/')?;
        let mut marker = Marker {
            owner: Owner { namespace: namespace.to_owned(), name: name.to_owned() },
            uid: String::new(),
            fingerprint: None,
            tables: None,
        };
        for word in words {
            match word.split_once('=') {
                Some(("uid", uid)) => marker.uid = uid.to_owned(),
                Some(("fingerprint", fp)) => {
                    let mut parts = fp.split('.');
                    marker.fingerprint = match (parts.next(), parts.next(), parts.next(), parts.next()) {
                        (Some(s), Some(m), Some(i), None) => {
                            Some(Fingerprint { server: s.into(), mapping: m.into(), import: i.into() })
                        }
                        _ => None,
                    }
                }
                Some(("tables", n)) => marker.tables = n.parse().ok(),
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

/// Everything one attachment needs in a workspace database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachPlan {
    pub owner: Owner,
    pub uid: String,
    pub schema: String,
    /// The foreign server, named like the schema.
    pub server: String,
    pub extension: String,
    pub wrapper: String,
    pub server_options: Vec<(String, SecretString)>,
    pub mapping_options: Vec<(String, SecretString)>,
    pub remote_schema: String,
    pub tables: TableFilter,
    pub fingerprint: Fingerprint,
}

/// The inputs of a plan, from resolved Kubernetes objects.
pub struct PlanInput<'a> {
    pub owner: Owner,
    pub uid: &'a str,
    pub schema: &'a str,
    pub wrapper: crate::plugins::Wrapper,
    pub tables: TableFilter,
    /// Identifies the version of the credentials (the Secret's uid and
    /// resourceVersion), so that the fingerprint changes when they do
    /// without ever hashing a secret value into a comment anyone can read.
    pub credentials_version: Option<&'a str>,
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
        AttachPlan {
            fingerprint: Fingerprint {
                server: short_hash(&server_parts),
                mapping: short_hash(&mapping_parts),
                import: short_hash(&import_parts),
            },
            owner: input.owner,
            uid: input.uid.to_owned(),
            schema: input.schema.to_owned(),
            server: input.schema.to_owned(),
            extension: w.extension,
            wrapper: w.wrapper,
            server_options: w.server_options,
            mapping_options: w.mapping_options,
            remote_schema: w.remote_schema,
            tables: input.tables,
        }
    }

    /// The schema's marker once the plan is applied with `tables` imported.
    pub fn schema_marker(&self, tables: i64) -> Marker {
        Marker {
            owner: self.owner.clone(),
            uid: self.uid.clone(),
            fingerprint: Some(self.fingerprint.clone()),
            tables: Some(tables),
        }
    }

    /// The server's marker.
    pub fn server_marker(&self) -> Marker {
        Marker { owner: self.owner.clone(), uid: self.uid.clone(), fingerprint: None, tables: None }
    }
}

/// What the catalog shows of one attachment's schema and server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The schema's comment, if the schema exists (empty if it has none).
    pub schema_comment: Option<String>,
    /// Foreign tables in the schema.
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

/// The work that brings an attachment to its plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing to do.
    None,
    /// Only the schema's comment differs.
    Recomment,
    /// (Re)create the user mapping, re-import if `reimport`.
    Update { remap: bool, reimport: bool },
    /// Build everything: extension, server, mapping, schema, import. Whatever
    /// of ours exists is dropped first.
    Rebuild,
}

/// Why the plan cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The schema or server exists and is not ours.
    Conflict(String),
}

/// Decides the change from what the catalog shows. Refuses to touch a schema
/// or server that does not carry this attachment's marker.
pub fn decide(plan: &AttachPlan, observed: &Observed) -> Result<Change, Refusal> {
    check_ownership(plan, observed)?;
    let Some(marker) = observed.schema_marker() else {
        return Ok(Change::Rebuild); // no schema yet
    };
    let Some(fp) = marker.fingerprint.as_ref() else {
        return Ok(Change::Rebuild);
    };
    if observed.server_comment.is_none() || fp.server != plan.fingerprint.server {
        return Ok(Change::Rebuild);
    }
    let remap = fp.mapping != plan.fingerprint.mapping || !observed.mapping;
    let reimport = fp.import != plan.fingerprint.import || marker.tables != Some(observed.foreign_tables);
    if remap || reimport {
        return Ok(Change::Update { remap, reimport });
    }
    if marker != plan.schema_marker(observed.foreign_tables) {
        return Ok(Change::Recomment);
    }
    Ok(Change::None)
}

fn check_ownership(plan: &AttachPlan, observed: &Observed) -> Result<(), Refusal> {
    if let Some(comment) = &observed.schema_comment {
        match Marker::parse(comment) {
            Some(m) if m.owner == plan.owner => {}
            Some(m) => {
                return Err(Refusal::Conflict(format!(
                    "schema {:?} is already managed by attachment {}",
                    plan.schema, m.owner
                )));
            }
            None => {
                return Err(Refusal::Conflict(format!(
                    "schema {:?} exists and was not created by Manifold; it is left untouched",
                    plan.schema
                )));
            }
        }
    }
    if let Some(comment) = &observed.server_comment {
        match Marker::parse(comment) {
            Some(m) if m.owner == plan.owner => {}
            _ => {
                return Err(Refusal::Conflict(format!(
                    "foreign server {:?} exists and is not managed by this attachment; it is left untouched",
                    plan.server
                )));
            }
        }
    }
    Ok(())
}

/// What a detach may drop: only what carries this attachment's marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub schema: bool,
    pub server: bool,
}

pub fn removal(owner: &Owner, observed: &Observed) -> Removal {
    let ours = |comment: &Option<String>| {
        comment.as_deref().and_then(Marker::parse).is_some_and(|m| &m.owner == owner)
    };
    Removal { schema: ours(&observed.schema_comment), server: ours(&observed.server_comment) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::Wrapper;

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
            },
            tables,
            credentials_version: Some(password_version),
        })
    }

    fn plan() -> AttachPlan {
        plan_with("v1", TableFilter::All, "db")
    }

    fn applied(plan: &AttachPlan, tables: i64) -> Observed {
        Observed {
            schema_comment: Some(plan.schema_marker(tables).render()),
            foreign_tables: tables,
            server_comment: Some(plan.server_marker().render()),
            mapping: true,
        }
    }

    #[test]
    fn markers_round_trip() {
        let m = plan().schema_marker(20);
        assert_eq!(Marker::parse(&m.render()), Some(m));
        assert_eq!(Marker::parse("sales schema, do not touch"), None);
        assert_eq!(Marker::parse("prefix manifold.dev/owner=a/b"), None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let shown = format!("{:?}", plan());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"db\""));
    }

    #[test]
    fn fresh_database_builds_everything() {
        assert_eq!(decide(&plan(), &Observed::default()), Ok(Change::Rebuild));
    }

    #[test]
    fn applied_plan_needs_nothing() {
        let p = plan();
        assert_eq!(decide(&p, &applied(&p, 20)), Ok(Change::None));
    }

    #[test]
    fn new_credentials_only_remap() {
        let old = plan();
        let new = plan_with("v2", TableFilter::All, "db");
        assert_eq!(decide(&new, &applied(&old, 20)), Ok(Change::Update { remap: true, reimport: false }));
    }

    #[test]
    fn new_tables_or_a_dropped_table_reimport() {
        let old = plan();
        let new = plan_with("v1", TableFilter::LimitTo(vec!["orders".into()]), "db");
        assert_eq!(decide(&new, &applied(&old, 20)), Ok(Change::Update { remap: false, reimport: true }));
        let mut dropped = applied(&old, 20);
        dropped.foreign_tables = 19;
        assert_eq!(decide(&old, &dropped), Ok(Change::Update { remap: false, reimport: true }));
    }

    #[test]
    fn new_server_settings_rebuild() {
        let old = plan();
        let new = plan_with("v1", TableFilter::All, "db2");
        assert_eq!(decide(&new, &applied(&old, 20)), Ok(Change::Rebuild));
    }

    #[test]
    fn dropped_mapping_or_server_is_restored() {
        let p = plan();
        let mut no_mapping = applied(&p, 20);
        no_mapping.mapping = false;
        assert_eq!(decide(&p, &no_mapping), Ok(Change::Update { remap: true, reimport: false }));
        let mut no_server = applied(&p, 0);
        no_server.server_comment = None;
        assert_eq!(decide(&p, &no_server), Ok(Change::Rebuild));
    }

    #[test]
    fn edited_comment_is_rewritten() {
        let p = plan();
        let mut edited = applied(&p, 20);
        edited.schema_comment = Some(format!("{MARKER_PREFIX}org/analytics-sales uid=u-1 tables=20 note=mine"));
        assert_eq!(decide(&p, &edited), Ok(Change::Rebuild));
        let mut other_uid = applied(&p, 20);
        other_uid.schema_comment = Some(other_uid.schema_comment.unwrap().replace("uid=u-1", "uid=u-0"));
        assert_eq!(decide(&p, &other_uid), Ok(Change::Recomment));
    }

    #[test]
    fn foreign_schema_or_server_is_a_conflict() {
        let p = plan();
        let manual = Observed { schema_comment: Some(String::new()), ..Default::default() };
        assert!(matches!(decide(&p, &manual), Err(Refusal::Conflict(m)) if m.contains("not created by Manifold")));
        let mut other = applied(&p, 20);
        other.schema_comment = Some(other.schema_comment.unwrap().replace("analytics-sales", "other"));
        assert!(matches!(decide(&p, &other), Err(Refusal::Conflict(m)) if m.contains("org/other")));
        let server_only = Observed { server_comment: Some("theirs".into()), ..Default::default() };
        assert!(matches!(decide(&p, &server_only), Err(Refusal::Conflict(m)) if m.contains("foreign server")));
    }

    #[test]
    fn removal_touches_only_what_is_ours() {
        let p = plan();
        assert_eq!(removal(&p.owner, &applied(&p, 3)), Removal { schema: true, server: true });
        let theirs = Observed { schema_comment: Some("x".into()), server_comment: Some(String::new()), ..Default::default() };
        assert_eq!(removal(&p.owner, &theirs), Removal { schema: false, server: false });
    }
}
