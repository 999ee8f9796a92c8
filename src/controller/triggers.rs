//! Triggers: what queues another controller's object, and when a
//! list in status is written again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;

use crate::api::{Connection, Workspace, WorkspaceConnection};

/// How long a change to an attachment waits before it reaches the lists
/// on its Workspace and Connection, so that the attachments that turn
/// Ready together in a bulk apply are listed in one status write.
pub const LIST_DELAY: Duration = Duration::from_millis(500);

/// How often, at most, one object's list is rewritten while its
/// attachments keep changing (a bulk apply): the first change waits
/// `LIST_DELAY`, and later ones are gathered until this much time has
/// passed since the last write.
pub const LIST_INTERVAL: Duration = Duration::from_secs(3);

/// A long list waits longer: every write of it is decoded, validated entry
/// by entry and stored whole by the apiserver, and sent to every watcher,
/// so a workspace of 1,200 attachments rewritten every 3 s was most of the
/// apiserver's work in a bulk apply. This much per entry, up to
/// `LIST_INTERVAL_MAX`.
pub const LIST_INTERVAL_PER_ENTRY: Duration = Duration::from_millis(20);
pub const LIST_INTERVAL_MAX: Duration = Duration::from_secs(30);

/// The least time between two writes of a list of `entries`.
pub fn list_interval(entries: usize) -> Duration {
    LIST_INTERVAL_PER_ENTRY.saturating_mul(u32::try_from(entries).unwrap_or(u32::MAX)).clamp(LIST_INTERVAL, LIST_INTERVAL_MAX)
}

/// How long a connection's list waits while some of its attachments are
/// still on their way in (not reconciled yet, or parked in their
/// workspace's queue): in a bulk apply its attachments in different
/// workspaces turn Ready seconds apart, and a list written as each did
/// was a write per attachment. The list goes out when the last of them
/// settles (after `LIST_DELAY`), or this long after the first change.
pub const LIST_SETTLING: Duration = Duration::from_secs(30);

/// What a list update waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListWait {
    /// A list of this many entries, all settled.
    Entries(usize),
    /// Entries still on their way in.
    Settling,
}

type ListKey = (bool, String, String);

/// The list updates on their way (and when each goes out), and when each
/// object's last went out.
#[derive(Default)]
pub struct Delayed {
    pending: HashMap<ListKey, tokio::time::Instant>,
    fired: HashMap<ListKey, tokio::time::Instant>,
}

/// Queues reconciles on the controllers from outside their own watches.
#[derive(Clone)]
pub struct Triggers {
    pub workspaces: UnboundedSender<ObjectRef<Workspace>>,
    pub connections: UnboundedSender<ObjectRef<Connection>>,
    pub attachments: UnboundedSender<ObjectRef<WorkspaceConnection>>,
    /// Workspaces and connections whose list update is on its way.
    pub delayed: Arc<Mutex<Delayed>>,
}

impl Triggers {
    pub fn new(
        workspaces: UnboundedSender<ObjectRef<Workspace>>,
        connections: UnboundedSender<ObjectRef<Connection>>,
        attachments: UnboundedSender<ObjectRef<WorkspaceConnection>>,
    ) -> Self {
        Triggers { workspaces, connections, attachments, delayed: Arc::default() }
    }

    /// Queues the workspace (or the connection) for its list update, once
    /// for all the requests made meanwhile: after `LIST_DELAY`, or
    /// `list_interval(entries)` after its last list update if that is
    /// later; while entries are `Settling`, `LIST_SETTLING` after the last
    /// update, or after now if there was none lately. An update already on
    /// its way is never put off, only brought forward.
    pub fn list_changed(&self, workspace: bool, ns: &str, name: &str, wait: ListWait) {
        let key = (workspace, ns.to_owned(), name.to_owned());
        let now = tokio::time::Instant::now();
        let at = {
            let mut delayed = self.delayed.lock().unwrap();
            let last = delayed.fired.get(&key).copied();
            let after_last = match wait {
                ListWait::Entries(entries) => last.map(|t| t + list_interval(entries)),
                ListWait::Settling => Some(last.unwrap_or(now) + LIST_SETTLING),
            };
            let at = after_last.map_or(now + LIST_DELAY, |t| t.max(now + LIST_DELAY));
            if delayed.pending.get(&key).is_some_and(|due| *due <= at) {
                return;
            }
            // Forget what is long past, now and then.
            if delayed.fired.len() > 4096 {
                delayed.fired.retain(|_, t| now.duration_since(*t) < LIST_INTERVAL_MAX.max(LIST_SETTLING));
            }
            delayed.pending.insert(key.clone(), at);
            at
        };
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            {
                let mut delayed = this.delayed.lock().unwrap();
                // Brought forward: the earlier one went out.
                if delayed.pending.get(&key) != Some(&at) {
                    return;
                }
                delayed.pending.remove(&key);
                delayed.fired.insert(key.clone(), tokio::time::Instant::now());
            }
            let (workspace, ns, name) = key;
            if workspace { this.workspace(&ns, &name) } else { this.connection(&ns, &name) }
        });
    }

    pub fn attachment(&self, ns: &str, name: &str) {
        let _ = self.attachments.unbounded_send(ObjectRef::new(name).within(ns));
    }

    pub fn connection(&self, ns: &str, name: &str) {
        let _ = self.connections.unbounded_send(ObjectRef::new(name).within(ns));
    }

    pub fn workspace(&self, ns: &str, name: &str) {
        let _ = self.workspaces.unbounded_send(ObjectRef::new(name).within(ns));
    }
}
