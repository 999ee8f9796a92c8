//! A lexer of exactly what this module renders: words, quoted identifiers,
//! string literals (plain and `E''`), and punctuation. The tests and the
//! fuzz target (fuzz/) lex rendered statements back, to prove that every
//! value stays one token and nothing else appears.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Word(String),
    Ident(String),
    Literal(String),
    Punct(char),
}

/// Reads a quoted token that starts at `chars[*i]`, whose quote is doubled
/// inside; with `backslash`, `\\` is one backslash (E'' strings).
fn quoted(chars: &[char], i: &mut usize, quote: char, backslash: bool) -> Result<String, String> {
    let mut value = String::new();
    *i += 1;
    loop {
        match chars.get(*i) {
            None => return Err("unterminated quote".into()),
            Some(&c) if c == quote => {
                if chars.get(*i + 1) == Some(&quote) {
                    value.push(quote);
                    *i += 2;
                } else {
                    *i += 1;
                    return Ok(value);
                }
            }
            Some('\\') if backslash => match chars.get(*i + 1) {
                Some('\\') => {
                    value.push('\\');
                    *i += 2;
                }
                _ => return Err("a backslash escape other than \\\\".into()),
            },
            Some(&c) => {
                value.push(c);
                *i += 1;
            }
        }
    }
}

pub fn tokens(sql: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            out.push(Token::Ident(quoted(&chars, &mut i, '"', false)?));
        } else if c == '\'' {
            out.push(Token::Literal(quoted(&chars, &mut i, '\'', false)?));
        } else if c == 'E' && chars.get(i + 1) == Some(&'\'') {
            i += 1;
            out.push(Token::Literal(quoted(&chars, &mut i, '\'', true)?));
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else if "(),.;=".contains(c) {
            out.push(Token::Punct(c));
            i += 1;
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(out)
}
