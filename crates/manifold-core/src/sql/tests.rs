use super::*;

#[test]
fn option_values_travel_apart_from_the_statement_text() {
    let opts = vec![("user".to_owned(), SecretString::new("o'brien".into())), ("pass\"word".to_owned(), SecretString::new("a\\b".into()))];
    let statements = [
        Statement::CreateServer { server: "sa\"les".into(), wrapper: "postgres_fdw".into(), options: opts.clone() },
        Statement::CreateUserMapping { server: "sa\"les".into(), options: opts.clone() },
        Statement::CreateReaderMapping { server: "sa\"les".into(), role: "ann".into(), options: opts.clone() },
    ];
    let specs: Vec<serde_json::Value> = statements.iter().filter_map(options_spec).collect();
    assert_eq!(specs.len(), 3);
    assert_eq!(specs[1]["options"], serde_json::json!([["user", "o'brien"], ["pass\"word", "a\\b"]]));
    assert_eq!(specs[1]["role"], serde_json::Value::Null);
    assert_eq!(specs[2]["role"], "ann");
    assert_eq!(specs[0]["wrapper"], "postgres_fdw");
    let parameter = options_parameter(&specs);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&parameter).unwrap(), serde_json::Value::Array(specs));
    for (i, statement) in statements.iter().enumerate() {
        let text = if i == 0 { render(statement) } else { create_with_options(i) };
        assert!(!text.contains("brien") && !text.contains("a\\b") && !text.contains("sa\""), "{text}");
        assert!(text.contains(&format!("::pg_catalog.jsonb -> {i};")), "{text}");
        assert!(text.contains("EXCEPTION WHEN OTHERS THEN\n  RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = SQLERRM;"));
    }
    assert_eq!(options_spec(&Statement::DropServer { server: "x".into() }), None);
    assert!(SET_OPTIONS.contains("$1") && RESET_OPTIONS.ends_with("'', true)"));
}

#[test]
fn import_renders_filters() {
    let t = vec!["orders".to_owned(), "Line Items".to_owned()];
    assert_eq!(
        import_foreign_schema("public", &TableFilter::LimitTo(t.clone()), "s", "sales"),
        r#"IMPORT FOREIGN SCHEMA "public" LIMIT TO ("orders", "Line Items") FROM SERVER "s" INTO "sales""#
    );
    assert_eq!(
        import_foreign_schema("public", &TableFilter::Except(t), "s", "sales"),
        r#"IMPORT FOREIGN SCHEMA "public" EXCEPT ("orders", "Line Items") FROM SERVER "s" INTO "sales""#
    );
    assert_eq!(drop_foreign_tables("s", &[]), None);
    assert_eq!(drop_foreign_tables("s", &["a".into()]).unwrap(), r#"DROP FOREIGN TABLE "s"."a" RESTRICT"#);
}

use super::lex::{Token, tokens};
use proptest::prelude::*;

fn words(s: &str) -> Vec<Token> {
    s.split(' ').map(|w| Token::Word(w.into())).collect()
}

proptest! {
    /// Any name and value renders as exactly one identifier or literal
    /// token holding it: no statement can be smuggled in.
    #[test]
    fn rendered_statements_lex_back_to_their_inputs(server in "\\PC*", key in "\\PC*", value in "\\PC*", schema in "\\PC*") {
        let mut want = words("COMMENT ON SCHEMA");
        want.extend([Token::Ident(schema.clone()), Token::Word("IS".into()), Token::Literal(value.clone())]);
        prop_assert_eq!(tokens(&comment_on_schema(&schema, &value)).unwrap(), want);

        let mut want = words("DROP FOREIGN TABLE");
        want.extend([Token::Ident(schema.clone()), Token::Punct('.'), Token::Ident(key.clone()), Token::Word("RESTRICT".into())]);
        prop_assert_eq!(tokens(&drop_foreign_tables(&schema, std::slice::from_ref(&key)).unwrap()).unwrap(), want);

        let mut want = words("IMPORT FOREIGN SCHEMA");
        want.extend([Token::Ident(key.clone()), Token::Word("LIMIT".into()), Token::Word("TO".into()), Token::Punct('('),
                     Token::Ident(value.clone()), Token::Punct(')'), Token::Word("FROM".into()), Token::Word("SERVER".into()),
                     Token::Ident(server.clone()), Token::Word("INTO".into()), Token::Ident(schema.clone())]);
        prop_assert_eq!(tokens(&import_foreign_schema(&key, &TableFilter::LimitTo(vec![value.clone()]), &server, &schema)).unwrap(), want);
    }
}

#[test]
fn drops_never_cascade() {
    for stmt in [drop_server("x"), drop_schema("x"), drop_foreign_tables("x", &["t".into()]).unwrap()] {
        assert!(stmt.ends_with("RESTRICT") && !stmt.contains("CASCADE"), "{stmt}");
    }
}

/// Every function the catalog queries call is qualified with
/// pg_catalog: pinning the search path is the first guard, this the
/// second.
#[test]
fn catalog_queries_qualify_every_function() {
    let calls = [
        "obj_description(",
        "count(",
        "has_foreign_data_wrapper_privilege(",
        "pg_advisory_xact_lock(",
        "hashtext(",
        "starts_with(",
        "json_agg(",
        "json_build_object(",
        "jsonb_object_agg(",
        "current_setting(",
        "concat(",
        "aclexplode(",
        "current_database(",
        "strpos(",
        "to_jsonb(",
        "row_to_json(",
        "concat_ws(",
        "array_to_string(",
        "format_type(",
        "string_agg(",
        "jsonb_agg(",
        "jsonb_build_array(",
        "format(",
        "set_config(",
        "jsonb_array_length(",
        "jsonb_array_elements(",
        "split_part(",
        "unnest(",
        "pg_describe_object(",
        "pg_is_other_temp_schema(",
    ];
    for query in [
        OBSERVE_ONE,
        OBSERVE_ABSENT,
        AFTER_IMPORT,
        OBSERVE_WRAPPER,
        OWNED_FOREIGN_TABLES,
        OBSERVE_ALL,
        LOCK_SCHEMA,
        MEMBER_COLUMNS,
        AGGREGATES_OF,
        TABLE_DEFS,
        SOURCE_COLUMNS,
        IMPORT_INTRUDERS,
        HOLDERS,
        EXISTING_ROLES,
        SCHEMA_EXISTS,
        &lock_extension("x"),
        &create_with_options(0),
        &empty_view("s", "v"),
        SET_OPTIONS,
        RESET_OPTIONS,
    ] {
        for call in calls {
            for (i, _) in query.match_indices(call) {
                assert!(query[..i].ends_with("pg_catalog."), "unqualified {call} in {query}");
            }
        }
        for word in ["FROM pg_", "JOIN pg_"] {
            for (i, _) in query.match_indices(word) {
                assert!(query[i + word.len() - 3..].starts_with("pg_catalog."), "unqualified catalog in {query}");
            }
        }
    }
    assert_eq!(create_extension("postgres_fdw", "public"), r#"CREATE EXTENSION IF NOT EXISTS "postgres_fdw" SCHEMA "public""#);
    assert_eq!(disconnect_fdw("ext"), r#"SELECT "ext".postgres_fdw_disconnect_all()"#);
}
