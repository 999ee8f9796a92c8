//! Secret values become HCL arguments of a steampipe plugin's `config`. Parsed
//! by HashiCorp's HCL (tests/hclcheck, the library Steampipe uses), each must
//! come back as the same string: quotes, backslashes, newlines and `${...}`
//! or `%{...}` stay data and are never interpolated.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use manifold::api::{PluginSpec, SteampipePlugin};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn hclcheck() -> PathBuf {
    let dir = std::env::var_os("MANIFOLD_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane/bin"));
    let bin = dir.join("hclcheck");
    assert!(bin.exists(), "{} is missing: run tests/controlplane/build.sh", bin.display());
    bin
}

/// Renders the plugin config for `secrets` and parses it with real HCL.
fn parse(config: Option<&str>, secrets: &BTreeMap<String, Vec<u8>>) -> Result<BTreeMap<String, String>, String> {
    let plugin = PluginSpec {
        postgres: None,
        steampipe: Some(SteampipePlugin { name: "aws".into(), config: config.map(str::to_owned) }),
        fdw: None,
    };
    let wrapper = manifold::plugins::resolve(&plugin, "aws", Some(secrets), &Default::default()).map_err(|e| e.to_string())?;
    let rendered = wrapper.server_options[0].1.expose().to_owned();
    let mut child = Command::new(hclcheck()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(rendered.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(format!("HCL refused {rendered:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn hostile_values_stay_data() {
    for value in [
        "plain",
        "say \"hi\"",
        "back\\slash\\",
        "${env.AWS_SECRET}",
        "$${already}",
        "%{ if true }x%{ endif }",
        "line1\nline2\r\n\ttab",
        "'single' and `backtick`",
        "ends with a dollar $",
        "ünïcödé 😀",
    ] {
        let secrets = BTreeMap::from([("secret_key".to_owned(), value.as_bytes().to_vec())]);
        let parsed = parse(Some("regions = [\"*\"]"), &secrets).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(parsed.get("secret_key").map(String::as_str), Some(value), "{value:?}");
        assert!(parsed.contains_key("regions"), "the user's own config is kept");
    }
}

#[test]
fn generated_values_stay_data() {
    let mut runner = TestRunner::new(Config { cases: 200, failure_persistence: None, ..Config::default() });
    // Printable text, plus the sequences HCL treats specially.
    let values = prop_oneof![
        "\\PC*",
        prop::collection::vec(prop::sample::select(vec!["$", "{", "}", "%", "\"", "\\", "\n", "x", "${", "%{", "$${"]), 0..16)
            .prop_map(|p| p.concat()),
    ];
    runner
        .run(&values, |value| {
            let secrets = BTreeMap::from([("token".to_owned(), value.as_bytes().to_vec())]);
            match parse(None, &secrets) {
                Ok(parsed) => prop_assert_eq!(parsed.get("token"), Some(&value)),
                // HCL would normalize it: refused up front, never changed.
                Err(e) if e.contains("not in Unicode NFC form") => {
                    prop_assert!(!unicode_normalization::is_nfc(&value))
                }
                Err(e) => return Err(TestCaseError::fail(e)),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn values_hcl_would_normalize_are_refused() {
    // "A" followed by a combining ring: HCL would turn it into "Å".
    let secrets = BTreeMap::from([("token".to_owned(), "A\u{30a}".as_bytes().to_vec())]);
    let err = parse(None, &secrets).unwrap_err();
    assert!(err.contains("not in Unicode NFC form") && err.contains("token"), "{err}");
}
