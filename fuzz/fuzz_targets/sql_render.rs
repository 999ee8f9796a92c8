//! Fuzzes the SQL renderer: arbitrary names and values, rendered into the
//! statements Manifold runs, must lex back to exactly the expected tokens,
//! each value one identifier or literal. A failure means a value could
//! escape its quotes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manifold::postgres::plan::TableFilter;
use manifold::postgres::sql::{self, lex::Token, lex::tokens};

fn words(s: &str) -> Vec<Token> {
    s.split(' ').map(|w| Token::Word(w.into())).collect()
}

fuzz_target!(|input: (String, String, String)| {
    let (name, key, value) = input;
    // Postgres cannot hold NUL; the plugins refuse it before rendering.
    if [&name, &key, &value].iter().any(|s| s.contains('\0')) {
        return;
    }
    let mut want = words("COMMENT ON SERVER");
    want.extend([Token::Ident(name.clone()), Token::Word("IS".into()), Token::Literal(value.clone())]);
    assert_eq!(tokens(&sql::comment_on_server(&name, &value)).unwrap(), want);

    let rendered = sql::import_foreign_schema(&key, &TableFilter::Except(vec![value.clone(), name.clone()]), &name, &key);
    let mut want = words("IMPORT FOREIGN SCHEMA");
    want.extend([
        Token::Ident(key.clone()),
        Token::Word("EXCEPT".into()),
        Token::Punct('('),
        Token::Ident(value.clone()),
        Token::Punct(','),
        Token::Ident(name.clone()),
        Token::Punct(')'),
        Token::Word("FROM".into()),
        Token::Word("SERVER".into()),
        Token::Ident(name.clone()),
        Token::Word("INTO".into()),
        Token::Ident(key.clone()),
    ]);
    assert_eq!(tokens(&rendered).unwrap(), want);
});
