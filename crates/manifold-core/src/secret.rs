//! Secret values and text from elsewhere: a string type that cannot print a
//! secret, the redaction of secret values from messages, and the cleaning
//! of text that a remote server wrote (a source, a workspace) before it goes
//! into status, Events or logs.

use std::fmt;

/// A string that may hold a secret. Its `Debug` never shows a secret value,
/// so a plan can be logged or put in a panic message safely.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString {
    value: String,
    secret: bool,
}

impl SecretString {
    /// A secret value, from a Secret.
    pub fn new(value: String) -> Self {
        SecretString { value, secret: true }
    }

    /// A value from a spec, safe to show.
    pub fn public(value: String) -> Self {
        SecretString { value, secret: false }
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn is_secret(&self) -> bool {
        self.secret
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret { f.write_str("\"<redacted>\"") } else { fmt::Debug::fmt(&self.value, f) }
    }
}

/// Replaces every secret value in `text` with `***`, longest first, so that
/// a value that contains another is not half revealed.
///
/// Redaction is visible, so it answers the question "does the message
/// contain this value?". A tenant can only put text of its own choosing into
/// a message through its own spec (a host name, say), and the admission
/// policy lets it reference only Secrets it can read; values it cannot read
/// (a workspace's URI) are redacted only from messages that carry no text of
/// the tenant's (see `postgres::Database`), so guessing them teaches nothing.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for s in secrets {
        out = out.replace(s, "***");
    }
    out
}

/// The longest message, in characters, that text from a remote server may
/// put into a status, an Event or a log line.
pub const MAX_REMOTE_TEXT: usize = 400;

/// Makes text from a remote server fit for status, Events and logs: control
/// characters (escape sequences, carriage returns, NULs) and runs of
/// whitespace become one space, and it is cut to `MAX_REMOTE_TEXT`
/// characters. A source is hostile: its error text is whatever it chose.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REMOTE_TEXT + 4));
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        // Bidirectional overrides and other format characters can disguise
        // what a person reads; they go too.
        let blank = c.is_whitespace()
            || c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
        if blank {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        if count >= MAX_REMOTE_TEXT {
            out.push('…');
            return out;
        }
        out.push(c);
        count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_replaces_longest_first() {
        assert_eq!(redact("pw=abc123 and abc", &["abc", "abc123"]), "pw=*** and ***");
        assert_eq!(redact("nothing", &[""]), "nothing");
    }

    #[test]
    fn remote_text_is_one_bounded_line_without_controls() {
        assert_eq!(sanitize("a\nb\r\n\tc\u{1b}[31mred\u{0}x"), "a b c [31mred x");
        assert_eq!(sanitize("  lead and trail  "), "lead and trail");
        assert_eq!(sanitize("evil\u{202e}txt.exe"), "evil txt.exe");
        let long = sanitize(&"é".repeat(5000));
        assert_eq!(long.chars().count(), MAX_REMOTE_TEXT + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn debug_never_shows_a_secret() {
        assert_eq!(format!("{:?}", SecretString::new("hunter2".into())), "\"<redacted>\"");
        assert_eq!(format!("{:?}", SecretString::public("db".into())), "\"db\"");
    }
}
