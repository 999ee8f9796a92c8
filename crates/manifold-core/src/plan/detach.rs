//! Tests, readers, the search path, and taking an attachment away:
//! detach, orphan, and what a workspace's removal drops.

use super::*;

/// The statements of a connection test: what an attach of a fresh schema
/// runs, in a transaction that is always rolled back.
pub fn test(plan: &AttachPlan, wrapper: WrapperState, role: &str, server_options_public: bool) -> Result<Vec<Statement>, Failure> {
    let locked = Locked {
        observed: Observed::default(),
        owned_tables: Vec::new(),
        wrapper,
        role: role.to_owned(),
        readers: Vec::new(),
        views: Vec::new(),
        columns: Vec::new(),
        server_options_public,
    };
    let (_, mut statements) = attach(plan, &locked)?;
    statements.retain(|s| !matches!(s, Statement::MarkSchema { .. } | Statement::CommentOnServer { .. } | Statement::GrantReaders { .. }));
    Ok(statements)
}

/// The reader roles that statements grant to, revoke from or map.
pub fn reader_roles(statements: &[Statement]) -> Vec<String> {
    let mut roles: Vec<String> = statements
        .iter()
        .flat_map(|s| match s {
            Statement::GrantReaders { roles, .. } => roles.clone(),
            Statement::RevokeReader { role, .. }
            | Statement::CreateReaderMapping { role, .. }
            | Statement::DropReaderMapping { role, .. } => vec![role.clone()],
            _ => Vec::new(),
        })
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// The statements without what concerns a reader role that does not exist
/// (`existing`: the roles that do): a role dropped since the workspace was
/// observed, or never created, holds no attach, re-import or detach. Its
/// grants and mappings went with it.
pub fn without_missing_roles(statements: Vec<Statement>, existing: &std::collections::BTreeSet<String>) -> Vec<Statement> {
    statements
        .into_iter()
        .filter_map(|s| match s {
            Statement::GrantReaders { schema, roles } => {
                let roles: Vec<String> = roles.into_iter().filter(|r| existing.contains(r)).collect();
                (!roles.is_empty()).then_some(Statement::GrantReaders { schema, roles })
            }
            Statement::RevokeReader { ref role, .. }
            | Statement::CreateReaderMapping { ref role, .. }
            | Statement::DropReaderMapping { ref role, .. }
                if !existing.contains(role) =>
            {
                None
            }
            other => Some(other),
        })
        .collect()
}

/// What a detach takes first, in a transaction of its own that nothing
/// can hold: the readers' grants on the schema and their user mappings, if
/// schema and server carry this attachment's marker. Whatever then holds
/// the drop (a reader's temporary view on a foreign table), no reader can
/// read through it any more.
pub fn revoke_readers(owner: &Owner, schema: &str, locked: &Locked) -> Vec<Statement> {
    let ours = |comment: &Option<String>| comment.as_deref().and_then(Marker::parse).is_some_and(|m| &m.owner == owner);
    let mut statements = Vec::new();
    if ours(&locked.observed.server_comment) {
        statements.extend(locked.readers.iter().map(|role| Statement::DropReaderMapping { server: schema.to_owned(), role: role.clone() }));
    }
    if ours(&locked.observed.schema_comment) {
        statements.extend(locked.readers.iter().map(|role| Statement::RevokeReader { schema: schema.to_owned(), role: role.clone() }));
    }
    statements
}

/// What a detach drops: only what carries this attachment's marker. The
/// tables only if the server is ours too (they are the ones it imported),
/// our views, then the schema; the readers' mappings, ours and the server
/// if the server is ours. Every drop is RESTRICT, so anything someone else
/// made that depends on ours holds the whole detach.
pub fn detach(owner: &Owner, schema: &str, locked: &Locked) -> Vec<Statement> {
    let ours = |comment: &Option<String>| comment.as_deref().and_then(Marker::parse).is_some_and(|m| &m.owner == owner);
    let (schema_ours, server_ours) = (ours(&locked.observed.schema_comment), ours(&locked.observed.server_comment));
    let mut statements = Vec::new();
    if schema_ours {
        if server_ours && !locked.owned_tables.is_empty() {
            statements.push(Statement::DropForeignTables { schema: schema.to_owned(), tables: locked.owned_tables.clone() });
        }
        statements.extend(drop_views(schema, &locked.views));
        statements.push(Statement::DropSchema { schema: schema.to_owned() });
    }
    if server_ours {
        statements.extend(forget_credentials(owner, schema, locked));
        statements.push(Statement::DropServer { server: schema.to_owned() });
    }
    statements
}

/// The credentials of an attachment whose removal is held: its user
/// mappings (the workspace role's and its readers'), if its server is ours.
/// Nothing depends on a user mapping, so this never fails for a dependent
/// object, and no password stays behind a deletion.
pub fn forget_credentials(owner: &Owner, server: &str, locked: &Locked) -> Vec<Statement> {
    let ours = locked.observed.server_comment.as_deref().and_then(Marker::parse).is_some_and(|m| &m.owner == owner);
    if !ours {
        return Vec::new();
    }
    let mut statements: Vec<Statement> =
        locked.readers.iter().map(|role| Statement::DropReaderMapping { server: server.to_owned(), role: role.clone() }).collect();
    statements.push(Statement::DropUserMapping { server: server.to_owned() });
    statements
}

/// The database's search path, if it is not already `path`.
pub fn search_path(database: &str, path: &[String], current: &[String]) -> Option<Statement> {
    (current != path).then(|| Statement::SetSearchPath { database: database.to_owned(), path: path.to_vec() })
}

/// A `search_path` setting as Postgres stores it (`a, "B c", public`), as
/// a list of names.
pub fn parse_search_path(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        name.push('"');
                    } else {
                        break;
                    }
                } else {
                    name.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                name.push(c);
                chars.next();
            }
            name = name.trim().to_owned();
        }
        while chars.peek().is_some_and(|c| *c != ',') {
            chars.next();
        }
        if !name.is_empty() {
            names.push(name);
        }
        if chars.next().is_none() {
            return names;
        }
    }
}

/// What an attachment with `deletionPolicy: Orphan` leaves behind: its
/// schema marked as orphaned, so that deleting the workspace (or the
/// namespace) keeps it, and an attachment of the same name adopts it again.
pub fn orphan(owner: &Owner, schema: &str, observed: &Observed) -> Vec<Statement> {
    match observed.schema_marker() {
        Some(mut marker) if &marker.owner == owner && !marker.orphaned => {
            marker.orphaned = true;
            vec![Statement::MarkSchema { schema: schema.to_owned(), marker }]
        }
        _ => Vec::new(),
    }
}

/// What a workspace's deletion does to the managed schemas of its
/// namespace: each one is dropped (schema, server and mapping), or marked
/// orphaned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WorkspaceRemoval {
    pub drop: Vec<(Owner, String)>,
    pub orphan: Vec<(Owner, String)>,
}

/// A live attachment, as a workspace's deletion needs to know it.
pub struct LiveAttachment {
    pub workspace: String,
    pub orphan: bool,
}

/// Decides a workspace's deletion from the catalog, not from which
/// attachments are still around: every schema (or server whose schema is
/// gone) whose marker names an attachment of `namespace` is dropped, except
/// what another workspace's attachment owns (two Workspaces may share a
/// database) and what is already orphaned. What an attachment with
/// `deletionPolicy: Orphan` owns is marked orphaned instead: once the
/// workspace is gone, the attachment has no way in to do that itself.
pub fn workspace_removal<'a>(
    namespace: &str,
    workspace: &str,
    catalog: impl IntoIterator<Item = (&'a String, &'a Observed)>,
    attachment: impl Fn(&str) -> Option<LiveAttachment>,
) -> WorkspaceRemoval {
    let mut removal = WorkspaceRemoval::default();
    for (schema, observed) in catalog {
        let Some(marker) = observed.schema_marker().or_else(|| observed.server_comment.as_deref().and_then(Marker::parse)) else {
            continue;
        };
        if marker.owner.namespace != namespace || marker.orphaned {
            continue;
        }
        match attachment(&marker.owner.name) {
            Some(a) if a.workspace != workspace => {}
            Some(a) if a.orphan => {
                if observed.schema_comment.is_some() {
                    removal.orphan.push((marker.owner, schema.clone()));
                }
            }
            _ => removal.drop.push((marker.owner, schema.clone())),
        }
    }
    removal.drop.sort();
    removal.orphan.sort();
    removal
}
