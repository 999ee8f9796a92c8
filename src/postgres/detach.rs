//! Taking an attachment away: detach, revoke readers, orphan, and
//! forgetting the credentials of a workspace that is going.

use super::*;

impl Database {
    /// Forgets the Workspace's pin (see `pin::forget_pin`): the last step of
    /// its removal.
    pub async fn unpin(&self) -> Result<(), Failure> {
        let Some(workspace) = self.pin.as_ref().map(|p| p.workspace().to_owned()) else { return Ok(()) };
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            self.count(3, 1);
            pin::forget_pin(session.client(), &workspace).await.map_err(|e| classify(&e, &[]))
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Removes what an attachment owns: its foreign tables, its schema, its
    /// user mapping and its server, never anything else. If something that
    /// Manifold did not create depends on them, Postgres refuses (RESTRICT),
    /// nothing is dropped, and the error says `DependentObjects`.
    /// `readers`: the workspace's readers, who keep SELECT on the views of
    /// the aggregators that this schema leaves.
    /// Readers lose their access first, in a transaction of its own
    /// (`plan::revoke_readers`): what holds the rest cannot hold that.
    pub async fn detach(&self, owner: &Owner, schema: &str, readers: &[String]) -> Result<Detached, Failure> {
        let err = |e: tokio_postgres::Error| classify(&e, &[]);
        self.revoke_readers(owner, schema).await?;
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            let tx = session.client().transaction().await.map_err(err)?;
            let (locked, _) = self.lock_and_observe(&tx, owner, schema, schema, "", "").await.map_err(err)?;
            let statements = plan::detach(owner, schema, &locked);
            let detached = Detached {
                schema: statements.iter().any(|s| matches!(s, Statement::DropSchema { .. })),
                server: statements.iter().any(|s| matches!(s, Statement::DropServer { .. })),
            };
            // The aggregators' views over this schema are ours, not a user's:
            // they go first, and come back without it.
            let aggregates =
                if detached.schema { self.aggregates_of(&tx, schema, &owner.namespace, &[], true).await.map_err(err)? } else { Vec::new() };
            for (agg_schema, agg_locked) in &aggregates {
                self.execute(&tx, agg_schema, plan::aggregate_teardown(agg_schema, agg_locked)).await.map_err(err)?;
            }
            if let Err(e) = self.execute(&tx, schema, statements).await {
                let mut f = err(e);
                if f.reason == Reason::DependentObjects {
                    let _ = tx.rollback().await;
                    self.count(1, 0);
                    let holders: Vec<String> = match session.client().query_one(sql::HOLDERS, &[&schema]).await {
                        Ok(row) => row.get(0),
                        Err(_) => Vec::new(),
                    };
                    f.message = format!("detach held (readers' access was revoked, nothing else was dropped): {}", f.message);
                    if !holders.is_empty() {
                        f.message = format!("{}; held by {}", f.message, sanitize(&holders.join(", ")));
                    }
                }
                return Err(f);
            }
            for (agg_schema, mut agg_locked) in aggregates {
                if let Some(mut marker) = agg_locked.observed.schema_marker() {
                    marker.members = marker.members.map(|m| m.into_iter().filter(|m| m.schema != schema).collect());
                    agg_locked.observed.schema_comment = Some(marker.render());
                }
                let gone = Member { connection: String::new(), schema: schema.to_owned() };
                self.rebuild_aggregate(&tx, &agg_schema, agg_locked, &gone, false, readers).await.map_err(err)?;
            }
            tx.commit().await.map_err(err)?;
            Ok(detached)
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Takes the readers' grants on an attachment's schema and their user
    /// mappings, and commits (see `plan::revoke_readers`).
    pub(super) async fn revoke_readers(&self, owner: &Owner, schema: &str) -> Result<(), Failure> {
        let err = |e: tokio_postgres::Error| classify(&e, &[]);
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            let tx = session.client().transaction().await.map_err(err)?;
            let (locked, _) = self.lock_and_observe(&tx, owner, schema, schema, "", "").await.map_err(err)?;
            let statements = plan::revoke_readers(owner, schema, &locked);
            if !statements.is_empty() {
                self.execute(&tx, schema, statements).await.map_err(err)?;
            }
            tx.commit().await.map_err(err)
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Marks an attachment's schema as orphaned (see `plan::orphan`).
    /// Returns whether a marker was written.
    pub async fn orphan(&self, owner: &Owner, schema: &str) -> Result<bool, Failure> {
        let err = |e: tokio_postgres::Error| classify(&e, &[]);
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            let tx = session.client().transaction().await.map_err(err)?;
            let (locked, _) = self.lock_and_observe(&tx, owner, schema, schema, "", "").await.map_err(err)?;
            let statements = plan::orphan(owner, schema, &locked.observed);
            let marked = !statements.is_empty();
            self.execute(&tx, schema, statements).await.map_err(err)?;
            tx.commit().await.map_err(err)?;
            Ok(marked)
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Drops an attachment's user mapping, if its server is ours (see
    /// `plan::forget_credentials`).
    pub async fn forget_credentials(&self, owner: &Owner, schema: &str) -> Result<(), Failure> {
        let err = |e: tokio_postgres::Error| classify(&e, &[]);
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            let tx = session.client().transaction().await.map_err(err)?;
            let (locked, _) = self.lock_and_observe(&tx, owner, schema, schema, "", "").await.map_err(err)?;
            self.execute(&tx, schema, plan::forget_credentials(owner, schema, &locked)).await.map_err(err)?;
            tx.commit().await.map_err(err)
        })
        .await;
        self.finish(session, result, deadline)
    }
}
