//! Connection blocks: their names and plugin, and their conversion to a
//! Connection's spec. The plugin config and credentials are in `config`,
//! Postgres sources in `postgres`.

use std::collections::{BTreeMap, HashMap};

use hcl_edit::Span;
use hcl_edit::expr::{Expression, TraversalOperator};
use hcl_edit::structure::{Attribute, Block, Structure};
use hcl_edit::visit::{Visit, visit_expr};
use serde_json::{Value, json};

use super::super::{ImportError, Location, Note, Options};
use super::config::STEAMPIPE_ARGUMENTS;
use super::file::{File, plugin_name};
use crate::api::glob;

/// A connection block, with its names and plugin.
pub(super) struct Conn<'a> {
    pub(super) file: &'a File<'a>,
    pub(super) block: &'a Block,
    pub(super) at: Location,
    pub(super) original: String,
    pub(super) name: String,
    pub(super) schema: String,
    pub(super) plugin: String,
    pub(super) aggregator: bool,
}

impl<'a> Conn<'a> {
    pub(super) fn new(
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

    pub(super) fn secret_name(&self) -> String {
        format!("{}-credentials", self.name)
    }

    pub(super) fn error(&self, node: &impl Span, message: impl std::fmt::Display) -> ImportError {
        self.file.error(node, format!("connection {}: {message}", self.original))
    }

    pub(super) fn note(&self, node: &impl Span, message: impl std::fmt::Display) -> Note {
        self.file.note(node, format!("connection {}: {message}", self.original))
    }

    /// The spec, and the credentials if any.
    pub(super) fn convert(
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

    /// An aggregator's members in Kubernetes names, each once, in the order
    /// of its `connections` list.
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
            let (mapped, note) = self.member(pattern.value().as_str(), all, options);
            if let Some(note) = note {
                notes.push(self.note(attr, note));
            }
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

    /// One entry of an aggregator's `connections` in Kubernetes names, and
    /// a note on it if it needs one. A name maps to that connection's
    /// Kubernetes name. A glob stays a glob over Kubernetes names when that
    /// takes exactly the connections of this plugin it takes now and starts
    /// with a literal (or when it matches none); otherwise it becomes the
    /// list of the connections it matches.
    fn member(&self, pattern: &str, all: &[Conn], options: &Options) -> (Vec<String>, Option<String>) {
        if !pattern.contains(['*', '?']) {
            return match all.iter().find(|c| c.original == pattern) {
                Some(member) => (vec![member.name.clone()], None),
                None => (vec![options.kube_name(pattern)], Some(format!("member {pattern} is no connection of the files"))),
            };
        }
        let plugins_own = |c: &&Conn| !c.aggregator && c.plugin == self.plugin;
        let matched: Vec<&str> = all.iter().filter(plugins_own).filter(|c| glob(pattern, &c.original)).map(|c| c.name.as_str()).collect();
        let kube_glob = options.kube_glob(pattern);
        let same: Vec<&str> = all.iter().filter(|c| !c.aggregator).filter(|c| glob(&kube_glob, &c.name)).map(|c| c.name.as_str()).collect();
        if matched.is_empty() {
            let note = format!("{pattern:?} matches no {} connection of the files; kept as {kube_glob:?}", self.plugin);
            (vec![kube_glob], Some(note))
        } else if same == matched && !pattern.starts_with(['*', '?']) {
            (vec![kube_glob], None)
        } else {
            let note = format!(
                "{pattern:?} becomes the list of the {} connections it matches now: as {kube_glob:?} it would take connections of any plugin",
                self.plugin
            );
            (matched.into_iter().map(str::to_owned).collect(), Some(note))
        }
    }
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
