//! A Steampipe plugin's config: which arguments are credentials, which go
//! into the Secret, and which keep the user's expression in `config`.

use std::collections::BTreeMap;

use hcl_edit::expr::Expression;
use hcl_edit::structure::Attribute;
use hcl_edit::template::Element;
use unicode_normalization::UnicodeNormalization;

use super::super::{ImportError, Note, Options};
use super::conn::Conn;
use super::file::File;

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
pub(super) const STEAMPIPE_ARGUMENTS: &[&str] = &["plugin", "type", "connections", "import_schema"];

impl Conn<'_> {
    /// A Steampipe plugin's config, and its credentials.
    pub(super) fn steampipe(
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
}

/// The text of a plain string, number or heredoc: what a Secret can hold.
pub(super) fn literal(file: &File, value: &Expression) -> Option<String> {
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
