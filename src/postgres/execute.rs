//! Running planned statements: batches, the intruder check after an
//! import, the re-import diff, and reading one row.

use super::*;

/// What running the statements left to do: the import to check, and the
/// marker that waits for its count.
#[derive(Default)]
struct Run {
    executed: Executed,
    imported: Option<(String, String)>,
    pending_marker: Option<Marker>,
}

impl Database {
    /// Runs planned statements, in as few round trips as they allow: one,
    /// unless a minimal re-import needs its steps. A marker that waits for
    /// the table count (and the source's hash) gets them, and is written
    /// last.
    pub(super) async fn execute(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        statements: Vec<Statement>,
    ) -> Result<Executed, tokio_postgres::Error> {
        self.execute_for(tx, schema, None, "", statements).await
    }

    /// `execute`, and, if it reads the count of an import, the first
    /// foreign table that uses `server` too. What an import created is
    /// checked before anything else runs (`Executed::refused`), with the
    /// options `wrapper`'s import sets.
    pub(super) async fn execute_for(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: Option<&str>,
        wrapper: &str,
        statements: Vec<Statement>,
    ) -> Result<Executed, tokio_postgres::Error> {
        let statements = self.with_existing_readers(tx, statements).await?;
        let fresh: std::collections::BTreeSet<String> = statements
            .iter()
            .filter_map(|s| match s {
                Statement::CreateSchema { schema } => Some(schema.clone()),
                _ => None,
            })
            .collect();
        let mut run = self.run(tx, wrapper, statements).await?;
        if run.executed.refused.is_some() {
            return Ok(run.executed);
        }
        if let Some((into, server)) = run.imported {
            run.executed.refused = self.intruders(tx, &into, &server, wrapper, fresh.contains(&into)).await?;
            if run.executed.refused.is_some() {
                return Ok(run.executed);
            }
        }
        match run.pending_marker {
            Some(marker) => self.write_marker(tx, schema, server, marker, run.executed).await,
            None => Ok(run.executed),
        }
    }

    /// The statements without the grants and mappings of reader roles that
    /// do not exist: a reader role is checked in this transaction, right
    /// before its grants and mappings, since the workspace's observation
    /// may be older.
    async fn with_existing_readers(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        statements: Vec<Statement>,
    ) -> Result<Vec<Statement>, tokio_postgres::Error> {
        let roles = plan::reader_roles(&statements);
        if roles.is_empty() {
            return Ok(statements);
        }
        self.count(1, 0);
        let existing: Vec<String> = tx.query_one(&tx.prepare_cached(sql::EXISTING_ROLES).await?, &[&roles]).await?.get(0);
        Ok(plan::without_missing_roles(statements, &existing.into_iter().collect()))
    }

    /// Runs the statements in batches. Option values go ahead, as one bind
    /// parameter that the statements creating servers and mappings read
    /// (see `sql::SET_OPTIONS`); a re-import runs its own steps; a marker
    /// that waits for the import's count is kept for last.
    async fn run(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        wrapper: &str,
        statements: Vec<Statement>,
    ) -> Result<Run, tokio_postgres::Error> {
        let mut run = Run::default();
        let mut batch: Vec<String> = Vec::new();
        let specs: Vec<serde_json::Value> = statements.iter().filter_map(sql::options_spec).collect();
        if !specs.is_empty() {
            self.count(1, 0);
            tx.execute(&tx.prepare_cached(sql::SET_OPTIONS).await?, &[&sql::options_parameter(&specs)]).await?;
        }
        let mut created = 0;
        for statement in statements {
            if sql::options_spec(&statement).is_some() {
                batch.push(sql::create_with_options(created));
                created += 1;
                if created == specs.len() {
                    batch.push(sql::RESET_OPTIONS.to_owned());
                }
                continue;
            }
            match statement {
                Statement::MarkSchema { marker, .. } if marker.tables.is_none() => run.pending_marker = Some(marker),
                Statement::MarkSchema { ref marker, .. } => {
                    run.executed.tables = marker.tables.unwrap_or(0);
                    batch.push(sql::render(&statement));
                }
                Statement::Reimport { schema, server, remote_schema, filter } => {
                    self.flush(tx, &mut batch).await?;
                    match self.reimport(tx, &schema, &server, wrapper, &remote_schema, &filter).await? {
                        Ok(held) => run.executed.held.extend(held),
                        Err(refused) => {
                            run.executed.refused = Some(refused);
                            return Ok(run);
                        }
                    }
                }
                Statement::Import { ref schema, ref server, .. } => {
                    run.imported = Some((schema.clone(), server.clone()));
                    batch.push(sql::render(&statement));
                }
                other => batch.push(sql::render(&other)),
            }
        }
        self.flush(tx, &mut batch).await?;
        Ok(run)
    }

    /// Writes the marker that waited for the import: the table count, the
    /// first foreign table that uses `server`, and the source's hash.
    async fn write_marker(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: Option<&str>,
        mut marker: Marker,
        mut executed: Executed,
    ) -> Result<Executed, tokio_postgres::Error> {
        self.count(1, 0);
        let after = tx.query_one(&tx.prepare_cached(sql::AFTER_IMPORT).await?, &[&schema, &server.unwrap_or("")]).await?;
        executed.tables = after.get("tables");
        if server.is_some() {
            executed.first_owned = Some(after.get("first_owned"));
        }
        marker.tables = Some(executed.tables);
        if let Some(fp) = marker.fingerprint.as_mut().filter(|fp| fp.part("import").is_some()) {
            let columns: Vec<(String, String, String)> =
                after.try_get::<_, Option<tokio_postgres::types::Json<_>>>("columns")?.map(|json| json.0).unwrap_or_default();
            let hash = plan::source_hash(&columns);
            executed.source_hash = Some(hash.clone());
            fp.set("source", hash);
        }
        self.flush(tx, &mut vec![sql::render(&Statement::MarkSchema { schema: schema.to_owned(), marker })]).await?;
        Ok(executed)
    }

    /// What an import into `schema` through `server` created that it may
    /// not have (see `sql::IMPORT_INTRUDERS`), as a message; None if
    /// nothing. `fresh`: the schema was made in this transaction, so
    /// everything in it is the import's.
    pub(super) async fn intruders(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: &str,
        wrapper: &str,
        fresh: bool,
    ) -> Result<Option<String>, tokio_postgres::Error> {
        let (tables, columns) = match crate::plugins::imported_options(wrapper) {
            Some((tables, columns)) => (Some(tables.to_vec()), Some(columns.to_vec())),
            None => (None, None),
        };
        self.count(1, 0);
        let trusted: &[String] = &self.type_extensions;
        let row = tx
            .query_one(&tx.prepare_cached(sql::IMPORT_INTRUDERS).await?, &[&schema, &server, &tables, &columns, &fresh, &trusted])
            .await?;
        let found: Vec<String> = row.get(0);
        if found.is_empty() {
            return Ok(None);
        }
        // Raw: the caller scrubs it of the plan's secrets, then sanitizes.
        Ok(Some(format!(
            "the source's answer to the import would have created what an import may not, so nothing was imported: {}",
            found.join("; ")
        )))
    }

    pub(super) async fn flush(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        batch: &mut Vec<String>,
    ) -> Result<(), tokio_postgres::Error> {
        if batch.is_empty() {
            return Ok(());
        }
        // The options' reset rides in the batch, but is no DDL.
        let ddl = batch.iter().filter(|s| s.as_str() != sql::RESET_OPTIONS).count();
        self.count(batch.len() as u64, ddl as u64);
        tx.batch_execute(&batch.join(";\n")).await?;
        batch.clear();
        Ok(())
    }

    /// A minimal re-import (`Statement::Reimport`): a fresh import into a
    /// staging schema, then only what changed, as `plan::reimport` decides.
    /// Each drop is RESTRICT and alone, under a savepoint: a table that a
    /// user's object depends on is kept and reported, and the rest goes
    /// through. Returns what was kept, in Postgres's own words, or why the
    /// staged import was refused (see `intruders`): then nothing moved.
    pub(super) async fn reimport(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: &str,
        wrapper: &str,
        remote_schema: &str,
        filter: &plan::TableFilter,
    ) -> Result<Result<Vec<String>, String>, tokio_postgres::Error> {
        let stage = match self.stage_import(tx, schema, server, wrapper, remote_schema, filter).await? {
            Ok(stage) => stage,
            Err(refused) => return Ok(Err(refused)),
        };
        let defs = |rows: Vec<tokio_postgres::Row>| -> Vec<TableDef> {
            rows.iter().map(|r| TableDef { name: r.get(0), definition: r.get(1) }).collect()
        };
        self.count(2, 0);
        let existing = defs(tx.query(&tx.prepare_cached(sql::TABLE_DEFS).await?, &[&schema, &server]).await?);
        let staged = defs(tx.query(&tx.prepare_cached(sql::TABLE_DEFS).await?, &[&stage, &server]).await?);
        let diff = plan::reimport(&existing, &staged);
        let (held, kept) = self.drop_changed(tx, schema, diff.replace.iter().chain(&diff.remove)).await?;
        let to_move: Vec<&String> = diff.add.iter().chain(diff.replace.iter().filter(|t| !kept.contains(*t))).collect();
        let mut moves: Vec<String> = to_move
            .iter()
            .map(|t| sql::render(&Statement::MoveForeignTable { from: stage.clone(), name: (*t).clone(), to: schema.to_owned() }))
            .collect();
        let moved: std::collections::BTreeSet<&String> = to_move.into_iter().collect();
        let leftovers: Vec<String> = staged.iter().map(|t| t.name.clone()).filter(|t| !moved.contains(t)).collect();
        if let Some(drop) = sql::drop_foreign_tables(&stage, &leftovers) {
            moves.push(drop);
        }
        moves.push(sql::render(&Statement::DropSchema { schema: stage }));
        self.flush(tx, &mut moves).await?;
        Ok(Ok(held))
    }

    /// Imports the source into a staging schema and checks what the import
    /// created; the staging schema's name, or why the import is refused.
    /// The staging name is known to every role: one that took it first gets
    /// no say, the import goes to a name nobody could guess.
    async fn stage_import(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: &str,
        wrapper: &str,
        remote_schema: &str,
        filter: &plan::TableFilter,
    ) -> Result<Result<String, String>, tokio_postgres::Error> {
        let mut stage = plan::stage_schema(schema);
        self.count(1, 0);
        if tx.query_one(&tx.prepare_cached(sql::SCHEMA_EXISTS).await?, &[&stage]).await?.get::<_, bool>(0) {
            use std::hash::BuildHasher;
            stage = format!("{stage}_{:016x}", std::collections::hash_map::RandomState::new().hash_one(schema));
        }
        let import = Statement::Import {
            remote_schema: remote_schema.to_owned(),
            filter: filter.clone(),
            server: server.to_owned(),
            schema: stage.clone(),
        };
        self.flush(tx, &mut vec![sql::render(&Statement::CreateSchema { schema: stage.clone() }), sql::render(&import)]).await?;
        Ok(match self.intruders(tx, &stage, server, wrapper, true).await? {
            Some(refused) => Err(refused),
            None => Ok(stage),
        })
    }

    /// Drops each table, alone and `RESTRICT`, under a savepoint: one that
    /// something depends on stays. The messages that name what holds them,
    /// and the tables kept.
    async fn drop_changed(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        tables: impl Iterator<Item = &String>,
    ) -> Result<(Vec<String>, std::collections::BTreeSet<String>), tokio_postgres::Error> {
        let mut held = Vec::new();
        let mut kept = std::collections::BTreeSet::new();
        for table in tables {
            let drop = sql::render(&Statement::DropForeignTables { schema: schema.to_owned(), tables: vec![table.clone()] });
            self.count(2, 1);
            match tx.batch_execute(&format!("SAVEPOINT manifold_drop; {drop}; RELEASE SAVEPOINT manifold_drop")).await {
                Ok(()) => {}
                Err(e) if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT manifold_drop").await?;
                    held.push(classify(&e, &[]).message);
                    kept.insert(table.clone());
                }
                Err(e) => return Err(e),
            }
        }
        Ok((held, kept))
    }

    /// Reads one row of the first of the schema's foreign tables that use
    /// `server` (`first`, if the caller read it already), under a
    /// savepoint: whether the source lets the workspace role read, as a
    /// test would show. A refusal is not the attach's failure.
    pub(super) async fn read_a_row(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        schema: &str,
        server: &str,
        first: Option<Option<String>>,
    ) -> Result<bool, tokio_postgres::Error> {
        let first = match first {
            Some(first) => first,
            None => {
                self.count(1, 0);
                tx.query(&tx.prepare_cached(sql::OWNED_FOREIGN_TABLES).await?, &[&schema, &server]).await?.first().map(|r| r.get(0))
            }
        };
        self.count(1, 0);
        let Some(table) = first else { return Ok(true) };
        let read = format!("SAVEPOINT manifold_read; {}; RELEASE SAVEPOINT manifold_read", sql::read_one_row(schema, &table));
        match tx.batch_execute(&read).await {
            Ok(()) => Ok(true),
            Err(e) if e.as_db_error().is_some() => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT manifold_read").await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Runs what the planner says follows a transaction, on its session.
    /// Best effort: the transaction's work is done, and a session that
    /// fails here is still sound.
    pub(super) async fn after(&self, client: &Object, statements: Vec<Statement>) {
        for statement in statements {
            self.count(1, 0);
            let _ = client.batch_execute(&sql::render(&statement)).await;
        }
    }
}
