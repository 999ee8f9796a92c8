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

use std::collections::{BTreeMap, HashMap};

use hcl_edit::Span;
use hcl_edit::expr::{Expression, TraversalOperator};
use hcl_edit::structure::{Attribute, Block, Body, Structure};
use hcl_edit::template::Element;
use hcl_edit::visit::{Visit, visit_expr};
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization;

use super::{Import, ImportError, Location, Note, Options, Renamed, Source};
use crate::api::{POSTGRES_OPTIONS, glob, is_network_host};

/// Credential arguments of well-known plugins that the generic rule does
/// not catch, or catches only by chance.
const CREDENTIALS: &[(&str, &[&str])] = &[
    ("aws", &["access_key", "secret_key", "session_token"]),
    ("azure", &["client_secret", "certificate_password", "password"]),
    ("azuread", &["client_secret", "certificate_password", "password"]),
    ("cloudflare", &["token", "api_token", "api_key"]),
    ("datadog", &["api_key", "app_key"]),
    ("digitalocean", &["token"]),
    ("gcp", &["credentials"]),
    ("github", &["token"]),
    ("gitlab", &["token"]),
    ("googleworkspace", &["credentials"]),
    ("okta", &["token", "private_key"]),
    ("slack", &["token"]),
    ("snowflake", &["password", "private_key", "private_key_passphrase"]),
];

/// Parts of argument names that mark a credential in any plugin.
const GENERIC_CREDENTIALS: &[&str] =
    &["password", "passphrase", "secret", "token", "api_key", "apikey", "private_key", "access_key", "app_key", "connection_string"];

/// Plugins whose `credentials` argument is a credential only as JSON.
const JSON_CREDENTIALS: &[&str] = &["gcp", "googleworkspace"];

/// Arguments that are Steampipe's own, never a plugin's config.
const STEAMPIPE_ARGUMENTS: &[&str] = &["plugin", "type", "connections", "import_schema"];

/// Imports Steampipe `.spc` files. See the module's documentation for the
/// rules.
pub fn steampipe(sources: &[Source], options: &Options) -> Result<Import, ImportError> {
    options.check()?;
    let files: Vec<File> = sources.iter().map(|s| File { path: s.path, text: s.text }).collect();
    let bodies: Vec<Body> = files.iter().map(File::parse).collect::<Result<_, _>>()?;
    let mut notes = Vec::new();

    // Plugin blocks first: a connection may name one from any file.
    let mut plugins: HashMap<&str, (Location, String)> = HashMap::new();
    let mut blocks = Vec::new();
    for (file, body) in files.iter().zip(&bodies) {
        for structure in body.iter() {
            let block = match structure {
                Structure::Attribute(attr) => {
                    return Err(file.error(
                        attr,
                        format!("argument {} outside a block: a .spc file holds connection, plugin and options blocks", attr.key.as_str()),
                    ));
                }
                Structure::Block(block) => block,
            };
            match block.ident.as_str() {
                "connection" => blocks.push((file, block)),
                "plugin" => {
                    let label = file.label(block)?;
                    let name = plugin_instance(file, block, &mut notes)?;
                    if let Some((first, _)) = plugins.get(label) {
                        return Err(file.error(block, format!("plugin \"{label}\" is defined twice: first at {first}")));
                    }
                    plugins.insert(label, (file.at(block), name));
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
                    return Err(file
                        .error(block, format!("{other} block: a .spc file to import holds connection, plugin and options blocks{hint}")));
                }
            }
        }
    }

    let connections: Vec<Conn> =
        blocks.into_iter().map(|(file, block)| Conn::new(file, block, &plugins, options)).collect::<Result<_, _>>()?;
    check_unique(&connections, "name", |c| &c.original)?;
    check_unique(&connections, "Kubernetes name", |c| &c.name)?;
    check_unique(&connections, "schema", |c| &c.schema)?;

    for pattern in &options.connections {
        if !connections.iter().any(|c| glob(pattern, &c.original)) {
            return Err(ImportError::option(format!("--connections {pattern:?} matches no connection in the files")));
        }
    }
    let selected: Vec<&Conn> =
        connections.iter().filter(|c| options.connections.is_empty() || options.connections.iter().any(|p| glob(p, &c.original))).collect();

    let mut secrets = Vec::new();
    let mut objects = Vec::new();
    let mut renamed = Vec::new();
    for conn in &selected {
        let (spec, credentials) = conn.convert(&connections, options, &mut notes)?;
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
    for conn in &selected {
        for workspace in &options.attach {
            objects.push(options.attachment(workspace, &conn.name)?);
        }
    }
    secrets.append(&mut objects);
    Ok(Import { objects: secrets, renamed, notes })
}

/// One input file, for locations and the source text of expressions.
struct File<'a> {
    path: &'a str,
    text: &'a str,
}

impl File<'_> {
    fn parse(&self) -> Result<Body, ImportError> {
        hcl_edit::parser::parse_body(self.text).map_err(|e| {
            ImportError::at(Location { file: self.path.to_owned(), line: e.location().line() }, format!("not valid HCL: {}", e.message()))
        })
    }

    fn at(&self, node: &impl Span) -> Location {
        let offset = node.span().map_or(0, |s| s.start);
        Location { file: self.path.to_owned(), line: self.text[..offset].matches('\n').count() + 1 }
    }

    fn error(&self, node: &impl Span, message: impl Into<String>) -> ImportError {
        ImportError::at(self.at(node), message)
    }

    fn note(&self, node: &impl Span, message: impl Into<String>) -> Note {
        Note { location: self.at(node), message: message.into() }
    }

    /// The text of a node as the user wrote it.
    fn source(&self, node: &impl Span) -> &str {
        node.span().map_or("", |s| &self.text[s])
    }

    /// A block's one label.
    fn label<'b>(&self, block: &'b Block) -> Result<&'b str, ImportError> {
        match block.labels.as_slice() {
            [label] if !label.as_str().is_empty() => Ok(label.as_str()),
            _ => Err(self.error(
                block,
                format!("a {} block has one label, its name: {} \"name\" {{ ... }}", block.ident.as_str(), block.ident.as_str()),
            )),
        }
    }
}

/// A `plugin "label" { source = ... }` block: the plugin's name.
fn plugin_instance(file: &File, block: &Block, notes: &mut Vec<Note>) -> Result<String, ImportError> {
    let label = file.label(block)?;
    let mut source = None;
    let mut left_out = Vec::new();
    for structure in block.body.iter() {
        match structure {
            Structure::Attribute(attr) if attr.key.as_str() == "source" => match &attr.value {
                Expression::String(s) => source = Some((attr, s.value().clone())),
                _ => return Err(file.error(attr, format!("plugin \"{label}\": source is a string, such as \"turbot/aws@latest\""))),
            },
            Structure::Attribute(attr) => left_out.push(attr.key.as_str().to_owned()),
            Structure::Block(b) => left_out.push(format!("{} block", b.ident.as_str())),
        }
    }
    if !left_out.is_empty() {
        notes.push(file.note(block, format!("plugin \"{label}\": {} left out: Steampipe's own settings", left_out.join(", "))));
    }
    // Without a source, Steampipe takes the label as the plugin.
    match source {
        Some((attr, image)) => plugin_name(&image).map_err(|e| file.error(attr, format!("plugin \"{label}\": {e}"))),
        None => plugin_name(label).map_err(|e| file.error(block, format!("plugin \"{label}\": {e}"))),
    }
}

/// A plugin's name from its image reference: `turbot/aws@latest`,
/// `hub.steampipe.io/plugins/turbot/aws@0.118` and `aws` are all `aws`.
fn plugin_name(image: &str) -> Result<String, String> {
    let without_version = image.split_once('@').map_or(image, |(name, _)| name);
    let name = without_version.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || name.len() > 40 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(format!("plugin {image:?}: Manifold's steampipe plugins are named by ^[a-z0-9_]+$ (at most 40)"));
    }
    Ok(name.to_owned())
}

/// A connection block, with its names and plugin.
struct Conn<'a> {
    file: &'a File<'a>,
    block: &'a Block,
    at: Location,
    original: String,
    name: String,
    schema: String,
    plugin: String,
    aggregator: bool,
}

impl<'a> Conn<'a> {
    fn new(
        file: &'a File<'a>,
        block: &'a Block,
        plugins: &HashMap<&str, (Location, String)>,
        options: &Options,
    ) -> Result<Self, ImportError> {
        let original = file.label(block)?.to_owned();
        let at = file.at(block);
        let plugin = match block.body.get_attribute("plugin") {
            None => return Err(file.error(block, format!("connection {original} has no plugin"))),
            Some(attr) => match &attr.value {
                Expression::String(s) => plugin_name(s.value()).map_err(|e| file.error(attr, format!("connection {original}: {e}")))?,
                Expression::Traversal(t) => {
                    let label = match (&t.expr, t.operators.as_slice()) {
                        (Expression::Variable(v), [op]) if v.as_str() == "plugin" => match op.value() {
                            TraversalOperator::GetAttr(label) => Some(label.as_str()),
                            _ => None,
                        },
                        _ => None,
                    };
                    let Some(label) = label else {
                        return Err(file.error(attr, format!("connection {original}: plugin is a string or plugin.<label>")));
                    };
                    match plugins.get(label) {
                        Some((_, name)) => name.clone(),
                        None => return Err(file.error(attr, format!("connection {original}: no plugin \"{label}\" block in the files"))),
                    }
                }
                _ => return Err(file.error(attr, format!("connection {original}: plugin is a string or plugin.<label>"))),
            },
        };
        let aggregator = match block.body.get_attribute("type") {
            None => false,
            Some(attr) => match &attr.value {
                Expression::String(s) if s.value() == "aggregator" => true,
                _ => return Err(file.error(attr, format!("connection {original}: the only type is \"aggregator\""))),
            },
        };
        Ok(Conn {
            file,
            block,
            at,
            name: options.kube_name(&original),
            schema: options.schema_name(&original),
            original,
            plugin,
            aggregator,
        })
    }

    fn secret_name(&self) -> String {
        format!("{}-credentials", self.name)
    }

    fn error(&self, node: &impl Span, message: impl std::fmt::Display) -> ImportError {
        self.file.error(node, format!("connection {}: {message}", self.original))
    }

    fn note(&self, node: &impl Span, message: impl std::fmt::Display) -> Note {
        self.file.note(node, format!("connection {}: {message}", self.original))
    }

    /// The spec, and the credentials if any.
    fn convert(
        &self,
        all: &[Conn],
        options: &Options,
        notes: &mut Vec<Note>,
    ) -> Result<(Value, Option<BTreeMap<String, String>>), ImportError> {
        let mut arguments = Vec::new();
        for structure in self.block.body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    Literal::check(self, attr)?;
                    match attr.key.as_str() {
                        "import_schema" => self.import_schema(attr, notes)?,
                        key if STEAMPIPE_ARGUMENTS.contains(&key) => {}
                        _ => arguments.push(attr),
                    }
                }
                Structure::Block(block) if block.ident.as_str() == "options" => {
                    notes.push(self.note(block, "options block left out: Steampipe's own settings"));
                }
                Structure::Block(block) => {
                    return Err(
                        self.error(block, format_args!("{} block: a connection holds arguments and options blocks", block.ident.as_str()))
                    );
                }
            }
        }
        let mut spec = json!({ "schema": self.schema });
        let credentials = if self.aggregator {
            spec["aggregator"] = json!({ "connections": self.members(all, options, notes)? });
            if !arguments.is_empty() {
                let names: Vec<&str> = arguments.iter().map(|a| a.key.as_str()).collect();
                notes
                    .push(self.note(self.block, format_args!("{} left out: a Manifold aggregator has no plugin config", names.join(", "))));
            }
            None
        } else if self.plugin == "postgres" && arguments.iter().any(|a| a.key.as_str() == "connection_string" || a.key.as_str() == "host") {
            let (postgres, credentials) = self.postgres(&arguments)?;
            spec["plugin"] = json!({ "postgres": postgres });
            Some(credentials)
        } else {
            let (config, credentials) = self.steampipe(&arguments, options, notes)?;
            spec["plugin"] = json!({ "steampipe": { "name": self.plugin } });
            if !config.is_empty() {
                spec["plugin"]["steampipe"]["config"] = json!(config);
            }
            (!credentials.is_empty()).then_some(credentials)
        };
        if credentials.is_some() {
            spec["credentials"] = json!({ "secretRef": { "name": self.secret_name() } });
        }
        Ok((spec, credentials))
    }

    fn import_schema(&self, attr: &Attribute, notes: &mut Vec<Note>) -> Result<(), ImportError> {
        match &attr.value {
            Expression::String(s) if s.value() == "enabled" => Ok(()),
            Expression::String(s) if s.value() == "disabled" => {
                notes.push(self.note(
                    attr,
                    "import_schema = \"disabled\" has no counterpart: the connection is imported, and its schema is visible where it is attached",
                ));
                Ok(())
            }
            _ => Err(self.error(attr, "import_schema is \"enabled\" or \"disabled\"")),
        }
    }

    /// An aggregator's members in Kubernetes names.
    fn members(&self, all: &[Conn], options: &Options, notes: &mut Vec<Note>) -> Result<Vec<String>, ImportError> {
        let attr = self.block.body.get_attribute("connections").ok_or_else(|| self.error(self.block, "an aggregator needs connections"))?;
        let Expression::Array(array) = &attr.value else {
            return Err(self.error(attr, "connections is a list of names and globs"));
        };
        let mut members: Vec<String> = Vec::new();
        for item in array.iter() {
            let Expression::String(pattern) = item else {
                return Err(self.error(item, "connections is a list of names and globs"));
            };
            let pattern = pattern.value().as_str();
            let plugins_own = |c: &&Conn| !c.aggregator && c.plugin == self.plugin;
            let mapped = if !pattern.contains(['*', '?']) {
                match all.iter().find(|c| c.original == pattern) {
                    Some(member) => vec![member.name.clone()],
                    None => {
                        notes.push(self.note(attr, format_args!("member {pattern} is no connection of the files")));
                        vec![options.kube_name(pattern)]
                    }
                }
            } else {
                let matched: Vec<&str> =
                    all.iter().filter(plugins_own).filter(|c| glob(pattern, &c.original)).map(|c| c.name.as_str()).collect();
                let kube_glob = options.kube_glob(pattern);
                let same: Vec<&str> =
                    all.iter().filter(|c| !c.aggregator).filter(|c| glob(&kube_glob, &c.name)).map(|c| c.name.as_str()).collect();
                if matched.is_empty() {
                    notes.push(
                        self.note(
                            attr,
                            format_args!("{pattern:?} matches no {} connection of the files; kept as {kube_glob:?}", self.plugin),
                        ),
                    );
                    vec![kube_glob]
                } else if same == matched && !pattern.starts_with(['*', '?']) {
                    vec![kube_glob]
                } else {
                    notes.push(self.note(
                        attr,
                        format_args!(
                            "{pattern:?} becomes the list of the {} connections it matches now: as {kube_glob:?} it would take connections of any plugin",
                            self.plugin
                        ),
                    ));
                    matched.into_iter().map(str::to_owned).collect()
                }
            };
            for name in mapped {
                if !members.contains(&name) {
                    members.push(name);
                }
            }
        }
        if members.is_empty() {
            return Err(self.error(attr, "an aggregator needs connections"));
        }
        if members.len() > 100 {
            return Err(self.error(attr, format_args!("an aggregator has at most 100 members; this one has {}", members.len())));
        }
        Ok(members)
    }

    /// A Steampipe plugin's config, and its credentials.
    fn steampipe(
        &self,
        arguments: &[&Attribute],
        options: &Options,
        notes: &mut Vec<Note>,
    ) -> Result<(String, BTreeMap<String, String>), ImportError> {
        let mut config = String::new();
        let mut credentials = BTreeMap::new();
        for &attr in arguments {
            let key = attr.key.as_str();
            if self.is_credential(key, &attr.value, options) {
                credentials.insert(key.to_owned(), self.credential(attr)?);
            } else {
                if key == "profile" || key.ends_with("_path") || key.ends_with("_file") || key == "credentials" {
                    notes.push(self.note(
                        attr,
                        format_args!("{key} names a file or profile of this machine, which the database server that runs the plugin does not have: give the credentials themselves"),
                    ));
                }
                config.push_str(&format!("{key} = {}\n", self.file.source(&attr.value)));
            }
        }
        Ok((config, credentials))
    }

    fn is_credential(&self, key: &str, value: &Expression, options: &Options) -> bool {
        if JSON_CREDENTIALS.contains(&self.plugin.as_str()) && key == "credentials" {
            return literal(self.file, value).is_some_and(|text| text.trim_start().starts_with('{'));
        }
        let listed = CREDENTIALS.iter().any(|(plugin, keys)| *plugin == self.plugin && keys.contains(&key));
        let generic = GENERIC_CREDENTIALS.iter().any(|part| key.contains(part))
            && !key.ends_with("_path")
            && !key.ends_with("_file")
            && !matches!(value, Expression::Bool(_) | Expression::Null(_));
        listed || generic || options.secret_keys.iter().any(|k| k == key)
    }

    /// A credential's value: a plain string or number. HCL normalizes every
    /// string to Unicode NFC, so the Secret holds the NFC form.
    fn credential(&self, attr: &Attribute) -> Result<String, ImportError> {
        literal(self.file, &attr.value).map(|text| text.nfc().collect()).ok_or_else(|| {
            self.error(
                attr,
                format_args!("{} is a credential, which goes into a Secret: it must be a plain string or number", attr.key.as_str()),
            )
        })
    }

    /// A Postgres source: the `postgres` plugin spec, and the user and
    /// password.
    fn postgres(&self, arguments: &[&Attribute]) -> Result<(Value, BTreeMap<String, String>), ImportError> {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut options: BTreeMap<String, String> = BTreeMap::new();
        // The URI first: separate arguments override its parts.
        let mut ordered: Vec<&Attribute> = arguments.iter().copied().filter(|a| a.key.as_str() == "connection_string").collect();
        ordered.extend(arguments.iter().copied().filter(|a| a.key.as_str() != "connection_string"));
        for attr in ordered {
            let key = attr.key.as_str();
            let value = match &attr.value {
                Expression::Bool(b) => b.value().to_string(),
                Expression::Array(items) if key == "schemas" => match items.iter().collect::<Vec<_>>().as_slice() {
                    [Expression::String(s)] => s.value().clone(),
                    _ => return Err(self.error(attr, "schemas names one schema: a Connection imports one remote schema")),
                },
                value => {
                    literal(self.file, value).ok_or_else(|| self.error(attr, format_args!("{key} must be a plain string or number")))?
                }
            };
            let mut set = |key: &str, value: String| -> Result<(), String> {
                match key {
                    "host" | "port" | "user" | "password" => fields.insert(key.to_owned(), value),
                    "database" | "dbname" | "db" => fields.insert("database".to_owned(), value),
                    "username" => fields.insert("user".to_owned(), value),
                    "schema" | "schemas" | "remote_schema" => fields.insert("schema".to_owned(), value),
                    option if POSTGRES_OPTIONS.contains(&option) => options.insert(option.to_owned(), value),
                    _ => {
                        return Err(format!(
                            "{key} is not an argument of a Postgres source: connection_string, host, port, database, user, password, schema, or one of postgres_fdw's allowed options ({})",
                            POSTGRES_OPTIONS.join(", ")
                        ));
                    }
                };
                Ok(())
            };
            if key == "connection_string" {
                for (k, v) in postgres_uri(&value).map_err(|e| self.error(attr, e))? {
                    set(&k, v).map_err(|e| self.error(attr, format_args!("in connection_string: {e}")))?;
                }
            } else {
                set(key, value).map_err(|e| self.error(attr, e))?;
            }
        }
        let host = fields.remove("host").unwrap_or_default();
        if !is_network_host(&host) {
            return Err(self
                .error(self.block, "a Postgres source's host is a DNS name or an IP address (not a socket directory or a list of hosts)"));
        }
        let port = match fields.remove("port") {
            None => 5432,
            Some(port) => {
                port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| self.error(self.block, "port is a number from 1 to 65535"))?
            }
        };
        let database = fields
            .remove("database")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| self.error(self.block, "a Postgres source needs a database"))?;
        let mut postgres = json!({
            "host": host,
            "port": port,
            "database": database,
            "remoteSchema": fields.remove("schema").unwrap_or_else(|| "public".to_owned()),
        });
        if !options.is_empty() {
            postgres["options"] = json!(options);
        }
        let mut credentials = BTreeMap::new();
        for key in ["user", "password"] {
            let value = fields
                .remove(key)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| self.error(self.block, format_args!("a Postgres source needs a {key}")))?;
            credentials.insert(key.to_owned(), value.nfc().collect());
        }
        Ok((postgres, credentials))
    }
}

/// The text of a plain string, number or heredoc: what a Secret can hold.
fn literal(file: &File, value: &Expression) -> Option<String> {
    match value {
        Expression::String(s) => Some(s.value().clone()),
        Expression::Number(_) => Some(file.source(value).to_owned()),
        Expression::StringTemplate(t) => literal_template(t.iter()),
        Expression::HeredocTemplate(h) => literal_template(h.template.iter()),
        _ => None,
    }
}

fn literal_template<'e>(elements: impl Iterator<Item = &'e Element>) -> Option<String> {
    elements
        .map(|element| match element {
            Element::Literal(text) => Some(text.value().as_str()),
            _ => None,
        })
        .collect()
}

/// Finds what Steampipe does not evaluate in connection config: function
/// calls, references and `for` expressions.
struct Literal<'c> {
    conn: &'c Conn<'c>,
    key: &'c str,
    found: Option<ImportError>,
}

impl<'c> Literal<'c> {
    fn check(conn: &'c Conn<'c>, attr: &'c Attribute) -> Result<(), ImportError> {
        // `plugin = plugin.<label>` is the one reference Steampipe takes.
        if attr.key.as_str() == "plugin" {
            return Ok(());
        }
        let mut visitor = Literal { conn, key: attr.key.as_str(), found: None };
        visitor.visit_expr(&attr.value);
        visitor.found.map_or(Ok(()), Err)
    }
}

impl Visit for Literal<'_> {
    fn visit_expr(&mut self, expr: &Expression) {
        if self.found.is_some() {
            return;
        }
        let key = self.key;
        self.found = match expr {
            Expression::FuncCall(call) => Some(self.conn.error(
                expr,
                format_args!(
                    "{key} calls {}(): Steampipe evaluates no function in connection config, env() included. Write the value itself (a credential goes into the Secret; name it with --secret-key if Manifold does not know it as one), or leave {key} out and add it to the Secret yourself",
                    call.name.name.as_str()
                ),
            )),
            Expression::Variable(var) => {
                Some(self.conn.error(expr, format_args!("{key} refers to {}: Steampipe connection config has no variables", var.as_str())))
            }
            Expression::ForExpr(_) => Some(self.conn.error(expr, format_args!("{key}: Steampipe connection config has no for expressions"))),
            _ => None,
        };
        if self.found.is_none() {
            visit_expr(self, expr);
        }
    }
}

/// The parts of a `postgres://` URI, by libpq's keywords: host, port,
/// dbname (as `database`), user, password and the query's options.
fn postgres_uri(uri: &str) -> Result<Vec<(String, String)>, String> {
    let rest = uri
        .strip_prefix("postgres://")
        .or_else(|| uri.strip_prefix("postgresql://"))
        .ok_or("connection_string is a postgres:// or postgresql:// URI")?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let mut parts = Vec::new();
    if !userinfo.is_empty() {
        let (user, password) = userinfo.split_once(':').map_or((userinfo, None), |(u, p)| (u, Some(p)));
        parts.push(("user".to_owned(), percent_decode(user)?));
        if let Some(password) = password {
            parts.push(("password".to_owned(), percent_decode(password)?));
        }
    }
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or("connection_string has an unclosed [")?;
            (host, after.strip_prefix(':'))
        }
        None => hostport.rsplit_once(':').map_or((hostport, None), |(h, p)| (h, Some(p))),
    };
    parts.push(("host".to_owned(), percent_decode(host)?));
    if let Some(port) = port {
        parts.push(("port".to_owned(), port.to_owned()));
    }
    if !database.is_empty() {
        parts.push(("database".to_owned(), percent_decode(database)?));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        parts.push((percent_decode(key)?, percent_decode(value)?));
    }
    Ok(parts)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("connection_string has a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "connection_string's %-escapes are not UTF-8".to_owned())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Connection, WorkspaceConnection};
    use crate::plugins::hcl_string;

    const AWS: &str = include_str!("../../tests/fixtures/spc/aws.spc");
    const GCP: &str = include_str!("../../tests/fixtures/spc/gcp.spc");
    const GITHUB: &str = include_str!("../../tests/fixtures/spc/github.spc");
    const POSTGRES: &str = include_str!("../../tests/fixtures/spc/postgres.spc");
    const PLUGINS: &str = include_str!("../../tests/fixtures/spc/plugins.spc");

    fn run_import(files: &[(&str, &str)], options: &Options) -> Result<Import, ImportError> {
        let sources: Vec<Source> = files.iter().map(|(path, text)| Source { path, text }).collect();
        steampipe(&sources, options)
    }

    fn ok(files: &[(&str, &str)]) -> Import {
        run_import(files, &Options::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(files: &[(&str, &str)]) -> ImportError {
        run_import(files, &Options::default()).expect_err("an error")
    }

    fn all() -> Vec<(&'static str, &'static str)> {
        vec![("aws.spc", AWS), ("gcp.spc", GCP), ("github.spc", GITHUB), ("postgres.spc", POSTGRES), ("plugins.spc", PLUGINS)]
    }

    fn object<'i>(import: &'i Import, kind: &str, name: &str) -> &'i Value {
        import
            .objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", import.objects))
    }

    fn names(import: &Import, kind: &str) -> Vec<String> {
        import.objects.iter().filter(|o| o["kind"] == kind).map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()).collect()
    }

    fn config<'i>(import: &'i Import, name: &str) -> &'i str {
        object(import, "Connection", name)["spec"]["plugin"]["steampipe"]["config"].as_str().unwrap_or_default()
    }

    fn secret<'i>(import: &'i Import, name: &str) -> BTreeMap<&'i str, &'i str> {
        let data = object(import, "Secret", name)["stringData"].as_object().unwrap();
        data.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect()
    }

    fn noted(import: &Import, file: &str, line: usize, part: &str) -> bool {
        import.notes.iter().any(|n| n.location == Location { file: file.into(), line } && n.message.contains(part))
    }

    /// Every object is one the apiserver's types take, and no credential
    /// value shows in a Connection or attachment, in any form.
    fn assert_sound(import: &Import) {
        let credentials: Vec<&str> = import
            .objects
            .iter()
            .filter(|o| o["kind"] == "Secret")
            .flat_map(|o| o["stringData"].as_object().unwrap().values().map(|v| v.as_str().unwrap()))
            .collect();
        for object in import.objects.iter().filter(|o| o["kind"] != "Secret") {
            match object["kind"].as_str().unwrap() {
                "Connection" => drop(serde_json::from_value::<Connection>(object.clone()).unwrap()),
                "WorkspaceConnection" => drop(serde_json::from_value::<WorkspaceConnection>(object.clone()).unwrap()),
                other => panic!("unexpected kind {other}"),
            }
            let text = serde_json::to_string(object).unwrap();
            for value in &credentials {
                let json = serde_json::to_string(value).unwrap();
                let hcl = hcl_string(value);
                for form in [*value, &json[1..json.len() - 1], &hcl[1..hcl.len() - 1]] {
                    assert!(!text.contains(form), "{form:?} shows in {text}");
                }
            }
        }
    }

    #[test]
    fn aws_accounts_become_connections_with_secrets() {
        let import = ok(&[("aws.spc", AWS)]);
        assert_sound(&import);
        let kinds: Vec<&str> = import.objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Secret", "Secret", "Connection", "Connection", "Connection", "Connection"]);
        assert_eq!(
            names(&import, "Connection"),
            ["aws-prod-01", "aws-prod-02", "aws-dev", "all-aws"],
            "the commented-out one is not there"
        );
        assert_eq!(names(&import, "Secret"), ["aws-prod-01-credentials", "aws-prod-02-credentials"]);

        assert_eq!(
            secret(&import, "aws-prod-01-credentials"),
            BTreeMap::from([("access_key", "AKIAPROD01EXAMPLE"), ("secret_key", "prod01/Secret+Key/wJalrXUtnFEMI")])
        );
        // The Secret holds the value, not the way it was written.
        assert_eq!(secret(&import, "aws-prod-02-credentials")["secret_key"], "prod02-s3cr3t-\"quoted\"-${not_a_var}");
        let secret_labels = &object(&import, "Secret", "aws-prod-01-credentials")["metadata"]["labels"];
        assert_eq!(secret_labels, &json!({ "manifold.dev/credentials": "true" }));

        let prod = object(&import, "Connection", "aws-prod-01");
        assert_eq!(
            prod["spec"],
            json!({
                "schema": "aws_prod_01",
                "plugin": { "steampipe": { "name": "aws", "config": "regions = [\"us-east-1\", \"eu-west-1\"]\n" } },
                "credentials": { "secretRef": { "name": "aws-prod-01-credentials" } },
            })
        );
        assert_eq!(prod["apiVersion"], "manifold.dev/v1alpha1");
        assert!(prod["metadata"].get("namespace").is_none());
        // The user's expressions, comments inside them included.
        assert_eq!(
            config(&import, "aws-prod-02"),
            "regions = [\n    \"us-east-1\", # primary\n    \"us-west-2\",\n  ]\nignore_error_codes = [\"AccessDenied\", \"UnauthorizedOperation\"]\nmax_error_retry_attempts = 9\n"
        );
        assert_eq!(object(&import, "Connection", "aws-prod-02")["spec"]["plugin"]["steampipe"]["name"], "aws");

        let dev = object(&import, "Connection", "aws-dev");
        assert_eq!(config(&import, "aws-dev"), "profile = \"dev\"\nregions = [\"*\"]\n");
        assert!(dev["spec"].get("credentials").is_none());
        assert!(noted(&import, "aws.spc", 33, "profile"));
        assert!(noted(&import, "aws.spc", 35, "import_schema"));
        assert!(noted(&import, "aws.spc", 36, "options block left out"));

        assert_eq!(
            object(&import, "Connection", "all-aws")["spec"],
            json!({ "schema": "all_aws", "aggregator": { "connections": ["aws-*"] } })
        );

        let renamed: Vec<String> = import.renamed.iter().map(ToString::to_string).collect();
        assert_eq!(renamed[0], "aws.spc:4: aws_prod_01 is Connection aws-prod-01, schema aws_prod_01");
        assert_eq!(renamed.len(), 4);
    }

    #[test]
    fn gcp_credentials_are_secret_as_json_and_a_setting_as_a_path() {
        let import = ok(&[("gcp.spc", GCP)]);
        assert_sound(&import);
        assert_eq!(
            config(&import, "gcp-analytics"),
            "project = \"acme-analytics\"\ncredentials = \"/home/me/.config/gcloud/analytics-sa.json\"\n"
        );
        assert!(noted(&import, "gcp.spc", 4, "credentials names a file"));
        let json = secret(&import, "gcp-billing-credentials")["credentials"];
        let parsed: Value = serde_json::from_str(json).unwrap();
        assert_eq!(parsed["private_key"], "-----BEGIN PRIVATE KEY-----\nMIIEbilling\n-----END PRIVATE KEY-----\n");
        assert!(json.starts_with("{\n  \"type\""), "the heredoc's indentation is stripped: {json:?}");
        assert_eq!(config(&import, "gcp-billing"), "project = \"acme-billing\"\nignore_error_codes = [\"401\", \"403\"]\n");
        // "*" would take every connection of the namespace, of any plugin.
        assert_eq!(object(&import, "Connection", "gcp-all")["spec"]["aggregator"]["connections"], json!(["gcp-analytics", "gcp-billing"]));
        assert!(noted(&import, "gcp.spc", 25, "any plugin"));
    }

    #[test]
    fn plugin_names_come_from_image_references() {
        let import = ok(&[("github.spc", GITHUB)]);
        assert_sound(&import);
        assert_eq!(object(&import, "Connection", "github")["spec"]["plugin"], json!({ "steampipe": { "name": "github" } }));
        assert_eq!(secret(&import, "github-credentials"), BTreeMap::from([("token", "ghp_exampleTokenFor1234567890abcdEFGH")]));
        assert_eq!(object(&import, "Connection", "gitlab-ops")["spec"]["plugin"]["steampipe"]["name"], "gitlab");
        assert_eq!(config(&import, "gitlab-ops"), "baseurl = \"https://gitlab.example.com\"\n");
        for (image, name) in
            [("aws", "aws"), ("turbot/aws", "aws"), ("aws@0.118", "aws"), ("hub.steampipe.io/plugins/turbot/aws@latest", "aws")]
        {
            assert_eq!(plugin_name(image).as_deref(), Ok(name), "{image}");
        }
        for bad in ["", "turbot/", "Turbot/AWS", "org/my-plugin@1"] {
            assert!(plugin_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn postgres_sources_become_postgres_connections() {
        let import = ok(&[("postgres.spc", POSTGRES)]);
        assert_sound(&import);
        assert_eq!(
            object(&import, "Connection", "shop-replica")["spec"],
            json!({
                "schema": "shop_replica",
                "plugin": { "postgres": {
                    "host": "replica.db.example.com", "port": 6432, "database": "shop", "remoteSchema": "sales",
                    "options": { "sslmode": "require" },
                } },
                "credentials": { "secretRef": { "name": "shop-replica-credentials" } },
            })
        );
        assert_eq!(secret(&import, "shop-replica-credentials"), BTreeMap::from([("user", "reporter"), ("password", "p@ss:word")]));
        assert_eq!(
            object(&import, "Connection", "warehouse")["spec"]["plugin"],
            json!({ "postgres": { "host": "10.20.0.15", "port": 5433, "database": "warehouse", "remoteSchema": "public", "options": { "fetch_size": "1000" } } })
        );
        assert_eq!(secret(&import, "warehouse-credentials"), BTreeMap::from([("user", "warehouse_ro"), ("password", "wh-pass-123")]));

        let refused =
            |body: &str| error(&[("pg.spc", &format!("connection \"pg\" {{\n  plugin = \"postgres\"\n{body}\n}}\n"))]).to_string();
        assert!(refused("  host = \"/var/run/postgresql\"\n  database = \"d\"\n  user = \"u\"\n  password = \"p\"").contains("DNS name"));
        let message = refused("  connection_string = \"postgres://u:hunter2@db/d?sslrootcert=/etc/x\"");
        assert!(message.starts_with("pg.spc:3: connection pg: in connection_string: sslrootcert is not"), "{message}");
        assert!(!message.contains("hunter2"));
        assert!(refused("  host = \"db\"\n  database = \"d\"\n  user = \"u\"").contains("needs a password"));
        assert!(refused("  host = \"db\"\n  database = \"d\"\n  user = \"u\"\n  password = \"p\"\n  port = 70000").contains("port"));
        assert!(refused("  connection_string = \"mysql://u:p@db/d\"").contains("postgres://"));
        // Without connection_string or host it is not clearly Postgres: a
        // Steampipe plugin of that name.
        let other = ok(&[("pg.spc", "connection \"pg\" {\n  plugin = \"postgres\"\n  tables = [\"a\"]\n}\n")]);
        assert_eq!(
            object(&other, "Connection", "pg")["spec"]["plugin"],
            json!({ "steampipe": { "name": "postgres", "config": "tables = [\"a\"]\n" } })
        );
    }

    #[test]
    fn plugin_blocks_resolve_references() {
        let import = ok(&[("plugins.spc", PLUGINS)]);
        assert_sound(&import);
        let lake = object(&import, "Connection", "aws-data-lake");
        assert_eq!(lake["spec"]["plugin"]["steampipe"]["name"], "aws");
        assert_eq!(config(&import, "aws-data-lake"), "regions = [\"us-east-1\"]\nendpoint_url = \"https://s3.internal.example.com\"\n");
        assert_eq!(
            secret(&import, "aws-data-lake-credentials"),
            BTreeMap::from([("access_key", "AKIALAKEEXAMPLE"), ("secret_key", "lake-secret")])
        );
        // A plugin block without a source is the plugin of its label.
        assert_eq!(object(&import, "Connection", "slack-workspace")["spec"]["plugin"]["steampipe"]["name"], "slack");
        assert_eq!(secret(&import, "slack-workspace-credentials"), BTreeMap::from([("token", "1234567890")]));
        assert_eq!(
            config(&import, "slack-workspace"),
            "team = { name = \"acme\", channels = [\"general\", \"ops\"] }\nwelcome = <<EOT\nHello ${\"there\"}\nEOT\n"
        );
        assert!(noted(&import, "plugins.spc", 1, "memory_max_mb, limiter block left out"));
        assert!(noted(&import, "plugins.spc", 13, "options \"database\" block left out"));

        // Plugin blocks may be in another file; an unknown one is an error.
        let (blocks, connections) = PLUGINS.split_at(PLUGINS.find("options").unwrap());
        assert!(run_import(&[("a.spc", connections), ("b.spc", blocks)], &Options::default()).is_ok());
        let err = error(&[("a.spc", connections)]);
        assert_eq!(err.location, Some(Location { file: "a.spc".into(), line: 7 }));
        assert!(err.message.contains("no plugin \"aws_high\" block"), "{err}");
        let twice = error(&[("a.spc", blocks), ("b.spc", blocks)]);
        assert_eq!(twice.to_string(), "b.spc:1: plugin \"aws_high\" is defined twice: first at a.spc:1");
    }

    #[test]
    fn options_name_select_and_attach() {
        let options = Options {
            namespace: Some("acme".into()),
            connections: vec!["aws_*".into(), "github".into()],
            prefix: Some("team".into()),
            secret_keys: vec!["baseurl".into()],
            attach: vec!["analytics".into(), "reporting".into()],
        };
        let import = run_import(&all(), &options).unwrap();
        assert_sound(&import);
        assert_eq!(
            names(&import, "Connection"),
            ["team-aws-prod-01", "team-aws-prod-02", "team-aws-dev", "team-github", "team-aws-data-lake"]
        );
        assert_eq!(object(&import, "Connection", "team-aws-dev")["spec"]["schema"], "team_aws_dev");
        assert_eq!(names(&import, "WorkspaceConnection").len(), 10);
        let attachment = object(&import, "WorkspaceConnection", "analytics-team-github");
        assert_eq!(attachment["spec"], json!({ "workspace": "analytics", "connection": "team-github" }));
        assert!(import.objects.iter().all(|o| o["metadata"]["namespace"] == "acme"));
        let kinds: Vec<&str> = import.objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        let mut sorted = kinds.clone();
        sorted.sort_by_key(|k| ["Secret", "Connection", "WorkspaceConnection"].iter().position(|x| x == k));
        assert_eq!(kinds, sorted, "Secrets, then Connections, then attachments");

        // An aggregator picked alone keeps its glob, prefixed, over every
        // connection of its plugin.
        let alone = import_with(&all(), &["all_aws"], Some("team"));
        assert_eq!(names(&alone, "Connection"), ["team-all-aws"]);
        assert_eq!(object(&alone, "Connection", "team-all-aws")["spec"]["aggregator"]["connections"], json!(["team-aws-*"]));

        // --secret-key takes any argument into the Secret.
        let gitlab = run_import(&[("github.spc", GITHUB)], &Options { secret_keys: vec!["baseurl".into()], ..Default::default() }).unwrap();
        assert_eq!(secret(&gitlab, "gitlab-ops-credentials")["baseurl"], "https://gitlab.example.com");
        assert!(gitlab.objects.iter().all(|o| o["spec"]["plugin"]["steampipe"].get("config").is_none()));

        let none = import_options(&all(), &Options { connections: vec!["azure_*".into()], ..Default::default() }).unwrap_err();
        assert_eq!(none.location, None);
        assert!(none.message.contains("azure_*"));
    }

    fn import_options(files: &[(&str, &str)], options: &Options) -> Result<Import, ImportError> {
        run_import(files, options)
    }

    fn import_with(files: &[(&str, &str)], connections: &[&str], prefix: Option<&str>) -> Import {
        let options = Options {
            connections: connections.iter().map(|c| c.to_string()).collect(),
            prefix: prefix.map(Into::into),
            ..Default::default()
        };
        run_import(files, &options).unwrap()
    }

    #[test]
    fn every_fixture_together() {
        let import = ok(&all());
        assert_sound(&import);
        assert_eq!(names(&import, "Connection").len(), 13);
        // The glob over aws_* now also takes the data lake, of plugin aws by its block.
        assert_eq!(object(&import, "Connection", "all-aws")["spec"]["aggregator"]["connections"], json!(["aws-*"]));
        let yaml = super::super::to_yaml(&import.objects);
        let back: Vec<Value> = yaml.split("\n---\n").map(|doc| serde_saphyr::from_str(doc.trim_start_matches("---\n")).unwrap()).collect();
        assert_eq!(back, import.objects);
    }

    #[test]
    fn globs_that_would_take_more_become_lists() {
        let text = "connection \"aws_a\" {\n  plugin = \"aws\"\n}\nconnection \"aws.b\" {\n  plugin = \"aws\"\n}\nconnection \"aws_c\" {\n  plugin = \"gcp\"\n}\nconnection \"all\" {\n  plugin = \"aws\"\n  type = \"aggregator\"\n  connections = [\"aws_*\", \"aws_a\", \"azure_*\"]\n}\n";
        let import = ok(&[("x.spc", text)]);
        // aws-* would take aws.b (not aws_*) and aws_c (a gcp connection).
        assert_eq!(object(&import, "Connection", "all")["spec"]["aggregator"]["connections"], json!(["aws-a", "azure-*"]));
        assert!(noted(&import, "x.spc", 13, "matches no aws connection"));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let env = error(&[("errors/env.spc", include_str!("../../tests/fixtures/spc/errors/env.spc"))]);
        assert_eq!(env.location, Some(Location { file: "errors/env.spc".into(), line: 4 }));
        assert!(env.message.contains("secret_key calls env()") && env.message.contains("--secret-key"), "{env}");

        let duplicate = error(&[
            ("errors/duplicate_a.spc", include_str!("../../tests/fixtures/spc/errors/duplicate_a.spc")),
            ("errors/duplicate_b.spc", include_str!("../../tests/fixtures/spc/errors/duplicate_b.spc")),
        ]);
        assert_eq!(
            duplicate.to_string(),
            "errors/duplicate_b.spc:3: connection aws_prod is defined twice: first at errors/duplicate_a.spc:1"
        );

        let unknown = error(&[("errors/unknown_block.spc", include_str!("../../tests/fixtures/spc/errors/unknown_block.spc"))]);
        assert_eq!(unknown.location, Some(Location { file: "errors/unknown_block.spc".into(), line: 5 }));
        assert!(unknown.message.starts_with("dashboard block"), "{unknown}");

        let collide = error(&[
            ("a.spc", "connection \"aws.prod\" {\n  plugin = \"aws\"\n}\n"),
            ("b.spc", "\nconnection \"aws_prod\" {\n  plugin = \"aws\"\n}\n"),
        ]);
        assert_eq!(
            collide.to_string(),
            "b.spc:2: connections aws.prod (at a.spc:1) and aws_prod both have the Kubernetes name aws-prod: rename one"
        );

        let cases: &[(&str, usize, &str)] = &[
            ("connection \"a\" {\n  plugin = \"aws\"\n  regions = \n}\n", 3, "not valid HCL"),
            ("connection \"a\" {\n  plugin = \"aws\"\n  secret_key = \"x-${var.k}\"\n}\n", 3, "refers to var"),
            ("connection \"a\" {\n  plugin = \"aws\"\n  secret_key = [\"x\"]\n}\n", 3, "plain string or number"),
            ("connection \"a\" {\n  plugin = \"aws\"\n  secret_key = \"x-${\"y\"}\"\n}\n", 3, "plain string or number"),
            ("connection \"a\" {\n  plugin = \"aws\"\n  regions = [upper(\"x\")]\n}\n", 3, "calls upper()"),
            ("connection \"a\" {\n  plugin = \"aws\"\n  regions = [for r in [\"a\"] : r]\n}\n", 3, "for expressions"),
            ("connection \"a\" {\n  regions = []\n}\n", 1, "has no plugin"),
            ("connection \"a\" {\n  plugin = aws\n}\n", 2, "plugin is a string or plugin.<label>"),
            ("connection \"a\" {\n  plugin = \"aws\"\n  type = \"plugin\"\n}\n", 3, "only type"),
            ("connection \"a\" {\n  plugin = \"aws\"\n  import_schema = \"off\"\n}\n", 3, "import_schema"),
            ("connection \"a\" {\n  plugin = \"aws\"\n  type = \"aggregator\"\n}\n", 1, "needs connections"),
            ("connection \"a\" {\n  plugin = \"aws\"\n\n  limiter \"x\" {\n  }\n}\n", 4, "limiter block"),
            ("connection {\n  plugin = \"aws\"\n}\n", 1, "one label"),
            ("\n\nregions = [\"*\"]\n", 3, "outside a block"),
            ("workspace \"default\" {\n}\n", 1, "workspaces.spc"),
        ];
        for (text, line, part) in cases {
            let err = error(&[("t.spc", text)]);
            assert_eq!(err.location, Some(Location { file: "t.spc".into(), line: *line }), "{text}: {err}");
            assert!(err.message.contains(part), "{text}: {err}");
            assert!(!err.message.contains("x-"), "no value in {err}");
        }
    }
}
