//! The objects the tests create, as typed values, and YAML for the few
//! that a test wants to spell out. Objects are applied with server-side
//! apply (`World::apply_object`), as a GitOps controller would.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use manifold::api::{
    AggregatorSpec, Connection, ConnectionSpec, CredentialsSpec, DatabaseSpec, DeletionPolicy, PluginSpec, PostgresPlugin, SECRET_LABEL,
    SecretKeyRef, SecretRef, Workspace, WorkspaceConnection, WorkspaceConnectionSpec, WorkspaceSpec,
};

/// A Secret with string data, opted in for Manifold's use.
pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let mut secret = unlabelled_secret(name, data);
    secret.metadata.labels = Some([(SECRET_LABEL.to_owned(), "true".to_owned())].into());
    secret
}

/// A Secret with string data that nobody opted in.
pub fn unlabelled_secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
        string_data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()),
        ..Default::default()
    }
}

/// A Workspace whose database URI is in Secret `secret`, key `uri`.
pub fn workspace(name: &str, secret: &str) -> Workspace {
    Workspace::new(
        name,
        WorkspaceSpec {
            database: DatabaseSpec { secret_ref: SecretKeyRef { name: secret.to_owned(), key: "uri".to_owned() }, ca_secret_ref: None },
            readers: Vec::new(),
            search_path: None,
            deletion_policy: DeletionPolicy::Delete,
            connection_selectors: Vec::new(),
        },
    )
}

/// A postgres Connection to `host:port/database`, with credentials from
/// Secret `credentials`.
pub fn postgres_connection(name: &str, host: &str, port: u16, database: &str, credentials: &str) -> Connection {
    Connection::new(
        name,
        ConnectionSpec {
            schema: None,
            plugin: Some(PluginSpec {
                postgres: Some(PostgresPlugin {
                    host: host.to_owned(),
                    port: i32::from(port),
                    database: database.to_owned(),
                    remote_schema: "public".to_owned(),
                    options: BTreeMap::new(),
                }),
                steampipe: None,
                fdw: None,
            }),
            aggregator: None,
            credentials: Some(CredentialsSpec { secret_ref: SecretRef { name: credentials.to_owned() } }),
            tables: None,
            test: None,
        },
    )
}

/// An aggregator over connections by name or glob.
pub fn aggregator(name: &str, connections: &[&str]) -> Connection {
    Connection::new(
        name,
        ConnectionSpec {
            schema: None,
            plugin: None,
            aggregator: Some(AggregatorSpec { connections: connections.iter().map(|c| c.to_string()).collect(), selector: None }),
            credentials: None,
            tables: None,
            test: None,
        },
    )
}

/// An attachment of `connection` to `workspace`.
pub fn attachment(name: &str, workspace: &str, connection: &str) -> WorkspaceConnection {
    WorkspaceConnection::new(
        name,
        WorkspaceConnectionSpec {
            workspace: workspace.to_owned(),
            connection: connection.to_owned(),
            deletion_policy: DeletionPolicy::Delete,
        },
    )
}

/// An object as YAML, for `kubectl apply`.
pub fn yaml<K: serde::Serialize>(object: &K) -> String {
    serde_saphyr::to_string(object).expect("objects serialize")
}

/// YAML for a Secret with string data, opted in for Manifold's use.
pub fn secret_yaml(name: &str, data: &[(&str, &str)]) -> String {
    yaml(&secret(name, data))
}

/// YAML for a Secret with string data that nobody opted in.
pub fn unlabelled_secret_yaml(name: &str, data: &[(&str, &str)]) -> String {
    yaml(&unlabelled_secret(name, data))
}
