//! Attaching: the change a catalog read calls for, and the statements
//! that make a foreign or an aggregator schema so.

use super::*;

/// Decides the change from what the catalog shows. Refuses to touch a schema
/// or server that does not carry this attachment's marker.
pub fn decide(plan: &AttachPlan, observed: &Observed) -> Result<Change, Failure> {
    check_ownership(plan, observed)?;
    let Some(marker) = observed.schema_marker() else {
        return Ok(Change::Rebuild); // no schema yet
    };
    let Some(fp) = marker.fingerprint.as_ref() else {
        return Ok(Change::Rebuild);
    };
    let differs = |part: &str| fp.part(part) != plan.fingerprint.part(part);
    // The source's schema, as its last test saw it, against what the last
    // import brought: a new table or column at the source re-imports. Not
    // known yet (no test has run): nothing to compare.
    let source_changed = plan.fingerprint.part("source").is_some_and(|want| fp.part("source") != Some(want));
    let regrant = differs("readers");
    let tables_drifted = marker.tables != Some(observed.foreign_tables);
    match &plan.source {
        Source::Foreign(_) => {
            if observed.server_comment.is_none() || differs("server") {
                return Ok(Change::Rebuild);
            }
            let remap = differs("mapping") || !observed.mapping;
            let reimport = differs("import") || tables_drifted || source_changed;
            if remap || reimport || regrant {
                return Ok(Change::Update { remap, reimport, regrant });
            }
        }
        Source::Aggregate(_) => {
            if differs("members") || tables_drifted || marker.members.as_ref() != plan.members().as_ref() {
                return Ok(Change::Rebuild);
            }
            if regrant {
                return Ok(Change::Update { remap: false, reimport: false, regrant });
            }
        }
    }
    if marker != plan.schema_marker_as_imported(Some(observed.foreign_tables), fp) {
        return Ok(Change::Recomment);
    }
    Ok(Change::None)
}

fn check_ownership(plan: &AttachPlan, observed: &Observed) -> Result<(), Failure> {
    let conflict = |message: String| Err(Failure::new(Reason::SchemaConflict, message));
    if let Some(comment) = &observed.schema_comment {
        match Marker::parse(comment) {
            Some(m) if m.owner == plan.owner => {}
            Some(m) => return conflict(format!("schema {:?} is already managed by attachment {}", plan.schema, m.owner)),
            None => {
                return conflict(format!("schema {:?} exists and was not created by Manifold; it is left untouched", plan.schema));
            }
        }
    }
    if let (Some(comment), Some(foreign)) = (&observed.server_comment, plan.foreign()) {
        match Marker::parse(comment) {
            Some(m) if m.owner == plan.owner => {}
            _ => {
                return conflict(format!(
                    "foreign server {:?} exists and is not managed by this attachment; it is left untouched",
                    foreign.server
                ));
            }
        }
    }
    Ok(())
}

/// What makes the wrapper usable: nothing, the extension (created under a
/// lock, into `EXTENSION_SCHEMA`), or a refusal that says what to grant.
fn ensure_wrapper(plan: &Foreign, locked: &Locked) -> Result<Vec<Statement>, Failure> {
    match locked.wrapper {
        WrapperState::Usable => Ok(Vec::new()),
        WrapperState::Missing => Ok(vec![
            Statement::LockExtension { extension: plan.extension.clone() },
            Statement::CreateExtension { extension: plan.extension.clone(), schema: EXTENSION_SCHEMA.to_owned() },
        ]),
        WrapperState::NoUsage => Err(Failure::new(
            Reason::PermissionDenied,
            format!(
                "role {:?} has no USAGE on foreign-data wrapper {:?}: GRANT USAGE ON FOREIGN DATA WRAPPER {} TO {} \
                 (CloudNativePG: Database spec.fdws[].usage)",
                locked.role, plan.wrapper, plan.wrapper, locked.role
            ),
        )),
    }
}

/// Reader access as the plan wants it: what readers who left had is taken
/// back (their mappings first), and every reader gets USAGE, SELECT on
/// everything now in the schema, and, on a foreign server, its own user
/// mapping with the current credentials.
fn sync_readers(plan: &AttachPlan, locked: &Locked) -> Vec<Statement> {
    let schema = &plan.schema;
    let mut statements = Vec::new();
    for role in locked.readers.iter().filter(|r| !plan.readers.contains(r)) {
        if let Some(f) = plan.foreign() {
            statements.push(Statement::DropReaderMapping { server: f.server.clone(), role: role.clone() });
        }
        statements.push(Statement::RevokeReader { schema: schema.clone(), role: role.clone() });
    }
    if plan.readers.is_empty() {
        return statements;
    }
    statements.push(Statement::GrantReaders { schema: schema.clone(), roles: plan.readers.clone() });
    if let Some(f) = plan.foreign() {
        for role in &plan.readers {
            statements.push(Statement::DropReaderMapping { server: f.server.clone(), role: role.clone() });
            statements.push(Statement::CreateReaderMapping {
                server: f.server.clone(),
                role: role.clone(),
                options: f.mapping_options.clone(),
            });
        }
    }
    statements
}

/// The statements that bring an attachment to its plan, and the change they
/// make. Nothing of someone else's is ever touched: the ownership check
/// comes first, only the tables the attachment's own server imported and
/// the views that carry its marker are dropped, always RESTRICT.
pub fn attach(plan: &AttachPlan, locked: &Locked) -> Result<(Change, Vec<Statement>), Failure> {
    let observed = &locked.observed;
    let change = decide(plan, observed)?;
    let mut statements = match &plan.source {
        Source::Foreign(foreign) => attach_foreign(plan, foreign, &change, locked)?,
        Source::Aggregate(aggregate) => attach_aggregate(plan, aggregate, &change, locked),
    };
    if change == Change::None {
        return Ok((change, statements));
    }
    if !matches!(change, Change::Recomment) {
        statements.extend(sync_readers(plan, locked));
    }
    let marker = match (&change, observed.schema_marker().and_then(|m| m.fingerprint)) {
        // Nothing was imported: the last import's `source` stays.
        (Change::Recomment | Change::Update { reimport: false, .. }, Some(fp)) if plan.foreign().is_some() => {
            plan.schema_marker_as_imported(Some(observed.foreign_tables), &fp)
        }
        // The count (and the source's hash) once the statements ran.
        _ => plan.schema_marker(None),
    };
    statements.push(Statement::MarkSchema { schema: plan.schema.clone(), marker });
    Ok((change, statements))
}

/// A server whose options carry a Secret's values (a steampipe `config`
/// with the credentials in it) is not made where every role of the
/// database reads every server's options: only Manifold's login may read
/// a Secret's value from the catalog.
fn exposed(foreign: &Foreign, locked: &Locked) -> Result<(), Failure> {
    if foreign.embedded_secrets.is_empty() || !locked.server_options_public {
        return Ok(());
    }
    Err(Failure::new(
        Reason::SecretExposed,
        "this connection's credentials are part of its server's options, and every role of this database reads every \
         server's options (pg_foreign_server.srvoptions is granted to PUBLIC, Postgres's default): a superuser runs \
         REVOKE SELECT ON pg_catalog.pg_foreign_server FROM PUBLIC; GRANT SELECT (oid, srvname, srvowner, srvfdw, srvtype, \
         srvversion, srvacl) ON pg_catalog.pg_foreign_server TO PUBLIC; nothing was created",
    ))
}

fn attach_foreign(plan: &AttachPlan, foreign: &Foreign, change: &Change, locked: &Locked) -> Result<Vec<Statement>, Failure> {
    let observed = &locked.observed;
    let (schema, server) = (&plan.schema, &foreign.server);
    let drop_owned = || Statement::DropForeignTables { schema: schema.clone(), tables: locked.owned_tables.clone() };
    let create_mapping = || Statement::CreateUserMapping { server: server.clone(), options: foreign.mapping_options.clone() };
    let import = || Statement::Import {
        remote_schema: foreign.remote_schema.clone(),
        filter: foreign.tables.clone(),
        server: server.clone(),
        schema: schema.clone(),
    };
    let mut statements = Vec::new();
    match change {
        Change::None | Change::Recomment => {}
        Change::Update { remap, reimport, regrant: _ } => {
            if *remap {
                statements.push(Statement::DropUserMapping { server: server.clone() });
                statements.push(create_mapping());
            }
            if *reimport {
                statements.push(Statement::Reimport {
                    schema: schema.clone(),
                    server: server.clone(),
                    remote_schema: foreign.remote_schema.clone(),
                    filter: foreign.tables.clone(),
                });
            }
        }
        Change::Rebuild => {
            statements.extend(ensure_wrapper(foreign, locked)?);
            exposed(foreign, locked)?;
            if observed.schema_comment.is_some() {
                statements.push(drop_owned());
            }
            if observed.server_comment.is_some() {
                for role in &locked.readers {
                    statements.push(Statement::DropReaderMapping { server: server.clone(), role: role.clone() });
                }
                statements.push(Statement::DropUserMapping { server: server.clone() });
                statements.push(Statement::DropServer { server: server.clone() });
            }
            statements.push(Statement::CreateServer {
                server: server.clone(),
                wrapper: foreign.wrapper.clone(),
                options: foreign.server_options.clone(),
            });
            statements.push(Statement::CommentOnServer { server: server.clone(), marker: plan.server_marker() });
            statements.push(create_mapping());
            if observed.schema_comment.is_none() {
                statements.push(Statement::CreateSchema { schema: schema.clone() });
            }
            statements.push(import());
        }
    }
    statements.retain(|s| !matches!(s, Statement::DropForeignTables { tables, .. } if tables.is_empty()));
    Ok(statements)
}

fn attach_aggregate(plan: &AttachPlan, aggregate: &Aggregate, change: &Change, locked: &Locked) -> Vec<Statement> {
    let mut statements = Vec::new();
    if *change == Change::Rebuild {
        if locked.observed.schema_comment.is_none() {
            statements.push(Statement::CreateSchema { schema: plan.schema.clone() });
        }
        statements.extend(drop_views(&plan.schema, &locked.views));
        statements.extend(views(plan, aggregate, &locked.columns).into_iter().map(Statement::CreateView));
    }
    statements
}

pub(super) fn drop_views(schema: &str, views: &[String]) -> Vec<Statement> {
    views.iter().map(|name| Statement::DropView { schema: schema.to_owned(), name: name.clone() }).collect()
}

/// An aggregator's views, as Steampipe makes them: for every table name in
/// at least one member, the `UNION ALL` of the members that have it, with a
/// leading column naming the member, the union of the columns (in the order
/// they first appear), NULL where a member lacks a column, and jsonb where
/// the members disagree on its type.
pub fn views(plan: &AttachPlan, aggregate: &Aggregate, columns: &[Column]) -> Vec<View> {
    // Each member table's columns, in their order, looked up once: a scan
    // of every column per table, member and name was cubic (100 members of
    // 450 tables took minutes).
    let mut by_table: BTreeMap<(&str, &str), Vec<&Column>> = BTreeMap::new();
    for c in columns.iter().filter(|c| c.name != CONNECTION_COLUMN) {
        by_table.entry((c.schema.as_str(), c.table.as_str())).or_default().push(c);
    }
    // The tables of each member schema, the connection column counted.
    let mut by_schema: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for c in columns {
        by_schema.entry(c.schema.as_str()).or_default().insert(c.table.as_str());
    }
    let mut tables: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for member in &aggregate.members {
        for table in by_schema.get(member.schema.as_str()).into_iter().flatten() {
            tables.entry(table).or_default().push(member);
        }
    }
    let marker = plan.server_marker();
    tables
        .into_iter()
        .map(|(table, members)| {
            let of = |m: &Member| -> Vec<&Column> { by_table.get(&(m.schema.as_str(), table)).cloned().unwrap_or_default() };
            let mut names: Vec<&str> = Vec::new();
            let mut types: BTreeMap<&str, std::collections::BTreeSet<u32>> = BTreeMap::new();
            for m in &members {
                for c in of(m) {
                    if !types.contains_key(c.name.as_str()) {
                        names.push(&c.name);
                    }
                    types.entry(&c.name).or_default().insert(c.type_oid);
                }
            }
            let branches = members
                .iter()
                .map(|m| {
                    let have: std::collections::BTreeSet<&str> = of(m).iter().map(|c| c.name.as_str()).collect();
                    Branch {
                        connection: m.connection.clone(),
                        schema: m.schema.clone(),
                        values: names
                            .iter()
                            .map(|name| match have.contains(name) {
                                false => Value::Null,
                                true if types[name].len() > 1 => Value::Jsonb(name.to_string()),
                                true => Value::Column(name.to_string()),
                            })
                            .collect(),
                    }
                })
                .collect();
            View {
                schema: plan.schema.clone(),
                name: table.to_owned(),
                columns: names.iter().map(|n| n.to_string()).collect(),
                branches,
                marker: marker.clone(),
            }
        })
        .collect()
}

/// An aggregator's views rebuilt inside a member's transaction, over the
/// columns as they are after the member's change, with the readers' SELECT
/// on them and the marker with the members.
pub fn rebuild_views(plan: &AttachPlan, locked: &Locked) -> Vec<Statement> {
    let Source::Aggregate(aggregate) = &plan.source else { return Vec::new() };
    let mut statements = drop_views(&plan.schema, &locked.views);
    statements.extend(views(plan, aggregate, &locked.columns).into_iter().map(Statement::CreateView));
    if !plan.readers.is_empty() {
        statements.push(Statement::GrantReaders { schema: plan.schema.clone(), roles: plan.readers.clone() });
    }
    statements.push(Statement::MarkSchema { schema: plan.schema.clone(), marker: plan.schema_marker(None) });
    statements
}

/// An aggregator in a member's transaction: its views let go of the
/// member's tables before they change (RESTRICT would refuse otherwise) by
/// returning no row for a moment, and are redefined after, over `members`
/// (with or without the member, as it is joining, staying or leaving). A
/// view is not dropped here: a temporary view of a reader's session on it
/// would hold the member's change.
pub fn aggregate_teardown(schema: &str, locked: &Locked) -> Vec<Statement> {
    locked.views.iter().map(|name| Statement::EmptyView { schema: schema.to_owned(), name: name.clone() }).collect()
}

/// Whether a change replaces the tables that aggregators' views select
/// from: an import or a rebuild of a foreign schema. Those views come down
/// before the member's statements and go back up after them, in the same
/// transaction.
pub fn replaces_tables(plan: &AttachPlan, change: &Change) -> bool {
    matches!(change, Change::Rebuild | Change::Update { reimport: true, .. }) && plan.foreign().is_some()
}

/// What runs on the same session once an attach's transaction committed: a
/// wrapper that keeps the remote connections it opened (postgres_fdw) is
/// told to close them when anything changed, so that a pooled session holds
/// none made with settings or credentials that are gone. `extension_schema`
/// is where the lock read found the extension; none: this transaction
/// created it, in `EXTENSION_SCHEMA`.
pub fn after_commit(plan: &AttachPlan, change: &Change, extension_schema: Option<&str>) -> Vec<Statement> {
    match plan.foreign() {
        Some(f) if crate::plugins::caches_connections(&f.wrapper) && *change != Change::None => {
            vec![Statement::DisconnectFdw { extension_schema: extension_schema.unwrap_or(EXTENSION_SCHEMA).to_owned() }]
        }
        _ => Vec::new(),
    }
}

/// What runs on the same session once a test's transaction rolled back:
/// its remote connections closed, where the extension was already
/// installed (a test's own CREATE EXTENSION is rolled back with it).
pub fn after_test(plan: &AttachPlan, extension_schema: Option<&str>) -> Vec<Statement> {
    match (plan.foreign(), extension_schema) {
        (Some(f), Some(schema)) if crate::plugins::caches_connections(&f.wrapper) => {
            vec![Statement::DisconnectFdw { extension_schema: schema.to_owned() }]
        }
        _ => Vec::new(),
    }
}
