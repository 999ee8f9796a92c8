//! The attachment's finalizer, added just before the first change to a
//! database and removed once its cleanup is done.

use kube::ResourceExt;
use kube::api::{Api, Patch};

use super::FINALIZER;
use crate::api::WorkspaceConnection;
use crate::controller::context::{Context, Error, patch_params};

/// Takes the finalizer off, every copy of it (a copy left behind would
/// hold the object with nothing left to wake its reconcile), with the same
/// tests as kube's `finalizer`: the uid, and the finalizers as the store
/// shows them, so that a store that is behind fails the test and the
/// reconcile is retried soon.
pub async fn remove(ctx: &Context, att: &WorkspaceConnection) -> Result<(), Error> {
    let api: Api<WorkspaceConnection> = Api::namespaced(ctx.client.clone(), &att.namespace().unwrap_or_default());
    let finalizers = att.finalizers();
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
    let ops = serde_json::json!([
        { "op": "test", "path": "/metadata/uid", "value": att.metadata.uid },
        { "op": "test", "path": "/metadata/finalizers", "value": finalizers },
        { "op": "replace", "path": "/metadata/finalizers", "value": rest },
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(kube::Error::SerdeError)?;
    match api.patch(&att.name_any(), &patch_params(), &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(()),
        // Gone already: nothing holds it.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::Finalizer(Box::new(kube::runtime::finalizer::Error::RemoveFinalizer(e)))),
    }
}

/// Whether the attachment carries the finalizer yet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Finalized {
    Yes,
    Not,
}

/// Adds the finalizer, with the same tests as kube's `finalizer` (the
/// finalizers as the store shows them, and the object's uid): a store that
/// is behind fails the test, which `Error::is_finalizer_race` retries soon.
pub async fn add(ctx: &Context, att: &WorkspaceConnection) -> Result<(), Error> {
    let api: Api<WorkspaceConnection> = Api::namespaced(ctx.client.clone(), &att.namespace().unwrap_or_default());
    let finalizers = att.finalizers();
    let mut ops = vec![serde_json::json!({ "op": "test", "path": "/metadata/uid", "value": att.metadata.uid })];
    if finalizers.is_empty() {
        ops.push(serde_json::json!({ "op": "test", "path": "/metadata/finalizers", "value": null }));
        ops.push(serde_json::json!({ "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }));
    } else {
        ops.push(serde_json::json!({ "op": "test", "path": "/metadata/finalizers", "value": finalizers }));
        ops.push(serde_json::json!({ "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER }));
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    api.patch(&att.name_any(), &patch_params(), &Patch::<()>::Json(patch))
        .await
        .map_err(|e| Error::Finalizer(Box::new(kube::runtime::finalizer::Error::AddFinalizer(e))))?;
    Ok(())
}
