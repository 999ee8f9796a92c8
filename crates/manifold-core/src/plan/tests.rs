use super::*;

#[test]
fn a_workspace_removes_its_namespaces_schemas_whoever_is_still_around() {
    let marked = |owner: &str, extra: &str| Observed {
        schema_comment: Some(format!("{MARKER_PREFIX}{owner} uid=u tables=1{extra}")),
        server_comment: Some(format!("{MARKER_PREFIX}{owner} uid=u")),
        foreign_tables: 1,
        mapping: true,
    };
    let server_only = Observed { schema_comment: None, ..marked("ns/lost", "") };
    let catalog: Vec<(String, Observed)> = vec![
        ("gone".into(), marked("ns/gone", "")),
        ("live".into(), marked("ns/live", "")),
        ("keep".into(), marked("ns/keep", "")),
        ("kept".into(), marked("ns/kept", " orphaned=true")),
        ("other_ws".into(), marked("ns/elsewhere", "")),
        ("other_ns".into(), marked("them/gone", "")),
        ("lost".into(), server_only),
        ("hand_made".into(), Observed { schema_comment: Some("mine".into()), ..Default::default() }),
    ];
    let live = |name: &str| match name {
        "live" => Some(LiveAttachment { workspace: "ws".into(), orphan: false }),
        "keep" => Some(LiveAttachment { workspace: "ws".into(), orphan: true }),
        "elsewhere" => Some(LiveAttachment { workspace: "other".into(), orphan: false }),
        _ => None,
    };
    let removal = workspace_removal("ns", "ws", catalog.iter().map(|(k, v)| (k, v)), live);
    fn names(list: &[(Owner, String)]) -> Vec<&str> {
        list.iter().map(|(_, s)| s.as_str()).collect()
    }
    assert_eq!(names(&removal.drop), ["gone", "live", "lost"]);
    assert_eq!(names(&removal.orphan), ["keep"]);
}

fn owner() -> Owner {
    Owner { namespace: "org".into(), name: "analytics-sales".into() }
}

fn plan_with(password_version: &str, tables: TableFilter, host: &str) -> AttachPlan {
    AttachPlan::new(PlanInput {
        owner: owner(),
        uid: "u-1",
        schema: "sales",
        wrapper: Wrapper {
            label: "postgres".into(),
            extension: "postgres_fdw".into(),
            wrapper: "postgres_fdw".into(),
            server_options: vec![("host".into(), SecretString::public(host.into()))],
            mapping_options: vec![("password".into(), SecretString::new("hunter2".into()))],
            remote_schema: "public".into(),
            embedded_secrets: Vec::new(),
        },
        tables,
        credentials_version: Some(password_version),
        connection: "sales",
        readers: Vec::new(),
        source_hash: None,
    })
}

fn plan() -> AttachPlan {
    plan_with("v1", TableFilter::All, "db")
}

fn applied(plan: &AttachPlan, tables: i64) -> Observed {
    plan.observed_after(tables, None)
}

fn locked(observed: Observed, owned: &[&str]) -> Locked {
    Locked {
        observed,
        owned_tables: owned.iter().map(|t| t.to_string()).collect(),
        wrapper: WrapperState::Usable,
        role: "app".into(),
        readers: Vec::new(),
        views: Vec::new(),
        columns: Vec::new(),
        server_options_public: false,
    }
}

/// The statement kinds of a plan, in order: the table of transitions
/// reads as a list of words.
fn kinds(statements: &[Statement]) -> Vec<&'static str> {
    statements
        .iter()
        .map(|s| match s {
            Statement::LockExtension { .. } => "lock-extension",
            Statement::CreateExtension { .. } => "create-extension",
            Statement::CreateServer { .. } => "create-server",
            Statement::CommentOnServer { .. } => "comment-server",
            Statement::CreateUserMapping { .. } => "create-mapping",
            Statement::DropUserMapping { .. } => "drop-mapping",
            Statement::CreateReaderMapping { .. } => "create-reader-mapping",
            Statement::DropReaderMapping { .. } => "drop-reader-mapping",
            Statement::GrantReaders { .. } => "grant",
            Statement::RevokeReader { .. } => "revoke",
            Statement::CreateView(_) => "create-view",
            Statement::DropView { .. } => "drop-view",
            Statement::EmptyView { .. } => "empty-view",
            Statement::SetSearchPath { .. } => "search-path",
            Statement::Reimport { .. } => "reimport",
            Statement::MoveForeignTable { .. } => "move",
            Statement::DropServer { .. } => "drop-server",
            Statement::CreateSchema { .. } => "create-schema",
            Statement::DropSchema { .. } => "drop-schema",
            Statement::DropForeignTables { .. } => "drop-tables",
            Statement::Import { .. } => "import",
            Statement::MarkSchema { .. } => "mark",
            Statement::DisconnectFdw { .. } => "disconnect",
        })
        .collect()
}

#[test]
fn markers_round_trip() {
    let m = plan().schema_marker(Some(20));
    assert_eq!(Marker::parse(&m.render()), Some(m.clone()));
    let orphaned = Marker { orphaned: true, ..m };
    assert_eq!(Marker::parse(&orphaned.render()), Some(orphaned));
    assert_eq!(Marker::parse("sales schema, do not touch"), None);
    assert_eq!(Marker::parse("prefix manifold.dev/owner=a/b"), None);
}

/// A marker exactly as the first version wrote it is read as the same
/// state, so an upgrade rebuilds nothing and rewrites nothing.
#[test]
fn a_marker_of_the_first_format_is_read_without_a_rebuild() {
    let p = plan();
    let [s, m, i] = ["server", "mapping", "import"].map(|k| p.fingerprint.part(k).unwrap().to_owned());
    let legacy = format!("manifold.dev/owner=org/analytics-sales uid=u-1 fingerprint={s}.{m}.{i} tables=20");
    let observed = Observed { schema_comment: Some(legacy), ..applied(&p, 20) };
    assert_eq!(decide(&p, &observed), Ok(Change::None));
    // A real marker string of that format, as a workspace holds it.
    let real = Marker::parse("manifold.dev/owner=default/analytics-sales uid=0b1f9a52-2c1e-4d0e-9d7c-5b0f3f1e2a11 fingerprint=3f2a9c1b7d4e.a1b2c3d4e5f6.9e8d7c6b5a41 tables=2").unwrap();
    let fp = real.fingerprint.unwrap();
    assert_eq!(
        (fp.part("server"), fp.part("mapping"), fp.part("import")),
        (Some("3f2a9c1b7d4e"), Some("a1b2c3d4e5f6"), Some("9e8d7c6b5a41"))
    );
    assert_eq!(real.tables, Some(2));
}

#[test]
fn unknown_parts_and_words_are_ignored() {
    let p = plan();
    let mut comment = p.schema_marker(Some(20)).render().replace("import:", "grants:0011,import:");
    comment.push_str(" future=yes");
    let observed = Observed { schema_comment: Some(comment), ..applied(&p, 20) };
    assert_eq!(decide(&p, &observed), Ok(Change::None));
}

#[test]
fn debug_never_shows_secrets() {
    let shown = format!("{:?}", plan());
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("\"db\""));
}

/// Every transition of an attach, as the statements it runs.
#[test]
fn the_transition_table() {
    let p = plan();
    let rows: Vec<(&str, AttachPlan, Locked, Change, Vec<&str>)> = vec![
        (
            "fresh database",
            p.clone(),
            locked(Observed::default(), &[]),
            Change::Rebuild,
            vec!["create-server", "comment-server", "create-mapping", "create-schema", "import", "mark"],
        ),
        ("at rest", p.clone(), locked(applied(&p, 20), &["a"]), Change::None, vec![]),
        (
            "new credentials only remap",
            plan_with("v2", TableFilter::All, "db"),
            locked(applied(&p, 20), &["a"]),
            Change::Update { remap: true, reimport: false, regrant: false },
            vec!["drop-mapping", "create-mapping", "mark"],
        ),
        (
            "new tables re-import",
            plan_with("v1", TableFilter::LimitTo(vec!["orders".into()]), "db"),
            locked(applied(&p, 20), &["a", "b"]),
            Change::Update { remap: false, reimport: true, regrant: false },
            vec!["reimport", "mark"],
        ),
        (
            "a dropped table re-imports",
            p.clone(),
            locked(Observed { foreign_tables: 19, ..applied(&p, 20) }, &["a"]),
            Change::Update { remap: false, reimport: true, regrant: false },
            vec!["reimport", "mark"],
        ),
        (
            "a dropped mapping is restored",
            p.clone(),
            locked(Observed { mapping: false, ..applied(&p, 20) }, &["a"]),
            Change::Update { remap: true, reimport: false, regrant: false },
            vec!["drop-mapping", "create-mapping", "mark"],
        ),
        (
            "new server settings rebuild",
            plan_with("v1", TableFilter::All, "db2"),
            locked(applied(&p, 20), &["a"]),
            Change::Rebuild,
            vec!["drop-tables", "drop-mapping", "drop-server", "create-server", "comment-server", "create-mapping", "import", "mark"],
        ),
        (
            "a dropped server rebuilds",
            p.clone(),
            locked(Observed { server_comment: None, ..applied(&p, 0) }, &[]),
            Change::Rebuild,
            vec!["create-server", "comment-server", "create-mapping", "import", "mark"],
        ),
        (
            "an edited uid is rewritten",
            p.clone(),
            locked(
                Observed { schema_comment: Some(p.schema_marker(Some(20)).render().replace("uid=u-1", "uid=u-0")), ..applied(&p, 20) },
                &["a"],
            ),
            Change::Recomment,
            vec!["mark"],
        ),
        (
            "an orphaned schema is adopted",
            p.clone(),
            locked(
                Observed { schema_comment: Some(format!("{} orphaned=true", p.schema_marker(Some(20)).render())), ..applied(&p, 20) },
                &["a"],
            ),
            Change::Recomment,
            vec!["mark"],
        ),
        (
            "a marker without fingerprint rebuilds",
            p.clone(),
            locked(
                Observed { schema_comment: Some(format!("{MARKER_PREFIX}org/analytics-sales uid=u-1 tables=20")), ..applied(&p, 20) },
                &["a"],
            ),
            Change::Rebuild,
            vec!["drop-tables", "drop-mapping", "drop-server", "create-server", "comment-server", "create-mapping", "import", "mark"],
        ),
        (
            "a missing extension is created under a lock",
            p.clone(),
            Locked { wrapper: WrapperState::Missing, ..locked(Observed::default(), &[]) },
            Change::Rebuild,
            vec![
                "lock-extension",
                "create-extension",
                "create-server",
                "comment-server",
                "create-mapping",
                "create-schema",
                "import",
                "mark",
            ],
        ),
    ];
    for (what, desired, observed, change, statements) in rows {
        let (got_change, got) = attach(&desired, &observed).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(got_change, change, "{what}");
        assert_eq!(kinds(&got), statements, "{what}");
    }
}

#[test]
fn a_reimport_changes_only_what_changed() {
    let def = |name: &str, d: &str| TableDef { name: name.into(), definition: d.into() };
    let existing = [def("kept", "a int"), def("changed", "a int"), def("gone", "a int")];
    let staged = [def("kept", "a int"), def("changed", "a int|b text"), def("new", "x text")];
    assert_eq!(
        reimport(&existing, &staged),
        ReimportDiff { add: vec!["new".into()], replace: vec!["changed".into()], remove: vec!["gone".into()] }
    );
    assert_eq!(reimport(&existing, &existing), ReimportDiff::default());
}

#[test]
fn each_table_has_a_shape_that_changes_with_its_columns_only() {
    let rows = |rows: &[(&str, &str, &str)]| rows.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect::<Vec<_>>();
    let before = table_shapes(&rows(&[("u", "b", "text"), ("t", "a", "integer"), ("t", "c", "text")]));
    assert_eq!(before.iter().map(|t| (t.name.as_str(), t.columns)).collect::<Vec<_>>(), [("t", 2), ("u", 1)]);
    let after = table_shapes(&rows(&[("t", "a", "bigint"), ("t", "c", "text"), ("u", "b", "text")]));
    assert_ne!(before[0].hash, after[0].hash, "a column's type changed");
    assert_eq!(before[1].hash, after[1].hash, "u did not change");
    let reordered = table_shapes(&rows(&[("t", "c", "text"), ("t", "a", "integer"), ("u", "b", "text")]));
    assert_ne!(before[0].hash, reordered[0].hash, "the column order is part of the shape");
}

#[test]
fn a_new_source_schema_reimports_and_an_unknown_one_does_not() {
    let with_source = |hash: Option<&str>| {
        let mut p = plan();
        if let Some(h) = hash {
            p.fingerprint.set("source", h.into());
        }
        p
    };
    let imported = |hash: &str| {
        let mut m = plan().schema_marker(Some(20));
        m.fingerprint.as_mut().unwrap().set("source", hash.into());
        Observed { schema_comment: Some(m.render()), ..applied(&plan(), 20) }
    };
    assert_eq!(decide(&with_source(None), &imported("h1")), Ok(Change::None), "no test yet: nothing to compare");
    assert_eq!(decide(&with_source(Some("h1")), &imported("h1")), Ok(Change::None));
    assert_eq!(decide(&with_source(Some("h2")), &imported("h1")), Ok(Change::Update { remap: false, reimport: true, regrant: false }));
    // What an attach records after its import is what the marker says:
    // the source's hash as the import found it. The Connection's first
    // test then reports the same hash, and nothing is to be done.
    let recorded = plan().observed_after(20, Some("h1"));
    assert_eq!(recorded, imported("h1"));
    assert_eq!(decide(&with_source(Some("h1")), &recorded), Ok(Change::None));
    let source_hash_of = |rows: &[(&str, &str, &str)]| {
        source_hash(&rows.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect::<Vec<_>>())
    };
    assert_ne!(source_hash_of(&[("t", "a", "integer")]), source_hash_of(&[("t", "a", "text")]));
    assert_eq!(source_hash_of(&[("t", "a", "integer"), ("u", "b", "text")]), source_hash_of(&[("u", "b", "text"), ("t", "a", "integer")]));
}

#[test]
fn drops_are_only_of_the_tables_its_server_imported() {
    let p = plan();
    let (_, statements) = attach(&plan_with("v1", TableFilter::All, "db2"), &locked(applied(&p, 2), &["orders", "customers"])).unwrap();
    assert_eq!(statements[0], Statement::DropForeignTables { schema: "sales".into(), tables: vec!["orders".into(), "customers".into()] });
}

#[test]
fn refusals_say_what_is_wrong() {
    let p = plan();
    let refused = |observed: Observed| attach(&p, &locked(observed, &[])).unwrap_err();
    let manual = refused(Observed { schema_comment: Some(String::new()), ..Default::default() });
    assert_eq!(manual.reason, Reason::SchemaConflict);
    assert!(manual.message.contains("not created by Manifold"));
    let other = refused(Observed {
        schema_comment: Some(applied(&p, 20).schema_comment.unwrap().replace("analytics-sales", "other")),
        ..applied(&p, 20)
    });
    assert!(other.message.contains("org/other"));
    let server_only = refused(Observed { server_comment: Some("theirs".into()), ..Default::default() });
    assert!(server_only.message.contains("foreign server"));
    let no_usage = attach(&p, &Locked { wrapper: WrapperState::NoUsage, ..locked(Observed::default(), &[]) }).unwrap_err();
    assert_eq!(no_usage.reason, Reason::PermissionDenied);
    assert!(no_usage.message.contains("GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO app"), "{}", no_usage.message);
}

#[test]
fn detach_touches_only_what_is_ours() {
    let p = plan();
    let ours = locked(applied(&p, 2), &["a", "b"]);
    assert_eq!(kinds(&detach(&p.owner, "sales", &ours)), ["drop-tables", "drop-schema", "drop-mapping", "drop-server"]);
    let read = Locked { readers: vec!["analyst".into()], ..locked(applied(&p, 2), &["a"]) };
    assert_eq!(
        kinds(&detach(&p.owner, "sales", &read)),
        ["drop-tables", "drop-schema", "drop-reader-mapping", "drop-mapping", "drop-server"]
    );
    let theirs = locked(Observed { schema_comment: Some("x".into()), server_comment: Some(String::new()), ..Default::default() }, &["a"]);
    assert!(detach(&p.owner, "sales", &theirs).is_empty());
    let schema_only = locked(Observed { server_comment: None, ..applied(&p, 2) }, &[]);
    assert_eq!(kinds(&detach(&p.owner, "sales", &schema_only)), ["drop-schema"]);
}

#[test]
fn a_detach_revokes_readers_first_and_only_on_what_is_ours() {
    let p = plan();
    let read = Locked { readers: vec!["analyst".into()], ..locked(applied(&p, 2), &["a"]) };
    assert_eq!(kinds(&revoke_readers(&p.owner, "sales", &read)), ["drop-reader-mapping", "revoke"]);
    assert!(revoke_readers(&p.owner, "sales", &locked(applied(&p, 2), &["a"])).is_empty());
    let theirs = Locked {
        readers: vec!["analyst".into()],
        ..locked(Observed { schema_comment: Some("x".into()), server_comment: Some(String::new()), ..Default::default() }, &[])
    };
    assert!(revoke_readers(&p.owner, "sales", &theirs).is_empty());
}

#[test]
fn held_removals_still_forget_credentials() {
    let p = plan();
    assert_eq!(kinds(&forget_credentials(&p.owner, "sales", &locked(applied(&p, 2), &[]))), ["drop-mapping"]);
    let with_readers = Locked { readers: vec!["analyst".into()], ..locked(applied(&p, 2), &[]) };
    assert_eq!(kinds(&forget_credentials(&p.owner, "sales", &with_readers)), ["drop-reader-mapping", "drop-mapping"]);
    let theirs = locked(Observed { server_comment: Some("not ours".into()), ..applied(&p, 2) }, &[]);
    assert!(forget_credentials(&p.owner, "sales", &theirs).is_empty());
}

#[test]
fn orphaning_marks_only_our_schema_once() {
    let p = plan();
    let statements = orphan(&p.owner, "sales", &applied(&p, 2));
    let [Statement::MarkSchema { marker, .. }] = statements.as_slice() else { panic!("{statements:?}") };
    assert!(marker.orphaned && marker.tables == Some(2));
    let marked = Observed { schema_comment: Some(marker.render()), ..applied(&p, 2) };
    assert!(orphan(&p.owner, "sales", &marked).is_empty());
    assert!(orphan(&Owner { namespace: "org".into(), name: "x".into() }, "sales", &applied(&p, 2)).is_empty());
}

#[test]
fn a_test_builds_without_markers() {
    let statements = test(&plan(), WrapperState::Usable, "app", true).unwrap();
    assert_eq!(kinds(&statements), ["create-server", "create-mapping", "create-schema", "import"]);
    assert_eq!(test(&plan(), WrapperState::NoUsage, "app", true).unwrap_err().reason, Reason::PermissionDenied);
}

#[test]
fn a_missing_reader_role_is_skipped() {
    let statements = vec![
        Statement::GrantReaders { schema: "s".into(), roles: vec!["ann".into(), "ghost".into()] },
        Statement::GrantReaders { schema: "t".into(), roles: vec!["ghost".into()] },
        Statement::DropReaderMapping { server: "s".into(), role: "ghost".into() },
        Statement::CreateReaderMapping { server: "s".into(), role: "ghost".into(), options: Vec::new() },
        Statement::RevokeReader { schema: "s".into(), role: "ghost".into() },
        Statement::RevokeReader { schema: "s".into(), role: "ann".into() },
        Statement::DropSchema { schema: "s".into() },
    ];
    assert_eq!(reader_roles(&statements), ["ann", "ghost"]);
    let existing = ["ann".to_owned()].into_iter().collect();
    assert_eq!(
        without_missing_roles(statements, &existing),
        [
            Statement::GrantReaders { schema: "s".into(), roles: vec!["ann".into()] },
            Statement::RevokeReader { schema: "s".into(), role: "ann".into() },
            Statement::DropSchema { schema: "s".into() },
        ]
    );
}

#[test]
fn a_wrapper_that_keeps_connections_is_told_to_close_them_after_a_change_or_a_test() {
    let pg = plan();
    let disconnect = |schema: &str| vec![Statement::DisconnectFdw { extension_schema: schema.to_owned() }];
    assert_eq!(after_commit(&pg, &Change::Rebuild, Some("ext")), disconnect("ext"));
    assert_eq!(after_commit(&pg, &Change::Rebuild, None), disconnect(EXTENSION_SCHEMA), "made by this transaction");
    assert!(after_commit(&pg, &Change::None, Some("ext")).is_empty(), "nothing ran, nothing opened");
    assert_eq!(after_test(&pg, Some("ext")), disconnect("ext"));
    assert!(after_test(&pg, None).is_empty(), "the test's own extension is rolled back with it");
    let mut mysql = plan();
    if let Source::Foreign(f) = &mut mysql.source {
        f.wrapper = "mysql_fdw".into();
    }
    assert!(after_commit(&mysql, &Change::Rebuild, Some("ext")).is_empty());
    assert!(replaces_tables(&pg, &Change::Rebuild));
    assert!(!replaces_tables(&pg, &Change::None));
}

#[test]
fn credentials_in_a_servers_options_are_not_put_where_every_role_reads_them() {
    // A steampipe config that carries the Secret's values.
    let mut steampipe = plan();
    if let Source::Foreign(f) = &mut steampipe.source {
        f.server_options = vec![("config".into(), SecretString::new("token = \"s3cret\"\n".into()))];
        f.mapping_options = Vec::new();
        f.embedded_secrets = vec![SecretString::new("s3cret".into())];
    }
    let public = Locked { server_options_public: true, ..locked(Observed::default(), &[]) };
    let refused = attach(&steampipe, &public).unwrap_err();
    assert_eq!(refused.reason, Reason::SecretExposed);
    assert!(refused.message.contains("REVOKE SELECT ON pg_catalog.pg_foreign_server FROM PUBLIC"), "{}", refused.message);
    assert!(!refused.message.contains("s3cret"));
    assert_eq!(test(&steampipe, WrapperState::Usable, "app", true).unwrap_err().reason, Reason::SecretExposed, "a test too");
    // Where an admin closed the column, it is made.
    assert!(attach(&steampipe, &locked(Observed::default(), &[])).is_ok());
    // A password in a user mapping is not a server option: unaffected.
    assert!(attach(&plan(), &public).is_ok());
}
