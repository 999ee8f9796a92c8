use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The desired attachment: which connection, in which workspace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
// Not duplicates: each `printcolumn(...)` names its own `type_`.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "manifold.dev",
    version = "v1alpha1",
    kind = "WorkspaceConnection",
    namespaced,
    status = "WorkspaceConnectionStatus",
    shortname = "wsconn",
    category = "manifold",
    doc = "Attaches a Connection to a Workspace of the same namespace: the connection's foreign tables appear in the workspace's database as one schema.",
    printcolumn(name = "Workspace", type_ = "string", json_path = ".spec.workspace"),
    printcolumn(name = "Connection", type_ = "string", json_path = ".spec.connection"),
    printcolumn(name = "Schema", type_ = "string", json_path = ".status.schema"),
    printcolumn(name = "Tables", type_ = "integer", json_path = ".status.tables"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceConnectionSpec {
    /// Name of the Workspace, in this namespace (references never leave
    /// it). Immutable: attach the connection elsewhere with a new
    /// WorkspaceConnection.
    #[x_kube(validation = Rule::new("self == oldSelf").message("workspace is immutable"))]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub workspace: String,
    /// Name of the Connection, in this namespace. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("connection is immutable"))]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub connection: String,
    /// What happens to the schema, server and user mapping when this
    /// attachment is deleted: `Delete` drops them (unless objects that
    /// Manifold did not create depend on them), `Orphan` leaves them in place.
    /// Deleted together with a Workspace whose `deletionPolicy` is `Orphan`,
    /// the attachment leaves them in place too.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// What happens to the Postgres objects when an attachment or a Workspace
/// is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Drop the schema, server and user mapping.
    #[default]
    Delete,
    /// Leave them in the database.
    Orphan,
}

/// The observed state of an attachment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceConnectionStatus {
    /// The generation of the spec that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The schema in the workspace's database that holds the foreign tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The number of foreign tables in the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<i32>,
    /// The uid of the Workspace this attachment attached to first. A
    /// Workspace deleted and created again under the same name (perhaps on
    /// another database, by someone else) is another Workspace: the
    /// attachment does not follow it (`WorkspaceNotFound`), since it was
    /// approved for the first one. Re-create the attachment to attach there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_uid: Option<String>,
    /// When the schema was last (re)created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_at: Option<Time>,
    /// What the last import proved about the connection: it imported and
    /// read a row with this generation of the Connection's spec and this
    /// version of its credentials. The connection's first test takes it as
    /// its own answer instead of importing again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<ImportProof>,
}

/// An import that proved a connection works, as a test would have.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportProof {
    /// The Connection's `metadata.generation` it imported with.
    pub connection_generation: i64,
    /// The credentials version (uid@resourceVersion) it imported with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// The tables it imported.
    pub tables: i32,
    /// The source's schema hash it found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_hash: Option<String>,
    /// How long the attach took, in milliseconds.
    #[serde(default)]
    pub duration_ms: i64,
}

impl WorkspaceConnection {
    /// Not being deleted, and no `Ready` reported yet: on its way (a bulk
    /// apply's attachments wait in their workspaces' queues).
    pub fn unreported(&self) -> bool {
        self.metadata.deletion_timestamp.is_none() && self.status.as_ref().is_none_or(|s| super::conditions::ready(&s.conditions).is_none())
    }
}
