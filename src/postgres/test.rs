//! A connection test: the attach statements in a transaction that is
//! always rolled back, one row read, and the source's shape.

use super::*;

impl Database {
    /// Tests a plan: in one transaction that is always rolled back, creates
    /// the server, the user mapping and a scratch schema, imports, and reads
    /// one row of the first imported table. Nothing is left behind. Returns
    /// the number of tables imported. `timeout` bounds every statement.
    pub async fn test(&self, plan: &AttachPlan, timeout: Duration, suspect: bool) -> Result<Tested, Failure> {
        let secrets: Vec<&str> = plan.secrets().collect();
        let err = |e: tokio_postgres::Error| classify(&e, &secrets);
        let (mut session, _permit) = self.source_session(&self.tests, suspect).await?;
        let deadline = self.timeouts.deadline(timeout);
        let result = tokio::time::timeout(deadline, async {
            let client = session.client();
            let tx = client.transaction().await.map_err(err)?;
            let ms = timeout.as_millis() as u64;
            self.count(2, 0);
            tx.batch_execute(&sql::set_timeouts(ms, ms)).await.map_err(err)?;
            let f = plan.foreign().ok_or_else(|| Failure::new(Reason::InvalidSpec, "an aggregator has no test of its own"))?;
            let row = tx
                .query_one(&tx.prepare_cached(sql::OBSERVE_WRAPPER).await.map_err(err)?, &[&f.wrapper, &f.extension])
                .await
                .map_err(err)?;
            let role: String = row.get("role");
            if self.admin_tests && row.get::<_, Option<bool>>("superuser").unwrap_or(false) {
                return Err(Failure::new(
                    Reason::SuperuserRole,
                    format!(
                        "the cluster admin's test database logs in as role {role:?}, a superuser: postgres_fdw skips its password \
                         checks for superusers, so a test there could reach whatever trust or peer authentication lets in; nothing \
                         was tested. The test database's URI (--test-database-uri-file) must name a role that is not a superuser, \
                         with USAGE on the wrappers"
                    ),
                ));
            }
            let extension_schema: Option<String> = row.get("extension_schema");
            let public = row.get::<_, Option<bool>>("server_options_public").unwrap_or(true);
            let statements = plan::test(plan, wrapper_state(row.get("wrapper")), &role, public)?;
            let done =
                self.execute_for(&tx, &plan.schema, None, &f.wrapper, statements).await.map_err(|e| with_hint(err(e), plan, &role))?;
            if let Some(refused) = done.refused {
                return Err(Failure::new(Reason::SourceRefused, scrub(&refused, &secrets)));
            }
            self.count(1, 0);
            let tables: Vec<String> =
                tx.query(sql::OWNED_FOREIGN_TABLES, &[&plan.schema, &f.server]).await.map_err(err)?.iter().map(|r| r.get(0)).collect();
            if let Some(first) = tables.first() {
                self.count(1, 0);
                tx.simple_query(&sql::read_one_row(&plan.schema, first)).await.map_err(err)?;
            }
            self.count(1, 0);
            let columns: Vec<(String, String, String)> = tx
                .query(&tx.prepare_cached(sql::SOURCE_COLUMNS).await.map_err(err)?, &[&plan.schema])
                .await
                .map_err(err)?
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let source_hash = plan::source_hash(&columns);
            let shapes = plan::table_shapes(&columns);
            tx.rollback().await.map_err(err)?;
            self.after(client, plan::after_test(plan, extension_schema.as_deref())).await;
            Ok(Tested { tables: tables.len() as i64, source_hash, shapes })
        })
        .await;
        self.finish(session, result, deadline)
    }
}
