use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{NETWORK_HOST_CEL, POSTGRES_OPTIONS, SecretRef, schema_name_cel};

/// The desired connection: its plugin, credentials, tables and tests.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "manifold.dev",
    version = "v1alpha1",
    kind = "Connection",
    namespaced,
    status = "ConnectionStatus",
    shortname = "conn",
    category = "manifold",
    doc = "One data source: a foreign-data-wrapper plugin, its settings and its credentials. Attached to a Workspace through a WorkspaceConnection, it appears there as one schema of foreign tables.",
    validation = Rule::new(format!(
        "has(self.spec.schema) || ({})",
        schema_name_cel("self.metadata.name.replace('-', '_').replace('.', '_')")
    ))
    .message("spec.schema is unset and the default derived from metadata.name (with '-' and '.' turned to '_') is not a valid schema name: set spec.schema"),
    printcolumn(name = "Plugin", type_ = "string", json_path = ".status.plugin"),
    printcolumn(name = "Schema", type_ = "string", json_path = ".status.schema"),
    printcolumn(name = "Test", type_ = "string", json_path = ".status.test.result"),
    printcolumn(name = "Workspaces", type_ = "integer", json_path = ".status.workspaceCount", description = "Number of workspaces that use this connection"),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].reason"#, priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("has(self.plugin) != has(self.aggregator)").message("exactly one of plugin or aggregator must be set"))]
#[x_kube(validation = Rule::new("!has(self.plugin) || !has(self.plugin.postgres) || has(self.credentials)")
    .message("a postgres connection needs credentials.secretRef, with keys user and password"))]
#[x_kube(validation = Rule::new("!has(self.aggregator) || (!has(self.credentials) && !has(self.tables) && !has(self.test))")
    .message("an aggregator has no credentials, tables or test of its own: its members have"))]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// The schema that holds this connection's tables in every workspace.
    /// Defaults to the object's name with `-` and `.` turned to `_`. It must
    /// match `^[a-z_][a-z0-9_]*$`, be at most 63 bytes, and not be `public`,
    /// `information_schema`, `manifold` (Manifold's own) or begin with `pg_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(schema_name_cel("self")).message(
        "schema must match ^[a-z_][a-z0-9_]*$, be at most 63 bytes, and not be public, information_schema, manifold or begin with pg_"
    ))]
    pub schema: Option<String>,
    /// The foreign-data wrapper and its settings: exactly one of `postgres`,
    /// `steampipe` or `fdw`. Exactly one of `plugin` and `aggregator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginSpec>,
    /// Instead of a plugin: one schema of views, each the `UNION ALL` of a
    /// table across the member connections attached to the same workspace,
    /// as Steampipe's aggregators are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator: Option<AggregatorSpec>,
    /// The Secret whose keys become the user mapping. For `postgres`: keys
    /// `user` and `password` (required). For `fdw`: every key is a
    /// user-mapping option the cluster admin allowed for the wrapper. For
    /// `steampipe`: every key is added to the plugin's HCL config as an
    /// argument. The Secret must carry the label
    /// `manifold.dev/credentials: "true"`, and whoever creates or changes
    /// this Connection must be allowed to `get` it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSpec>,
    /// Which remote tables to import. At most one of `include` and `exclude`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<TablesSpec>,
    /// When and where this connection is tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestSpec>,
}

/// Which connections an aggregator covers: names and globs (`aws-*`), or a
/// label selector, or both. Membership includes connections created later.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.connections) && size(self.connections) > 0) || has(self.selector)")
    .message("an aggregator needs connections (names or globs) or a selector"))]
#[serde(rename_all = "camelCase")]
pub struct AggregatorSpec {
    /// Connection names, or globs with `*` and `?`, in this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub connections: Vec<String>,
    /// Connections whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// The foreign-data wrapper of a connection. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(
    "[has(self.postgres), has(self.steampipe), has(self.fdw)].filter(x, x).size() == 1"
).message("exactly one of plugin.postgres, plugin.steampipe or plugin.fdw must be set"))]
#[serde(rename_all = "camelCase")]
pub struct PluginSpec {
    /// Another Postgres database, through `postgres_fdw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresPlugin>,
    /// A Steampipe plugin, through Turbot's standalone FDW extension
    /// `steampipe_postgres_<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steampipe: Option<SteampipePlugin>,
    /// Any other foreign-data wrapper that a cluster admin allowed
    /// (`--wrappers`, the chart's `wrappers` value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdw: Option<FdwPlugin>,
}

/// A remote Postgres database, through `postgres_fdw`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresPlugin {
    /// DNS name or IP address of the remote server. Never a socket path:
    /// sources are network endpoints.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(NETWORK_HOST_CEL).message("host must be a DNS name or an IP address (not a socket path or a list of hosts)"))]
    pub host: String,
    /// TCP port of the remote server.
    #[serde(default = "default_pg_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Name of the remote database.
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// The remote schema whose tables are imported.
    #[serde(default = "default_remote_schema")]
    #[schemars(length(min = 1, max = 63))]
    pub remote_schema: String,
    /// Further `postgres_fdw` server options, from an allowlist:
    /// postgres_fdw's own (`fetch_size`, `batch_size`, `use_remote_estimate`,
    /// `async_capable`, `keep_connections`, `updatable`, `extensions`, ...)
    /// and libpq's that name no file or other host (`sslmode`,
    /// `connect_timeout`, `application_name`, `keepalives*`, ...). `host`,
    /// `port` and `dbname` come from the fields above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new(postgres_options_cel()).message(
        "options may only set postgres_fdw's own options and the libpq options that name no file, socket or other host: fetch_size, batch_size, use_remote_estimate, fdw_startup_cost, fdw_tuple_cost, extensions, updatable, truncatable, async_capable, keep_connections, parallel_commit, parallel_abort, analyze_sampling, sslmode, sslsni, channel_binding, gssencmode, connect_timeout, application_name, keepalives, keepalives_idle, keepalives_interval, keepalives_count, tcp_user_timeout, target_session_attrs"
    ))]
    #[schemars(extend("maxProperties" = 32))]
    pub options: BTreeMap<String, String>,
}

fn postgres_options_cel() -> String {
    let names: Vec<String> = POSTGRES_OPTIONS.iter().map(|o| format!("'{o}'")).collect();
    format!("self.all(k, k in [{}])", names.join(", "))
}

fn default_pg_port() -> i32 {
    5432
}

fn default_remote_schema() -> String {
    "public".to_owned()
}

/// A Steampipe plugin, through its standalone FDW extension.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SteampipePlugin {
    /// The plugin's name, such as `aws` or `github`. The extension is
    /// `steampipe_postgres_<name>`.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9_]+$')").message("name must match ^[a-z0-9_]+$"))]
    #[schemars(length(min = 1, max = 40))]
    pub name: String,
    /// The plugin's HCL arguments, such as `regions = ["*"]`. Keys of the
    /// credentials Secret are appended as further arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// Any other foreign-data wrapper.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FdwPlugin {
    /// The extension that provides the wrapper, such as `mysql_fdw`.
    #[schemars(length(min = 1, max = 63))]
    pub extension: String,
    /// The foreign-data wrapper, usually named like the extension.
    #[schemars(length(min = 1, max = 63))]
    pub wrapper: String,
    /// Options of the foreign server.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_options: BTreeMap<String, String>,
    /// The remote schema whose tables are imported.
    #[schemars(length(min = 1, max = 63))]
    pub remote_schema: String,
}

/// Where a connection's credentials come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSpec {
    /// The Secret, in this namespace, whose keys become the user mapping.
    pub secret_ref: SecretRef,
}

/// Which remote tables to import (`LIMIT TO` or `EXCEPT`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "!(has(self.include) && size(self.include) > 0 && has(self.exclude) && size(self.exclude) > 0)"
).message("set at most one of tables.include and tables.exclude"))]
#[serde(rename_all = "camelCase")]
pub struct TablesSpec {
    /// Import only these remote tables (`LIMIT TO`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub include: Vec<String>,
    /// Import every remote table except these (`EXCEPT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub exclude: Vec<String>,
}

/// When and where a connection is tested.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TestSpec {
    /// How often the test runs again, as a duration such as `30m` or `1h`.
    /// Defaults to `1h`; `0` turns periodic tests off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", super::duration::PATTERN))
        .message("interval must be a duration such as 90s, 15m or 1h30m (at most 4 parts of 6 digits), or 0 to turn periodic tests off"))]
    #[schemars(length(max = 32))]
    pub interval: Option<String>,
    /// The Workspace, in this namespace, whose database runs the test: one
    /// this Connection is attached to, since a test sends its credentials
    /// there. Defaults to the first Ready Workspace it is attached to by
    /// name, or, attached nowhere, the cluster admin's test database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub workspace: Option<String>,
}

/// The observed state of a Connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// The generation of the spec that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Verified` (the result of the last test), `Reconciling` and
    /// `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The plugin, such as `postgres` or `steampipe/aws`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The schema that holds this connection's tables in every workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The result of the last test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestResult>,
    /// The last tests, newest first, at most `TEST_HISTORY` of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub test_history: Vec<TestRecord>,
    /// The workspaces that use this connection, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<WorkspaceUse>,
    /// The source's schema as the last test found it: its hash, its table
    /// count, and when it last changed. A change re-imports everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_schema: Option<SourceSchema>,
    /// An aggregator's members: each matching connection and its state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberState>,
    /// The number of entries in `workspaces`.
    #[serde(default)]
    pub workspace_count: i32,
}

/// The outcome of a connection test.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum TestOutcome {
    /// Credentials and access work.
    Passed,
    /// The test failed; `reason` says why.
    Failed,
    /// The test could not run: there is no workspace to run it in.
    Unknown,
}

/// The result of the last connection test.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// `Passed`, `Failed`, or `Unknown` when there was no workspace to test in.
    pub result: TestOutcome,
    /// A CamelCase reason, such as `Passed` or `AuthenticationFailed`.
    pub reason: String,
    /// What happened, for a person. Never contains a secret value.
    #[serde(default)]
    pub message: String,
    /// The number of tables the test imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<i32>,
    /// How long the test took, in milliseconds.
    #[serde(default)]
    pub duration_ms: i64,
    /// When the test ran.
    pub tested_at: Time,
    /// The generation of the spec that was tested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The value of the `manifold.dev/test-request` annotation this test
    /// answered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The Workspace whose database ran the test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The version (uid@resourceVersion) of the credentials Secret that was
    /// tested: a new version is tested again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// How many tests `status.testHistory` keeps.
pub const TEST_HISTORY: usize = 10;

/// One past test, as `status.testHistory` keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestRecord {
    /// `Passed`, `Failed` or `Unknown`.
    pub result: TestOutcome,
    /// A CamelCase reason, such as `Passed` or `AuthenticationFailed`.
    pub reason: String,
    /// What happened, for a person. Never contains a secret value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The number of tables the test imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<i32>,
    /// How long the test took, in milliseconds.
    #[serde(default)]
    pub duration_ms: i64,
    /// When the test ran.
    pub tested_at: Time,
}

impl From<&TestResult> for TestRecord {
    fn from(t: &TestResult) -> Self {
        TestRecord {
            result: t.result,
            reason: t.reason.clone(),
            message: t.message.clone(),
            tables: t.tables,
            duration_ms: t.duration_ms,
            tested_at: t.tested_at.clone(),
        }
    }
}

/// How many tables `status.sourceSchema.byTable` lists; `tables` counts
/// them all.
pub const SOURCE_TABLES_LISTED: usize = 1000;

/// A source's schema, as a test's import found it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSchema {
    /// A hash of the imported tables, their columns and types.
    pub hash: String,
    /// The number of tables.
    pub tables: i32,
    /// When the hash last changed.
    pub changed_at: Time,
    /// Each table (the first `SOURCE_TABLES_LISTED` by name): its columns
    /// and when its own shape last changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub by_table: Vec<SourceTable>,
    /// The value of the `manifold.dev/refresh-request` annotation last
    /// answered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// One table of a source's schema.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceTable {
    /// The table's name in the source.
    pub name: String,
    /// The number of its columns.
    pub columns: i32,
    /// A hash of its columns and their types.
    pub hash: String,
    /// When a test first found it, or found its columns changed.
    pub changed_at: Time,
}

/// One member of an aggregator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberState {
    /// Name of the member Connection.
    pub name: String,
    /// `Ready`, or the reason it is left out (its own Ready reason, or
    /// `NotAttached` where no attachment to the workspace exists).
    pub state: String,
}

/// One workspace as seen from a connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceUse {
    /// Name of the Workspace.
    pub name: String,
    /// The schema that holds the connection's tables there.
    pub schema: String,
    /// `Ready`, or the reason the attachment is not ready.
    pub state: String,
}
