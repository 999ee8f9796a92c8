//! The custom resources of `manifold.dev/v1alpha1`, exactly as DESIGN.md gives
//! them: their specs, statuses, CRD validation (CEL) and printer columns.
//!
//! Everything here is plain data. Behaviour lives in the controllers.

pub mod conditions;
mod reason;
mod connection;
mod workspace;
mod workspace_connection;

pub use connection::*;
pub use reason::Reason;
pub use workspace::*;
pub use workspace_connection::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every Manifold kind.
pub const GROUP: &str = "manifold.dev";
/// The only served version.
pub const VERSION: &str = "v1alpha1";

/// The CRDs, in the order they are written to `crds/`, with their file names.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("workspaces.yaml", Workspace::crd()),
        ("connections.yaml", Connection::crd()),
        ("workspaceconnections.yaml", WorkspaceConnection::crd()),
    ]
}

/// One CRD as the YAML document that is checked in under `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    // Long CEL rules and descriptions stay on one line, so that a diff of
    // crds/ shows what changed.
    let options = serde_saphyr::ser_options! { folded_wrap_chars: 100_000 };
    let yaml = serde_saphyr::to_string_with_options(crd, options).expect("a CRD always serializes");
    format!("---\n{}", yaml.trim_start_matches("---\n"))
}

/// Marks a schema, server or user mapping as created by Manifold.
pub const OWNER_MARKER: &str = "manifold.dev/owner";

/// The annotation whose new value asks for a connection test.
pub const TEST_REQUEST_ANNOTATION: &str = "manifold.dev/test-request";

/// A reference to a Secret in the referring object's namespace.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as this object.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// A reference to one key of a Secret in the referring object's namespace.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this object.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// Key within the Secret. Defaults to `uri`, the libpq connection URI that
    /// CloudNativePG's `<cluster>-app` and `<cluster>-superuser` Secrets carry.
    #[serde(default = "default_uri_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_uri_key() -> String {
    "uri".to_owned()
}

/// Validation shared by every schema name: the rules of the CRDs, applied
/// again by the controller to names it derives itself (from `metadata.name`).
pub fn schema_name_problem(name: &str) -> Option<String> {
    let valid_chars = name
        .bytes()
        .enumerate()
        .all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()));
    if name.is_empty() || !valid_chars {
        Some(format!("schema name {name:?} must match ^[a-z_][a-z0-9_]*$"))
    } else if name.len() > 63 {
        Some(format!("schema name {name:?} is longer than 63 bytes"))
    } else if is_reserved_schema(name) {
        Some(format!("schema name {name:?} is reserved by Postgres"))
    } else {
        None
    }
}

fn is_reserved_schema(name: &str) -> bool {
    name == "public" || name == "information_schema" || name.starts_with("pg_")
}

/// The CEL rule that applies `schema_name_problem`'s checks to a string `s`,
/// used both on `spec.schema` and on the default derived from the name.
pub(crate) fn schema_name_cel(s: &str) -> String {
    format!(
        "{s}.matches('^[a-z_][a-z0-9_]*$') && size({s}) <= 63 && {s} != 'public' && {s} != 'information_schema' && !{s}.startsWith('pg_')"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["sales", "_x", "a1_b2", &"a".repeat(63)] {
            assert_eq!(schema_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "", "1abc", "Sales", "sa-les", "sa\"les", "public", "information_schema", "pg_x", "pg_",
            "ä", &"a".repeat(64),
        ] {
            assert!(schema_name_problem(bad).is_some(), "{bad}");
        }
    }
}
