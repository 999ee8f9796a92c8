//! Resolving references from the stores: a workspace's database URI, a
//! connection's schema, and an attachment's plan. Reads only the reflector
//! stores, never the API. A failure carries the condition reason.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::Stores;
use crate::api::{Connection, Reason, Workspace, WorkspaceConnection, schema_name_problem};
use crate::plugins::{self, PluginError};
use crate::postgres::plan::{AttachPlan, Owner, PlanInput, TableFilter};

/// Why a reference cannot be resolved, for a condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure { reason, message: message.into() }
    }
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> =
        secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
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

/// The libpq URI of a workspace's database.
pub fn workspace_uri(stores: &Stores, ws: &Workspace) -> Result<String, Failure> {
    let ns = ws.namespace().unwrap_or_default();
    let sref = &ws.spec.database.secret_ref;
    let secret = stores
        .secret(&ns, &sref.name)
        .ok_or_else(|| Failure::new(Reason::SecretNotFound, format!("Secret {:?} not found", sref.name)))?;
    let data = secret_data(&secret);
    let value = data.get(&sref.key).ok_or_else(|| {
        Failure::new(Reason::SecretKeyMissing, format!("Secret {:?} has no key {:?}", sref.name, sref.key))
    })?;
    String::from_utf8(value.clone())
        .map_err(|_| Failure::new(Reason::InvalidSpec, format!("key {:?} of Secret {:?} is not UTF-8 text", sref.key, sref.name)))
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
pub fn credentials(stores: &Stores, conn: &Connection) -> Result<Option<std::sync::Arc<Secret>>, Failure> {
    let Some(creds) = &conn.spec.credentials else { return Ok(None) };
    let ns = conn.namespace().unwrap_or_default();
    stores
        .secret(&ns, &creds.secret_ref.name)
        .map(Some)
        .ok_or_else(|| Failure::new(Reason::SecretNotFound, format!("credentials Secret {:?} not found", creds.secret_ref.name)))
}

/// Resolves a connection into its wrapper, its schema and its credentials'
/// version: everything a plan or a test needs from it.
pub fn connection(stores: &Stores, conn: &Connection) -> Result<(plugins::Wrapper, String, Option<String>), Failure> {
    let schema = connection_schema(conn)?;
    let secret = credentials(stores, conn)?;
    let data = secret.as_deref().map(secret_data);
    let wrapper = plugins::resolve(&conn.spec.plugin, &schema, data.as_ref()).map_err(|e| match e {
        PluginError::SecretKeyMissing(_) => Failure::new(Reason::SecretKeyMissing, e.to_string()),
        PluginError::Invalid(_) => Failure::new(Reason::InvalidSpec, e.to_string()),
    })?;
    Ok((wrapper, schema, secret.as_deref().map(secret_version)))
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

/// The plan of an attachment of `conn`.
pub fn plan(stores: &Stores, att: &WorkspaceConnection, conn: &Connection) -> Result<AttachPlan, Failure> {
    let (wrapper, schema, version) = connection(stores, conn)?;
    Ok(AttachPlan::new(PlanInput {
        owner: owner(att),
        uid: att.metadata.uid.as_deref().unwrap_or(""),
        schema: &schema,
        wrapper,
        tables: table_filter(conn),
        credentials_version: version.as_deref(),
    }))
}
