use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CaSecretRef, SecretKeyRef};

/// The desired workspace: the database it is.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "manifold.dev",
    version = "v1alpha1",
    kind = "Workspace",
    namespaced,
    status = "WorkspaceStatus",
    shortname = "mws",
    category = "manifold",
    doc = "A Postgres database that people query. Each Connection attached to it through a WorkspaceConnection appears as one schema of foreign tables.",
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Connections", type_ = "integer", json_path = ".status.connectionCount", description = "Number of attached connections"),
    printcolumn(name = "Postgres", type_ = "string", json_path = ".status.postgresVersion"),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#, priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// How to reach the workspace's database.
    pub database: DatabaseSpec,
}

/// How to reach a workspace's database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// The Secret key that holds a libpq connection URI, such as
    /// `postgresql://user:password@host:5432/dbname?sslmode=verify-full`.
    /// `sslmode` is honoured as libpq does (`disable`, `prefer`, `require`,
    /// `verify-ca`, `verify-full`). The role should be the database owner
    /// with USAGE on the wrappers, whose extensions an admin installed (as
    /// CloudNativePG's `Database` declares them); a superuser works and is
    /// warned about. The Secret must carry the label
    /// `manifold.dev/credentials: "true"`.
    pub secret_ref: SecretKeyRef,
    /// The CA that signed the database's server certificate, such as
    /// CloudNativePG's `<cluster>-ca` Secret (key `ca.crt`). Without it,
    /// `verify-ca` and `verify-full` trust the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
}

/// The observed state of a Workspace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// The generation of the spec that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the database is reachable), `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The server version of the database, such as `15.20`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<String>,
    /// The connections attached now, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<AttachedConnection>,
    /// The number of entries in `connections`.
    #[serde(default)]
    pub connection_count: i32,
}

/// One connection as seen from a workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachedConnection {
    /// Name of the Connection.
    pub name: String,
    /// The schema that holds its foreign tables.
    pub schema: String,
    /// `Ready`, or the reason the attachment is not ready.
    pub state: String,
    /// The number of foreign tables in the schema.
    #[serde(default)]
    pub tables: i32,
}
