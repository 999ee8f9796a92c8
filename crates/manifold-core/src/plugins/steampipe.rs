//! `plugin.steampipe`: a Steampipe plugin through its standalone FDW
//! extension; the credentials become HCL arguments of its `config`.

use super::*;

pub(super) fn resolve(sp: &SteampipePlugin, schema: &str, credentials: Option<&BTreeMap<String, Vec<u8>>>) -> Result<Wrapper, PluginError> {
    if sp.name.is_empty() || !sp.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(PluginError::Invalid("plugin.steampipe.name must match ^[a-z0-9_]+$".into()));
    }
    let mut config = sp.config.clone().unwrap_or_default();
    let mut embedded_secrets = Vec::new();
    for (key, value) in credentials.into_iter().flatten() {
        if !is_hcl_identifier(key) {
            return Err(PluginError::Invalid(format!("the credentials Secret's key {key:?} is not an HCL argument name")));
        }
        if !config.is_empty() && !config.ends_with('\n') {
            config.push('\n');
        }
        let value = text(key, value)?;
        // HCL normalizes every string to Unicode NFC, escapes included: a
        // value in another form would reach the plugin changed.
        if !unicode_normalization::is_nfc(value.expose()) {
            return Err(PluginError::Invalid(format!(
                "the credentials Secret's key {key:?} is not in Unicode NFC form, which HCL would silently change"
            )));
        }
        config.push_str(&format!("{key} = {}\n", hcl_string(value.expose())));
        embedded_secrets.push(value);
    }
    let extension = format!("steampipe_postgres_{}", sp.name);
    Ok(Wrapper {
        label: format!("steampipe/{}", sp.name),
        wrapper: extension.clone(),
        extension,
        server_options: vec![("config".to_owned(), SecretString::new(config))],
        mapping_options: Vec::new(),
        remote_schema: schema.to_owned(),
        embedded_secrets,
    })
}

/// An HCL identifier: a letter or `_`, then letters, digits, `_` or `-`.
pub fn is_hcl_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Renders a value as an HCL quoted string that stays data: quotes,
/// backslashes and control characters are escaped, and the template
/// sequences `${` and `%{` are doubled so that nothing is interpolated.
pub fn hcl_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
