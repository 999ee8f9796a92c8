//! The plugin catalog: what each kind of Connection becomes in Postgres. A
//! plugin spec and the credentials Secret's data turn into the extension,
//! the wrapper, the server options, the user-mapping options and the remote
//! schema. Pure: no I/O, so every case is tested with plain values.

use std::collections::BTreeMap;

use crate::api::{FdwPlugin, PluginSpec, PostgresPlugin, SteampipePlugin};
use crate::postgres::plan::SecretString;

/// What a plugin needs in the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wrapper {
    /// Short name for status and printer columns, such as `postgres` or
    /// `steampipe/aws`.
    pub label: String,
    pub extension: String,
    pub wrapper: String,
    /// Options of the foreign server. For `steampipe`, `config` holds the
    /// Secret's keys as HCL arguments, so it is a secret as a whole.
    pub server_options: Vec<(String, SecretString)>,
    /// Options of the user mapping: the credentials.
    pub mapping_options: Vec<(String, SecretString)>,
    pub remote_schema: String,
}

/// A spec or Secret that cannot be turned into a wrapper. Messages name keys,
/// never values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    #[error("the credentials Secret has no key {0:?}")]
    SecretKeyMissing(String),
    #[error("{0}")]
    Invalid(String),
}

/// The plugin's label, known from the spec alone.
pub fn label(plugin: &PluginSpec) -> String {
    match (&plugin.postgres, &plugin.steampipe, &plugin.fdw) {
        (Some(_), _, _) => "postgres".into(),
        (_, Some(s), _) => format!("steampipe/{}", s.name),
        (_, _, Some(f)) => format!("fdw/{}", f.wrapper),
        _ => "none".into(),
    }
}

/// Resolves a plugin. `schema` is the local schema, which is also the remote
/// schema for steampipe. `credentials` is the Secret's data, if there is one.
pub fn resolve(
    plugin: &PluginSpec,
    schema: &str,
    credentials: Option<&BTreeMap<String, Vec<u8>>>,
) -> Result<Wrapper, PluginError> {
    let wrapper = match (&plugin.postgres, &plugin.steampipe, &plugin.fdw) {
        (Some(pg), None, None) => postgres(pg, credentials)?,
        (None, Some(sp), None) => steampipe(sp, schema, credentials)?,
        (None, None, Some(fdw)) => generic(fdw, credentials)?,
        _ => return Err(PluginError::Invalid("exactly one of plugin.postgres, plugin.steampipe or plugin.fdw must be set".into())),
    };
    for (key, value) in wrapper.server_options.iter().chain(&wrapper.mapping_options) {
        if key.is_empty() || key.contains('\0') {
            return Err(PluginError::Invalid(format!("option name {key:?} is not valid")));
        }
        if value.expose().contains('\0') {
            return Err(PluginError::Invalid(format!(
                "the value of option {key:?} contains a NUL byte, which Postgres cannot store"
            )));
        }
    }
    Ok(wrapper)
}

fn text(key: &str, value: &[u8]) -> Result<SecretString, PluginError> {
    String::from_utf8(value.to_vec())
        .map(SecretString::new)
        .map_err(|_| PluginError::Invalid(format!("the credentials Secret's key {key:?} is not UTF-8 text")))
}

fn public(options: impl IntoIterator<Item = (String, String)>) -> Vec<(String, SecretString)> {
    options.into_iter().map(|(k, v)| (k, SecretString::public(v))).collect()
}

fn postgres(pg: &PostgresPlugin, credentials: Option<&BTreeMap<String, Vec<u8>>>) -> Result<Wrapper, PluginError> {
    for reserved in ["host", "port", "dbname"] {
        if pg.options.contains_key(reserved) {
            return Err(PluginError::Invalid(format!(
                "plugin.postgres.options must not set {reserved:?}: it comes from the plugin's own fields"
            )));
        }
    }
    let mut server_options = vec![
        ("host".to_owned(), pg.host.clone()),
        ("port".to_owned(), pg.port.to_string()),
        ("dbname".to_owned(), pg.database.clone()),
    ];
    server_options.extend(pg.options.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut mapping_options = Vec::new();
    if let Some(data) = credentials {
        let user = data.get("user").ok_or_else(|| PluginError::SecretKeyMissing("user".into()))?;
        mapping_options.push(("user".to_owned(), text("user", user)?));
        if let Some(password) = data.get("password") {
            mapping_options.push(("password".to_owned(), text("password", password)?));
        }
    }
    Ok(Wrapper {
        label: "postgres".into(),
        extension: "postgres_fdw".into(),
        wrapper: "postgres_fdw".into(),
        server_options: public(server_options),
        mapping_options,
        remote_schema: pg.remote_schema.clone(),
    })
}

fn steampipe(sp: &SteampipePlugin, schema: &str, credentials: Option<&BTreeMap<String, Vec<u8>>>) -> Result<Wrapper, PluginError> {
    if sp.name.is_empty() || !sp.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(PluginError::Invalid("plugin.steampipe.name must match ^[a-z0-9_]+$".into()));
    }
    let mut config = sp.config.clone().unwrap_or_default();
    for (key, value) in credentials.into_iter().flatten() {
        if !is_hcl_identifier(key) {
            return Err(PluginError::Invalid(format!(
                "the credentials Secret's key {key:?} is not an HCL argument name"
            )));
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
    }
    let extension = format!("steampipe_postgres_{}", sp.name);
    Ok(Wrapper {
        label: format!("steampipe/{}", sp.name),
        wrapper: extension.clone(),
        extension,
        server_options: vec![("config".to_owned(), SecretString::new(config))],
        mapping_options: Vec::new(),
        remote_schema: schema.to_owned(),
    })
}

fn generic(fdw: &FdwPlugin, credentials: Option<&BTreeMap<String, Vec<u8>>>) -> Result<Wrapper, PluginError> {
    let mapping_options = credentials
        .into_iter()
        .flatten()
        .map(|(k, v)| Ok((k.clone(), text(k, v)?)))
        .collect::<Result<_, PluginError>>()?;
    Ok(Wrapper {
        label: format!("fdw/{}", fdw.wrapper),
        extension: fdw.extension.clone(),
        wrapper: fdw.wrapper.clone(),
        server_options: public(fdw.server_options.clone()),
        mapping_options,
        remote_schema: fdw.remote_schema.clone(),
    })
}

/// An HCL identifier: a letter or `_`, then letters, digits, `_` or `-`.
fn is_hcl_identifier(key: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect()
    }

    fn pg_plugin() -> PluginSpec {
        PluginSpec {
            postgres: Some(PostgresPlugin {
                host: "db".into(),
                port: 5433,
                database: "sales".into(),
                remote_schema: "public".into(),
                options: [("fetch_size".to_string(), "1000".to_string())].into(),
            }),
            steampipe: None,
            fdw: None,
        }
    }

    #[test]
    fn postgres_maps_fields_to_server_and_secret_to_mapping() {
        let w = resolve(&pg_plugin(), "sales", Some(&secret(&[("user", "u"), ("password", "p"), ("other", "x")]))).unwrap();
        assert_eq!(w.extension, "postgres_fdw");
        let opts: Vec<_> = w.server_options.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(opts, [("host", "db"), ("port", "5433"), ("dbname", "sales"), ("fetch_size", "1000")]);
        let mapping: Vec<_> = w.mapping_options.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(mapping, [("user", "u"), ("password", "p")]);
    }

    #[test]
    fn postgres_without_user_key_is_a_missing_key() {
        let err = resolve(&pg_plugin(), "sales", Some(&secret(&[("password", "p")]))).unwrap_err();
        assert_eq!(err, PluginError::SecretKeyMissing("user".into()));
    }

    #[test]
    fn nul_bytes_are_refused_without_showing_the_value() {
        let err = resolve(&pg_plugin(), "sales", Some(&secret(&[("user", "u"), ("password", "se\0cret")]))).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("NUL") && message.contains("password") && !message.contains("se\0cret"));
    }

    #[test]
    fn steampipe_appends_secret_keys_as_escaped_hcl() {
        let plugin = PluginSpec {
            postgres: None,
            steampipe: Some(SteampipePlugin { name: "aws".into(), config: Some("regions = [\"*\"]".into()) }),
            fdw: None,
        };
        let w = resolve(&plugin, "aws_prod", Some(&secret(&[("secret_key", "a\"b\\c${env}%{x}\nd")]))).unwrap();
        assert_eq!(w.extension, "steampipe_postgres_aws");
        assert_eq!(w.remote_schema, "aws_prod");
        assert_eq!(
            w.server_options[0].1.expose(),
            "regions = [\"*\"]\nsecret_key = \"a\\\"b\\\\c$${env}%%{x}\\nd\"\n"
        );
        let bad = resolve(&plugin, "aws", Some(&secret(&[("not valid", "x")]))).unwrap_err();
        assert!(matches!(bad, PluginError::Invalid(_)));
    }

    #[test]
    fn hcl_strings_keep_lone_dollars_and_percents() {
        assert_eq!(hcl_string("$5 and 10%"), "\"$5 and 10%\"");
        assert_eq!(hcl_string("$${x}"), "\"$$${x}\"");
    }

    #[test]
    fn fdw_uses_every_secret_key_as_a_mapping_option() {
        let plugin = PluginSpec {
            postgres: None,
            steampipe: None,
            fdw: Some(FdwPlugin {
                extension: "mysql_fdw".into(),
                wrapper: "mysql_fdw".into(),
                server_options: [("host".to_string(), "m".to_string())].into(),
                remote_schema: "shop".into(),
            }),
        };
        let w = resolve(&plugin, "shop", Some(&secret(&[("username", "u"), ("password", "p")]))).unwrap();
        assert_eq!(w.label, "fdw/mysql_fdw");
        let keys: Vec<_> = w.mapping_options.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["password", "username"]);
    }
}
