//! The latest catalog observation of each workspace, shared by all of its
//! attachments, so that a resync costs one query per workspace and not one
//! per attachment. Taking an observation is single-flight: concurrent
//! reconciles of one workspace wait for the same query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::postgres::plan::{Marker, Observed, Owner};
use crate::postgres::{Catalog, Database, DbError, Observation};

type Key = (String, String);

#[derive(Default)]
pub struct Observations {
    workspaces: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Option<Observation>>>>>,
}

/// What an attachment needs to know from its workspace's observation.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its target schema, if the observation shows it as managed.
    pub schema: Option<Observed>,
    /// Managed schemas whose marker names this attachment.
    pub owned: Vec<String>,
    pub taken: Instant,
}

impl Observations {
    fn slot(&self, key: &Key) -> Arc<tokio::sync::Mutex<Option<Observation>>> {
        self.workspaces.lock().unwrap().entry(key.clone()).or_default().clone()
    }

    /// Observes a workspace if the last observation is older than `max_age`
    /// (or there is none), and returns what `read` takes from it.
    pub async fn with<T>(
        &self,
        key: &Key,
        db: &Database,
        max_age: Duration,
        read: impl FnOnce(&Observation, bool) -> T,
    ) -> Result<T, DbError> {
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        let fresh = guard.as_ref().is_some_and(|o| o.database == db.id() && o.taken.elapsed() < max_age);
        if !fresh {
            *guard = Some(db.observe_all().await?);
        }
        Ok(read(guard.as_ref().expect("just observed"), !fresh))
    }

    /// What `owner` needs to know about `schema`.
    pub async fn seen(&self, key: &Key, db: &Database, max_age: Duration, owner: &Owner, schema: &str) -> Result<Seen, DbError> {
        self.with(key, db, max_age, |o, _| Seen {
            schema: o.catalog.get(schema).cloned(),
            owned: owned_by(&o.catalog, owner),
            taken: o.taken,
        })
        .await
    }

    /// Records the state an attach or detach just committed, so that the
    /// next reconcile trusts it without another query.
    pub fn record(&self, key: &Key, schema: &str, state: Option<Observed>) {
        let slot = self.slot(key);
        if let Ok(mut guard) = slot.try_lock()
            && let Some(observation) = guard.as_mut()
        {
            match state {
                Some(observed) => observation.catalog.insert(schema.to_owned(), observed),
                None => observation.catalog.remove(schema),
            };
        } else {
            // Someone is observing right now; their result is newer.
        }
    }

    /// Forgets a workspace (deleted, or its database changed).
    pub fn forget(&self, key: &Key) {
        self.workspaces.lock().unwrap().remove(key);
    }
}

/// The managed schemas whose marker names `owner`, sorted.
pub fn owned_by(catalog: &Catalog, owner: &Owner) -> Vec<String> {
    let mut owned: Vec<String> = catalog
        .iter()
        .filter(|(_, o)| o.schema_comment.as_deref().and_then(Marker::parse).is_some_and(|m| &m.owner == owner))
        .map(|(name, _)| name.clone())
        .collect();
    owned.sort();
    owned
}
