//! The checked-in CRDs are exactly what `manifold crds` generates. Run
//! `cargo run -- crds --write crds` after changing the API types.

use std::path::Path;
use std::process::Command;

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = std::env::temp_dir().join(format!("manifold-crds-{}", std::process::id()));
    std::fs::create_dir_all(&generated).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_manifold")).args(["crds", "--write"]).arg(&generated).status().unwrap();
    assert!(status.success());

    let mut stale = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&generated).unwrap().map(|e| e.unwrap().file_name()).collect();
    files.sort();
    assert_eq!(files.len(), 3, "one file per kind");
    for file in &files {
        let want = std::fs::read_to_string(generated.join(file)).unwrap();
        let have = std::fs::read_to_string(root.join("crds").join(file)).unwrap_or_default();
        if want != have {
            stale.push(format!("crds/{}", file.to_string_lossy()));
        }
    }
    std::fs::remove_dir_all(&generated).unwrap();
    assert!(stale.is_empty(), "{} differ from `manifold crds`: run `cargo run -- crds --write crds`", stale.join(", "));
}

/// The end-to-end binaries use a harness of their own, which runs only the
/// tests listed in their main.rs: every test function must be listed.
#[test]
fn every_end_to_end_test_is_registered() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    for binary in ["e2e", "ops", "faults"] {
        let main = std::fs::read_to_string(root.join(binary).join("main.rs")).unwrap();
        for entry in std::fs::read_dir(root.join(binary)).unwrap() {
            let path = entry.unwrap().path();
            let module = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.extension().is_none_or(|e| e != "rs") || module == "main" {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for line in source.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ")
                    && let Some(name) = rest.strip_suffix("() {")
                {
                    assert!(main.contains(&format!("{module}::{name},")), "tests/{binary}/main.rs does not list {module}::{name}");
                }
            }
        }
    }
}
