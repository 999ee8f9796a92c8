use super::find::MIN_FUZZY;
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
