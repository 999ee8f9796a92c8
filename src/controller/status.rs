//! Turning an outcome into kstatus conditions, writing status with one
//! server-side-apply field manager (and only when it changed), and Events on
//! transitions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use tracing::warn;

use super::{Context, MANAGER};
use crate::api::Reason;
use crate::api::conditions::{self, Desired, READY, RECONCILING, STALLED, Status};

/// The result of one reconcile, for a person and for kstatus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub reason: Reason,
    pub message: String,
}

impl Outcome {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Outcome { reason, message: message.into() }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.reason, Reason::Attached | Reason::Reachable | Reason::Passed | Reason::Valid)
    }

    /// The controller cannot make progress without a change by a person:
    /// kstatus's Stalled. Anything else that is not Ready is still in
    /// progress (it retries, or waits for an object to appear).
    pub fn is_stalled(&self) -> bool {
        matches!(
            self.reason,
            Reason::InvalidSpec
                | Reason::SchemaConflict
                | Reason::DependentObjects
                | Reason::SecretKeyMissing
                | Reason::ExtensionMissing
                | Reason::AuthenticationFailed
                | Reason::PermissionDenied
                | Reason::RemoteSchemaMissing
                | Reason::TestFailed
        )
    }

    /// Ready, Reconciling and Stalled for this outcome.
    pub fn conditions(&self) -> Vec<Desired> {
        let ready = self.is_ready();
        let stalled = self.is_stalled();
        // Each condition carries the message only while it is True.
        let condition = |type_, on: bool| {
            let message = if on { self.message.clone() } else { String::new() };
            Desired::new(type_, if on { Status::True } else { Status::False }, self.reason.as_str(), message)
        };
        vec![
            Desired::new(READY, if ready { Status::True } else { Status::False }, self.reason.as_str(), self.message.clone()),
            condition(RECONCILING, !ready && !stalled),
            condition(STALLED, stalled),
        ]
    }
}

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Merges `desired` into `current`, keeping transition times of unchanged
/// conditions.
pub fn merge_conditions(current: &[Condition], desired: &[Desired], generation: Option<i64>) -> Vec<Condition> {
    conditions::merge(current, desired, generation, &now())
}

/// Writes `status` with server-side apply if it differs from `current`.
/// Returns whether it wrote.
pub async fn write<K, S>(ctx: &Context, obj: &K, current: Option<&S>, status: &S) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(true)
}

/// Publishes an Event about `obj`. A failure to publish is logged, never
/// fatal: Events are best effort.
pub async fn event<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, warning: bool, reason: &str, action: &str, note: String) {
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(err) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %err, "publishing an event failed");
    }
}

/// The reason of an object's current Ready condition.
pub fn ready_reason(conditions: &[Condition]) -> Option<&str> {
    conditions::find(conditions, READY).map(|c| c.reason.as_str())
}

/// An attachment's state as the aggregate lists and the metrics show it:
/// `Ready`, the reason it is not, or `Pending` before its first status.
pub fn attachment_state(att: &crate::api::WorkspaceConnection) -> String {
    let conditions = att.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    match conditions::find(conditions, READY) {
        Some(c) if c.status == "True" => "Ready".to_owned(),
        Some(c) => c.reason.clone(),
        None => "Pending".to_owned(),
    }
}
