//! Which objects depend on a changed object: each watch event updates the
//! indexes and is mapped here to the reconciles it must cause in other
//! controllers. References never leave a namespace, so every lookup is
//! within the event's namespace.
//!
//! An event is handed over before the store applies it, so the store still
//! holds the previous version: dependents are queued only when what they
//! depend on changed (a spec, a deletion, a Secret's data, an attachment's
//! summary), not on every status write. That keeps a bulk attach from
//! turning into a reconcile storm.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;

use super::context::{ListWait, Stores, Triggers};
use crate::api::{Connection, Reason, TestOutcome, Workspace, WorkspaceConnection, conditions};

/// The object of a change event, and whether `summary` of it differs from
/// the version the store holds (always true for a deletion or a new object).
fn changed<K, S>(store: &Store<K>, event: &Event<K>, summary: impl Fn(&K) -> S) -> Option<K>
where
    K: kube::Resource<DynamicType = ()> + Clone,
    S: PartialEq,
{
    match event {
        Event::Delete(obj) => Some(obj.clone()),
        Event::Apply(obj) => {
            let old = store.get(&ObjectRef::from_obj(obj));
            match old {
                Some(old) if summary(&old) == summary(obj) => None,
                _ => Some(obj.clone()),
            }
        }
        // The initial list: every controller reconciles all of its objects at
        // start anyway.
        Event::Init | Event::InitApply(_) | Event::InitDone => None,
    }
}

fn ready_reason(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> Option<(String, String)> {
    conditions::find(conditions, conditions::READY).map(|c| (c.status.clone(), c.reason.clone()))
}

pub fn workspace_changed(stores: &Stores, triggers: &Triggers, event: &Event<Workspace>) {
    stores.index.write().unwrap().workspace_event(event);
    // Attachments depend on the spec, on deletion, and (to retry at once)
    // on the database becoming reachable again.
    let Some(ws) = changed(&stores.workspaces, event, |w| {
        (w.metadata.generation, w.metadata.deletion_timestamp.is_some(), w.status.as_ref().and_then(|s| ready_reason(&s.conditions)))
    }) else {
        return;
    };
    let (ns, name) = (ws.namespace().unwrap_or_default(), ws.name_any());
    for att in stores.index.read().unwrap().by_workspace(&ns, &name) {
        triggers.attachment(&ns, &att);
    }
    // A workspace that appears or becomes Ready may be where a connection's
    // test can finally run, or the one its tests are pinned to.
    for conn in stores.connections.state() {
        if conn.namespace().as_deref() != Some(&ns) {
            continue;
        }
        let untested = conn.status.as_ref().and_then(|s| s.test.as_ref()).is_none_or(|t| t.result == TestOutcome::Unknown);
        let pinned = conn.spec.test.as_ref().and_then(|t| t.workspace.as_deref()) == Some(name.as_str());
        if untested || pinned {
            triggers.connection(&ns, &conn.name_any());
        }
    }
}

pub fn connection_changed(stores: &Stores, triggers: &Triggers, event: &Event<Connection>) {
    // Workspaces with connection selectors select by labels: a connection
    // that comes, goes or is relabelled may join or leave them.
    if let Some(conn) = changed(&stores.connections, event, |c| {
        (c.metadata.labels.clone(), c.metadata.deletion_timestamp.is_some(), crate::api::is_draft(c))
    }) {
        let ns = conn.namespace().unwrap_or_default();
        for ws in stores.workspaces.state() {
            if ws.namespace().as_deref() == Some(ns.as_str()) && !ws.spec.connection_selectors.is_empty() {
                triggers.workspace(&ns, &ws.name_any());
            }
        }
    }
    // Aggregators list their members' states, and cover connections by
    // name and labels: a change to any of those reaches them.
    if let Some(conn) = changed(&stores.connections, event, |c| {
        (
            c.metadata.generation,
            c.metadata.deletion_timestamp.is_some(),
            c.metadata.labels.clone(),
            c.status.as_ref().and_then(|s| ready_reason(&s.conditions)),
        )
    }) && conn.spec.aggregator.is_none()
    {
        let ns = conn.namespace().unwrap_or_default();
        for aggregator in stores.index.read().unwrap().aggregators(&ns) {
            triggers.connection(&ns, &aggregator);
        }
    }
    stores.index.write().unwrap().connection_event(event);
    // Attachments depend on the spec, on deletion, and on the source's
    // schema as the last test saw it; not on test results.
    let spec = |c: &Connection| (c.metadata.generation, c.metadata.deletion_timestamp.is_some(), crate::api::is_draft(c));
    let Some(conn) = changed(&stores.connections, event, |c| {
        let source = c.status.as_ref().and_then(|s| s.source_schema.as_ref()).map(|s| s.hash.clone());
        (spec(c), source)
    }) else {
        return;
    };
    let (ns, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
    // A new source schema alone concerns the attachments that have
    // reported: one that has not (it waits in its workspace's queue) reads
    // the Connection as it is when its turn comes.
    let source_only = changed(&stores.connections, event, spec).is_none();
    for att in stores.index.read().unwrap().by_connection(&ns, &name) {
        let reported =
            || stores.attachment(&ns, &att).is_some_and(|a| a.status.as_ref().is_some_and(|s| conditions::ready(&s.conditions).is_some()));
        if !source_only || reported() {
            triggers.attachment(&ns, &att);
        }
    }
}

pub fn attachment_changed(stores: &Stores, triggers: &Triggers, event: &Event<WorkspaceConnection>) {
    stores.index.write().unwrap().attachment_event(event);
    // What the aggregate lists on both ends show of an attachment.
    let Some(att) = changed(&stores.attachments, event, |a| {
        let status = a.status.as_ref();
        (
            a.metadata.deletion_timestamp.is_some(),
            status.and_then(|s| ready_reason(&s.conditions)),
            status.and_then(|s| s.schema.clone()),
            status.and_then(|s| s.tables),
        )
    }) else {
        return;
    };
    let ns = att.namespace().unwrap_or_default();
    lists_changed(stores, triggers, event, &att, &ns);
    aggregators_changed(stores, triggers, &att, &ns);
    // An attachment that goes away may free a schema another one wanted.
    if matches!(event, Event::Delete(_)) || att.metadata.deletion_timestamp.is_some() {
        let name = att.name_any();
        for other in stores.attachments_of_workspace(&ns, &att.spec.workspace) {
            let conflicted = other
                .status
                .as_ref()
                .is_some_and(|s| conditions::ready(&s.conditions).is_some_and(|c| c.reason == Reason::SchemaConflict.as_str()));
            if conflicted && other.name_any() != name {
                triggers.attachment(&ns, &other.name_any());
            }
        }
    }
}

/// The workspace's and the connection's lists show the attachment; those
/// that are gone list nothing. The lists of a bulk apply's attachments are
/// written together: a connection's attachments that have not reported yet
/// are on their way, and its list waits for them.
fn lists_changed(stores: &Stores, triggers: &Triggers, event: &Event<WorkspaceConnection>, att: &WorkspaceConnection, ns: &str) {
    let entries = |workspace: bool, name: &str| stores.index.read().unwrap().list_len(workspace, ns, name);
    if stores.workspace(ns, &att.spec.workspace).is_some() {
        triggers.list_changed(true, ns, &att.spec.workspace, ListWait::Entries(entries(true, &att.spec.workspace)));
    }
    if stores.connection(ns, &att.spec.connection).is_some() {
        // The store still holds this one as it was before the event.
        let name = att.name_any();
        let settling = (!matches!(event, Event::Delete(_)) && att.unreported())
            || stores.attachments_of_connection(ns, &att.spec.connection).iter().any(|a| a.name_any() != name && a.unreported());
        let wait = if settling { ListWait::Settling } else { ListWait::Entries(entries(false, &att.spec.connection)) };
        triggers.list_changed(false, ns, &att.spec.connection, wait);
    }
}

/// An attachment that comes, goes, or turns Ready or not changes the
/// members of the aggregators attached to the same workspace, and what
/// every aggregator of the namespace lists.
fn aggregators_changed(stores: &Stores, triggers: &Triggers, att: &WorkspaceConnection, ns: &str) {
    let index = stores.index.read().unwrap();
    let aggregators = index.aggregators(ns);
    if aggregators.is_empty() {
        return;
    }
    for other in index.by_workspace(ns, &att.spec.workspace) {
        let is_aggregate = stores.attachment(ns, &other).is_some_and(|a| aggregators.contains(&a.spec.connection));
        if is_aggregate && other != att.name_any() {
            triggers.attachment(ns, &other);
        }
    }
    for aggregator in &aggregators {
        triggers.connection(ns, aggregator);
    }
}

/// A Secret that changes, appears (is labelled) or goes (is deleted or
/// unlabelled: the label-filtered watch reports it deleted) reaches every
/// workspace and connection that names it, and their attachments.
pub fn secret_changed(stores: &Stores, triggers: &Triggers, event: &Event<Secret>) {
    let Some(secret) = changed(&stores.secrets, event, |s| (s.data.clone(), s.string_data.clone())) else {
        return;
    };
    let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
    let index = stores.index.read().unwrap();
    let (workspaces, connections) = index.by_secret(&ns, &name);
    for w in &workspaces {
        triggers.workspace(&ns, w);
        for att in index.by_workspace(&ns, w) {
            triggers.attachment(&ns, &att);
        }
    }
    for c in &connections {
        triggers.connection(&ns, c);
        for att in index.by_connection(&ns, c) {
            triggers.attachment(&ns, &att);
        }
    }
}
