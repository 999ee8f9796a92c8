//! The input files, and `plugin` blocks: what a connection's plugin is.

use hcl_edit::Span;
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Block, Body, Structure};

use super::super::{ImportError, Location, Note};

/// One input file, for locations and the source text of expressions.
pub(super) struct File<'a> {
    pub(super) path: &'a str,
    pub(super) text: &'a str,
}

impl File<'_> {
    pub(super) fn parse(&self) -> Result<Body, ImportError> {
        hcl_edit::parser::parse_body(self.text).map_err(|e| {
            ImportError::at(Location { file: self.path.to_owned(), line: e.location().line() }, format!("not valid HCL: {}", e.message()))
        })
    }

    pub(super) fn at(&self, node: &impl Span) -> Location {
        let offset = node.span().map_or(0, |s| s.start);
        Location { file: self.path.to_owned(), line: self.text[..offset].matches('\n').count() + 1 }
    }

    pub(super) fn error(&self, node: &impl Span, message: impl Into<String>) -> ImportError {
        ImportError::at(self.at(node), message)
    }

    pub(super) fn note(&self, node: &impl Span, message: impl Into<String>) -> Note {
        Note { location: self.at(node), message: message.into() }
    }

    /// The text of a node as the user wrote it.
    pub(super) fn source(&self, node: &impl Span) -> &str {
        node.span().map_or("", |s| &self.text[s])
    }

    /// A block's one label.
    pub(super) fn label<'b>(&self, block: &'b Block) -> Result<&'b str, ImportError> {
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
pub(super) fn plugin_instance(file: &File, block: &Block, notes: &mut Vec<Note>) -> Result<String, ImportError> {
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
pub(super) fn plugin_name(image: &str) -> Result<String, String> {
    let without_version = image.split_once('@').map_or(image, |(name, _)| name);
    let name = without_version.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || name.len() > 40 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(format!("plugin {image:?}: Manifold's steampipe plugins are named by ^[a-z0-9_]+$ (at most 40)"));
    }
    Ok(name.to_owned())
}
