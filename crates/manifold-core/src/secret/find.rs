//! Where the secrets are in a text, and the text with them replaced: each
//! secret as a pattern, searched for in every reading of the text (whole,
//! as a prefix at the end, or as a suffix at the start) with
//! Knuth–Morris–Pratt, so that a hostile text costs linear time.

use super::readings::{READINGS, Unit, read, units_of};
use super::{MAX_SPLIT_ESCAPE, is_blank};

/// A secret shorter than this, in characters, is redacted only where it
/// occurs exactly. A part of a longer one at a cut is redacted when it has
/// at least this many characters that are not blanks (or all of the value's,
/// when it has fewer).
pub(super) const MIN_FUZZY: usize = 4;

/// What may follow a prefix cut at the end of a message (the cut's own mark
/// or the quote around the value), at most `MAX_MARKS` of them, and what may
/// precede a suffix at its start.
const END_MARKS: &[char] = &['…', '.', '"', '\'', '`', ')', ']', '}', '>'];
const START_MARKS: &[char] = &['…', '.', '"', '\'', '`', '(', '[', '{', '<'];
const MAX_MARKS: usize = 4;

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
pub(super) fn spans(text: &str, secrets: &[&str], cut: bool) -> Vec<(usize, usize)> {
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
pub(super) fn replace(text: &str, mut spans: Vec<(usize, usize)>) -> String {
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
