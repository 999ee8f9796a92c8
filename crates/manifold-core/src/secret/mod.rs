//! Secret values and text from elsewhere: a string type that cannot print a
//! secret, the redaction of secret values from messages, and the cleaning
//! of text that a remote server wrote (a source, a workspace) before it goes
//! into status, Events or logs.
//!
//! Which function a caller uses:
//!
//! - [`scrub`] for text a remote server wrote (an error, its detail, a
//!   notice) when a secret may be in it: a database or an API that was given
//!   a password can echo it back, and a hostile one can echo it disguised.
//!   It redacts on the raw text first, then cleans and bounds it like
//!   [`sanitize`]. `redact(&sanitize(text), secrets)` is weaker: the cut to
//!   `MAX_REMOTE_TEXT` happens before redaction looks, so up to three
//!   characters of a value that straddles the cut stay visible.
//! - [`sanitize`] for text a remote server wrote that no secret reached
//!   (names read from a catalog, say).
//! - [`redact`] for text this program composed that may carry a secret value
//!   (a message that quotes a connection string): it catches every form that
//!   `scrub` catches but neither cleans nor bounds the text.
//!
//! What redaction catches, for each secret of four characters or more: the
//! value itself; the value with whitespace, control or invisible format
//! characters inserted anywhere or removed; its SQL-quoted (`''`, `""`),
//! backslash-escaped (C, JSON, Python, Postgres `E''`), percent-encoded and
//! HTML-escaped forms; a prefix of at least four characters at the very end
//! of the text (a message cut short, perhaps followed by `…`, `...`, a
//! closing quote, or the start of an escape the cut split) and a suffix of at
//! least four characters at the very start. A shorter secret is redacted
//! where it occurs exactly. Every form of every secret is found on the same
//! text and all are replaced at once, so a value that contains another is
//! never half revealed.

mod find;
mod readings;

use std::fmt;

use find::{replace, spans};

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

/// Replaces every secret value in `text` with `***`: the exact value, and
/// for a secret of four characters or more the disguised and cut forms the
/// module documentation lists. It does not clean or bound the text; for
/// text a remote server wrote, use [`scrub`].
///
/// Redaction is visible, so it answers the question "does the message
/// contain this value?". A tenant can only put text of its own choosing into
/// a message through its own spec (a host name, say), and the admission
/// policy lets it reference only Secrets it can read; values it cannot read
/// (a workspace's URI) are redacted only from messages that carry no text of
/// the tenant's (see `postgres::Database`), so guessing them teaches nothing.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    replace(text, spans(text, secrets, false))
}

/// Makes text that a remote server wrote fit for status, Events and logs,
/// when a secret may be in it: every secret is redacted from the raw text as
/// [`redact`] does, and only then is the text cleaned and cut to
/// `MAX_REMOTE_TEXT` characters as [`sanitize`] does, so neither the
/// cleaning nor the cut can change a value before redaction looks at it.
///
/// Only the first `MAX_SCANNED_TEXT` bytes of a longer text are read; their
/// end is treated as a cut, so any part of a secret there is redacted, and
/// the result ends with `…`.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let (scanned, cut) = scanned(text);
    let mut out = sanitize(&replace(scanned, spans(scanned, secrets, cut)));
    if cut && !out.ends_with('…') {
        out.push('…');
    }
    out
}

/// The longest message, in characters, that text from a remote server may
/// put into a status, an Event or a log line.
pub const MAX_REMOTE_TEXT: usize = 400;

/// How much of a remote text, in bytes, [`scrub`] reads. A hostile server
/// can send far more than anyone will read, and text past this point could
/// only reach the output if nearly all before it were blank.
pub const MAX_SCANNED_TEXT: usize = 64 * 1024;

/// Makes text from a remote server fit for status, Events and logs: control
/// characters (escape sequences, carriage returns, NULs), invisible format
/// characters and runs of whitespace become one space, and it is cut to
/// `MAX_REMOTE_TEXT` characters. A source is hostile: its error text is
/// whatever it chose. It redacts nothing; see [`scrub`].
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REMOTE_TEXT + 4));
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        if is_blank(c) {
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

/// Whether a person sees `c` as nothing or as space: whitespace, control
/// characters, and the invisible format characters (bidirectional overrides
/// and isolates, zero-width spaces and joiners, the soft hyphen, variation
/// selectors, tags, Hangul fillers) that can disguise what a person reads.
/// `sanitize` drops them, and redaction ignores them on both sides, so a
/// value with them inserted or removed is still the value.
fn is_blank(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{34f}'
                | '\u{61c}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{17b4}'
                | '\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{feff}'
                | '\u{ffa0}'
                | '\u{fff0}'..='\u{fffb}'
                | '\u{1bca0}'..='\u{1bca3}'
                | '\u{1d173}'..='\u{1d17a}'
                | '\u{e0000}'..='\u{e0fff}'
        )
}

/// The longest start of an escape, or of a run of byte escapes, that a
/// cut split (`%F0%9F%98%8`, `\xf0\x9f\x98\x8`).
const MAX_SPLIT_ESCAPE: usize = 16;

/// The part of `text` that `scrub` reads, and whether that cut it. The cut
/// also drops an escape it may have split, whose first digits would tell
/// something about the character it encodes.
fn scanned(text: &str) -> (&str, bool) {
    if text.len() <= MAX_SCANNED_TEXT {
        return (text, false);
    }
    let mut end = MAX_SCANNED_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let tail_from = end.saturating_sub(MAX_SPLIT_ESCAPE);
    if let Some(at) = text.as_bytes()[tail_from..end].iter().rposition(|b| matches!(b, b'%' | b'\\' | b'&')) {
        end = tail_from + at;
    }
    (&text[..end], true)
}

#[cfg(test)]
mod tests;
