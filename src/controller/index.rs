//! Which objects refer to which, kept current from watch events, as
//! Linkerd's policy controller keeps its indexes: attachments by workspace
//! and by connection, and workspaces and connections by the Secrets they
//! name. Lookups cost a map access, not a scan of every store.
//!
//! Each kind's part is rebuilt whole on a relist (`Init` … `InitDone`), so
//! objects deleted while a watch was down leave nothing behind.

use std::collections::{BTreeSet, HashMap};

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::api::{Connection, Workspace, WorkspaceConnection};

type Key = (String, String);

/// The references of one kind: from each object to the names it refers to,
/// and back.
#[derive(Default, Clone, Debug)]
struct Refs {
    /// (namespace, object) -> the names it refers to, by role.
    forward: HashMap<Key, Vec<(&'static str, String)>>,
    /// (role, namespace, referred name) -> the objects that refer to it.
    back: HashMap<(&'static str, String, String), BTreeSet<String>>,
}

impl Refs {
    fn set(&mut self, ns: &str, name: &str, targets: Vec<(&'static str, String)>) {
        self.remove(ns, name);
        for (role, target) in &targets {
            self.back.entry((role, ns.to_owned(), target.clone())).or_default().insert(name.to_owned());
        }
        self.forward.insert((ns.to_owned(), name.to_owned()), targets);
    }

    fn remove(&mut self, ns: &str, name: &str) {
        let Some(old) = self.forward.remove(&(ns.to_owned(), name.to_owned())) else { return };
        for (role, target) in old {
            let key = (role, ns.to_owned(), target);
            if let Some(set) = self.back.get_mut(&key) {
                set.remove(name);
                if set.is_empty() {
                    self.back.remove(&key);
                }
            }
        }
    }

    fn count_referring(&self, role: &'static str, ns: &str, target: &str) -> usize {
        self.back.get(&(role, ns.to_owned(), target.to_owned())).map_or(0, BTreeSet::len)
    }

    fn referring(&self, role: &'static str, ns: &str, target: &str) -> Vec<String> {
        self.back.get(&(role, ns.to_owned(), target.to_owned())).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

/// One kind's references, and the rebuild in progress during a relist.
#[derive(Default, Debug)]
struct Part {
    refs: Refs,
    relisting: Option<Refs>,
}

impl Part {
    fn event<K: ResourceExt>(&mut self, event: &Event<K>, targets: impl Fn(&K) -> Vec<(&'static str, String)>) {
        let key = |obj: &K| (obj.namespace().unwrap_or_default(), obj.name_any());
        match event {
            Event::Apply(obj) => {
                let (ns, name) = key(obj);
                self.refs.set(&ns, &name, targets(obj));
            }
            Event::Delete(obj) => {
                let (ns, name) = key(obj);
                self.refs.remove(&ns, &name);
            }
            Event::Init => self.relisting = Some(Refs::default()),
            Event::InitApply(obj) => {
                let (ns, name) = key(obj);
                self.relisting.get_or_insert_with(Refs::default).set(&ns, &name, targets(obj));
            }
            Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    self.refs = fresh;
                }
            }
        }
    }
}

const WORKSPACE: &str = "workspace";
const CONNECTION: &str = "connection";
const SECRET: &str = "secret";
const AGGREGATOR: &str = "aggregator";

/// The indexes of one scope.
#[derive(Default, Debug)]
pub struct Index {
    attachments: Part,
    workspaces: Part,
    connections: Part,
}

impl Index {
    pub fn attachment_event(&mut self, event: &Event<WorkspaceConnection>) {
        self.attachments.event(event, |a| vec![(WORKSPACE, a.spec.workspace.clone()), (CONNECTION, a.spec.connection.clone())]);
    }

    pub fn workspace_event(&mut self, event: &Event<Workspace>) {
        self.workspaces.event(event, |w| {
            let db = &w.spec.database;
            let mut refs = vec![(SECRET, db.secret_ref.name.clone())];
            refs.extend(db.ca_secret_ref.as_ref().map(|ca| (SECRET, ca.name.clone())));
            refs
        });
    }

    pub fn connection_event(&mut self, event: &Event<Connection>) {
        self.connections.event(event, |c| {
            let mut refs: Vec<_> = c.spec.credentials.iter().map(|cr| (SECRET, cr.secret_ref.name.clone())).collect();
            if c.spec.aggregator.is_some() {
                refs.push((AGGREGATOR, String::new()));
            }
            refs
        });
    }

    /// The aggregators of a namespace, sorted by name.
    pub fn aggregators(&self, ns: &str) -> Vec<String> {
        self.connections.refs.referring(AGGREGATOR, ns, "")
    }

    /// How many attachments a workspace's (or a connection's) list holds.
    pub fn list_len(&self, workspace: bool, ns: &str, name: &str) -> usize {
        self.attachments.refs.count_referring(if workspace { WORKSPACE } else { CONNECTION }, ns, name)
    }

    /// The attachments to a workspace, sorted by name.
    pub fn by_workspace(&self, ns: &str, workspace: &str) -> Vec<String> {
        self.attachments.refs.referring(WORKSPACE, ns, workspace)
    }

    /// The attachments of a connection, sorted by name.
    pub fn by_connection(&self, ns: &str, connection: &str) -> Vec<String> {
        self.attachments.refs.referring(CONNECTION, ns, connection)
    }

    /// The workspaces and the connections that name a Secret.
    pub fn by_secret(&self, ns: &str, secret: &str) -> (Vec<String>, Vec<String>) {
        (self.workspaces.refs.referring(SECRET, ns, secret), self.connections.refs.referring(SECRET, ns, secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CredentialsSpec, SecretRef, WorkspaceConnectionSpec};

    fn att(ns: &str, name: &str, ws: &str, conn: &str) -> WorkspaceConnection {
        let mut a = WorkspaceConnection::new(
            name,
            WorkspaceConnectionSpec { workspace: ws.into(), connection: conn.into(), deletion_policy: Default::default() },
        );
        a.metadata.namespace = Some(ns.into());
        a
    }

    fn conn(ns: &str, name: &str, secret: Option<&str>) -> Connection {
        let spec = serde_json::from_value(serde_json::json!({ "plugin": {} })).unwrap();
        let mut c = Connection::new(name, spec);
        c.spec.credentials = secret.map(|s| CredentialsSpec { secret_ref: SecretRef { name: s.into() } });
        c.metadata.namespace = Some(ns.into());
        c
    }

    #[test]
    fn attachments_are_found_by_workspace_and_connection() {
        let mut index = Index::default();
        index.attachment_event(&Event::Apply(att("a", "x", "ws1", "c1")));
        index.attachment_event(&Event::Apply(att("a", "y", "ws1", "c2")));
        index.attachment_event(&Event::Apply(att("b", "z", "ws1", "c1")));
        assert_eq!(index.by_workspace("a", "ws1"), ["x", "y"]);
        assert_eq!(index.by_connection("a", "c1"), ["x"]);
        assert_eq!(index.by_connection("b", "c1"), ["z"], "namespaces never mix");
        index.attachment_event(&Event::Delete(att("a", "x", "ws1", "c1")));
        assert_eq!(index.by_workspace("a", "ws1"), ["y"]);
        assert!(index.by_connection("a", "c1").is_empty());
    }

    #[test]
    fn a_relist_forgets_what_was_deleted_meanwhile() {
        let mut index = Index::default();
        index.attachment_event(&Event::Apply(att("a", "gone", "ws", "c")));
        index.attachment_event(&Event::Init);
        index.attachment_event(&Event::InitApply(att("a", "kept", "ws", "c")));
        assert_eq!(index.by_workspace("a", "ws"), ["gone"], "the old index serves until the relist is done");
        index.attachment_event(&Event::InitDone);
        assert_eq!(index.by_workspace("a", "ws"), ["kept"]);
    }

    #[test]
    fn secrets_lead_to_their_users_and_a_changed_reference_moves() {
        let mut index = Index::default();
        index.connection_event(&Event::Apply(conn("a", "c1", Some("s"))));
        index.connection_event(&Event::Apply(conn("a", "c2", Some("s"))));
        assert_eq!(index.by_secret("a", "s").1, ["c1", "c2"]);
        index.connection_event(&Event::Apply(conn("a", "c1", Some("t"))));
        assert_eq!(index.by_secret("a", "s").1, ["c2"]);
        assert_eq!(index.by_secret("a", "t").1, ["c1"]);
        index.connection_event(&Event::Apply(conn("a", "c2", None)));
        assert!(index.by_secret("a", "s").1.is_empty());
    }
}
