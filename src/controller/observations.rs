//! The latest catalog observation of each workspace, shared by all of its
//! attachments, so that a resync costs one query per workspace and not one
//! per attachment. Taking an observation is single-flight: concurrent
//! reconciles of one workspace wait for the same query.
//!
//! Beside each observation is an index of the schemas by the attachment
//! their marker names, built once per observation: every attachment of a
//! workspace asks what it owns at each resync, and parsing every marker for
//! each of them would make a resync quadratic.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::Failure;
use crate::postgres::plan::{Marker, Observed, Owner};
use crate::postgres::{Observation, WorkspaceDb};

type Key = (String, String);

/// An observation and its owner index.
pub struct Snapshot {
    pub observation: Observation,
    /// The readers the observation asked about.
    readers: Vec<String>,
    /// Managed schemas by the `<ns>/<name>` of the attachment that owns them.
    by_owner: HashMap<String, BTreeSet<String>>,
}

impl Snapshot {
    fn new(observation: Observation) -> Self {
        let mut snapshot = Snapshot { observation, readers: Vec::new(), by_owner: HashMap::new() };
        let schemas: Vec<(String, Option<Owner>)> =
            snapshot.observation.catalog.iter().map(|(schema, o)| (schema.clone(), owner_of(o))).collect();
        for (schema, owner) in schemas {
            snapshot.index(&schema, owner.as_ref());
        }
        snapshot
    }

    fn index(&mut self, schema: &str, owner: Option<&Owner>) {
        if let Some(owner) = owner {
            self.by_owner.entry(owner.to_string()).or_default().insert(schema.to_owned());
        }
    }

    fn unindex(&mut self, schema: &str) {
        let owner = self.observation.catalog.get(schema).and_then(owner_of);
        if let Some(set) = owner.and_then(|o| self.by_owner.get_mut(&o.to_string())) {
            set.remove(schema);
        }
    }

    /// The managed schemas whose marker names `owner`, sorted.
    pub fn owned_by(&self, owner: &Owner) -> Vec<String> {
        self.by_owner.get(&owner.to_string()).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

/// The attachment a schema belongs to: its marker's, or, for a server whose
/// schema is gone, the server's.
fn owner_of(observed: &Observed) -> Option<Owner> {
    observed.schema_marker().or_else(|| observed.server_comment.as_deref().and_then(Marker::parse)).map(|m| m.owner)
}

#[derive(Default)]
pub struct Observations {
    workspaces: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Option<Snapshot>>>>>,
}

/// What an attachment needs to know from its workspace's observation.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its target schema, if the observation shows it as managed.
    pub schema: Option<Observed>,
    /// Managed schemas whose marker names this attachment.
    pub owned: Vec<String>,
    pub taken: Instant,
    /// The workspace's readers that exist.
    pub readers: Vec<String>,
}

impl Observations {
    fn slot(&self, key: &Key) -> Arc<tokio::sync::Mutex<Option<Snapshot>>> {
        self.workspaces.lock().unwrap().entry(key.clone()).or_default().clone()
    }

    /// Observes a workspace if the last observation is older than `max_age`
    /// (or there is none, or it was taken through another pool, or asked
    /// about other readers), and returns what `read` takes from it; `read`
    /// is told whether it is new. `readers` are the workspace's.
    pub async fn with<T>(
        &self,
        key: &Key,
        db: &dyn WorkspaceDb,
        readers: &[String],
        max_age: Duration,
        read: impl FnOnce(&Snapshot, bool) -> T,
    ) -> Result<T, Failure> {
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        let fresh = guard.as_ref().is_some_and(|s| {
            s.observation.database == db.id() && s.observation.taken.elapsed() < max_age && s.readers.as_slice() == readers
        });
        if !fresh {
            let mut snapshot = Snapshot::new(db.observe_all(readers).await?);
            snapshot.readers = readers.to_vec();
            *guard = Some(snapshot);
        }
        Ok(read(guard.as_ref().expect("just observed"), !fresh))
    }

    /// What `owner` needs to know about `schema`.
    pub async fn seen(
        &self,
        key: &Key,
        db: &dyn WorkspaceDb,
        readers: &[String],
        max_age: Duration,
        owner: &Owner,
        schema: &str,
    ) -> Result<Seen, Failure> {
        self.with(key, db, readers, max_age, |s, _| Seen {
            schema: s.observation.catalog.get(schema).cloned(),
            owned: s.owned_by(owner),
            taken: s.observation.taken,
            readers: readers.iter().filter(|r| s.observation.roles.contains(*r)).cloned().collect(),
        })
        .await
    }

    /// Records the state an attach or detach just committed, so that the
    /// next reconcile trusts it without another query. If an observation is
    /// being taken right now, its result is newer, and nothing is recorded.
    pub fn record(&self, key: &Key, schema: &str, state: Option<Observed>) {
        let slot = self.slot(key);
        let Ok(mut guard) = slot.try_lock() else { return };
        let Some(snapshot) = guard.as_mut() else { return };
        snapshot.unindex(schema);
        match state {
            Some(observed) => {
                snapshot.index(schema, owner_of(&observed).as_ref());
                snapshot.observation.catalog.insert(schema.to_owned(), observed);
            }
            None => {
                snapshot.observation.catalog.remove(schema);
            }
        }
    }

    /// Records the search path a workspace's reconcile just set.
    pub fn set_search_path(&self, key: &Key, path: &[String]) {
        let slot = self.slot(key);
        if let Ok(mut guard) = slot.try_lock()
            && let Some(snapshot) = guard.as_mut()
        {
            snapshot.observation.search_path = path.to_vec();
        }
    }

    /// Forgets a workspace (deleted, or its database changed).
    pub fn forget(&self, key: &Key) {
        self.workspaces.lock().unwrap().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(owner: &str) -> Observed {
        Observed { schema_comment: Some(format!("manifold.dev/owner={owner} uid=u")), ..Default::default() }
    }

    #[test]
    fn the_owner_index_follows_records() {
        let owner = Owner { namespace: "ns".into(), name: "a".into() };
        let catalog = [("s1".to_owned(), observed("ns/a")), ("s2".to_owned(), observed("ns/b")), ("s3".to_owned(), observed("ns/a"))];
        let snapshot = Snapshot::new(Observation {
            database: 1,
            taken: Instant::now(),
            version: "15".into(),
            role: "app".into(),
            superuser: false,
            database_name: "db".into(),
            search_path: Vec::new(),
            roles: Default::default(),
            catalog: catalog.into(),
            pinned: true,
            others: Vec::new(),
        });
        assert_eq!(snapshot.owned_by(&owner), ["s1", "s3"]);

        let observations = Observations::default();
        let key = ("ns".to_owned(), "ws".to_owned());
        *observations.slot(&key).try_lock().unwrap() = Some(snapshot);
        observations.record(&key, "s1", None);
        observations.record(&key, "s2", Some(observed("ns/a")));
        let slot = observations.slot(&key);
        let guard = slot.try_lock().unwrap();
        assert_eq!(guard.as_ref().unwrap().owned_by(&owner), ["s2", "s3"]);
    }
}
