//! Resolving references from the stores: a workspace's database, a
//! connection's schema and wrapper, and an attachment's plan. Reads the
//! reflector stores; only a Secret that is not in the store costs one
//! targeted read, to tell a missing Secret from one that was never opted
//! in. A failure carries the condition reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::context::{Context, Stores};
use crate::api::{Connection, Failure, Reason, Workspace, WorkspaceConnection, schema_name_problem};
use crate::plugins::{self, PluginError, SourcePolicy};
use crate::postgres::plan::{AttachPlan, Owner, PlanInput, TableFilter};
use crate::postgres::{Db, Purpose, Target};

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

/// A Secret's identity and version: what the fingerprint records instead of
/// its values.
pub fn secret_version(secret: &Secret) -> String {
    format!("{}@{}", secret.metadata.uid.as_deref().unwrap_or(""), secret.resource_version().unwrap_or_default())
}

fn secret(stores: &Stores, ns: &str, name: &str, what: &str) -> Result<Arc<Secret>, Failure> {
    stores.secret(ns, name).ok_or_else(|| Failure::new(Reason::SecretNotFound, format!("{what} Secret {name:?} not found")))
}

/// The Secrets an object names.
pub fn secret_names(obj: SecretUser<'_>) -> Vec<String> {
    match obj {
        SecretUser::Workspace(ws) => {
            let db = &ws.spec.database;
            std::iter::once(db.secret_ref.name.clone()).chain(db.ca_secret_ref.as_ref().map(|c| c.name.clone())).collect()
        }
        SecretUser::Connection(conn) => conn.spec.credentials.iter().map(|c| c.secret_ref.name.clone()).collect(),
    }
}

/// An object that names Secrets.
#[derive(Clone, Copy)]
pub enum SecretUser<'a> {
    Workspace(&'a Workspace),
    Connection(&'a Connection),
}

/// A `SecretNotFound` becomes `SecretNotPermitted` when the Secret exists
/// but is outside the operator's selector: the person who reads it learns
/// what to do. Only the Secret's metadata is read, never its data.
pub async fn explain(ctx: &Context, ns: &str, failure: Failure, user: SecretUser<'_>) -> Failure {
    if failure.reason != Reason::SecretNotFound {
        return failure;
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for name in secret_names(user) {
        if ctx.stores.secret(ns, &name).is_some() {
            continue;
        }
        if let Ok(Some(_)) = api.get_metadata_opt(&name).await {
            return Failure::new(
                Reason::SecretNotPermitted,
                format!(
                    "Secret {name:?} exists but is not opted in for Manifold: it must match the selector {:?} \
                     (label it manifold.dev/credentials=true); nothing was read from it or sent anywhere",
                    ctx.settings.secret_selector
                ),
            );
        }
    }
    failure
}

/// How to reach a workspace's database: the URI, the CA if it names one,
/// and the pin its sessions check (see `postgres::pin`).
pub fn workspace_target(ctx: &Context, ws: &Workspace) -> Result<Target, Failure> {
    let stores = &ctx.stores;
    let ns = ws.namespace().unwrap_or_default();
    let db = &ws.spec.database;
    let key = |secret: &Secret, name: &str, key: &str| -> Result<Vec<u8>, Failure> {
        secret_data(secret).remove(key).ok_or_else(|| Failure::new(Reason::SecretKeyMissing, format!("Secret {name:?} has no key {key:?}")))
    };
    let uri_secret = secret(stores, &ns, &db.secret_ref.name, "the database")?;
    let uri = String::from_utf8(key(&uri_secret, &db.secret_ref.name, &db.secret_ref.key)?).map_err(|_| {
        Failure::new(Reason::InvalidSpec, format!("key {:?} of Secret {:?} is not UTF-8 text", db.secret_ref.key, db.secret_ref.name))
    })?;
    // The database is fixed for the Workspace's life: its attachments'
    // credentials went there, and a changed Secret must not carry them
    // (and every later one) to another database.
    if let Some(pinned) = ws.status.as_ref().and_then(|s| s.database.as_deref()) {
        let now = database_identity(&uri);
        if now.as_deref() != Some(pinned) {
            return Err(Failure::new(
                Reason::InvalidSpec,
                format!(
                    "Secret {:?} now names database {}, but this Workspace is database {pinned}: a Workspace's database \
                     is fixed, because its attachments' credentials went there. Restore the Secret, or create a new \
                     Workspace (and new attachments, by someone who may attach each Connection) for the other database",
                    db.secret_ref.name,
                    now.unwrap_or_else(|| "(none that can be parsed)".to_owned())
                ),
            ));
        }
    }
    let ca = match &db.ca_secret_ref {
        Some(ca) => Some(key(&*secret(stores, &ns, &ca.name, "the CA")?, &ca.name, &ca.key)?),
        None => None,
    };
    let uid = ws.metadata.uid.as_deref().ok_or_else(|| Failure::new(Reason::WorkspaceNotFound, "the Workspace has no uid yet"))?;
    let establish = ws.status.as_ref().is_none_or(|s| s.pinned_at.is_none());
    Ok(Target { uri, ca, purpose: Purpose::Workspace(ctx.pin_key.pin(uid, establish)) })
}

/// Which database a libpq URI names: `host:port/dbname` (every host, and
/// the user's name where no dbname is given, as libpq defaults it), and
/// `?hostaddr=` when the URI sets addresses that override the hosts'. The
/// credentials are not part of it, so that a rotated password is the same
/// database. This is what a person reads; the pin is what is checked.
pub fn database_identity(uri: &str) -> Option<String> {
    let config: tokio_postgres::Config = uri.parse().ok()?;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.to_lowercase(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let host = if hosts.is_empty() { "localhost".to_owned() } else { hosts.join(",") };
    let port = if ports.is_empty() { "5432".to_owned() } else { ports.join(",") };
    let dbname = config.get_dbname().or(config.get_user())?;
    let addrs: Vec<String> = config.get_hostaddrs().iter().map(ToString::to_string).collect();
    match addrs.is_empty() {
        true => Some(format!("{host}:{port}/{dbname}")),
        false => Some(format!("{host}:{port}/{dbname}?hostaddr={}", addrs.join(","))),
    }
}

/// The Workspace `ws_name` of namespace `ns`, if it exists, is not being
/// deleted, and (when `pinned` names one) is the Workspace with that uid:
/// one deleted and made again under the same name, perhaps on another
/// database and by someone else, is another Workspace, which nothing
/// pinned to the first one follows.
pub fn workspace(ctx: &Context, ns: &str, ws_name: &str, pinned: Option<&str>) -> Result<Arc<Workspace>, Failure> {
    let ws = ctx
        .stores
        .workspace(ns, ws_name)
        .ok_or_else(|| Failure::new(Reason::WorkspaceNotFound, format!("Workspace {ws_name:?} not found")))?;
    if ws.meta().deletion_timestamp.is_some() {
        return Err(Failure::new(Reason::WorkspaceNotFound, format!("Workspace {ws_name:?} is being deleted")));
    }
    match pinned {
        Some(uid) if ws.metadata.uid.as_deref() != Some(uid) => Err(Failure::new(
            Reason::WorkspaceNotFound,
            format!(
                "Workspace {ws_name:?} was deleted and created again: what was sent to the one that was deleted does not \
                 follow the new one"
            ),
        )),
        _ => Ok(ws),
    }
}

/// The database of a Workspace, reached through its Secret, whose every
/// session checks the Workspace's pin.
pub async fn database(ctx: &Context, ws: &Workspace) -> Result<Db, Failure> {
    let ns = ws.namespace().unwrap_or_default();
    let ws_name = ws.name_any();
    let db = match workspace_target(ctx, ws) {
        Ok(target) => ctx.pools.get(&ns, &ws_name, &target),
        Err(f) => Err(explain(ctx, &ns, f, SecretUser::Workspace(ws)).await),
    }
    .map_err(|f| Failure::new(f.reason, format!("Workspace {ws_name:?}: {}", f.message)))?;
    Ok(Arc::new(db))
}

/// `workspace` and its `database`.
pub async fn workspace_database(ctx: &Context, ns: &str, ws_name: &str, pinned: Option<&str>) -> Result<(Arc<Workspace>, Db), Failure> {
    let ws = workspace(ctx, ns, ws_name, pinned)?;
    let db = database(ctx, &ws).await?;
    Ok((ws, db))
}

/// The schema of a connection: `spec.schema`, or the name with `-` and `.`
/// turned to `_`. The CRD validates both; this is the controller's own check.
pub fn connection_schema(conn: &Connection) -> Result<String, Failure> {
    let schema = conn.spec.schema.clone().unwrap_or_else(|| conn.name_any().replace(['-', '.'], "_"));
    match schema_name_problem(&schema) {
        None => Ok(schema),
        Some(problem) => Err(Failure::new(Reason::InvalidSpec, problem)),
    }
}

/// The credentials Secret of a connection, if it names one.
pub fn credentials(stores: &Stores, conn: &Connection) -> Result<Option<Arc<Secret>>, Failure> {
    let Some(creds) = &conn.spec.credentials else { return Ok(None) };
    secret(stores, &conn.namespace().unwrap_or_default(), &creds.secret_ref.name, "the credentials").map(Some)
}

/// A connection, resolved: everything a plan or a test needs from it.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub wrapper: plugins::Wrapper,
    pub schema: String,
    /// The credentials' version (the Secret's uid and resourceVersion).
    pub version: Option<String>,
}

/// Resolves a connection under the cluster admin's source policy. Every
/// refusal (a socket host, a forbidden option, a wrapper nobody allowed)
/// happens here, before any SQL.
pub fn connection(stores: &Stores, conn: &Connection, policy: &SourcePolicy) -> Result<Resolved, Failure> {
    let schema = connection_schema(conn)?;
    let secret = credentials(stores, conn)?;
    let data = secret.as_deref().map(secret_data);
    let plugin = conn.spec.plugin.as_ref().ok_or_else(|| Failure::new(Reason::InvalidSpec, "an aggregator has no plugin of its own"))?;
    let wrapper = plugins::resolve(plugin, &schema, data.as_ref(), policy).map_err(|e| match e {
        PluginError::SecretKeyMissing(_) => Failure::new(Reason::SecretKeyMissing, e.to_string()),
        PluginError::Invalid(_) => Failure::new(Reason::InvalidSpec, e.to_string()),
    })?;
    Ok(Resolved { wrapper, schema, version: secret.as_deref().map(secret_version) })
}

pub fn table_filter(conn: &Connection) -> TableFilter {
    match &conn.spec.tables {
        Some(t) if !t.include.is_empty() => TableFilter::LimitTo(t.include.clone()),
        Some(t) if !t.exclude.is_empty() => TableFilter::Except(t.exclude.clone()),
        _ => TableFilter::All,
    }
}

pub fn owner(att: &WorkspaceConnection) -> Owner {
    Owner { namespace: att.namespace().unwrap_or_default(), name: att.name_any() }
}

/// The plan of an attachment of `conn`, a connection with a plugin.
pub fn plan(ctx: &Context, att: &WorkspaceConnection, conn: &Connection, readers: Vec<String>) -> Result<AttachPlan, Failure> {
    let resolved = connection(&ctx.stores, conn, &ctx.settings.sources)?;
    Ok(AttachPlan::new(PlanInput {
        owner: owner(att),
        uid: att.metadata.uid.as_deref().unwrap_or(""),
        connection: &conn.name_any(),
        readers,
        source_hash: conn.status.as_ref().and_then(|s| s.source_schema.as_ref()).map(|s| s.hash.as_str()),
        schema: &resolved.schema,
        wrapper: resolved.wrapper,
        tables: table_filter(conn),
        credentials_version: resolved.version.as_deref(),
    }))
}

#[cfg(test)]
mod identity_tests {
    use super::database_identity;

    #[test]
    fn a_database_is_its_host_port_and_name_not_its_credentials() {
        let a = database_identity("postgresql://app:one@db.example:5432/analytics?sslmode=require");
        assert_eq!(a.as_deref(), Some("db.example:5432/analytics"));
        assert_eq!(a, database_identity("postgresql://app:two@DB.example/analytics"));
        assert_ne!(a, database_identity("postgresql://app:one@evil.example:5432/analytics"));
        assert_ne!(a, database_identity("postgresql://app:one@db.example:5432/other"));
        assert_eq!(database_identity("postgresql://app@h").as_deref(), Some("h:5432/app"));
        assert_eq!(database_identity("not a uri ::"), None);
        // An address that overrides the host's is another database.
        assert_eq!(
            database_identity("postgresql://app:one@db.example:5432/analytics?hostaddr=10.0.0.9").as_deref(),
            Some("db.example:5432/analytics?hostaddr=10.0.0.9")
        );
    }
}
