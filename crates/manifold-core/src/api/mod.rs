//! The custom resources of `manifold.dev/v1alpha1`, exactly as DESIGN.md gives
//! them: their specs, statuses, CRD validation (CEL) and printer columns.
//!
//! Everything here is plain data. Behaviour lives in the controllers.

pub mod conditions;
mod connection;
pub mod duration;
mod reason;
mod workspace;
mod workspace_connection;

pub use connection::*;
pub use reason::{Failure, Reason, Retry};
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

/// The annotation whose new value asks for the source's schema to be
/// looked at again now (a test), and every workspace re-imported if it
/// changed.
pub const REFRESH_REQUEST_ANNOTATION: &str = "manifold.dev/refresh-request";

/// A Connection that carries this annotation is a draft: the operator
/// resolves and tests it (where an untested connection is tested: the
/// cluster admin's test database when it is attached nowhere), but attaches
/// it nowhere and no selector picks it, until the annotation is removed.
/// The console's New Connection creates a draft so that Test Connection is
/// the operator's real test before Create.
pub const DRAFT_ANNOTATION: &str = "manifold.dev/draft";

/// Whether a Connection is a draft (`DRAFT_ANNOTATION`, any value).
pub fn is_draft(conn: &Connection) -> bool {
    conn.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(DRAFT_ANNOTATION))
}

/// The label that opts a Secret in for Manifold's use. The operator watches
/// only Secrets that carry it with the value `"true"` (unless a cluster
/// admin chooses another selector), so a Secret that nobody opted in is
/// never read, and never sent to a source.
pub const SECRET_LABEL: &str = "manifold.dev/credentials";

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

/// A reference to a CA certificate in a Secret of the referring object's
/// namespace, as CloudNativePG's `<cluster>-ca` Secret holds it.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct CaSecretRef {
    /// Name of the Secret, in the same namespace as this object.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// Key within the Secret that holds PEM certificates. Defaults to
    /// `ca.crt`.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_owned()
}

/// Options of the `postgres` plugin that a spec may set: postgres_fdw's own
/// and the libpq options that name no file, no socket and no other host.
/// `passfile`, `service`, `sslkey`, `sslcert`, `sslrootcert`, `sslcrl`,
/// `sslpassword`, `hostaddr`, `require_auth` and the rest are refused.
pub const POSTGRES_OPTIONS: &[&str] = &[
    "fetch_size",
    "batch_size",
    "use_remote_estimate",
    "fdw_startup_cost",
    "fdw_tuple_cost",
    "extensions",
    "updatable",
    "truncatable",
    "async_capable",
    "keep_connections",
    "parallel_commit",
    "parallel_abort",
    "analyze_sampling",
    "sslmode",
    "sslsni",
    "channel_binding",
    "gssencmode",
    "connect_timeout",
    "application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "target_session_attrs",
];

/// Whether a host is a network endpoint: a DNS name or an IP address, never
/// a socket directory (`/…`), a list of hosts (`a,b`) or anything libpq
/// would read otherwise.
pub fn is_network_host(host: &str) -> bool {
    let dns = !host.is_empty()
        && host.len() <= 253
        && host.split('.').enumerate().all(|(i, label)| {
            // A trailing dot (a fully qualified name) leaves one empty label.
            (label.is_empty() && i > 0 && host.ends_with('.') && i == host.split('.').count() - 1)
                || (!label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-'))
        });
    dns || host.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Whether a name matches a glob with `*` (any run) and `?` (any one
/// character), as an aggregator's `connections` are matched.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The CEL rule that applies `is_network_host` to `self`.
pub const NETWORK_HOST_CEL: &str = r"self.matches('^([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)(\\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\\.?$') || (self.matches('^[0-9A-Fa-f:.]+$') && self.contains(':'))";

/// Validation shared by every schema name: the rules of the CRDs, applied
/// again by the controller to names it derives itself (from `metadata.name`).
pub fn schema_name_problem(name: &str) -> Option<String> {
    let valid_chars = name.bytes().enumerate().all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()));
    if name.is_empty() || !valid_chars {
        Some(format!("schema name {name:?} must match ^[a-z_][a-z0-9_]*$"))
    } else if name.len() > 63 {
        Some(format!("schema name {name:?} is longer than 63 bytes"))
    } else if is_reserved_schema(name) {
        Some(format!("schema name {name:?} is reserved by Postgres or by Manifold"))
    } else {
        None
    }
}

/// Postgres's own schemas, and `manifold`, where Manifold keeps the pin
/// of each workspace database (`sql::PIN_SCHEMA`).
pub fn is_reserved_schema(name: &str) -> bool {
    name == "public" || name == "information_schema" || name == "manifold" || name.starts_with("pg_")
}

/// The CEL rule that applies `schema_name_problem`'s checks to a string `s`,
/// used both on `spec.schema` and on the default derived from the name.
pub fn schema_name_cel(s: &str) -> String {
    format!(
        "{s}.matches('^[a-z_][a-z0-9_]*$') && size({s}) <= 63 && {s} != 'public' && {s} != 'information_schema' && {s} != 'manifold' && !{s}.startsWith('pg_')"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_network_endpoints() {
        for ok in ["db", "db.example.com", "db.example.com.", "10.0.0.1", "::1", "fe80::1", "a-b.c-d"] {
            assert!(is_network_host(ok), "{ok}");
        }
        for bad in ["", "/var/run/postgresql", "a,b", "db:5432", "-db", "db-", "a..b", "@x", "db name", ".", "x/y"] {
            assert!(!is_network_host(bad), "{bad}");
        }
    }

    #[test]
    fn globs_match_names() {
        for (p, n) in [("aws-*", "aws-prod"), ("aws-*", "aws-"), ("*", "x"), ("a?c", "abc"), ("*-prod", "aws-prod"), ("legacy", "legacy")] {
            assert!(glob(p, n), "{p} {n}");
        }
        for (p, n) in [("aws-*", "gcp-prod"), ("a?c", "ac"), ("legacy", "legacy-billing"), ("*-prod", "aws-dev")] {
            assert!(!glob(p, n), "{p} {n}");
        }
    }

    #[test]
    fn schema_names() {
        for ok in ["sales", "_x", "a1_b2", &"a".repeat(63)] {
            assert_eq!(schema_name_problem(ok), None, "{ok}");
        }
        for bad in
            ["", "1abc", "Sales", "sa-les", "sa\"les", "public", "information_schema", "manifold", "pg_x", "pg_", "ä", &"a".repeat(64)]
        {
            assert!(schema_name_problem(bad).is_some(), "{bad}");
        }
    }
}
