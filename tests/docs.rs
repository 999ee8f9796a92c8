//! The book in `docs/` (mdBook). Its API reference is what the checked-in
//! CRDs say, and every relative link in it and in the README leads to a file
//! and a heading that exist.
//!
//! `MANIFOLD_WRITE_DOCS=1 cargo test --test docs` rewrites
//! `docs/src/reference/api.md` from `crds/*.yaml` (after
//! `cargo run -- crds --write crds`).

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;
use std::path::{Component, Path, PathBuf};

const API_MD: &str = "docs/src/reference/api.md";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn book() -> PathBuf {
    root().join("docs/src")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// The API reference

#[test]
fn api_reference_is_what_the_crds_say() {
    let rendered = render_api(&root().join("crds"));
    let path = root().join(API_MD);
    if std::env::var("MANIFOLD_WRITE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != rendered {
        let line =
            have.lines().zip(rendered.lines()).position(|(a, b)| a != b).unwrap_or(have.lines().count().min(rendered.lines().count()));
        let at = |text: &str| text.lines().nth(line).unwrap_or("(end of file)").to_string();
        panic!(
            "{API_MD} differs from what crds/*.yaml render (first at line {}):\n  have: {}\n  want: {}\n\
             Run `MANIFOLD_WRITE_DOCS=1 cargo test --test docs` to rewrite it.",
            line + 1,
            at(&have),
            at(&rendered)
        );
    }
}

fn render_api(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no CRDs in {}", dir.display());
    let mut out = String::from(
        "# API reference\n\n\
         <!-- Generated from crds/*.yaml by tests/docs.rs. Do not edit: run\n     \
         MANIFOLD_WRITE_DOCS=1 cargo test --test docs -->\n\n\
         Every field of the three kinds, as the CRDs in `crds/` declare it (they are\n\
         generated from the Rust types by `manifold crds`). `kubectl explain` shows the\n\
         same descriptions. A field is listed with its path from the object's root;\n\
         `[]` stands for every item of a list and `*` for every value of a map.\n\
         Validation rules are checked by the apiserver itself (CEL,\n\
         `x-kubernetes-validations`): an object that breaks one is refused with its\n\
         message.\n",
    );
    for file in files {
        let crd: Value = serde_saphyr::from_str(&read(&file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        render_crd(&mut out, &crd);
    }
    out
}

fn render_crd(out: &mut String, crd: &Value) {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let kind = names["kind"].as_str().expect("spec.names.kind");
    let group = spec["group"].as_str().expect("spec.group");
    let versions = spec["versions"].as_array().expect("spec.versions");
    for version in versions {
        let v = version["name"].as_str().expect("version name");
        let title = if versions.len() > 1 { format!("{kind} {v}") } else { kind.to_string() };
        let _ = write!(out, "\n## {title}\n\n`apiVersion: {group}/{v}`, `kind: {kind}`");
        let _ = write!(out, "; {}", spec["scope"].as_str().unwrap_or("Namespaced").to_lowercase());
        let shorts = strings(&names["shortNames"]);
        if !shorts.is_empty() {
            let _ = write!(out, "; short names {}", list(&shorts));
        }
        let categories = strings(&names["categories"]);
        if !categories.is_empty() {
            let _ = write!(out, "; categories {}", list(&categories));
        }
        if version["subresources"].get("status").is_some() {
            out.push_str("; status is a subresource");
        }
        out.push_str(".\n");
        let schema = &version["schema"]["openAPIV3Schema"];
        if let Some(d) = schema["description"].as_str() {
            let _ = write!(out, "\n{}\n", markdown(d, false));
        }
        render_columns(out, &version["additionalPrinterColumns"]);
        let (mut rows, mut rules) = (Vec::new(), Vec::new());
        walk(schema, "", &mut rows, &mut rules);
        let _ = write!(out, "\n### {title} fields\n\n| field | type | required | default | description |\n|---|---|---|---|---|\n");
        for row in &rows {
            let _ = writeln!(out, "| {} | {} | {} | {} | {} |", code(&row.path, true), row.ty, row.required, row.default, row.description);
        }
        if !rules.is_empty() {
            let _ = write!(out, "\n### {title} validation rules\n\n| field | message | rule |\n|---|---|---|\n");
            for rule in &rules {
                let path = if rule.path.is_empty() { format!("the {kind}") } else { code(&rule.path, true) };
                let _ = writeln!(out, "| {path} | {} | {} |", plain(&rule.message), code(&rule.rule, true));
            }
        }
    }
}

fn render_columns(out: &mut String, columns: &Value) {
    let Some(columns) = columns.as_array().filter(|c| !c.is_empty()) else { return };
    let _ = write!(out, "\n`kubectl get` shows (`-o wide` also the columns of priority 1 and more):\n\n");
    out.push_str("| column | JSONPath | type | priority | description |\n|---|---|---|---|---|\n");
    for c in columns {
        let text = |k: &str| c[k].as_str().unwrap_or("").to_string();
        let priority = c["priority"].as_i64().unwrap_or(0);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {priority} | {} |",
            plain(&text("name")),
            code(&text("jsonPath"), true),
            text("type"),
            markdown(&text("description"), true)
        );
    }
}

struct Row {
    path: String,
    ty: String,
    required: &'static str,
    default: String,
    description: String,
}

struct Rule {
    path: String,
    message: String,
    rule: String,
}

/// A schema's rules and children: a row for each property, then its own
/// children; the items of a list and the values of a map under `[]` and `*`.
fn walk(schema: &Value, path: &str, rows: &mut Vec<Row>, rules: &mut Vec<Rule>) {
    for v in schema["x-kubernetes-validations"].as_array().into_iter().flatten() {
        rules.push(Rule {
            path: path.to_string(),
            message: v["message"].as_str().or(v["messageExpression"].as_str()).unwrap_or("").to_string(),
            rule: v["rule"].as_str().unwrap_or("").to_string(),
        });
    }
    if let Some(properties) = schema["properties"].as_object() {
        let required: BTreeSet<String> = strings(&schema["required"]).into_iter().collect();
        let mut names: Vec<&String> = properties.keys().collect();
        names.sort();
        for name in names {
            let child = &properties[name.as_str()];
            let child_path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
            rows.push(Row {
                path: child_path.clone(),
                ty: type_of(child),
                required: if required.contains(name) { "yes" } else { "" },
                default: child.get("default").map(|d| code(&literal(d), true)).unwrap_or_default(),
                description: describe(child),
            });
            walk(child, &child_path, rows, rules);
        }
    }
    if schema["items"].is_object() {
        walk(&schema["items"], &format!("{path}[]"), rows, rules);
    }
    if schema["additionalProperties"].is_object() {
        walk(&schema["additionalProperties"], &format!("{path}.*"), rows, rules);
    }
}

fn type_of(s: &Value) -> String {
    match s["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&s["items"])),
        Some("object") if s["additionalProperties"].is_object() => format!("map[string]{}", type_of(&s["additionalProperties"])),
        Some(t) => match s["format"].as_str() {
            Some(f) => format!("{t} ({f})"),
            None => t.to_string(),
        },
        None if s.get("x-kubernetes-int-or-string").is_some() => "int or string".into(),
        None => "any".into(),
    }
}

/// The description, then what the schema constrains.
fn describe(s: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(d) = s["description"].as_str() {
        parts.push(markdown(d, true));
    }
    if let Some(values) = s["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| code(&literal(v), true)).collect();
        parts.push(format!("One of {}.", values.join(", ")));
    }
    let bound = |low: &str, high: &str, what: &str| -> Option<String> {
        match (number(&s[low]), number(&s[high])) {
            (Some(a), Some(b)) => Some(format!("{what}: {a} to {b}.")),
            (Some(a), None) => Some(format!("{what}: at least {a}.")),
            (None, Some(b)) => Some(format!("{what}: at most {b}.")),
            (None, None) => None,
        }
    };
    parts.extend(bound("minimum", "maximum", "Value"));
    parts.extend(bound("minLength", "maxLength", "Length"));
    parts.extend(bound("minItems", "maxItems", "Items"));
    parts.extend(bound("minProperties", "maxProperties", "Entries"));
    if let Some(p) = s["pattern"].as_str() {
        parts.push(format!("Pattern {}.", code(p, true)));
    }
    if let Some(t) = s["x-kubernetes-list-type"].as_str() {
        let keys: Vec<String> = strings(&s["x-kubernetes-list-map-keys"]).iter().map(|k| code(k, true)).collect();
        parts.push(if keys.is_empty() {
            format!("List type {}.", code(t, true))
        } else {
            format!("List type {}, keyed by {}.", code(t, true), keys.join(", "))
        });
    }
    parts.join(" ")
}

fn number(v: &Value) -> Option<String> {
    let f = v.as_f64()?;
    Some(if f.fract() == 0.0 { format!("{}", f as i64) } else { f.to_string() })
}

fn literal(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        Value::Number(_) => number(v).unwrap_or_else(|| v.to_string()),
        other => other.to_string(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

fn list(items: &[String]) -> String {
    items.iter().map(|s| code(s, false)).collect::<Vec<_>>().join(", ")
}

/// A code span that holds any text: a fence longer than any run of
/// backticks inside, and in a table cell `|` escaped (GFM unescapes it
/// before it reads the span).
fn code(text: &str, in_table: bool) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') { " " } else { "" };
    let text = if in_table { text.replace('|', "\\|") } else { text.to_string() };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// Markdown from a CRD description, on one line in a table cell: code spans
/// kept, `<` outside them made text, `|` escaped.
fn markdown(text: &str, in_table: bool) -> String {
    let text = if in_table { text.split_whitespace().collect::<Vec<_>>().join(" ") } else { text.to_string() };
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(part);
        } else {
            out.push_str(&part.replace('<', "&lt;"));
        }
    }
    if in_table { out.replace('|', "\\|") } else { out }
}

/// Plain text (a validation message) as Markdown that shows it as it is.
fn plain(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The links

#[test]
fn summary_lists_every_chapter_and_only_chapters_that_exist() {
    let summary = book().join("SUMMARY.md");
    let listed: BTreeSet<PathBuf> = links(&read(&summary))
        .into_iter()
        .filter(|(_, t)| !is_external(t))
        .map(|(_, t)| normalize(&book().join(t.split('#').next().unwrap())))
        .collect();
    let mut problems = Vec::new();
    for chapter in &listed {
        if !chapter.is_file() {
            problems.push(format!("SUMMARY.md lists {}, which does not exist", shown(chapter)));
        }
    }
    for chapter in markdown_files(&book()) {
        if chapter != summary && !listed.contains(&normalize(&chapter)) {
            problems.push(format!("{} is not listed in docs/src/SUMMARY.md", shown(&chapter)));
        }
    }
    assert!(problems.is_empty(), "the book's chapters:\n  {}", problems.join("\n  "));
}

#[test]
fn every_relative_link_leads_to_a_file_and_a_heading() {
    let mut files = markdown_files(&book());
    files.push(root().join("README.md"));
    let mut anchors: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    let mut broken = Vec::new();
    for file in &files {
        for (line, target) in links(&read(file)) {
            if is_external(&target) {
                continue;
            }
            if let Err(why) = check(file, &target, &mut anchors) {
                broken.push(format!("{}:{line}: ({target}) {why}", shown(file)));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken links (relative .md links, with anchors that are a heading's slug):\n  {}",
        broken.len(),
        broken.join("\n  ")
    );
}

fn check(file: &Path, target: &str, anchors: &mut HashMap<PathBuf, BTreeSet<String>>) -> Result<(), String> {
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let dest = if path.is_empty() { file.to_path_buf() } else { normalize(&file.parent().unwrap().join(path)) };
    if file.starts_with(book()) && !dest.starts_with(book()) {
        return Err("leads out of the book (docs/src), which mdBook does not publish".into());
    }
    if !dest.exists() {
        return Err(format!("{} does not exist", shown(&dest)));
    }
    let Some(anchor) = anchor else { return Ok(()) };
    if dest.extension().is_none_or(|e| e != "md") {
        return Err("an anchor into a file that is not Markdown".into());
    }
    let slugs = anchors.entry(dest.clone()).or_insert_with(|| heading_slugs(&dest));
    if slugs.contains(anchor) {
        Ok(())
    } else {
        let start: String = anchor.chars().take(4).collect();
        let near: Vec<&String> = slugs.iter().filter(|s| s.starts_with(&start)).take(3).collect();
        Err(format!(
            "{} has no heading #{anchor}{}",
            shown(&dest),
            if near.is_empty() { String::new() } else { format!(" (did you mean {near:?}?)") }
        ))
    }
}

fn is_external(target: &str) -> bool {
    ["http://", "https://", "mailto:"].iter().any(|p| target.starts_with(p))
}

fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(markdown_files(&path));
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// `a/b/../c` as `a/c`, without asking the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The lines of Markdown outside fenced code blocks, with their numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m && trimmed.trim_end().chars().all(|c| c == m.chars().next().unwrap()) => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// A line without its code spans.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let run = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + run..];
        let (b, fence) = (after.as_bytes(), "`".repeat(run));
        let close =
            (0..b.len()).find(|&i| b[i..].starts_with(fence.as_bytes()) && b.get(i + run) != Some(&b'`') && (i == 0 || b[i - 1] != b'`'));
        match close {
            Some(end) => rest = &after[end + run..],
            None => {
                out.push_str(&rest[start..]);
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of inline links and images, `[text](target)`, outside code.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in prose(text) {
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].trim();
            let target = target.split_once(" \"").map_or(target, |(t, _)| t).trim_matches(|c| c == '<' || c == '>');
            out.push((number, target.to_string()));
            rest = &after[end..];
        }
    }
    out
}

/// The anchors of a page's headings, as mdBook and GitHub make them: the
/// heading's text lowercased, spaces to `-`, punctuation but `-` and `_`
/// dropped, and `-1`, `-2`... after a repeated one. Headings of files it
/// includes (`{{#include path}}`) count as its own.
fn heading_slugs(file: &Path) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for heading in headings(file) {
        let slug = slug(&heading);
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 { slug.clone() } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

fn headings(file: &Path) -> Vec<String> {
    let text = read(file);
    let mut out = Vec::new();
    for (_, line) in prose(&text) {
        if let Some(path) = line.trim().strip_prefix("{{#include ").and_then(|l| l.strip_suffix("}}")) {
            out.extend(headings(&file.parent().unwrap().join(path.trim().split(':').next().unwrap())));
        } else if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start_matches('#');
            if rest.starts_with(' ') && line.chars().take_while(|&c| c == '#').count() <= 6 {
                out.push(rest.trim().trim_end_matches('#').trim().to_string());
            }
        }
    }
    out
}

fn slug(heading: &str) -> String {
    // The text mdBook renders: links become their text, code spans theirs.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(i) = rest.find("](") {
        let Some(end) = rest[i..].find(')') else { break };
        text.push_str(&rest[..i]);
        rest = &rest[i + end + 1..];
    }
    text.push_str(rest);
    text.chars()
        .filter(|&c| c != '`' && c != '[' && c != '*')
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().next().unwrap())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn slugs_are_mdbooks() {
    assert_eq!(slug("A real node: `hack/cluster`"), "a-real-node-hackcluster");
    assert_eq!(slug("Secrets in the catalog, and the workspace's login"), "secrets-in-the-catalog-and-the-workspaces-login");
    assert_eq!(slug("The [API](x.md) and `pg_*`"), "the-api-and-pg_");
    assert_eq!(without_code("a `b](c.md)` [d](e.md) ``f`g``"), "a  [d](e.md) ");
    let links = links("[a](b.md#c)\n```\n[x](y.md)\n```\n  ```yaml\n[z](w.md)\n  ```\n[d](<e.md> \"t\")");
    assert_eq!(links, vec![(1, "b.md#c".to_string()), (8, "e.md".to_string())]);
}
