//! What the reconcilers ask of a workspace database, as a trait: `Database`
//! is the real one, and the reconcilers' steps are unit-tested against a
//! fake that records what was asked and answers what the test says (the
//! way controller-rs and CloudNativePG test their reconcilers).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::plan::{AttachPlan, Owner, Statement};
use super::{Attached, Database, Detached, Observation, Tested};
use crate::api::Failure;

/// A workspace database, as the reconcilers use it.
pub trait WorkspaceDb: Send + Sync {
    /// Distinguishes databases: an observation of one says nothing of
    /// another (see `Database::id`).
    fn id(&self) -> u64;
    fn observe_all<'a>(&'a self, readers: &'a [String]) -> BoxFuture<'a, Result<Observation, Failure>>;
    fn attach<'a>(&'a self, plan: &'a AttachPlan, suspect: bool, joins: &'a [(Owner, String)]) -> BoxFuture<'a, Result<Attached, Failure>>;
    fn test<'a>(&'a self, plan: &'a AttachPlan, timeout: Duration, suspect: bool) -> BoxFuture<'a, Result<Tested, Failure>>;
    fn detach<'a>(&'a self, owner: &'a Owner, schema: &'a str, readers: &'a [String]) -> BoxFuture<'a, Result<Detached, Failure>>;
    fn orphan<'a>(&'a self, owner: &'a Owner, schema: &'a str) -> BoxFuture<'a, Result<bool, Failure>>;
    fn forget_credentials<'a>(&'a self, owner: &'a Owner, schema: &'a str) -> BoxFuture<'a, Result<(), Failure>>;
    fn set_search_path(&self, statement: Statement) -> BoxFuture<'_, Result<(), Failure>>;
    /// Forgets the Workspace's pin: the last step of its removal.
    fn unpin(&self) -> BoxFuture<'_, Result<(), Failure>>;
    /// Says that attaches or detaches are about to run.
    fn expect_work(&self) {}
}

/// A workspace database handle, real or fake.
pub type Db = Arc<dyn WorkspaceDb>;

impl WorkspaceDb for Database {
    fn id(&self) -> u64 {
        Database::id(self)
    }

    fn observe_all<'a>(&'a self, readers: &'a [String]) -> BoxFuture<'a, Result<Observation, Failure>> {
        Box::pin(Database::observe_all(self, readers))
    }

    fn attach<'a>(&'a self, plan: &'a AttachPlan, suspect: bool, joins: &'a [(Owner, String)]) -> BoxFuture<'a, Result<Attached, Failure>> {
        Box::pin(Database::attach(self, plan, suspect, joins))
    }

    fn test<'a>(&'a self, plan: &'a AttachPlan, timeout: Duration, suspect: bool) -> BoxFuture<'a, Result<Tested, Failure>> {
        Box::pin(Database::test(self, plan, timeout, suspect))
    }

    fn detach<'a>(&'a self, owner: &'a Owner, schema: &'a str, readers: &'a [String]) -> BoxFuture<'a, Result<Detached, Failure>> {
        Box::pin(Database::detach(self, owner, schema, readers))
    }

    fn orphan<'a>(&'a self, owner: &'a Owner, schema: &'a str) -> BoxFuture<'a, Result<bool, Failure>> {
        Box::pin(Database::orphan(self, owner, schema))
    }

    fn forget_credentials<'a>(&'a self, owner: &'a Owner, schema: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(Database::forget_credentials(self, owner, schema))
    }

    fn set_search_path(&self, statement: Statement) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(Database::set_search_path(self, statement))
    }

    fn unpin(&self) -> BoxFuture<'_, Result<(), Failure>> {
        Box::pin(Database::unpin(self))
    }

    fn expect_work(&self) {
        Database::expect_work(self);
    }
}

/// A shared handle is the database it shares, so that `&Db` goes where a
/// `&dyn WorkspaceDb` is asked for.
impl<T: WorkspaceDb + ?Sized> WorkspaceDb for Arc<T> {
    fn id(&self) -> u64 {
        (**self).id()
    }

    fn observe_all<'a>(&'a self, readers: &'a [String]) -> BoxFuture<'a, Result<Observation, Failure>> {
        (**self).observe_all(readers)
    }

    fn attach<'a>(&'a self, plan: &'a AttachPlan, suspect: bool, joins: &'a [(Owner, String)]) -> BoxFuture<'a, Result<Attached, Failure>> {
        (**self).attach(plan, suspect, joins)
    }

    fn test<'a>(&'a self, plan: &'a AttachPlan, timeout: Duration, suspect: bool) -> BoxFuture<'a, Result<Tested, Failure>> {
        (**self).test(plan, timeout, suspect)
    }

    fn detach<'a>(&'a self, owner: &'a Owner, schema: &'a str, readers: &'a [String]) -> BoxFuture<'a, Result<Detached, Failure>> {
        (**self).detach(owner, schema, readers)
    }

    fn orphan<'a>(&'a self, owner: &'a Owner, schema: &'a str) -> BoxFuture<'a, Result<bool, Failure>> {
        (**self).orphan(owner, schema)
    }

    fn forget_credentials<'a>(&'a self, owner: &'a Owner, schema: &'a str) -> BoxFuture<'a, Result<(), Failure>> {
        (**self).forget_credentials(owner, schema)
    }

    fn set_search_path(&self, statement: Statement) -> BoxFuture<'_, Result<(), Failure>> {
        (**self).set_search_path(statement)
    }

    fn unpin(&self) -> BoxFuture<'_, Result<(), Failure>> {
        (**self).unpin()
    }

    fn expect_work(&self) {
        (**self).expect_work();
    }
}
