//! A source's schema: what a re-import changes, and the hashes of a
//! source's tables that tests and imports compare.

use super::*;

/// A foreign table's definition, as the catalog gives it: columns, their
/// types and options, and the table's options. Two definitions are the same
/// table when these are equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDef {
    pub name: String,
    pub definition: String,
}

/// What a re-import changes, table by table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReimportDiff {
    /// New at the source: moved in from the staging schema.
    pub add: Vec<String>,
    /// Changed at the source: dropped, then moved in.
    pub replace: Vec<String>,
    /// Gone from the source (or no longer wanted): dropped.
    pub remove: Vec<String>,
}

/// Compares what the schema holds with what a fresh import staged.
/// Unchanged tables are left alone, so that nothing that depends on them
/// is disturbed.
pub fn reimport(existing: &[TableDef], staged: &[TableDef]) -> ReimportDiff {
    let mut diff = ReimportDiff::default();
    for s in staged {
        match existing.iter().find(|e| e.name == s.name) {
            None => diff.add.push(s.name.clone()),
            Some(e) if e.definition != s.definition => diff.replace.push(s.name.clone()),
            Some(_) => {}
        }
    }
    diff.remove = existing.iter().filter(|e| !staged.iter().any(|s| s.name == e.name)).map(|e| e.name.clone()).collect();
    diff.add.sort();
    diff.replace.sort();
    diff.remove.sort();
    diff
}

/// The schema a re-import stages its fresh import in, inside the
/// attachment's transaction (and dropped before it commits).
pub fn stage_schema(schema: &str) -> String {
    format!("manifold_stage_{}", short_hash(&[schema]))
}

/// The hash of a source's schema: its tables, their columns and types, in
/// order. What a test and an import each compute, over their own schema.
pub fn source_hash(columns: &[(String, String, String)]) -> String {
    let mut sorted: Vec<&(String, String, String)> = columns.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<&str> = sorted.iter().flat_map(|(t, c, ty)| [t.as_str(), c.as_str(), ty.as_str()]).collect();
    short_hash(&parts)
}

/// One table of a source's schema as an import found it: its name, its
/// number of columns, and a hash of their names and types in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableShape {
    pub name: String,
    pub columns: usize,
    pub hash: String,
}

/// The shape of each table in `columns` (table, column, type rows, in the
/// catalog's order within a table), sorted by name.
pub fn table_shapes(columns: &[(String, String, String)]) -> Vec<TableShape> {
    let mut by_table: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (table, column, ty) in columns {
        by_table.entry(table).or_default().extend([column.as_str(), ty.as_str()]);
    }
    by_table
        .into_iter()
        .map(|(name, parts)| TableShape { name: name.to_owned(), columns: parts.len() / 2, hash: short_hash(&parts) })
        .collect()
}
