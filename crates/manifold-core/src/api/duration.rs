//! Durations as the CRDs and the command line spell them (`90s`, `15m`,
//! `1h30m`, `0`), parsed with checked arithmetic. The CRD bounds the digits
//! and the length, so that nothing the apiserver accepts can overflow; the
//! parser refuses the rest rather than panic.

use std::time::Duration;

/// The CEL pattern of a duration field: up to four parts of at most six
/// digits each, or `0`.
pub const PATTERN: &str = "^(0|([0-9]{1,6}(ms|s|m|h)){1,4})$";

/// The longest duration a spec can hold is 4 × 999999 h; anything longer
/// than this is clamped where it is used as a delay.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// Parses a Go-style duration. Refuses what does not match `PATTERN`'s
/// shape, and sums with checked arithmetic.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() || text.len() > 64 {
        return Err(format!("{text:?} is not a duration such as 90s, 15m or 1h30m"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{text:?} is not a duration such as 90s, 15m or 1h30m"));
        }
        let number: u64 = rest[..digits].parse().map_err(|_| format!("{text:?} is too long a duration"))?;
        rest = &rest[digits..];
        let (unit, millis) = if let Some(r) = rest.strip_prefix("ms") {
            (r, 1u64)
        } else if let Some(r) = rest.strip_prefix('s') {
            (r, 1_000)
        } else if let Some(r) = rest.strip_prefix('m') {
            (r, 60_000)
        } else if let Some(r) = rest.strip_prefix('h') {
            (r, 3_600_000)
        } else {
            return Err(format!("{text:?} needs a unit (ms, s, m or h) after each number"));
        };
        rest = unit;
        let part = number.checked_mul(millis).ok_or_else(|| format!("{text:?} is too long a duration"))?;
        total = total.checked_add(Duration::from_millis(part)).ok_or_else(|| format!("{text:?} is too long a duration"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_overflow_is_refused() {
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "h", "1", "1x", "-1s", "1.5h", "99999999999999999999h", &"9".repeat(70)] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("999999h999999h999999h999999h").is_ok());
    }

    proptest::proptest! {
        /// Nothing panics, whatever the text.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }

        /// Everything the CRD's pattern admits parses.
        #[test]
        fn the_pattern_admits_only_what_parses(text in "(0|([0-9]{1,6}(ms|s|m|h)){1,4})") {
            proptest::prop_assert!(parse(&text).is_ok());
        }
    }
}
