//! How redaction reads a text. The text becomes units: each a character
//! with the bytes of the raw text it came from, which for a decoded escape
//! are the whole escape. `READINGS` lists the readings searched for a
//! secret: the text as it is, and with doubled quotes, backslash escapes,
//! percent-encoding or HTML character references decoded, blanks dropped.

use super::is_blank;

/// A character of a text as redaction reads it, and the bytes of the raw
/// text it came from (one character, or a whole escape).
#[derive(Clone, Copy, Debug)]
pub(super) struct Unit {
    pub(super) c: char,
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Unit {
    /// One character made of the raw text from `first` through `last`.
    fn spanning(c: char, first: Unit, last: Unit) -> Unit {
        Unit { c, start: first.start, end: last.end }
    }
}

pub(super) fn units_of(text: &str) -> Vec<Unit> {
    text.char_indices().map(|(i, c)| Unit { c, start: i, end: i + c.len_utf8() }).collect()
}

fn visible(units: &[Unit]) -> Vec<Unit> {
    units.iter().copied().filter(|u| !is_blank(u.c)).collect()
}

/// One way a server may have encoded what it echoes; each step decodes one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
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
pub(super) const READINGS: &[(bool, &[Step])] = &[
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
pub(super) fn read(raw: &[Unit], drop_first: bool, steps: &[Step]) -> ((bool, Vec<Step>), Vec<Unit>) {
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
