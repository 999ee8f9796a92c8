//! The code's shape, as docs/src/development.md#how-it-works promises it:
//! no import circle between the modules of the library (a reconciler's step
//! files count as their reconciler). Read from the source text, so that a
//! newcomer's reading and this test agree. Files are cut by concept, not by
//! length: nothing here counts lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source roots: the operator's crate and the core crate. Each file
/// with the root its module paths start from.
fn roots() -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![repo.join("src"), repo.join("crates/manifold-core/src")]
}

fn src() -> (PathBuf, Vec<(PathBuf, PathBuf)>) {
    let mut files = Vec::new();
    for root in roots() {
        let mut found = Vec::new();
        sources(&root, &mut found);
        files.extend(found.into_iter().map(|f| (root.clone(), f)));
    }
    files.sort();
    (Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(), files)
}

/// The product part of a file: all of it before its unit tests; nothing of
/// a file of tests.
fn product(path: &Path, text: &str) -> Vec<String> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return Vec::new();
    }
    text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).map(str::to_owned).collect()
}

/// The module a file belongs to, as a unit of the import graph: the
/// top-level module, or under `controller`, its child (a reconciler with
/// its step files is one unit).
fn unit(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn unit_of(parts: &[String]) -> String {
    match parts {
        [first, second, ..] if first == "controller" => format!("controller::{second}"),
        [first, ..] => first.clone(),
        [] => "lib".into(),
    }
}

/// Every `crate::a::b` and `super::…::x` path in the product part of each
/// file, as edges between units.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let (_, files) = src();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (root, f) in &files {
        let text = product(f, &std::fs::read_to_string(f).unwrap()).join("\n");
        let parts = unit(root, f);
        let from = unit_of(&parts);
        let mut targets = Vec::new();
        for (i, _) in text.match_indices("crate::") {
            let path: String = text[i + 7..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            targets.push(path.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>());
        }
        for (i, _) in text.match_indices("super::") {
            if i > 0 && text[..i].ends_with("super::") {
                continue; // counted from the first super
            }
            let path: String = text[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let ups = segments.iter().take_while(|s| **s == "super").count();
            // `super` of a.rs and of a/mod.rs alike is the parent of `a`.
            let base_len = parts.len().saturating_sub(ups);
            let mut target: Vec<String> = parts[..base_len].to_vec();
            target.extend(segments[ups..].iter().map(|s| s.to_string()));
            targets.push(target);
        }
        for target in targets {
            let to = unit_of(&target);
            if to != from && !to.is_empty() {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

#[test]
fn no_import_circle_between_modules() {
    let edges = imports();
    assert!(edges.get("controller::context").is_some_and(|e| e.contains("controller::admission")), "the graph is read: {edges:?}");
    // Depth-first search for a back edge.
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut circle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
            circle.push(node.to_string());
            return Some(circle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        let mut path = Vec::new();
        if let Some(circle) = visit(node, &edges, &mut path, &mut done) {
            panic!("an import circle: {}", circle.join(" -> "));
        }
    }
}
