//! Writing and deleting the plugin's objects as plain JSON manifests, so
//! that one path serves Secrets and the three kinds, and a dry run prints
//! exactly what a real run sends.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject};
use kube::{Client, Resource};
use manifold::api::{Connection, Workspace, WorkspaceConnection};
use serde_json::Value;

use super::{Result, WriteFlags, explain};

/// The API resource of a manifest's kind.
pub fn resource(object: &Value) -> Result<ApiResource> {
    Ok(match object["kind"].as_str().unwrap_or_default() {
        "Secret" => ApiResource::erase::<Secret>(&()),
        "Connection" => ApiResource::erase::<Connection>(&()),
        "Workspace" => ApiResource::erase::<Workspace>(&()),
        "WorkspaceConnection" => ApiResource::erase::<WorkspaceConnection>(&()),
        other => return Err(format!("cannot write a {other}").into()),
    })
}

fn api(client: &Client, ns: &str, resource: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, resource)
}

/// Creates `objects` in order. If one is refused, those already created are
/// deleted again, so that a failed verb leaves nothing half made.
pub async fn create_all(client: &Client, ns: &str, objects: &[Value], write: &WriteFlags) -> Result<Vec<Value>> {
    let mut written: Vec<(ApiResource, Value)> = Vec::new();
    for object in objects {
        let resource = resource(object)?;
        let dynamic: DynamicObject = serde_json::from_value(object.clone())?;
        match api(client, ns, &resource).create(&write.post_params(), &dynamic).await {
            Ok(created) => written.push((resource, serde_json::to_value(created)?)),
            Err(error) => {
                let name = super::kind_name(object);
                if !write.post_params().dry_run {
                    for (resource, done) in written.iter().rev() {
                        let done_name = done["metadata"]["name"].as_str().unwrap_or_default();
                        if let Err(e) = api(client, ns, resource).delete(done_name, &DeleteParams::default()).await {
                            eprintln!("could not delete {} again: {e}", super::kind_name(done));
                        }
                    }
                }
                let already = matches!(&error, kube::Error::Api(s) if s.code == 409);
                let message = explain(error);
                return Err(if already { format!("{name} already exists in namespace {ns}") } else { format!("{name}: {message}") }.into());
            }
        }
    }
    Ok(written.into_iter().map(|(_, v)| without_managed_fields(v)).collect())
}

/// Deletes one object of kind `K`; `Ok(false)` if it was not there.
pub async fn delete<K>(client: &Client, ns: &str, name: &str, write: &WriteFlags) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if write.dry_run == super::DryRun::Client {
        return Ok(true);
    }
    let params = DeleteParams { dry_run: write.dry_run == super::DryRun::Server, ..Default::default() };
    match Api::<K>::namespaced(client.clone(), ns).delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(e) if super::is_not_found(&e) => Ok(false),
        Err(e) => Err(format!("deleting {} {name}: {}", K::kind(&()), explain(e)).into()),
    }
}

/// kubectl hides managed fields unless asked; so does the plugin.
pub fn without_managed_fields(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
    object
}
