//! Which objects depend on a changed object: each watch event is mapped here
//! to the reconciles it must cause in other controllers. References never
//! leave a namespace, so every lookup is within the event's namespace.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use super::{Stores, Triggers};
use crate::api::{Connection, Reason, TestOutcome, Workspace, WorkspaceConnection, conditions};

fn objects<K>(event: &Event<K>) -> Option<&K> {
    match event {
        Event::Apply(obj) | Event::Delete(obj) | Event::InitApply(obj) => Some(obj),
        Event::Init | Event::InitDone => None,
    }
}

/// True for events that can change a dependent's outcome. The initial list
/// is not one: every controller reconciles all of its objects at start.
fn is_change<K>(event: &Event<K>) -> bool {
    matches!(event, Event::Apply(_) | Event::Delete(_))
}

fn send<K: kube::Resource<DynamicType = ()>>(tx: &futures::channel::mpsc::UnboundedSender<ObjectRef<K>>, ns: &str, name: &str) {
    let _ = tx.unbounded_send(ObjectRef::new(name).within(ns));
}

pub fn workspace_changed(stores: &Stores, triggers: &Triggers, event: &Event<Workspace>) {
    let Some(ws) = objects(event).filter(|_| is_change(event)) else { return };
    let (ns, name) = (ws.namespace().unwrap_or_default(), ws.name_any());
    for att in stores.attachments_where(&ns, |a| a.spec.workspace == name) {
        send(&triggers.attachments, &ns, &att.name_any());
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
            send(&triggers.connections, &ns, &conn.name_any());
        }
    }
}

pub fn connection_changed(stores: &Stores, triggers: &Triggers, event: &Event<Connection>) {
    let Some(conn) = objects(event).filter(|_| is_change(event)) else { return };
    let (ns, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
    for att in stores.attachments_where(&ns, |a| a.spec.connection == name) {
        send(&triggers.attachments, &ns, &att.name_any());
    }
}

pub fn attachment_changed(stores: &Stores, triggers: &Triggers, event: &Event<WorkspaceConnection>) {
    let Some(att) = objects(event).filter(|_| is_change(event)) else { return };
    let ns = att.namespace().unwrap_or_default();
    // The aggregate lists on both ends.
    send(&triggers.workspaces, &ns, &att.spec.workspace);
    send(&triggers.connections, &ns, &att.spec.connection);
    // An attachment that goes away may free a schema another one wanted.
    if matches!(event, Event::Delete(_)) || att.metadata.deletion_timestamp.is_some() {
        let name = att.name_any();
        for other in stores.attachments_where(&ns, |a| a.spec.workspace == att.spec.workspace && a.name_any() != name) {
            let conflicted = other.status.as_ref().is_some_and(|s| {
                conditions::find(&s.conditions, conditions::READY)
                    .is_some_and(|c| c.reason == Reason::SchemaConflict.as_str())
            });
            if conflicted {
                send(&triggers.attachments, &ns, &other.name_any());
            }
        }
    }
}

pub fn secret_changed(stores: &Stores, triggers: &Triggers, event: &Event<Secret>) {
    let Some(secret) = objects(event).filter(|_| is_change(event)) else { return };
    let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
    let workspaces: Vec<String> = stores
        .workspaces
        .state()
        .into_iter()
        .filter(|w| w.namespace().as_deref() == Some(&ns) && w.spec.database.secret_ref.name == name)
        .map(|w| w.name_any())
        .collect();
    let connections: Vec<String> = stores
        .connections
        .state()
        .into_iter()
        .filter(|c| {
            c.namespace().as_deref() == Some(&ns)
                && c.spec.credentials.as_ref().is_some_and(|cr| cr.secret_ref.name == name)
        })
        .map(|c| c.name_any())
        .collect();
    for w in &workspaces {
        send(&triggers.workspaces, &ns, w);
    }
    for c in &connections {
        send(&triggers.connections, &ns, c);
    }
    for att in stores.attachments_where(&ns, |a| workspaces.contains(&a.spec.workspace) || connections.contains(&a.spec.connection)) {
        send(&triggers.attachments, &ns, &att.name_any());
    }
}
