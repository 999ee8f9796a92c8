//! What the reconcilers' step tests share: a `Context` whose stores the
//! test fills and whose client reaches no apiserver, and a fake workspace
//! database that keeps a catalog of managed schemas, records every call,
//! and fails the calls a test tells it to.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;

use super::admission::Admission;
use super::context::{Context, Settings, Shared, Stores, Triggers};
use crate::api::{Connection, Failure, Workspace, WorkspaceConnection};
use crate::postgres::plan::{AttachPlan, Change, MARKER_PREFIX, Observed, Owner, Statement};
use crate::postgres::{Attached, Detached, Observation, Tested, WorkspaceDb};

/// A store holding `objects`.
fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store();
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(object));
    }
    reader
}

/// A context over stores that hold these objects. Its client points at a
/// closed port of 127.0.0.1: a step that writes to the apiserver fails
/// there, and none of the steps tested with it should.
pub fn context(workspaces: Vec<Workspace>, connections: Vec<Connection>, attachments: Vec<WorkspaceConnection>) -> Context {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let shared = Arc::new(Shared::new(client, Settings::default(), Arc::default(), crate::postgres::pin::PinKey::random()));
    // The indexes as the watches would have built them.
    let index: Arc<std::sync::RwLock<super::index::Index>> = Arc::default();
    {
        let mut index = index.write().unwrap();
        workspaces.iter().for_each(|w| index.workspace_event(&watcher::Event::Apply(w.clone())));
        connections.iter().for_each(|c| index.connection_event(&watcher::Event::Apply(c.clone())));
        attachments.iter().for_each(|a| index.attachment_event(&watcher::Event::Apply(a.clone())));
    }
    let stores = Stores {
        workspaces: store(workspaces),
        connections: store(connections),
        attachments: store(attachments),
        secrets: store(vec![]),
        index,
    };
    let (ws, _) = futures::channel::mpsc::unbounded();
    let (conn, _) = futures::channel::mpsc::unbounded();
    let (att, _) = futures::channel::mpsc::unbounded();
    let triggers = Triggers::new(ws, conn, att);
    Context { admission: Admission::for_scope(2, stores.clone(), triggers.clone(), || false), shared, stores, triggers }
}

/// A managed schema's state as the catalog shows it, owned by `owner`.
pub fn owned(owner: &Owner) -> Observed {
    Observed {
        schema_comment: Some(format!("{MARKER_PREFIX}{owner} uid=u tables=1")),
        server_comment: Some(format!("{MARKER_PREFIX}{owner} uid=u")),
        foreign_tables: 1,
        ..Default::default()
    }
}

/// A fake workspace database: a catalog of managed schemas that detach and
/// orphan change, the calls made, and the failures to answer with.
#[derive(Default)]
pub struct FakeDb {
    pub catalog: Mutex<BTreeMap<String, Observed>>,
    pub search_path: Mutex<Vec<String>>,
    pub calls: Mutex<Vec<String>>,
    /// Schema (or `search_path`) to the failure its call answers with.
    pub failures: Mutex<BTreeMap<String, Failure>>,
    /// Sessions of the workspace role that are not the operator's.
    pub others: Mutex<Vec<crate::postgres::pin::Session>>,
}

impl FakeDb {
    pub fn with(schemas: &[(&str, Observed)]) -> Arc<FakeDb> {
        let db = FakeDb::default();
        db.catalog.lock().unwrap().extend(schemas.iter().map(|(s, o)| (s.to_string(), o.clone())));
        Arc::new(db)
    }

    pub fn fail(&self, key: &str, failure: Failure) {
        self.failures.lock().unwrap().insert(key.to_owned(), failure);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn call(&self, call: String, key: &str) -> Result<(), Failure> {
        self.calls.lock().unwrap().push(call);
        self.failures.lock().unwrap().get(key).cloned().map_or(Ok(()), Err)
    }
}

impl WorkspaceDb for FakeDb {
    fn id(&self) -> u64 {
        7
    }

    fn observe_all<'a>(&'a self, readers: &'a [String]) -> BoxFuture<'a, Result<Observation, Failure>> {
        let result = self.call("observe".into(), "observe").map(|()| Observation {
            database: 7,
            taken: std::time::Instant::now(),
            version: "17".into(),
            role: "app".into(),
            superuser: false,
            database_name: "ws".into(),
            search_path: self.search_path.lock().unwrap().clone(),
            roles: readers.iter().cloned().collect(),
            catalog: self.catalog.lock().unwrap().clone().into_iter().collect(),
            pinned: true,
            others: self.others.lock().unwrap().clone(),
        });
        Box::pin(async move { result })
    }

    fn attach<'a>(&'a self, plan: &'a AttachPlan, _: bool, _: &'a [(Owner, String)]) -> BoxFuture<'a, Result<Attached, Failure>> {
        let result = self.call(format!("attach {}", plan.schema), &plan.schema).map(|()| Attached {
            change: Change::Rebuild,
            tables: 2,
            held: Vec::new(),
            proven: true,
            source_hash: None,
        });
        Box::pin(async move { result })
    }

    fn test<'a>(&'a self, plan: &'a AttachPlan, _: Duration, _: bool) -> BoxFuture<'a, Result<Tested, Failure>> {
        // A failure's `{schema}` names the schema the plan made, as a
        // server's error names the server.
        let result = self
            .call(format!("test {}", plan.schema), "test")
            .map(|()| Tested { tables: 2, source_hash: "h".into(), shapes: Vec::new() })
            .map_err(|f| Failure::new(f.reason, f.message.replace("{schema}", &plan.schema)));
        Box::pin(async move { result })
    }

    fn detach<'a>(&'a self, owner: &'a Owner, schema: &'a str, _: &'a [String]) -> BoxFuture<'a, Result<Detached, Failure>> {
        let result = self.call(format!("detach {owner} {schema}"), schema).map(|()| {
            let gone = self.catalog.lock().unwrap().remove(schema).is_some();
            Detached { schema: gone, server: gone }
        });
        Box::pin(async move { result })
    }

    fn orphan<'a>(&'a self, owner: &'a Owner, schema: &'a str) -> BoxFuture<'a, Result<bool, Failure>> {
        // An orphaned schema is no longer the workspace's to remove.
        let result = self.call(format!("orphan {owner} {schema}"), schema).map(|()| self.catalog.lock().unwrap().remove(schema).is_some());
        Box::pin(async move { result })
    }

    fn forget_credentials<'a>(&'a self, owner: &'a Owner, schema: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        let result = self.call(format!("forget {owner} {schema}"), "forget");
        Box::pin(async move { result })
    }

    fn set_search_path(&self, statement: Statement) -> BoxFuture<'_, Result<(), Failure>> {
        let result = self.call("set search_path".into(), "search_path").map(|()| {
            if let Statement::SetSearchPath { path, .. } = statement {
                *self.search_path.lock().unwrap() = path;
            }
        });
        Box::pin(async move { result })
    }

    fn unpin(&self) -> BoxFuture<'_, Result<(), Failure>> {
        let result = self.call("unpin".into(), "unpin");
        Box::pin(async move { result })
    }
}
