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

/// A secret shorter than this, in characters, is redacted only where it
/// occurs exactly. A part of a longer one at a cut is redacted when it has
/// at least this many characters that are not blanks (or all of the value's,
/// when it has fewer).
const MIN_FUZZY: usize = 4;

/// What may follow a prefix cut at the end of a message (the cut's own mark
/// or the quote around the value), at most `MAX_MARKS` of them, and what may
/// precede a suffix at its start.
const END_MARKS: &[char] = &['…', '.', '"', '\'', '`', ')', ']', '}', '>'];
const START_MARKS: &[char] = &['…', '.', '"', '\'', '`', '(', '[', '{', '<'];
const MAX_MARKS: usize = 4;

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

/// A character of a text as redaction reads it, and the bytes of the raw
/// text it came from (one character, or a whole escape).
#[derive(Clone, Copy, Debug)]
struct Unit {
    c: char,
    start: usize,
    end: usize,
}

impl Unit {
    /// One character made of the raw text from `first` through `last`.
    fn spanning(c: char, first: Unit, last: Unit) -> Unit {
        Unit { c, start: first.start, end: last.end }
    }
}

fn units_of(text: &str) -> Vec<Unit> {
    text.char_indices().map(|(i, c)| Unit { c, start: i, end: i + c.len_utf8() }).collect()
}

fn visible(units: &[Unit]) -> Vec<Unit> {
    units.iter().copied().filter(|u| !is_blank(u.c)).collect()
}

/// One way a server may have encoded what it echoes; each step decodes one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A doubled quote is one: SQL literals (`''`) and identifiers (`""`).
    Undouble(char),
    /// Backslash escapes: C, JSON (`\u0041`, surrogate pairs), Python
    /// (`\x41`, `\U00000041`), Postgres `E''` strings, and `\` before any
    /// other character meaning that character.
    Backslash,
    /// Percent-encoding (`%20`, `%C3%A9`); with `true`, `+` is a space too,
    /// as in a form or a query string.
    Percent(bool),
    /// HTML and XML character references (`&quot;`, `&#39;`, `&#x41;`).
    Html,
}

/// The readings of a text that redaction searches, each a series of steps.
/// Blanks are dropped before the first step (so that one inserted inside an
/// escape does not hide it) unless the reading says otherwise, and after
/// every step. The reading that keeps them lets `\ ` mean a space.
const READINGS: &[(bool, &[Step])] = &[
    (true, &[]),
    (true, &[Step::Undouble('\'')]),
    (true, &[Step::Undouble('"')]),
    (true, &[Step::Backslash]),
    (false, &[Step::Backslash]),
    (true, &[Step::Backslash, Step::Backslash]),
    (true, &[Step::Undouble('\''), Step::Backslash]),
    (true, &[Step::Percent(false)]),
    (true, &[Step::Percent(true)]),
    (true, &[Step::Backslash, Step::Percent(false)]),
    (true, &[Step::Html]),
];

impl Step {
    /// Whether the step can change a text with `c` in it; without any such
    /// character it changes nothing, and the reading is skipped.
    fn starts_at(self, c: char) -> bool {
        match self {
            Step::Undouble(quote) => c == quote,
            Step::Backslash => c == '\\',
            Step::Percent(plus) => c == '%' || (plus && c == '+'),
            Step::Html => c == '&',
        }
    }

    fn decode(self, units: &[Unit]) -> Vec<Unit> {
        match self {
            Step::Undouble(quote) => undouble(units, quote),
            Step::Backslash => unbackslash(units),
            Step::Percent(plus) => unpercent(units, plus),
            Step::Html => unhtml(units),
        }
    }
}

/// A reading of the raw text, and what it did (whether blanks were dropped
/// first, and the steps that changed something) so that two readings that
/// came to the same are searched once.
fn read(raw: &[Unit], drop_first: bool, steps: &[Step]) -> ((bool, Vec<Step>), Vec<Unit>) {
    let mut units = if drop_first { visible(raw) } else { raw.to_vec() };
    let mut applied = Vec::new();
    for &step in steps {
        if units.iter().any(|u| step.starts_at(u.c)) {
            units = visible(&step.decode(&units));
            applied.push(step);
        }
    }
    if applied.is_empty() {
        units.retain(|u| !is_blank(u.c));
    }
    ((drop_first || applied.is_empty(), applied), units)
}

fn undouble(units: &[Unit], quote: char) -> Vec<Unit> {
    let mut out = Vec::with_capacity(units.len());
    let mut i = 0;
    while i < units.len() {
        if units[i].c == quote && units.get(i + 1).is_some_and(|u| u.c == quote) {
            out.push(Unit::spanning(quote, units[i], units[i + 1]));
            i += 2;
        } else {
            out.push(units[i]);
            i += 1;
        }
    }
    out
}

/// A byte that an escape encodes, and the units `from..to` it came from.
struct ByteEscape {
    byte: u8,
    from: usize,
    to: usize,
}

/// Decodes a run of byte escapes as UTF-8; a byte that does not begin a
/// valid character is left as the escape's own text.
fn flush_bytes(run: &mut Vec<ByteEscape>, units: &[Unit], out: &mut Vec<Unit>) {
    let mut i = 0;
    while i < run.len() {
        let len = match run[i].byte {
            0x00..=0x7f => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        if len > 0 && i + len <= run.len() {
            let mut bytes = [0u8; 4];
            for (k, e) in run[i..i + len].iter().enumerate() {
                bytes[k] = e.byte;
            }
            if let Some(c) = std::str::from_utf8(&bytes[..len]).ok().and_then(|s| s.chars().next()) {
                out.push(Unit::spanning(c, units[run[i].from], units[run[i + len - 1].to - 1]));
                i += len;
                continue;
            }
        }
        out.extend_from_slice(&units[run[i].from..run[i].to]);
        i += 1;
    }
    run.clear();
}

/// The value of up to `max` digits in `radix` from `units[at..]`, and how
/// many digits there were (none: `None`).
fn digits(units: &[Unit], at: usize, max: usize, radix: u32) -> Option<(u32, usize)> {
    let mut value = 0u32;
    let mut count = 0;
    while count < max {
        let Some(d) = units.get(at + count).and_then(|u| u.c.to_digit(radix)) else { break };
        value = value * radix + d;
        count += 1;
    }
    (count > 0).then_some((value, count))
}

fn unpercent(units: &[Unit], plus: bool) -> Vec<Unit> {
    let mut out = Vec::with_capacity(units.len());
    let mut run = Vec::new();
    let mut i = 0;
    while i < units.len() {
        if units[i].c == '%'
            && let Some((byte, 2)) = digits(units, i + 1, 2, 16)
        {
            run.push(ByteEscape { byte: byte as u8, from: i, to: i + 3 });
            i += 3;
            continue;
        }
        flush_bytes(&mut run, units, &mut out);
        let c = if plus && units[i].c == '+' { ' ' } else { units[i].c };
        out.push(Unit { c, ..units[i] });
        i += 1;
    }
    flush_bytes(&mut run, units, &mut out);
    out
}

/// A `\u` or `\U` escape at `units[at]` (the backslash): its character and
/// the index after it. A lone surrogate is not a character.
fn unicode_escape(units: &[Unit], at: usize) -> Option<(char, usize)> {
    let kind = units.get(at + 1)?.c;
    if kind == 'u' && units.get(at + 2).is_some_and(|u| u.c == '{') {
        let (value, n) = digits(units, at + 3, 6, 16)?;
        let close = at + 3 + n;
        return (units.get(close)?.c == '}').then_some((char::from_u32(value)?, close + 1));
    }
    let width = if kind == 'U' { 8 } else { 4 };
    let (value, n) = digits(units, at + 2, width, 16)?;
    if n != width {
        return None;
    }
    let next = at + 2 + width;
    if (0xd800..0xdc00).contains(&value)
        && units.get(next).is_some_and(|u| u.c == '\\')
        && units.get(next + 1).is_some_and(|u| u.c == 'u')
        && let Some((low, 4)) = digits(units, next + 2, 4, 16)
        && (0xdc00..0xe000).contains(&low)
    {
        let c = char::from_u32(0x10000 + ((value - 0xd800) << 10) + (low - 0xdc00))?;
        return Some((c, next + 6));
    }
    Some((char::from_u32(value)?, next))
}

fn unbackslash(units: &[Unit]) -> Vec<Unit> {
    let mut out = Vec::with_capacity(units.len());
    let mut run = Vec::new();
    let mut i = 0;
    while i < units.len() {
        let Some(next) = units.get(i + 1).filter(|_| units[i].c == '\\') else {
            flush_bytes(&mut run, units, &mut out);
            out.push(units[i]);
            i += 1;
            continue;
        };
        // Bytes: `\x41`, `\101`, `\0`.
        let byte = match next.c {
            'x' => digits(units, i + 2, 2, 16).map(|(v, n)| (v, i + 2 + n)),
            '0'..='7' => match digits(units, i + 1, 3, 8) {
                Some((v, 3)) if v > 0xff => digits(units, i + 1, 2, 8).map(|(v, n)| (v, i + 1 + n)),
                found => found.map(|(v, n)| (v, i + 1 + n)),
            },
            _ => None,
        };
        if let Some((value, to)) = byte {
            run.push(ByteEscape { byte: value as u8, from: i, to });
            i = to;
            continue;
        }
        flush_bytes(&mut run, units, &mut out);
        if matches!(next.c, 'u' | 'U')
            && let Some((c, to)) = unicode_escape(units, i)
        {
            out.push(Unit::spanning(c, units[i], units[to - 1]));
            i = to;
            continue;
        }
        let c = match next.c {
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            'a' => '\u{7}',
            'e' => '\u{1b}',
            other => other,
        };
        out.push(Unit::spanning(c, units[i], *next));
        i += 2;
    }
    flush_bytes(&mut run, units, &mut out);
    out
}

fn unhtml(units: &[Unit]) -> Vec<Unit> {
    let mut out = Vec::with_capacity(units.len());
    let mut i = 0;
    while i < units.len() {
        if units[i].c == '&'
            && let Some(semi) = (i + 2..units.len().min(i + 12)).find(|&k| units[k].c == ';')
        {
            let name: String = units[i + 1..semi].iter().map(|u| u.c).collect();
            let c = match name.as_str() {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix('#')
                    .and_then(|n| match n.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => n.parse().ok(),
                    })
                    .and_then(char::from_u32),
            };
            if let Some(c) = c {
                out.push(Unit::spanning(c, units[i], units[semi]));
                i = semi + 1;
                continue;
            }
        }
        out.push(units[i]);
        i += 1;
    }
    out
}

/// A secret as redaction searches for it: its characters without blanks,
/// with the Knuth–Morris–Pratt failure function of them and of their
/// reverse.
struct Pattern {
    chars: Vec<char>,
    fail: Vec<usize>,
    reversed: Vec<char>,
    reversed_fail: Vec<usize>,
}

impl Pattern {
    fn new(secret: &str) -> Option<Pattern> {
        if secret.chars().count() < MIN_FUZZY {
            return None;
        }
        let chars: Vec<char> = secret.chars().filter(|&c| !is_blank(c)).collect();
        if chars.is_empty() {
            return None;
        }
        let reversed: Vec<char> = chars.iter().rev().copied().collect();
        Some(Pattern { fail: failure(&chars), reversed_fail: failure(&reversed), chars, reversed })
    }

    /// The shortest part of the value redacted at a cut.
    fn least(&self) -> usize {
        self.chars.len().min(MIN_FUZZY)
    }
}

/// `fail[i]`: the length of the longest proper prefix of `p[..=i]` that is
/// also a suffix of it.
fn failure(p: &[char]) -> Vec<usize> {
    let mut fail = vec![0; p.len()];
    let mut k = 0;
    for i in 1..p.len() {
        while k > 0 && p[i] != p[k] {
            k = fail[k - 1];
        }
        if p[i] == p[k] {
            k += 1;
        }
        fail[i] = k;
    }
    fail
}

/// After each character of `text` (and before the first), the length of the
/// longest prefix of `p` that ends there; `p.len()` where `p` ends there.
fn matched(p: &[char], fail: &[usize], text: impl Iterator<Item = char>) -> Vec<usize> {
    let mut states = vec![0];
    let mut k = 0;
    for c in text {
        if k == p.len() {
            k = fail[k - 1];
        }
        while k > 0 && c != p[k] {
            k = fail[k - 1];
        }
        if c == p[k] {
            k += 1;
        }
        states.push(k);
    }
    states
}

/// If `tail`, the raw text after a prefix, is what a cut leaves after it
/// (nothing but blanks and up to `MAX_MARKS` of `END_MARKS`, perhaps after
/// the start of an escape the cut split), how many of its bytes go with the
/// prefix: the split escape's.
fn cut_tail(tail: &str) -> Option<usize> {
    let mut end = tail.len();
    let mut marks = 0;
    for (i, c) in tail.char_indices().rev() {
        if END_MARKS.contains(&c) && marks < MAX_MARKS {
            marks += 1;
        } else if !is_blank(c) {
            break;
        }
        end = i;
    }
    let rest: Vec<char> = tail[..end].chars().filter(|&c| !is_blank(c)).take(MAX_SPLIT_ESCAPE + 1).collect();
    (rest.is_empty() || (rest.len() <= MAX_SPLIT_ESCAPE && is_split_escape(&rest))).then_some(end)
}

/// Whether `s` is the start of an escape, or of a run of byte escapes, that
/// a cut split: `%C3%A`, `\u00e`, `\uD83D\uDE0`, `\xc3\xa`, `&#23`, `&am`.
fn is_split_escape(s: &[char]) -> bool {
    let hex = |p: &[char], max: usize| p.len() <= max && p.iter().all(char::is_ascii_hexdigit);
    match s {
        ['%', rest @ ..] => rest.split(|&c| c == '%').all(|p| hex(p, 2)),
        ['\\', rest @ ..] => rest.split(|&c| c == '\\').all(|p| match p {
            [] => true,
            ['x', digits @ ..] => hex(digits, 2),
            ['u', '{', digits @ ..] => hex(digits, 6),
            ['u', digits @ ..] => hex(digits, 4),
            ['U', digits @ ..] => hex(digits, 8),
            digits => digits.len() <= 3 && digits.iter().all(|c| ('0'..='7').contains(c)),
        }),
        ['&', '#', 'x' | 'X', digits @ ..] => hex(digits, 6),
        ['&', '#', digits @ ..] => digits.len() <= 7 && digits.iter().all(char::is_ascii_digit),
        ['&', name @ ..] => name.len() <= 5 && name.iter().all(char::is_ascii_alphabetic),
        _ => false,
    }
}

/// Adds to `spans` the raw byte ranges of `text` where `units` (a reading of
/// it) hold `p`, a prefix of it at the end, or a suffix of it at the start.
/// With `cut`, the end is a cut this program made, and a prefix there of
/// any length is redacted.
fn find(text: &str, units: &[Unit], p: &Pattern, cut: bool, spans: &mut Vec<(usize, usize)>) {
    let (n, m) = (units.len(), p.chars.len());
    if n == 0 {
        return;
    }
    let states = matched(&p.chars, &p.fail, units.iter().map(|u| u.c));
    for end in m..=n {
        if states[end] == m {
            add(spans, (units[end - m].start, units[end - 1].end));
        }
    }
    // A prefix at the end: the tail after it is at most marks and a split
    // escape, which are units of their own in every reading.
    let least = if cut { 1 } else { p.least() };
    for end in (n.saturating_sub(MAX_MARKS + MAX_SPLIT_ESCAPE).max(1)..=n).rev() {
        let k = states[end];
        if k >= least
            && let Some(extra) = cut_tail(&text[units[end - 1].end..])
        {
            spans.push((units[end - k].start, units[end - 1].end + extra));
        }
    }
    // A suffix at the start, perhaps after marks.
    for start in 0..=MAX_MARKS.min(n - 1) {
        if start > 0 && !START_MARKS.contains(&units[start - 1].c) {
            break;
        }
        let window = units[start..(start + m).min(n)].iter().rev().map(|u| u.c);
        let k = *matched(&p.reversed, &p.reversed_fail, window).last().unwrap_or(&0);
        if k >= p.least() {
            spans.push((units[start].start, units[start + k - 1].end));
        }
    }
}

/// Adds `span` to `spans`, into the last one where the two overlap, so that
/// a text of one character repeated does not hold a span per character.
fn add(spans: &mut Vec<(usize, usize)>, span: (usize, usize)) {
    match spans.last_mut() {
        Some(last) if last.0 <= span.0 && span.0 <= last.1 => last.1 = last.1.max(span.1),
        _ => spans.push(span),
    }
}

/// The raw byte ranges of `text` that hold a secret in any form.
fn spans(text: &str, secrets: &[&str], cut: bool) -> Vec<(usize, usize)> {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    secrets.dedup();
    let mut spans = Vec::new();
    for secret in &secrets {
        for (at, s) in text.match_indices(secret) {
            add(&mut spans, (at, at + s.len()));
        }
    }
    let patterns: Vec<Pattern> = secrets.iter().filter_map(|s| Pattern::new(s)).collect();
    if patterns.is_empty() {
        return spans;
    }
    let raw = units_of(text);
    let mut done = Vec::new();
    for &(drop_first, steps) in READINGS {
        let (how, units) = read(&raw, drop_first, steps);
        if done.contains(&how) {
            continue;
        }
        done.push(how);
        for p in &patterns {
            find(text, &units, p, cut, &mut spans);
        }
    }
    spans
}

/// `text` with each of `spans`, merged where they overlap or touch, as `***`.
fn replace(text: &str, mut spans: Vec<(usize, usize)>) -> String {
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in merged {
        out.push_str(&text[at..start]);
        out.push_str("***");
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "hunter2-long-secret";

    /// What a person reads of `text`: its characters without blanks.
    fn norm(text: &str) -> String {
        text.chars().filter(|&c| !is_blank(c)).collect()
    }

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
    fn sanitize_drops_every_invisible_format_character() {
        assert_eq!(sanitize("a\u{2060}b\u{ad}c\u{e0041}d\u{fe0f}e\u{3164}f\u{2069}g"), "a b c d e f g");
    }

    #[test]
    fn debug_never_shows_a_secret() {
        assert_eq!(format!("{:?}", SecretString::new("hunter2".into())), "\"<redacted>\"");
        assert_eq!(format!("{:?}", SecretString::public("db".into())), "\"db\"");
    }

    #[test]
    fn scrub_redacts_the_exact_value() {
        assert_eq!(scrub("password hunter2-long-secret rejected", &[PW]), "password *** rejected");
        assert_eq!(scrub("hunter2-long-secret", &[PW]), "***");
        assert_eq!(scrub("a hunter2-long-secrethunter2-long-secret b", &[PW]), "a *** b");
    }

    #[test]
    fn scrub_redacts_a_secret_with_blanks_before_sanitize_changes_it() {
        let secret = "pa ss\tw\u{1}rd  9";
        assert_eq!(scrub("auth failed for pa ss\tw\u{1}rd  9!", &[secret]), "auth failed for ***!");
        // The old order turned the value into something `redact` did not know.
        assert_eq!(sanitize("for pa ss\tw\u{1}rd  9!").replace(secret, "***"), "for pa ss w rd 9!");
    }

    #[test]
    fn scrub_redacts_the_value_with_blanks_inserted() {
        let blanks = "\n \t\u{0}\u{1b}\u{7f}\u{85}\u{a0}\u{200b}\u{200f}\u{202e}\u{2066}\u{feff}\u{2060}\u{ad}\u{e0041}";
        for blank in blanks.chars().map(String::from).chain(["\r\n\t ".to_owned()]) {
            let text = format!("echo: hun{blank}ter2-long-se{blank}cret end");
            assert_eq!(scrub(&text, &[PW]), "echo: *** end", "{text:?}");
        }
        assert_eq!(scrub("h\nu n\u{200b}t e\tr 2 - l o n g - s e c r e t", &[PW]), "***");
    }

    #[test]
    fn scrub_redacts_the_value_with_blanks_removed() {
        let secret = "correct horse\tbattery\nstaple";
        assert_eq!(scrub("x correcthorsebatterystaple y", &[secret]), "x *** y");
        assert_eq!(scrub("x correct  horse battery staple y", &[secret]), "x *** y");
    }

    #[test]
    fn scrub_redacts_a_prefix_cut_at_the_end() {
        for (text, want) in [
            ("password was hunt", "password was ***"),
            ("password was hunter2-long-secre", "password was ***"),
            ("password was hun ter\n", "password was ***"),
            ("password was hunt…", "password was ***…"),
            ("password was hunter2-lo...", "password was ***..."),
            ("password was 'hunter2-lo...'", "password was '***...'"),
            ("password was (hunte)", "password was (***)"),
        ] {
            assert_eq!(scrub(text, &[PW]), want, "{text:?}");
        }
    }

    #[test]
    fn scrub_keeps_a_prefix_shorter_than_four_characters() {
        assert_eq!(scrub("password was hun", &[PW]), "password was hun");
        // Nor is a prefix redacted where the text goes on.
        assert_eq!(scrub("hunt the wumpus", &[PW]), "hunt the wumpus");
    }

    #[test]
    fn scrub_redacts_a_four_character_prefix_of_a_short_value() {
        assert_eq!(scrub("login as abcd", &["abcde"]), "login as ***");
        assert_eq!(scrub("login as abc", &["abcde"]), "login as abc");
    }

    #[test]
    fn scrub_redacts_a_suffix_at_the_start() {
        for (text, want) in [
            ("ter2-long-secret was rejected", "*** was rejected"),
            ("cret was rejected", "*** was rejected"),
            ("…ecret\" was rejected", "…***\" was rejected"),
            ("  \"...secret\" was rejected", "\"...***\" was rejected"),
        ] {
            assert_eq!(scrub(text, &[PW]), want, "{text:?}");
        }
        assert_eq!(scrub("ret was rejected", &[PW]), "ret was rejected");
    }

    #[test]
    fn scrub_redacts_a_value_that_straddles_the_400_character_cut() {
        let text = format!("{} {PW} tail", "x".repeat(396));
        let out = scrub(&text, &[PW]);
        assert_eq!(out, sanitize(&format!("{} *** tail", "x".repeat(396))));
        assert!(out.ends_with(" ***…") || out.ends_with(" *** …"), "{out}");
        // Sanitizing first cut the value, and exact redaction missed the rest.
        assert!(sanitize(&text).replace(PW, "***").ends_with(" hun…"));
    }

    #[test]
    fn scrub_cuts_to_400_characters_after_redaction() {
        // Redaction shortens the text below the limit; the end survives.
        let text = format!("{}END", format!("{PW} ").repeat(30));
        let out = scrub(&text, &[PW]);
        assert_eq!(out, format!("{}END", "*** ".repeat(30)));
        assert!(sanitize(&text).ends_with('…'));
        // A redaction that straddles the limit is cut like any text.
        let out = scrub(&format!("{}{PW}", "x".repeat(398)), &[PW]);
        assert_eq!(out, format!("{}**…", "x".repeat(398)));
    }

    #[test]
    fn scrub_redacts_the_sql_quoted_value() {
        assert_eq!(scrub("syntax error at 'pa''ss-word'", &["pa'ss-word"]), "syntax error at '***'");
        assert_eq!(scrub("no role \"pa\"\"ss-word\"", &["pa\"ss-word"]), "no role \"***\"");
        assert_eq!(scrub("'it''s ''quoted'''", &["it's 'quoted'"]), "'***'");
    }

    #[test]
    fn scrub_redacts_the_backslash_escaped_value() {
        for (secret, echoed) in [
            ("pa'ss-word", r"pa\'ss-word"),
            ("pa\"ss-word", r#"pa\"ss-word"#),
            (r"pa\ss-word", r"pa\\ss-word"),
            ("pass\nword", r"pass\nword"),
            ("pass\tword", r"pass\tword"),
            ("pa ss-word", r"pa\ ss-word"),
            ("pa'ss-word", r"pa\x27ss-word"),
            ("pa'ss-word", r"pa\047ss-word"),
            ("pä'ss-word", r"p\xc3\xa4\'ss-word"),
            ("pa\"ss-word", r#"pa\\\"ss-word"#),
            ("it's a \\ test", r"it''s a \\ test"),
        ] {
            let text = format!("value={echoed};");
            assert_eq!(scrub(&text, &[secret]), "value=***;", "{secret:?} as {echoed:?}");
        }
    }

    #[test]
    fn scrub_redacts_the_json_escaped_value() {
        let secret = "p\"a\\s\u{1}s\té-😀!";
        let json = serde_json::to_string(secret).unwrap();
        let text = format!("{{\"error\":\"bad password {}\"}}", &json[1..json.len() - 1]);
        assert_eq!(scrub(&text, &[secret]), "{\"error\":\"bad password ***\"}");
        let ascii = r#"p\"a\\s\u0001s\t\u00E9-\ud83d\ude00!"#;
        assert_eq!(scrub(&format!("[{ascii}]"), &[secret]), "[***]");
        let every = "hunter2!".chars().map(|c| format!("\\u{:04x}", c as u32)).collect::<String>();
        assert_eq!(scrub(&format!("[{every}]"), &["hunter2!"]), "[***]");
        assert_eq!(scrub(r"[\u{68}\u{75}nter2!]", &["hunter2!"]), "[***]");
    }

    #[test]
    fn scrub_redacts_the_percent_encoded_value() {
        let secret = "pa ss/wörd@1";
        for echoed in ["pa%20ss%2Fw%C3%B6rd%401", "pa%20ss%2fw%c3%b6rd%401", "pa+ss%2Fw%C3%B6rd%401", "%70%61%20ss/wörd@1"] {
            let text = format!("could not connect to postgres://u:{echoed}@host/db");
            assert_eq!(scrub(&text, &[secret]), "could not connect to postgres://u:***@host/db", "{echoed}");
        }
    }

    #[test]
    fn scrub_redacts_the_html_escaped_value() {
        let secret = "a<b>\"c'&d";
        assert_eq!(scrub("<p>a&lt;b&gt;&quot;c&#39;&amp;d</p>", &[secret]), "<p>***</p>");
        assert_eq!(scrub("<p>&#x61;&lt;b&gt;&quot;c&apos;&amp;d</p>", &[secret]), "<p>***</p>");
    }

    #[test]
    fn scrub_redacts_an_escaped_value_with_blanks_inserted() {
        for (secret, echoed) in [
            ("pa'ss-word", "pa'\u{200b}'ss-word"),
            ("pa'ss-word", "pa\\\n'ss-word"),
            ("pa ss-word", "pa%2\u{200b}0ss-word"),
            ("pa ss-word", "pa\u{200b}%20\nss-word"),
            // An escaped newline inserted where the value has none.
            (PW, r"hun\nter2-long\u200b-secret"),
            (PW, "hun%0Ater2-long%E2%80%8B-secret"),
            (PW, "hun&#8203;ter2-long&#10;-secret"),
        ] {
            let text = format!("value={echoed};");
            assert_eq!(scrub(&text, &[secret]), "value=***;", "{secret:?} as {echoed:?}");
        }
    }

    #[test]
    fn scrub_redacts_an_escape_split_by_the_cut_with_the_prefix() {
        let secret = "hunt er2-long";
        assert_eq!(scrub("uri: hunt%2", &[secret]), "uri: ***");
        assert_eq!(scrub("uri: hunt%", &[secret]), "uri: ***");
        assert_eq!(scrub("uri: hunt%20er%", &[secret]), "uri: ***");
        assert_eq!(scrub(r#"{"pw":"hunté\u00"#, &["hunté-long"]), r#"{"pw":"***"#);
        assert_eq!(scrub(r#"{"pw":"hunt\"#, &["hunt\"long"]), r#"{"pw":"***"#);
        assert_eq!(scrub("x=hunt&#3…", &["hunt'long"]), "x=***…");
    }

    #[test]
    fn scrub_redacts_every_secret_without_half_revealing_one() {
        assert_eq!(scrub("pw=abc123 and abc", &["abc", "abc123"]), "pw=*** and ***");
        // Overlapping values: all of both go.
        assert_eq!(scrub("x hunter2-long-tail-key y", &["hunter2-long", "long-tail-key"]), "x *** y");
        assert_eq!(scrub("x abc123 y", &["abc123", "123"]), "x *** y");
    }

    #[test]
    fn scrub_redacts_a_short_secret_only_where_it_occurs_exactly() {
        assert_eq!(scrub("user ab1 denied", &["ab1"]), "user *** denied");
        assert_eq!(scrub("xab1y", &["ab1"]), "x***y");
        assert_eq!(scrub("user a b1 denied", &["ab1"]), "user a b1 denied");
        assert_eq!(scrub("user ab", &["ab1"]), "user ab");
        assert_eq!(scrub("user a\nb", &["a\nb"]), "user ***");
        assert_eq!(scrub("  ", &[" "]), "***");
    }

    #[test]
    fn scrub_of_text_without_a_secret_is_sanitize() {
        let secret = "s3cr3t-Value!";
        for text in [
            "",
            "password authentication failed for user \"app\"",
            "ERROR:  syntax error at or near \"'\"\nLINE 1: select 'it''s'\n",
            "could not connect to postgres://u@host:5432/db?sslmode=require%20x",
            r#"{"error":"bad \"value\" \\ \u00e9\n"}"#,
            "<p>a &amp; b &#39;c&#39;</p>",
            "s3cr was a word here, Value! too, and secret-Value",
            "the end…",
            "at the start Value!, at the end s3cr3 here",
            "start s3cr%20 end",
        ] {
            assert_eq!(scrub(text, &[secret]), sanitize(text), "{text:?}");
        }
        let long = "the same sentence again. ".repeat(40);
        assert_eq!(scrub(&long, &[secret]), sanitize(&long));
    }

    #[test]
    fn scrub_reads_no_more_than_the_scan_limit_and_treats_its_end_as_a_cut() {
        // Blanks collapse, so the end of what is read can reach the output.
        let text = format!("{}{PW}", " ".repeat(MAX_SCANNED_TEXT - 2));
        assert_eq!(scrub(&text, &[PW]), "***…");
        // An escape split at the limit goes, not its first digit.
        let text = format!("{}%41%42", " ".repeat(MAX_SCANNED_TEXT - 2));
        assert_eq!(scrub(&text, &[PW]), "…");
        let text = format!("ok {}", "\u{200b}".repeat(40_000));
        assert_eq!(scrub(&text, &[PW]), "ok…");
    }

    #[test]
    fn scrub_of_a_hostile_100_kb_message_is_fast_and_bounded() {
        let long_secret = format!("{}b", "a".repeat(2000));
        let secrets = [long_secret.as_str(), "s3cr3t-Value!", r"\\\\x", "''''%%", "aaaa"];
        let inputs = [
            "a".repeat(100_000),
            "\\".repeat(100_000),
            "%41".repeat(33_000),
            "'".repeat(100_000),
            "&#97;".repeat(20_000),
            "a\u{200b}".repeat(30_000),
            "\\u0061".repeat(16_000),
            "…".repeat(33_000),
            "a'\"\\%+&#;\u{200b} ".repeat(8_000),
        ];
        let started = std::time::Instant::now();
        for input in &inputs {
            let out = scrub(input, &secrets);
            assert!(out.chars().count() <= MAX_REMOTE_TEXT + 1);
            let _ = redact(input, &secrets);
        }
        // Linear work takes milliseconds; a quadratic scan of these, minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn redact_catches_the_disguised_forms_too() {
        assert_eq!(redact("pw=hun\u{200b}ter2-long-se cret;", &[PW]), "pw=***;");
        assert_eq!(redact("pw=pa''ss-word;", &["pa'ss-word"]), "pw=***;");
        // The prefix that sanitize left before its mark.
        let cut = sanitize(&format!("{} {PW} tail", "x".repeat(394)));
        assert!(cut.ends_with(" hunte…"), "{cut}");
        assert_eq!(redact(&cut, &[PW]), format!("{} ***…", "x".repeat(394)));
        // It neither cleans nor bounds.
        assert_eq!(redact("a\n\nb", &[PW]), "a\n\nb");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::{Index, select};

        const SECRET_CHARS: &str = "ABCDEFGHKM01279'\"\\ \t%+&;#!$-_/@éßΩ日😀";
        const BLANKS: &str = " \n\r\t\u{0}\u{1b}\u{7f}\u{85}\u{a0}\u{200b}\u{200e}\u{202e}\u{2066}\u{2060}\u{ad}\u{feff}\u{e0020}";

        fn chars(set: &str) -> Vec<char> {
            set.chars().collect()
        }

        fn secret() -> impl Strategy<Value = String> {
            prop::collection::vec(select(chars(SECRET_CHARS)), 4..24)
                .prop_map(|chars| chars.into_iter().collect::<String>())
                .prop_filter("four visible characters", |s| norm(s).chars().count() >= 4)
        }

        /// Text around the value, of characters no secret has.
        fn filler() -> impl Strategy<Value = String> {
            "[n-z:=,. \n]{0,300}"
        }

        fn hex(bytes: &[u8], lower: bool, prefix: &str) -> String {
            bytes.iter().map(|b| if lower { format!("{prefix}{b:02x}") } else { format!("{prefix}{b:02X}") }).collect()
        }

        /// One character of the value as an encoding writes it.
        fn encode(c: char, how: u8) -> String {
            let mut utf8 = [0; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            let json = |c: char| {
                let quoted = serde_json::to_string(&c.to_string()).unwrap();
                quoted[1..quoted.len() - 1].to_owned()
            };
            match how {
                0 => {
                    if c == '\'' {
                        "''".into()
                    } else {
                        c.into()
                    }
                }
                1 => {
                    if c == '"' {
                        "\"\"".into()
                    } else {
                        c.into()
                    }
                }
                2 => match c {
                    '\\' | '\'' | '"' => format!("\\{c}"),
                    '\t' => r"\t".into(),
                    _ => c.into(),
                },
                3 => json(c),
                4 if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' => c.into(),
                4 => c.encode_utf16(&mut [0; 2]).iter().map(|u| format!("\\u{u:04x}")).collect(),
                5 | 6 if c.is_ascii_alphanumeric() => c.into(),
                5 | 6 => hex(bytes, how == 6, "%"),
                7 if c == ' ' => "+".into(),
                7 if c.is_ascii_alphanumeric() => c.into(),
                7 => hex(bytes, false, "%"),
                8 => match c {
                    '&' => "&amp;".into(),
                    '<' => "&lt;".into(),
                    '"' => "&quot;".into(),
                    '\'' => "&#39;".into(),
                    _ if c.is_ascii() && !c.is_ascii_control() => c.into(),
                    _ => format!("&#{};", c as u32),
                },
                9 => match c {
                    '\\' | '\'' => format!("\\{c}"),
                    _ if c.is_ascii() && !c.is_ascii_control() => c.into(),
                    _ => hex(bytes, true, r"\x"),
                },
                10 => json(c).chars().map(json).collect(),
                _ if c.is_ascii_alphanumeric() => c.into(),
                _ => bytes.iter().map(|b| format!("\\{b:03o}")).collect(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn scrub_never_shows_a_secret_with_blanks_inserted_and_a_cut(
                secret in secret(),
                before in filler(),
                after in filler(),
                inserts in prop::collection::vec((any::<Index>(), select(chars(BLANKS))), 0..6),
                cut_end in prop::option::of(any::<Index>()),
                cut_start in prop::option::of(any::<Index>()),
            ) {
                let mut echoed: Vec<char> = secret.chars().collect();
                for (at, blank) in inserts {
                    echoed.insert(at.index(echoed.len() + 1), blank);
                }
                let all: Vec<char> = before.chars().chain(echoed).chain(after.chars()).collect();
                let end = cut_end.map_or(all.len(), |i| i.index(all.len() + 1));
                let start = cut_start.map_or(0, |i| i.index(end + 1));
                let text: String = all[start..end].iter().collect();

                let out = scrub(&text, &[&secret]);
                let seen = norm(out.strip_suffix('…').unwrap_or(&out));
                let value: Vec<char> = norm(&secret).chars().collect();
                prop_assert!(!seen.contains(&norm(&secret)), "{text:?} became {out:?}");
                for k in MIN_FUZZY..value.len() {
                    let prefix: String = value[..k].iter().collect();
                    let suffix: String = value[value.len() - k..].iter().collect();
                    prop_assert!(!seen.ends_with(&prefix), "{text:?} became {out:?}");
                    prop_assert!(!seen.starts_with(&suffix), "{text:?} became {out:?}");
                }
            }

            #[test]
            fn scrub_never_shows_an_encoded_secret(
                secret in secret(),
                how in 0u8..12,
                before in filler(),
                after in filler(),
                inserts in prop::collection::vec((any::<Index>(), select(chars(BLANKS))), 0..4),
            ) {
                let mut chunks: Vec<String> = secret.chars().map(|c| encode(c, how)).collect();
                for (at, blank) in inserts {
                    chunks.insert(at.index(chunks.len() + 1), blank.to_string());
                }
                let encoded = chunks.concat();
                let text = format!("{before}{encoded}{after}");
                let out = scrub(&text, &[&secret]);
                let seen = norm(&out);
                prop_assert!(!seen.contains(&norm(&secret)), "{text:?} became {out:?}");
                prop_assert!(!seen.contains(&norm(&encoded)), "{text:?} became {out:?}");
            }

            #[test]
            fn scrub_of_text_without_the_secret_is_sanitize(text in "[ -~\t\n\u{e9}\u{2026}\u{200b}]{0,700}") {
                prop_assert_eq!(scrub(&text, &["s3cr3t-Value!"]), sanitize(&text));
            }

            #[test]
            fn scrub_of_text_with_pieces_of_the_secret_inside_is_sanitize(
                pieces in prop::collection::vec(
                    select(&["s3cr", "Value", "%20", "\\n", "''", "&amp;", "…", " ", "x", "-", "!", "\\\"", "%"][..]),
                    0..80,
                ),
            ) {
                let text = format!("start {} end", pieces.concat());
                prop_assert_eq!(scrub(&text, &["s3cr3t-Value!"]), sanitize(&text));
            }
        }
    }
}
