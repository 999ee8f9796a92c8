//! Imports of another tool's connection config as Manifold manifests:
//! Secrets, Connections and WorkspaceConnections, ready for `kubectl apply`.
//! Pure: the caller reads the files and prints or applies the objects, so
//! every rule is tested with plain text. An import is all or nothing: any
//! error means no objects.
//!
//! - `steampipe`: Steampipe's `.spc` files.

mod steampipe;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{GROUP, SECRET_LABEL, VERSION, is_reserved_schema, schema_name_problem};
use crate::plugins::is_hcl_identifier;

pub use steampipe::steampipe;

/// What to import and how to name it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Written into every object's `metadata.namespace`; unset, the objects
    /// take the namespace they are applied to.
    pub namespace: Option<String>,
    /// Import only the connections whose original name matches one of these
    /// globs (`*` and `?`). Empty: all of them.
    pub connections: Vec<String>,
    /// Put before every name: `p-` before the Kubernetes name, `p_` before
    /// the schema. Lowercase letters, digits, `-` and `_`, starting with a
    /// letter, at most 20 characters.
    pub prefix: Option<String>,
    /// Further argument names whose values are credentials: they go into
    /// the Secret, never into a spec.
    pub secret_keys: Vec<String>,
    /// Attach every imported connection to these Workspaces too.
    pub attach: Vec<String>,
}

/// One input file: its path (for messages) and its text.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub path: &'a str,
    pub text: &'a str,
}

/// What an import makes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Import {
    /// Secrets, then Connections, then WorkspaceConnections, each in the
    /// order of the files: the order to apply them in.
    pub objects: Vec<Value>,
    /// Every imported connection whose Kubernetes name or schema is not its
    /// original name.
    pub renamed: Vec<Renamed>,
    /// What was left out or needs a look, for a person.
    pub notes: Vec<Note>,
}

/// A place in an input file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub file: String,
    /// One-based.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A connection whose names are not its original name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renamed {
    pub location: Location,
    /// The name in the input.
    pub original: String,
    /// The Connection's `metadata.name`.
    pub name: String,
    /// The Connection's `spec.schema`.
    pub schema: String,
}

impl fmt::Display for Renamed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} is Connection {}, schema {}", self.location, self.original, self.name, self.schema)?;
        if self.schema != self.original {
            write!(f, " (queries name {}, not {})", self.schema, self.original)?;
        }
        Ok(())
    }
}

/// Something an import left out, or that needs a look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Why an import made nothing. Messages name arguments, never their values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError {
    /// Where in the input; none for a bad option.
    pub location: Option<Location>,
    pub message: String,
}

impl ImportError {
    fn at(location: Location, message: impl Into<String>) -> Self {
        ImportError { location: Some(location), message: message.into() }
    }

    fn option(message: impl Into<String>) -> Self {
        ImportError { location: None, message: message.into() }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{location}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ImportError {}

impl Options {
    /// Refuses options that could only make bad objects.
    fn check(&self) -> Result<(), ImportError> {
        if let Some(prefix) = &self.prefix {
            let valid = prefix.len() <= 20
                && prefix.starts_with(|c: char| c.is_ascii_lowercase())
                && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !valid {
                return Err(ImportError::option(format!(
                    "prefix {prefix:?} must start with a lowercase letter and hold only lowercase letters, digits, - and _ (at most 20)"
                )));
            }
        }
        if let Some(ns) = &self.namespace
            && !is_dns_label(ns)
        {
            return Err(ImportError::option(format!("namespace {ns:?} is not a valid namespace name")));
        }
        for workspace in &self.attach {
            if !is_dns_subdomain(workspace) {
                return Err(ImportError::option(format!("workspace {workspace:?} is not a valid Workspace name")));
            }
        }
        for key in &self.secret_keys {
            if !is_hcl_identifier(key) {
                return Err(ImportError::option(format!("secret key {key:?} is not an argument name")));
            }
        }
        if let Some(pattern) = self.connections.iter().find(|p| p.is_empty()) {
            return Err(ImportError::option(format!("connection pattern {pattern:?} is empty")));
        }
        Ok(())
    }

    /// The Kubernetes name for an original name, with the prefix.
    fn kube_name(&self, original: &str) -> String {
        match &self.prefix {
            Some(prefix) => kube_name(&format!("{prefix}-{original}")),
            None => kube_name(original),
        }
    }

    /// The schema for an original name, with the prefix.
    fn schema_name(&self, original: &str) -> String {
        match &self.prefix {
            Some(prefix) => schema_name(&format!("{}_{original}", prefix.replace('-', "_"))),
            None => schema_name(original),
        }
    }

    /// An original name glob (`aws_*`) in the Kubernetes names' terms
    /// (`aws-*`), character by character, with the prefix.
    fn kube_glob(&self, pattern: &str) -> String {
        let mapped: String = pattern.chars().map(|c| if c == '*' || c == '?' { c } else { kube_char(c) }).collect();
        match &self.prefix {
            Some(prefix) => format!("{}-{mapped}", prefix.replace('_', "-")),
            None => mapped,
        }
    }

    fn metadata(&self, name: &str, labels: Option<Value>) -> Value {
        let mut metadata = json!({ "name": name });
        if let Some(ns) = &self.namespace {
            metadata["namespace"] = json!(ns);
        }
        if let Some(labels) = labels {
            metadata["labels"] = labels;
        }
        metadata
    }

    /// A credentials Secret, opted in for Manifold by its label.
    fn secret(&self, name: &str, data: &BTreeMap<String, String>) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self.metadata(name, Some(json!({ SECRET_LABEL: "true" }))),
            "type": "Opaque",
            "stringData": data,
        })
    }

    fn connection(&self, name: &str, spec: Value) -> Value {
        json!({ "apiVersion": format!("{GROUP}/{VERSION}"), "kind": "Connection", "metadata": self.metadata(name, None), "spec": spec })
    }

    /// The attachment of a connection to a workspace, named
    /// `<workspace>-<connection>` as in the examples.
    fn attachment(&self, workspace: &str, connection: &str) -> Result<Value, ImportError> {
        let name = format!("{workspace}-{connection}");
        if name.len() > 253 {
            return Err(ImportError::option(format!(
                "the attachment name {name:?} is longer than 253 characters: use a shorter workspace name"
            )));
        }
        Ok(json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "WorkspaceConnection",
            "metadata": self.metadata(&name, None),
            "spec": { "workspace": workspace, "connection": connection },
        }))
    }
}

/// The objects as one multi-document YAML stream, each document after `---`.
pub fn to_yaml(objects: &[Value]) -> String {
    // Long strings stay on one line; a plugin's config keeps its lines.
    let options = serde_saphyr::ser_options! { folded_wrap_chars: 100_000 };
    objects
        .iter()
        .map(|object| {
            let yaml = serde_saphyr::to_string_with_options(object, options.clone()).expect("a JSON value always serializes");
            format!("---\n{}", yaml.trim_start_matches("---\n"))
        })
        .collect()
}

fn kube_char(c: char) -> char {
    match c.to_ascii_lowercase() {
        c @ ('a'..='z' | '0'..='9') => c,
        _ => '-',
    }
}

/// A DNS-1123 label for any name: lowercase, every other character `-`,
/// no `-` at either end; past 63 characters, or with nothing left, the
/// start and a hash of the whole name.
pub fn kube_name(original: &str) -> String {
    let mapped: String = original.chars().map(kube_char).collect();
    let mapped = mapped.trim_matches('-');
    if !mapped.is_empty() && mapped.len() <= 63 {
        return mapped.to_owned();
    }
    let head = mapped[..mapped.len().min(54)].trim_end_matches('-');
    if head.is_empty() { short_hash(original) } else { format!("{head}-{}", short_hash(original)) }
}

/// A Postgres schema name that Manifold takes for any name: the name itself
/// when it is one; otherwise lowercase, every other character `_`, a `_`
/// first where it would start with a digit or be reserved (`public`,
/// `information_schema`, `manifold`, `pg_*`); past 63 bytes, the start and a hash of
/// the whole name.
pub fn schema_name(original: &str) -> String {
    if schema_name_problem(original).is_none() {
        return original.to_owned();
    }
    let mut mapped: String = original
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    if mapped.is_empty() || mapped.starts_with(|c: char| c.is_ascii_digit()) || is_reserved_schema(&mapped) {
        mapped.insert(0, '_');
    }
    if mapped.len() > 63 {
        mapped = format!("{}_{}", &mapped[..54], short_hash(original));
    }
    mapped
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_map_predictably() {
        for (original, name, schema) in [
            ("aws_prod_01", "aws-prod-01", "aws_prod_01"),
            ("AWS.Dev", "aws-dev", "aws_dev"),
            ("_internal", "internal", "_internal"),
            ("01_account", "01-account", "_01_account"),
            ("public", "public", "_public"),
            ("pg_catalog", "pg-catalog", "_pg_catalog"),
            ("information_schema", "information-schema", "_information_schema"),
            ("manifold", "manifold", "_manifold"),
            ("gcp-prod", "gcp-prod", "gcp_prod"),
            ("ünïcode", "n-code", "_n_code"),
        ] {
            assert_eq!((kube_name(original).as_str(), schema_name(original).as_str()), (name, schema), "{original}");
        }
        let long = "a".repeat(70);
        assert_eq!(kube_name(&long).len(), 63);
        assert!(kube_name(&long).starts_with(&"a".repeat(54)));
        assert_ne!(kube_name(&long), kube_name(&"a".repeat(71)), "truncated names keep a hash of the whole");
        assert_eq!(schema_name(&long).len(), 63);
        assert_eq!(kube_name("___").len(), 8);
    }

    #[test]
    fn the_prefix_goes_before_both_names() {
        let options = Options { prefix: Some("team-a".into()), ..Default::default() };
        assert_eq!(options.kube_name("aws_prod"), "team-a-aws-prod");
        assert_eq!(options.schema_name("aws_prod"), "team_a_aws_prod");
        assert_eq!(options.kube_glob("aws_*"), "team-a-aws-*");
        for bad in ["", "Team", "1x", "a b", &"a".repeat(21)] {
            assert!(Options { prefix: Some(bad.into()), ..Default::default() }.check().is_err(), "{bad}");
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(Options { attach: vec!["Analytics".into()], ..Default::default() }.check().is_err());
        assert!(Options { secret_keys: vec!["not valid".into()], ..Default::default() }.check().is_err());
        assert!(Options { namespace: Some("a_b".into()), ..Default::default() }.check().is_err());
        assert!(Options { connections: vec![String::new()], ..Default::default() }.check().is_err());
        let fine = Options {
            namespace: Some("acme".into()),
            connections: vec!["aws_*".into()],
            prefix: Some("p".into()),
            secret_keys: vec!["license".into()],
            attach: vec!["analytics".into()],
        };
        assert_eq!(fine.check(), Ok(()));
    }

    #[test]
    fn yaml_is_one_document_per_object() {
        let objects = [json!({ "kind": "Secret", "stringData": { "k": "v" } }), json!({ "kind": "Connection", "spec": { "x": "a\nb\n" } })];
        let yaml = to_yaml(&objects);
        assert_eq!(yaml.matches("---\n").count(), 2, "{yaml}");
        assert!(yaml.starts_with("---\n"), "{yaml}");
        let back: Vec<Value> = yaml.split("---\n").skip(1).map(|doc| serde_saphyr::from_str(doc).unwrap()).collect();
        assert_eq!(back, objects);
    }

    proptest! {
        #[test]
        fn mapped_names_are_always_valid(original in "\\PC{0,80}") {
            let name = kube_name(&original);
            prop_assert!(is_dns_label(&name), "{original:?} -> {name:?}");
            let schema = schema_name(&original);
            prop_assert_eq!(schema_name_problem(&schema), None, "{:?} -> {:?}", original, schema);
            prop_assert_eq!(kube_name(&original), name);
            prop_assert_eq!(schema_name(&original), schema.clone());
            if schema_name_problem(&original).is_none() {
                prop_assert_eq!(schema, original);
            }
        }

        #[test]
        fn steampipe_like_names_are_valid_too(original in "[a-zA-Z_][a-zA-Z0-9_.-]{0,70}") {
            prop_assert!(is_dns_label(&kube_name(&original)));
            prop_assert_eq!(schema_name_problem(&schema_name(&original)), None);
        }
    }
}
