//! Attaching: the locked catalog read, the planner's statements run in one
//! transaction, and the aggregators rebuilt over the members it changed.

use super::*;

/// How long `expect_work` holds.
const WORK_EXPECTED: Duration = Duration::from_secs(10);

/// An aggregator's members' columns: those it may read, and the others.
#[derive(Default)]
pub(super) struct MemberColumns {
    columns: Vec<Column>,
    untrusted: Vec<String>,
}

impl Database {
    /// The at-rest resync: the server version, the role, the database's
    /// settings, which `readers` exist, and every managed schema, in one
    /// query.
    /// Says that attaches or detaches are about to run here: the next
    /// observation leaves its session to them rather than closing it, so
    /// that a workspace with a handful of attachments opens one session,
    /// not two.
    pub fn expect_work(&self) {
        *self.work_expected.lock().unwrap() = Some(std::time::Instant::now() + WORK_EXPECTED);
    }

    pub async fn observe_all(&self, readers: &[String]) -> Result<Observation, Failure> {
        let expected = self.work_expected.lock().unwrap().is_some_and(|until| until > std::time::Instant::now());
        if expected {
            return self.observe_for_work(readers).await;
        }
        let mut session = self.session(&self.observe).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            self.count(1, 0);
            let client = session.client();
            let err = |e: tokio_postgres::Error| classify(&e, &[]);
            // The session is new (observations close theirs): the pin is
            // read in the same round trip where the table is known to be
            // ours, and checked as a new session checks it otherwise.
            let Some(state) = &self.pin else { return client.query_one(sql::OBSERVE_ALL, &[&readers]).await.map_err(err) };
            if state.readable() {
                let workspace = state.workspace();
                match client.query_one(sql::OBSERVE_ALL_PINNED, &[&readers, &workspace]).await {
                    Ok(row) => {
                        state.accept(row.get::<_, Option<Vec<u8>>>("pin_token").as_deref())?;
                        return Ok(row);
                    }
                    Err(e) if matches!(e.code(), Some(&SqlState::UNDEFINED_TABLE | &SqlState::INVALID_SCHEMA_NAME)) => {}
                    Err(e) => return Err(err(e)),
                }
            }
            self.count(2, 0);
            if let Err(e) = pin::check(client, state, self.id).await {
                return Err(match e {
                    deadpool::managed::HookError::Backend(e) => err(e),
                    deadpool::managed::HookError::Message(m) => state.refusal().unwrap_or_else(|| Failure::new(Reason::DatabaseMoved, m)),
                });
            }
            client.query_one(sql::OBSERVE_ALL, &[&readers]).await.map_err(err)
        })
        .await;
        let row = self.finish_and_close(session, result, deadline)?;
        Ok(self.observation(&row))
    }

    /// What a row of `OBSERVE_ALL` says.
    fn observation(&self, row: &tokio_postgres::Row) -> Observation {
        let version: String = row.get("version");
        let schemas: serde_json::Value = row.get("schemas");
        let settings: Vec<String> = row.get::<_, Option<Vec<String>>>("database_settings").unwrap_or_default();
        let search_path = settings.iter().find_map(|s| s.strip_prefix("search_path=")).map(plan::parse_search_path).unwrap_or_default();
        let sessions: Vec<pin::Session> = serde_json::from_value(row.get("sessions")).unwrap_or_default();
        Observation {
            pinned: self.pin.as_ref().is_some_and(|p| p.pinned()),
            others: pin::others(self.id, row.get("pid"), sessions),
            database: self.id,
            taken: std::time::Instant::now(),
            version: version.split_whitespace().next().unwrap_or_default().to_owned(),
            role: row.get("role"),
            superuser: row.get::<_, Option<bool>>("superuser").unwrap_or(false),
            database_name: row.get("database"),
            search_path,
            roles: row.get::<_, Vec<String>>("roles").into_iter().collect(),
            catalog: parse_catalog(&schemas),
        }
    }

    /// `observe_all` on a session of the work pool, which goes back to it
    /// for the work to come (its pin was checked when it was opened).
    async fn observe_for_work(&self, readers: &[String]) -> Result<Observation, Failure> {
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            self.count(1, 0);
            session.client().query_one(sql::OBSERVE_ALL, &[&readers]).await.map_err(|e| classify(&e, &[]))
        })
        .await;
        let row = self.finish(session, result, deadline)?;
        Ok(self.observation(&row))
    }

    /// Brings one attachment to its plan in one transaction: extension,
    /// server, user mapping, schema, import, marker. Either all of it
    /// happens, or none.
    /// `suspect`: the source last timed out or could not be reached.
    /// `joins`: aggregators (their owners and schemas) that this attachment
    /// becomes a member of: when its tables change, the views of every
    /// aggregator it is (or becomes) a member of are rebuilt in the same
    /// transaction.
    pub async fn attach(&self, plan: &AttachPlan, suspect: bool, joins: &[(Owner, String)]) -> Result<Attached, Failure> {
        let secrets: Vec<&str> = plan.secrets().collect();
        let err = |e: tokio_postgres::Error| classify(&e, &secrets);
        let (mut session, _permit) = self.source_session(&self.work, suspect).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            let client = session.client();
            let tx = client.transaction().await.map_err(err)?;
            let (server, wrapper, extension) = match plan.foreign() {
                Some(f) => (f.server.as_str(), f.wrapper.as_str(), f.extension.as_str()),
                None => ("", "", ""),
            };
            let (mut locked, extension_schema) =
                self.lock_and_observe(&tx, &plan.owner, &plan.schema, server, wrapper, extension).await.map_err(err)?;
            if let Source::Aggregate(aggregate) = &plan.source {
                locked.columns = self.trusted_member_columns(&tx, &aggregate.members, err).await?;
            }
            let (change, statements) = plan::attach(plan, &locked)?;
            if statements.is_empty() {
                tracing::debug!(schema = %plan.schema, "the plan was in place under the lock");
                tx.commit().await.map_err(err)?;
                return Ok(Attached { change, tables: locked.observed.foreign_tables, held: Vec::new(), proven: false, source_hash: None });
            }
            let tables_change = plan::replaces_tables(plan, &change);
            let aggregates =
                if tables_change { self.take_down_aggregates(&tx, plan, &locked, joins).await.map_err(err)? } else { Vec::new() };
            let done = self
                .execute_for(&tx, &plan.schema, Some(server), wrapper, statements)
                .await
                .map_err(|e| with_hint(err(e), plan, &locked.role))?;
            if let Some(refused) = done.refused {
                return Err(Failure::new(Reason::SourceRefused, scrub(&refused, &secrets)));
            }
            // An import that also reads a row proves what a test proves.
            let proven = if tables_change && done.held.is_empty() {
                self.read_a_row(&tx, &plan.schema, server, done.first_owned.clone()).await.map_err(err)?
            } else {
                false
            };
            for (agg_schema, agg_locked) in aggregates {
                let joining = joins.iter().any(|(_, s)| *s == agg_schema);
                let member = Member { connection: plan.connection.clone(), schema: plan.schema.clone() };
                self.rebuild_aggregate(&tx, &agg_schema, agg_locked, &member, joining, &plan.readers).await.map_err(err)?;
            }
            tx.commit().await.map_err(err)?;
            self.after(client, plan::after_commit(plan, &change, extension_schema.as_deref())).await;
            Ok(Attached { change, tables: done.tables, held: done.held, proven, source_hash: done.source_hash })
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// The columns of an aggregator's members, refused if a view over them
    /// would read a type Manifold does not trust.
    async fn trusted_member_columns(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        members: &[Member],
        err: impl Fn(tokio_postgres::Error) -> Failure,
    ) -> Result<Vec<Column>, Failure> {
        let members = self.member_columns(tx, members).await.map_err(err)?;
        if !members.untrusted.is_empty() {
            return Err(Failure::new(
                Reason::SourceRefused,
                sanitize(&format!(
                    "a view over these columns would read types Manifold does not trust (neither built in nor from an \
                     extension the cluster admin trusts, --type-extensions): {}",
                    members.untrusted.join("; ")
                )),
            ));
        }
        Ok(members.columns)
    }

    /// An import (or a rebuild) replaces the tables that aggregators' views
    /// select from: those views come down first, and go back up after the
    /// member's statements (`rebuild_aggregate`). Only a schema or server
    /// that exists can be listed by an aggregator's marker; a new one joins
    /// those the store names.
    async fn take_down_aggregates(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        plan: &AttachPlan,
        locked: &Locked,
        joins: &[(Owner, String)],
    ) -> Result<Vec<(String, Locked)>, tokio_postgres::Error> {
        let present = locked.observed.schema_comment.is_some() || locked.observed.server_comment.is_some();
        let aggregates = self.aggregates_of(tx, &plan.schema, &plan.owner.namespace, joins, present).await?;
        for (agg_schema, agg_locked) in &aggregates {
            self.execute(tx, agg_schema, plan::aggregate_teardown(agg_schema, agg_locked)).await?;
        }
        Ok(aggregates)
    }

    /// The aggregators a member's change touches: those whose marker lists
    /// the member's schema (when `listed` says the schema may be listed: it
    /// exists), and those it `joins`, each locked (in schema order, after
    /// the member's own lock: no two transactions wait on each other in a
    /// cycle) and read.
    pub(super) async fn aggregates_of(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        member_schema: &str,
        namespace: &str,
        joins: &[(Owner, String)],
        listed: bool,
    ) -> Result<Vec<(String, Locked)>, tokio_postgres::Error> {
        let rows = if listed {
            self.count(1, 0);
            tx.query(&tx.prepare_cached(sql::AGGREGATES_OF).await?, &[&member_schema]).await?
        } else {
            Vec::new()
        };
        let mut owners: BTreeMap<String, Owner> = BTreeMap::new();
        for row in rows {
            let (schema, comment): (String, String) = (row.get("schema"), row.get("comment"));
            // An aggregator covers connections of its own namespace only: a
            // marker elsewhere that lists this schema is not read.
            if let Some(marker) = Marker::parse(&comment)
                && marker.owner.namespace == namespace
                && marker.members.as_ref().is_some_and(|m| m.iter().any(|m| m.schema == member_schema))
            {
                owners.insert(schema, marker.owner);
            }
        }
        for (owner, schema) in joins {
            owners.entry(schema.clone()).or_insert_with(|| owner.clone());
        }
        let mut locked = Vec::new();
        for (schema, owner) in owners {
            let (l, _) = self.lock_and_observe(tx, &owner, &schema, "", "", "").await?;
            // Only an aggregator's own schema, with its marker.
            if l.observed.schema_marker().is_some_and(|m| m.owner == owner && m.members.is_some()) {
                locked.push((schema, l));
            }
        }
        Ok(locked)
    }

    /// An aggregator's views again, after a member's tables changed: its
    /// members as its marker lists them, plus `member` if it is joining.
    pub(super) async fn rebuild_aggregate(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        mut locked: Locked,
        member: &Member,
        joining: bool,
        readers: &[String],
    ) -> Result<(), tokio_postgres::Error> {
        let Some(marker) = locked.observed.schema_marker() else { return Ok(()) };
        let mut members = marker.members.clone().unwrap_or_default();
        if joining && !members.iter().any(|m| m.schema == member.schema) {
            members.push(member.clone());
        }
        let plan = AttachPlan::aggregate(marker.owner.clone(), &marker.uid, "", schema, members, readers.to_vec());
        let Source::Aggregate(aggregate) = &plan.source else { return Ok(()) };
        // A member imported before types were checked may hold a column
        // of an untrusted type: the views leave it out.
        locked.columns = self.member_columns(tx, &aggregate.members).await?.columns;
        // Emptied before the member's change (`aggregate_teardown`), not
        // dropped: each is redefined in place, and one no member has any
        // more is dropped.
        let emptied = std::mem::take(&mut locked.views);
        let (views, rest): (Vec<Statement>, Vec<Statement>) =
            plan::rebuild_views(&plan, &locked).into_iter().partition(|s| matches!(s, Statement::CreateView(_)));
        let mut kept = std::collections::BTreeSet::new();
        for statement in views {
            let Statement::CreateView(view) = statement else { continue };
            kept.insert(view.name.clone());
            self.replace_view(tx, &view).await?;
        }
        let gone: Vec<Statement> = emptied
            .into_iter()
            .filter(|name| !kept.contains(name))
            .map(|name| Statement::DropView { schema: schema.to_owned(), name })
            .collect();
        self.execute(tx, schema, gone).await?;
        self.execute(tx, schema, rest).await?;
        Ok(())
    }

    /// Redefines an aggregator's view in place (`sql::replace_view`), under
    /// a savepoint; where Postgres refuses (a column goes or changes its
    /// type), drops it (RESTRICT) and creates it.
    pub(super) async fn replace_view(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        view: &plan::View,
    ) -> Result<(), tokio_postgres::Error> {
        self.count(3, 1);
        let replace = format!("SAVEPOINT manifold_view; {}; RELEASE SAVEPOINT manifold_view", sql::replace_view(view));
        match tx.batch_execute(&replace).await {
            Ok(()) => Ok(()),
            Err(e) if e.as_db_error().is_some() => {
                self.count(3, 2);
                tx.batch_execute("ROLLBACK TO SAVEPOINT manifold_view").await?;
                let drop = sql::render(&Statement::DropView { schema: view.schema.clone(), name: view.name.clone() });
                tx.batch_execute(&format!("{drop}; {}", sql::render(&Statement::CreateView(view.clone())))).await
            }
            Err(e) => Err(e),
        }
    }

    /// The columns of an aggregator's members that Manifold trusts to be
    /// read, and the others, described for a person.
    pub(super) async fn member_columns(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        members: &[Member],
    ) -> Result<MemberColumns, tokio_postgres::Error> {
        let schemas: Vec<&str> = members.iter().map(|m| m.schema.as_str()).collect();
        let trusted: &[String] = &self.type_extensions;
        self.count(1, 0);
        let mut found = MemberColumns::default();
        for r in tx.query(sql::MEMBER_COLUMNS, &[&schemas, &trusted]).await? {
            let column = Column { schema: r.get("schema"), table: r.get("table"), name: r.get("name"), type_oid: r.get("type_oid") };
            if r.get::<_, Option<bool>>("trusted").unwrap_or(false) {
                found.columns.push(column);
            } else {
                let type_name: String = r.get("type_name");
                found.untrusted.push(format!("{}.{}.{} of type {type_name}", column.schema, column.table, column.name));
            }
        }
        Ok(found)
    }

    /// Sets the database's search path, if it differs.
    pub async fn set_search_path(&self, statement: Statement) -> Result<(), Failure> {
        let err = |e: tokio_postgres::Error| classify(&e, &[]);
        let mut session = self.session(&self.work.pool).await?;
        let deadline = self.timeouts.deadline(self.timeouts.statement);
        let result = tokio::time::timeout(deadline, async {
            self.count(1, 1);
            session.client().batch_execute(&sql::render(&statement)).await.map_err(err)
        })
        .await;
        self.finish(session, result, deadline)
    }

    /// Takes the schema's advisory lock, then reads what the planner needs.
    /// Two statements: the read must see what a transaction that held the
    /// lock before us committed.
    /// `owner`: whose views in the schema count as its own.
    pub(super) async fn lock_and_observe(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        owner: &Owner,
        schema: &str,
        server: &str,
        wrapper: &str,
        extension: &str,
    ) -> Result<(Locked, Option<String>), tokio_postgres::Error> {
        self.count(2, 0);
        tx.execute(&tx.prepare_cached(sql::LOCK_SCHEMA).await?, &[&schema]).await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&schema, &server, &wrapper, &extension];
        let mut row = tx.query_one(&tx.prepare_cached(sql::OBSERVE_ABSENT).await?, &params).await?;
        let present: bool = row.get("present");
        if present {
            self.count(1, 0);
            row = tx.query_one(&tx.prepare_cached(sql::OBSERVE_ONE).await?, &params).await?;
        }
        let views: Vec<String> = row.get("views");
        let locked = Locked {
            observed: Observed {
                schema_comment: row.get("schema_comment"),
                foreign_tables: row.get("foreign_tables"),
                server_comment: row.get("server_comment"),
                mapping: row.get("mapping"),
            },
            owned_tables: row.get("owned_tables"),
            wrapper: wrapper_state(row.get("wrapper")),
            role: row.get("role"),
            readers: row.get("readers"),
            views: views
                .iter()
                .filter_map(|v| v.split_once(' '))
                .filter(|(_, comment)| Marker::parse(comment).is_some_and(|m| &m.owner == owner))
                .map(|(name, _)| name.to_owned())
                .collect(),
            columns: Vec::new(),
            server_options_public: row.get::<_, Option<bool>>("server_options_public").unwrap_or(true),
        };
        Ok((locked, row.get("extension_schema")))
    }
}
