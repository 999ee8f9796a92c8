use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CaSecretRef, DeletionPolicy, SecretKeyRef};

/// The desired workspace: the database it is.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
// Not duplicates: each `printcolumn(...)` names its own `type_`.
#[allow(clippy::duplicated_attributes)]
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
    printcolumn(
        name = "Connections",
        type_ = "integer",
        json_path = ".status.connectionCount",
        description = "Number of attached connections"
    ),
    printcolumn(name = "Postgres", type_ = "string", json_path = ".status.postgresVersion"),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#, priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// How to reach the workspace's database. Immutable: the attachments'
    /// credentials went to that database, and must not follow a change to
    /// another one; create a new Workspace instead.
    #[x_kube(validation = Rule::new("self == oldSelf").message("database is immutable: a Workspace's attachments sent their credentials to it; create a new Workspace for another database"))]
    pub database: DatabaseSpec,
    /// Postgres roles that the workspace's users log in as. Each gets USAGE
    /// on every schema Manifold manages here and SELECT on its foreign
    /// tables and views, and a user mapping of its own on every server
    /// (postgres_fdw looks the mapping up for the role that queries). A
    /// reader can therefore read the source credentials of its mappings in
    /// `pg_user_mappings`: give sources read-only credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(r, size(r) > 0 && size(r) <= 63 && !r.startsWith('pg_') && r != 'public')")
        .message("readers are role names of 1 to 63 bytes, not public and not beginning with pg_"))]
    pub readers: Vec<String>,
    /// The database's `search_path`, so that people query without naming a
    /// schema. Unset: Manifold leaves it alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_path: Option<SearchPathSpec>,
    /// What the Workspace's deletion does in its database, as
    /// CloudNativePG's `databaseReclaimPolicy` and Crossplane's
    /// `deletionPolicy`: `Delete` drops every schema, server and user
    /// mapping its namespace's attachments made there (those of `Orphan`
    /// attachments stay); `Orphan` leaves the database as it is and
    /// releases the Workspace at once. Attachments deleted together with
    /// an `Orphan` Workspace (a namespace's deletion) leave theirs too.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Attach by label, as Turbot Pipes' connection folders: every
    /// Connection of this namespace whose labels match any of these
    /// selectors is attached, including those created later, and one that
    /// stops matching is detached. Manifold makes one WorkspaceConnection
    /// per member, named `<workspace>-<connection>` and owned by this
    /// Workspace. Setting or changing them needs the verb `attach` on every
    /// Connection of the namespace (a grant without `resourceNames`), or
    /// `get` on its Secrets: the selector attaches Connections that do not
    /// exist yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub connection_selectors: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// How the database's search path is made.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(validation = Rule::new("(has(self.mode) && self.mode == 'Explicit') == (has(self.schemas) && size(self.schemas) > 0)")
    .message("schemas is set in Explicit mode, and only there"))]
#[serde(rename_all = "camelCase")]
pub struct SearchPathSpec {
    /// `Auto`: the prefix, then `public`, then the aggregators, then the
    /// connections, each group in alphabetical order (Turbot Pipes' order),
    /// kept current as attachments come and go. `Explicit`: exactly
    /// `schemas`.
    #[serde(default)]
    pub mode: SearchPathMode,
    /// Schemas that come first in `Auto` mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub prefix: Vec<String>,
    /// The whole path in `Explicit` mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub schemas: Vec<String>,
}

/// How the search path is made.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SearchPathMode {
    #[default]
    Auto,
    Explicit,
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
    /// The database this Workspace is, as `host:port/dbname` (with
    /// `?hostaddr=` when the URI sets one), fixed when it was first
    /// reached: a Secret that later names another database is refused
    /// (`InvalidSpec`), so that no attachment's credentials follow it
    /// there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// When Manifold wrote this Workspace's pin into its database: a random
    /// token, derived from this Workspace's uid with a key only the
    /// operator holds, in a table only the workspace role can read. Every
    /// session reads it back before anything that carries a secret is
    /// sent; a server that cannot show it is `DatabaseMoved`, whatever its
    /// name or address says. Only the operator writes status: a cluster
    /// admin who moves a database on purpose clears this field (`kubectl
    /// patch --subresource=status`) to pin the database the Secret names now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<Time>,
    /// The server version of the database, such as `15.20`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<String>,
    /// The connections attached now, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<AttachedConnection>,
    /// The Connections that `connectionSelectors` select, sorted by name,
    /// each with its attachment and its state: `Ready`, or why it is not
    /// attached (the attachment's reason, or `NameTaken` when another
    /// object holds the attachment's name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected: Vec<SelectedConnection>,
    /// The number of entries in `connections`.
    #[serde(default)]
    pub connection_count: i32,
    /// Each reader role and its state: `Ready`, or the reason it is not
    /// (`RoleNotFound`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readers: Vec<ReaderState>,
    /// The search path Manifold set on the database, as Postgres shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_path: Option<String>,
}

/// One reader role as seen from a workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReaderState {
    /// The role.
    pub name: String,
    /// `Ready`, or the reason it is not.
    pub state: String,
    /// Why, for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One Connection that a workspace's selectors select.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectedConnection {
    /// Name of the Connection.
    pub name: String,
    /// The WorkspaceConnection that attaches it (one made by hand counts).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attachment: String,
    /// `Ready`, or the reason it is not attached yet.
    pub state: String,
    /// Why, for a person.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
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
