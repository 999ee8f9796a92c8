//! Steampipe's `.spc` files as Manifold manifests.
//!
//! The files are read as one config, as Steampipe reads its config
//! directory, with a real HCL parser:
//!
//! - `connection "name" { plugin = ... }` blocks become Connections. The
//!   plugin is a string (`aws`, `turbot/aws`, `theapsgroup/gitlab@latest`,
//!   `aws@0.118`: the last path segment without the version), or
//!   `plugin.<label>`, naming a `plugin "<label>" { source = ... }` block
//!   of any of the files (its settings, such as `memory_max_mb` or
//!   `limiter`, are Steampipe's own and left out, with a note).
//! - `options` blocks, at the top or in a connection, are Steampipe's own
//!   settings: left out, with a note. Any other block is an error.
//! - `type = "aggregator"` with `connections = [...]` becomes an aggregator.
//!   A member that is a name becomes that connection's Kubernetes name. A
//!   glob (`aws_*`) becomes the same glob over the Kubernetes names
//!   (`aws-*`), which also takes connections made later, when it starts
//!   with a literal and matches exactly the connections of the files it
//!   matched before, among those of the aggregator's plugin (Steampipe's
//!   rule). Otherwise it becomes the list of those connections, with a
//!   note: a Manifold glob takes connections of any plugin.
//! - `import_schema = "disabled"` has no counterpart: Manifold has no
//!   connection without a schema. The connection is imported (an
//!   aggregator's members must be attached where the aggregator is), with
//!   a note that its schema will be visible.
//! - A connection is a Postgres source (`spec.plugin.postgres`, through
//!   postgres_fdw) when its plugin is `postgres` and it sets
//!   `connection_string` (a `postgres://` or `postgresql://` URI) or
//!   `host`. Its arguments are then `host`, `port`, `database` (or
//!   `dbname`), `user`, `password`, `schema` (or `schemas` with one name)
//!   and postgres_fdw's allowed options; anything else is an error. `user`
//!   and `password` go into the Secret.
//! - Every other connection is a Steampipe plugin (`spec.plugin.steampipe`):
//!   each argument that is not a credential keeps the user's expression
//!   (lists, maps, heredocs, comments inside them) in `config`; each
//!   credential goes into the Secret `<name>-credentials`, which the
//!   operator appends to `config` again as a string.
//! - An argument is a credential when it is in `CREDENTIALS` for its plugin,
//!   named by `--secret-key`, or its name contains one of
//!   `GENERIC_CREDENTIALS` (`password`, `token`, ...) and does not end in
//!   `_path` or `_file` (a bool or null under such a name is a setting).
//!   A credential is a string, a number or a heredoc with no
//!   interpolation: anything else is an error, since a Secret holds
//!   strings. gcp's `credentials` is one only when it holds JSON; a path is
//!   a setting, noted like every argument that names a local file or
//!   profile (`profile`, `*_path`, `*_file`), which the database server
//!   that runs the plugin does not have.
//! - Function calls (`env()`, `file()`), references and `for` expressions
//!   are errors: Steampipe evaluates none of them in connection config.
//! - Names: see `Options::kube_name` and `Options::schema_name`. The
//!   schema keeps the Steampipe name whenever it is a valid schema, since
//!   queries name it (`aws_prod.aws_s3_bucket`). Two connections with the
//!   same name, Kubernetes name or schema are an error naming both.
//! - `--connections` picks connections by their Steampipe name; all of the
//!   files are still checked, and aggregators' globs still see every
//!   connection.

mod config;
mod conn;
mod file;
mod postgres;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use hcl_edit::structure::{Block, Body, Structure};

use super::{Import, ImportError, Location, Note, Options, Renamed, Source};
use crate::api::glob;
use conn::Conn;
use file::{File, plugin_instance};

/// Imports Steampipe `.spc` files. See the module's documentation for the
/// rules.
pub fn steampipe(sources: &[Source], options: &Options) -> Result<Import, ImportError> {
    options.check()?;
    let files: Vec<File> = sources.iter().map(|s| File { path: s.path, text: s.text }).collect();
    let bodies: Vec<Body> = files.iter().map(File::parse).collect::<Result<_, _>>()?;
    let mut notes = Vec::new();

    let Blocks { plugins, connections: blocks } = Blocks::read(&files, &bodies, &mut notes)?;
    let connections: Vec<Conn> =
        blocks.into_iter().map(|(file, block)| Conn::new(file, block, &plugins, options)).collect::<Result<_, _>>()?;
    check_unique(&connections, "name", |c| &c.original)?;
    check_unique(&connections, "Kubernetes name", |c| &c.name)?;
    check_unique(&connections, "schema", |c| &c.schema)?;

    let selected = select(&connections, options)?;
    objects(&selected, &connections, options, notes)
}

/// The top level of all the files: `plugin` blocks by label, and
/// `connection` blocks in the order of the files.
struct Blocks<'a> {
    /// Each plugin block's label: where the block is, and the plugin it
    /// names.
    plugins: HashMap<&'a str, (Location, String)>,
    connections: Vec<(&'a File<'a>, &'a Block)>,
}

impl<'a> Blocks<'a> {
    /// Sorts every file's top-level blocks. All plugin blocks are read
    /// before any connection is made, since a connection may name a plugin
    /// block of any file. An argument outside a block is an error.
    fn read(files: &'a [File<'a>], bodies: &'a [Body], notes: &mut Vec<Note>) -> Result<Self, ImportError> {
        let mut blocks = Blocks { plugins: HashMap::new(), connections: Vec::new() };
        for (file, body) in files.iter().zip(bodies) {
            for structure in body.iter() {
                let block = match structure {
                    Structure::Attribute(attr) => {
                        return Err(file.error(
                            attr,
                            format!(
                                "argument {} outside a block: a .spc file holds connection, plugin and options blocks",
                                attr.key.as_str()
                            ),
                        ));
                    }
                    Structure::Block(block) => block,
                };
                blocks.add(file, block, notes)?;
            }
        }
        Ok(blocks)
    }

    /// One top-level block: a connection is kept for later, a plugin block
    /// is resolved to its plugin (a label defined twice is an error), an
    /// `options` block is left out with a note, and any other block is an
    /// error.
    fn add(&mut self, file: &'a File<'a>, block: &'a Block, notes: &mut Vec<Note>) -> Result<(), ImportError> {
        match block.ident.as_str() {
            "connection" => self.connections.push((file, block)),
            "plugin" => {
                let label = file.label(block)?;
                let name = plugin_instance(file, block, notes)?;
                if let Some((first, _)) = self.plugins.get(label) {
                    return Err(file.error(block, format!("plugin \"{label}\" is defined twice: first at {first}")));
                }
                self.plugins.insert(label, (file.at(block), name));
            }
            "options" => notes.push(Note {
                location: file.at(block),
                message: format!(
                    "options{} block left out: Steampipe's own settings",
                    block.labels.first().map(|l| format!(" \"{}\"", l.as_str())).unwrap_or_default()
                ),
            }),
            other => {
                let hint = if other == "workspace" { " (workspaces.spc is not connection config)" } else { "" };
                return Err(
                    file.error(block, format!("{other} block: a .spc file to import holds connection, plugin and options blocks{hint}"))
                );
            }
        }
        Ok(())
    }
}

/// The connections `--connections` picks, in the order of the files: all
/// of them without it. A pattern that matches no connection is an error.
fn select<'c, 'a>(connections: &'c [Conn<'a>], options: &Options) -> Result<Vec<&'c Conn<'a>>, ImportError> {
    for pattern in &options.connections {
        if !connections.iter().any(|c| glob(pattern, &c.original)) {
            return Err(ImportError::option(format!("--connections {pattern:?} matches no connection in the files")));
        }
    }
    Ok(connections.iter().filter(|c| options.connections.is_empty() || options.connections.iter().any(|p| glob(p, &c.original))).collect())
}

/// The import of the selected connections: their Secrets, then their
/// Connections, then their attachments to `--attach`'s Workspaces, which
/// is the order to apply them in. `all` is every connection of the files,
/// which aggregators' members refer to.
fn objects(selected: &[&Conn], all: &[Conn], options: &Options, mut notes: Vec<Note>) -> Result<Import, ImportError> {
    let mut secrets = Vec::new();
    let mut objects = Vec::new();
    let mut renamed = Vec::new();
    for conn in selected {
        let (spec, credentials) = conn.convert(all, options, &mut notes)?;
        if let Some(credentials) = credentials {
            secrets.push(options.secret(&conn.secret_name(), &credentials));
        }
        objects.push(options.connection(&conn.name, spec));
        if conn.name != conn.original || conn.schema != conn.original {
            renamed.push(Renamed {
                location: conn.at.clone(),
                original: conn.original.clone(),
                name: conn.name.clone(),
                schema: conn.schema.clone(),
            });
        }
    }
    for conn in selected {
        for workspace in &options.attach {
            objects.push(options.attachment(workspace, &conn.name)?);
        }
    }
    secrets.append(&mut objects);
    Ok(Import { objects: secrets, renamed, notes })
}

/// Two connections with the same name, in the original or after mapping.
fn check_unique<'c>(connections: &'c [Conn], what: &str, key: impl Fn(&'c Conn) -> &'c String) -> Result<(), ImportError> {
    let mut seen: HashMap<&String, &Conn> = HashMap::new();
    for conn in connections {
        if let Some(first) = seen.insert(key(conn), conn) {
            let message = if what == "name" {
                format!("connection {} is defined twice: first at {}", conn.original, first.at)
            } else {
                format!(
                    "connections {} (at {}) and {} both have the {what} {}: rename one",
                    first.original,
                    first.at,
                    conn.original,
                    key(conn)
                )
            };
            return Err(ImportError::at(conn.at.clone(), message));
        }
    }
    Ok(())
}
