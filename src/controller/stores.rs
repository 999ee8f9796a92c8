//! The stores of a scope: the watched objects, and the index over them.

use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};

use super::index::Index;
use crate::api::{Connection, Workspace, WorkspaceConnection};

/// The reflector stores of the four watched kinds, and the indexes over
/// them. The Secret store holds only the Secrets the selector admits.
#[derive(Clone)]
pub struct Stores {
    pub workspaces: Store<Workspace>,
    pub connections: Store<Connection>,
    pub attachments: Store<WorkspaceConnection>,
    pub secrets: Store<Secret>,
    pub index: Arc<RwLock<Index>>,
}

impl Stores {
    pub fn workspace(&self, ns: &str, name: &str) -> Option<Arc<Workspace>> {
        self.workspaces.get(&ObjectRef::new(name).within(ns))
    }

    pub fn connection(&self, ns: &str, name: &str) -> Option<Arc<Connection>> {
        self.connections.get(&ObjectRef::new(name).within(ns))
    }

    pub fn attachment(&self, ns: &str, name: &str) -> Option<Arc<WorkspaceConnection>> {
        self.attachments.get(&ObjectRef::new(name).within(ns))
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(ns))
    }

    fn attachments_named(&self, ns: &str, names: Vec<String>) -> Vec<Arc<WorkspaceConnection>> {
        names.into_iter().filter_map(|name| self.attachment(ns, &name)).collect()
    }

    /// The attachments to a workspace, sorted by name.
    pub fn attachments_of_workspace(&self, ns: &str, workspace: &str) -> Vec<Arc<WorkspaceConnection>> {
        let names = self.index.read().unwrap().by_workspace(ns, workspace);
        self.attachments_named(ns, names)
    }

    /// The attachments of a connection, sorted by name.
    pub fn attachments_of_connection(&self, ns: &str, connection: &str) -> Vec<Arc<WorkspaceConnection>> {
        let names = self.index.read().unwrap().by_connection(ns, connection);
        self.attachments_named(ns, names)
    }
}
