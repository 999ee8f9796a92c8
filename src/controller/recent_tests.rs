//! The test results this process wrote, until its store shows them.

use std::sync::Arc;

use kube::ResourceExt;

use crate::api::{Connection, SourceSchema, TestResult};

/// The test results this process wrote, until its store shows them. A
/// reconcile that runs before the watch delivers the write (another
/// attachment turned Ready meanwhile) must neither test again nor take the
/// result back.
#[derive(Default)]
pub struct RecentTests(pub(super) std::sync::Mutex<std::collections::HashMap<String, (TestResult, Option<SourceSchema>)>>);

impl RecentTests {
    pub fn remember(&self, conn: &Connection, test: &TestResult, source: &Option<SourceSchema>) {
        // As the store will hold it: timestamps to the second.
        let as_stored = |v| serde_json::to_value(v).ok().and_then(|v| serde_json::from_value(v).ok());
        if let (Some(uid), Some(test)) = (conn.uid(), as_stored((test, source))) {
            self.0.lock().unwrap().insert(uid, test);
        }
    }

    /// `conn` as this process last wrote its test, if the store has not
    /// caught up yet.
    pub fn apply(&self, conn: Arc<Connection>) -> Arc<Connection> {
        let Some(uid) = conn.uid() else { return conn };
        let mut recent = self.0.lock().unwrap();
        let Some((test, source)) = recent.get(&uid) else {
            return conn;
        };
        let stored = conn.status.as_ref().and_then(|s| s.test.as_ref());
        if stored.is_some_and(|s| s == test || s.tested_at > test.tested_at) {
            // The store shows this write, or a later one.
            recent.remove(&uid);
            return conn;
        }
        let mut fresher = (*conn).clone();
        let status = fresher.status.get_or_insert_with(Default::default);
        status.test = Some(test.clone());
        status.source_schema = source.clone();
        Arc::new(fresher)
    }
}
