//! The one report step of every reconciler: an outcome becomes kstatus
//! conditions, status is written with one server-side-apply field manager
//! (and only when it changed), a failure is counted, and an Event marks a
//! transition to a failure.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use tracing::warn;

use super::context::{Context, Error, MANAGER};
use crate::api::conditions::{self, Desired, READY, RECONCILING, STALLED, Status};
use crate::api::{ConnectionStatus, Failure, WorkspaceConnectionStatus, WorkspaceStatus};

/// Ready, Reconciling and Stalled for an outcome, from its reason's policy.
pub fn conditions(outcome: &Failure) -> Vec<Desired> {
    let ready = outcome.reason.is_success();
    let stalled = outcome.reason.stalled();
    // Each condition carries the message only while it is True.
    let condition = |type_, on: bool| {
        let message = if on { outcome.message.clone() } else { String::new() };
        Desired::new(type_, if on { Status::True } else { Status::False }, outcome.reason.as_str(), message)
    };
    vec![
        Desired::new(READY, if ready { Status::True } else { Status::False }, outcome.reason.as_str(), outcome.message.clone()),
        condition(RECONCILING, !ready && !stalled),
        condition(STALLED, stalled),
    ]
}

/// The kind of a resource, for metric labels.
pub fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    }
}

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// A status with kstatus conditions.
pub trait WithConditions: Serialize + PartialEq {
    fn conditions(&self) -> &[Condition];
    fn set(&mut self, conditions: Vec<Condition>, generation: Option<i64>);
}

macro_rules! with_conditions {
    ($($status:ty),*) => {$(
        impl WithConditions for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }

            fn set(&mut self, conditions: Vec<Condition>, generation: Option<i64>) {
                self.conditions = conditions;
                self.observed_generation = generation;
            }
        }
    )*};
}

with_conditions!(WorkspaceStatus, ConnectionStatus, WorkspaceConnectionStatus);

/// How a report announces a transition to a failure: as a Warning, as a
/// Normal Event, or not at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    Warning,
    Normal,
    Quiet,
}

/// Reports an outcome: `status` gets the merged conditions (the outcome's,
/// and `extra` ones), is written if it differs from the current one, a
/// failure is counted, and a change of reason to a failure is announced.
pub async fn report<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    mut status: S,
    outcome: &Failure,
    extra: Vec<Desired>,
    announce: impl Fn(&Failure) -> Announce,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: WithConditions,
{
    let kind = kind_of::<K>();
    let generation = obj.meta().generation;
    let previous = current.and_then(|s| conditions::find(s.conditions(), READY)).map(|c| c.reason.clone());
    let mut wanted = conditions(outcome);
    wanted.extend(extra);
    let merged = conditions::merge(current.map(|s| s.conditions()).unwrap_or_default(), &wanted, generation, &now());
    status.set(merged, generation);
    write(ctx, obj, current, &status).await?;
    if !outcome.reason.is_success() {
        ctx.metrics.failed(kind, outcome.reason);
        if previous.as_deref() != Some(outcome.reason.as_str()) {
            let warning = match announce(outcome) {
                Announce::Quiet => return Ok(()),
                Announce::Warning => true,
                Announce::Normal => false,
            };
            event(ctx, obj, warning, outcome.reason.as_str(), "Reconcile", outcome.message.clone()).await;
        }
    }
    Ok(())
}

/// Writes `status` if it differs from `current`, replacing the whole
/// status in one JSON patch (`add /status`). Server-side apply would track
/// every field of it, and parse the body as YAML: at a bulk attach that
/// was a fifth of the apiserver's CPU. Only this controller writes status,
/// so there is nothing to merge with. Returns whether it wrote.
pub async fn write<K, S>(ctx: &Context, obj: &K, current: Option<&S>, status: &S) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let value = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::json!([{ "op": "add", "path": "/status", "value": value }])).map_err(kube::Error::SerdeError)?;
    api.patch_status(&obj.name_any(), &super::context::patch_params(), &Patch::<()>::Json(patch)).await?;
    ctx.metrics.status_written(kind_of::<K>());
    Ok(true)
}

/// Publishes an Event about `obj`. A failure to publish is logged, never
/// fatal: Events are best effort.
pub async fn event<K: Resource<DynamicType = ()>>(ctx: &Context, obj: &K, warning: bool, reason: &str, action: &str, note: String) {
    // Created directly rather than through kube's `Recorder`, which keeps
    // every Event it published for six minutes (to fold repeats into a
    // series) and walks that cache under one lock on every publish. Events
    // here are published on transitions only, so there are no repeats to
    // fold, and a bulk apply of 12,000 attachments would hold 13,000
    // Events in the operator's memory.
    let regarding = obj.object_ref(&());
    let now = jiff::Timestamp::now();
    let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let event = Event {
        metadata: ObjectMeta {
            name: Some(event_name(regarding.name.as_deref().unwrap_or(MANAGER), now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
        reason: Some(reason.to_owned()),
        action: Some(action.to_owned()),
        note: Some(note.chars().take(1000).collect()),
        regarding: Some(regarding),
        reporting_controller: Some(MANAGER.to_owned()),
        reporting_instance: Some(ctx.reporting_instance.clone()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Err(err) = api.create(&PostParams::default(), &event).await {
        warn!(error = %err, "publishing an event failed");
    }
}

/// `<object>.<time in hex>`, as kube's recorder names Events, cut so that
/// an object with a name of the full 253 characters still gets its Events.
fn event_name(object: &str, nanos: i128) -> String {
    let suffix = format!(".{nanos:x}");
    let room = 253usize.saturating_sub(suffix.len());
    let prefix: String = object.chars().take(room).collect();
    format!("{}{suffix}", prefix.trim_end_matches(['.', '-']))
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

#[cfg(test)]
mod tests {
    use super::event_name;

    #[test]
    fn event_names_fit_the_apiserver_limit() {
        assert_eq!(event_name("ws-sales", 255), "ws-sales.ff");
        let nanos = 1_800_000_000_000_000_000i128;
        let long = format!("{}.{}", "a".repeat(230), "b".repeat(22));
        let name = event_name(&long, nanos);
        assert!(name.len() <= 253, "{}", name.len());
        assert!(name.starts_with(&"a".repeat(230)) && name.ends_with(&format!(".{nanos:x}")));
        // A cut that would end on '.' or '-' drops it: no ".." or "-.".
        let dotted = format!("{}.{}", "a".repeat(235), "b".repeat(17));
        let name = event_name(&dotted, nanos);
        assert!(!name.contains("..") && !name.contains("-."), "{name}");
    }
}
