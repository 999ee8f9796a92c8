//! The checked-in CRDs are exactly what `manifold crds` generates. Run
//! `cargo run -- crds --write crds` after changing the API types.

use std::path::Path;
use std::process::Command;

#[test]
fn checked_in_crds_match_the_generated_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = std::env::temp_dir().join(format!("manifold-crds-{}", std::process::id()));
    std::fs::create_dir_all(&generated).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .args(["crds", "--write"])
        .arg(&generated)
        .status()
        .unwrap();
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
    assert!(
        stale.is_empty(),
        "{} differ from `manifold crds`: run `cargo run -- crds --write crds`",
        stale.join(", ")
    );
}
