//! The plugin catalog: what each kind of Connection becomes in Postgres. A
//! plugin spec and the credentials Secret's data turn into the extension,
//! the wrapper, the server options, the user-mapping options and the remote
//! schema, under the cluster admin's `SourcePolicy`: which wrappers exist,
//! where sources may be, and how long a connect may take. Everything a spec
//! may not do is refused here, before any SQL runs. Pure: no I/O, so every
//! case is tested with plain values.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::api::{FdwPlugin, POSTGRES_OPTIONS, PluginSpec, PostgresPlugin, SteampipePlugin, is_network_host};
use crate::secret::SecretString;

/// The schema every extension Manifold creates goes into. Extensions an
/// admin installed may be anywhere; their functions are called qualified.
pub const EXTENSION_SCHEMA: &str = "public";

/// A wrapper that a cluster admin allowed for the `fdw` plugin, with the
/// option names a spec and a Secret may set.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedWrapper {
    pub extension: String,
    pub wrapper: String,
    #[serde(default)]
    pub server_options: Vec<String>,
    #[serde(default)]
    pub user_mapping_options: Vec<String>,
    /// The server options that name the source's host (mysql_fdw: `host`;
    /// tds_fdw: `servername`; oracle_fdw: `dbserver`): each one set must
    /// be a network endpoint inside the admin's fence, and with a fence,
    /// one must be set. Unset: `host`.
    #[serde(default = "host_option")]
    pub host_options: Vec<String>,
}

fn host_option() -> Vec<String> {
    vec!["host".to_owned()]
}

/// Where sources may be: DNS patterns (`db.example.com`, `*.svc.cluster.local`)
/// and CIDRs. Empty means anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFence {
    names: Vec<String>,
    cidrs: Vec<(IpAddr, u8)>,
}

impl HostFence {
    /// Parses a list of DNS patterns and CIDRs (`10.0.0.0/8`, `::1/128`).
    pub fn parse(entries: &[String]) -> Result<HostFence, String> {
        let mut fence = HostFence::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Some((ip, bits)) = entry.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| format!("{entry:?} is not a CIDR"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits: u8 = bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| format!("{entry:?} is not a CIDR"))?;
                fence.cidrs.push((ip, bits));
            } else if entry.parse::<IpAddr>().is_ok() {
                let ip: IpAddr = entry.parse().unwrap();
                fence.cidrs.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            } else {
                let name = entry.strip_prefix("*.").unwrap_or(entry);
                if !is_network_host(name) {
                    return Err(format!("{entry:?} is neither a DNS pattern nor a CIDR"));
                }
                fence.names.push(entry.to_ascii_lowercase().trim_end_matches('.').to_owned());
            }
        }
        Ok(fence)
    }

    pub fn is_open(&self) -> bool {
        self.names.is_empty() && self.cidrs.is_empty()
    }

    /// Whether a source host is inside the fence. An IP address must be in
    /// a CIDR; a name must match a pattern (the name is what the database
    /// server resolves, so fence by names whose DNS you control).
    pub fn allows(&self, host: &str) -> bool {
        if self.is_open() {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.cidrs.iter().any(|(net, bits)| in_cidr(ip, *net, *bits));
        }
        let host = host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        self.names.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.'),
            None => host == p,
        })
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= 128 || (ip >> shift) == (net >> shift)
}

/// What a cluster admin decides about sources; a tenant's spec cannot
/// change any of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePolicy {
    /// Wrappers the `fdw` plugin may use. postgres_fdw (through the
    /// `postgres` plugin) and the steampipe extensions are always allowed.
    pub wrappers: Vec<AllowedWrapper>,
    pub hosts: HostFence,
    /// Every postgres_fdw server gets this `connect_timeout`, in seconds,
    /// unless the spec sets a lower one.
    pub connect_timeout_secs: u64,
}

impl Default for SourcePolicy {
    fn default() -> Self {
        SourcePolicy { wrappers: Vec::new(), hosts: HostFence::default(), connect_timeout_secs: 10 }
    }
}

/// The options a wrapper's IMPORT FOREIGN SCHEMA sets on the tables and on
/// their columns: anything else on an imported table came from the source's
/// answers, and the import is refused. None: not known for this wrapper,
/// and not checked (the tables' server still is).
pub fn imported_options(wrapper: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    match wrapper {
        "postgres_fdw" => Some((&["schema_name", "table_name"], &["column_name"])),
        "mysql_fdw" => Some((&["dbname", "table_name"], &[])),
        _ => None,
    }
}

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
    /// Secret values that appear inside another value (each credential in
    /// the steampipe config): error messages are cleaned of them too.
    pub embedded_secrets: Vec<SecretString>,
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

/// The plugin's label, known from the spec alone (`aggregator` without one).
pub fn label(plugin: Option<&PluginSpec>) -> String {
    let Some(plugin) = plugin else { return "aggregator".into() };
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
    policy: &SourcePolicy,
) -> Result<Wrapper, PluginError> {
    let wrapper = match (&plugin.postgres, &plugin.steampipe, &plugin.fdw) {
        (Some(pg), None, None) => postgres(pg, credentials, policy)?,
        (None, Some(sp), None) => steampipe(sp, schema, credentials)?,
        (None, None, Some(fdw)) => generic(fdw, credentials, policy)?,
        _ => return Err(PluginError::Invalid("exactly one of plugin.postgres, plugin.steampipe or plugin.fdw must be set".into())),
    };
    for (key, value) in wrapper.server_options.iter().chain(&wrapper.mapping_options) {
        if key.is_empty() || key.contains('\0') {
            return Err(PluginError::Invalid(format!("option name {key:?} is not valid")));
        }
        if value.expose().contains('\0') {
            return Err(PluginError::Invalid(format!("the value of option {key:?} contains a NUL byte, which Postgres cannot store")));
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

/// A source host must be a network endpoint inside the admin's fence.
fn check_host(host: &str, policy: &SourcePolicy) -> Result<(), PluginError> {
    if !is_network_host(host) {
        return Err(PluginError::Invalid(format!(
            "host {host:?} is not a DNS name or an IP address: sources are network endpoints, never socket paths or lists"
        )));
    }
    if !policy.hosts.allows(host) {
        return Err(PluginError::Invalid(format!("host {host:?} is outside the sources the cluster admin allows (--source-hosts)")));
    }
    Ok(())
}

fn postgres(pg: &PostgresPlugin, credentials: Option<&BTreeMap<String, Vec<u8>>>, policy: &SourcePolicy) -> Result<Wrapper, PluginError> {
    check_host(&pg.host, policy)?;
    if let Some(key) = pg.options.keys().find(|k| !POSTGRES_OPTIONS.contains(&k.as_str())) {
        return Err(PluginError::Invalid(format!(
            "plugin.postgres.options may not set {key:?}: allowed are {}",
            POSTGRES_OPTIONS.join(", ")
        )));
    }
    // Every server is bounded: a source that accepts TCP and never answers
    // holds a workspace session only this long (postgres_fdw's connect
    // cannot be cancelled before PostgreSQL 16).
    let connect_timeout = match pg.options.get("connect_timeout") {
        None => policy.connect_timeout_secs,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(secs) if secs >= 2 => secs.min(policy.connect_timeout_secs),
            _ => {
                return Err(PluginError::Invalid(format!(
                    "plugin.postgres.options.connect_timeout {v:?} must be a whole number of seconds, 2 or more"
                )));
            }
        },
    };
    let mut server_options =
        vec![("host".to_owned(), pg.host.clone()), ("port".to_owned(), pg.port.to_string()), ("dbname".to_owned(), pg.database.clone())];
    server_options.extend(pg.options.iter().filter(|(k, _)| *k != "connect_timeout").map(|(k, v)| (k.clone(), v.clone())));
    server_options.push(("connect_timeout".to_owned(), connect_timeout.to_string()));
    let mut mapping_options = Vec::new();
    if let Some(data) = credentials {
        // A password is required: postgres_fdw lets a superuser's mapping
        // in without one, wherever trust or peer authentication lets it.
        for key in ["user", "password"] {
            let value = data.get(key).ok_or_else(|| PluginError::SecretKeyMissing(key.into()))?;
            let value = text(key, value)?;
            if value.expose().is_empty() {
                return Err(PluginError::Invalid(format!("the credentials Secret's key {key:?} is empty")));
            }
            mapping_options.push((key.to_owned(), value));
        }
    } else {
        return Err(PluginError::Invalid("a postgres connection needs credentials.secretRef with keys user and password".into()));
    }
    Ok(Wrapper {
        label: "postgres".into(),
        extension: "postgres_fdw".into(),
        wrapper: "postgres_fdw".into(),
        server_options: public(server_options),
        mapping_options,
        remote_schema: pg.remote_schema.clone(),
        embedded_secrets: Vec::new(),
    })
}

fn steampipe(sp: &SteampipePlugin, schema: &str, credentials: Option<&BTreeMap<String, Vec<u8>>>) -> Result<Wrapper, PluginError> {
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

fn generic(fdw: &FdwPlugin, credentials: Option<&BTreeMap<String, Vec<u8>>>, policy: &SourcePolicy) -> Result<Wrapper, PluginError> {
    // A tenant can never cause CREATE EXTENSION of anything the admin did
    // not allow.
    let Some(allowed) = policy.wrappers.iter().find(|w| w.extension == fdw.extension && w.wrapper == fdw.wrapper) else {
        let known: Vec<String> = policy.wrappers.iter().map(|w| format!("{}/{}", w.extension, w.wrapper)).collect();
        return Err(PluginError::Invalid(format!(
            "wrapper {:?} of extension {:?} is not allowed by the cluster admin (--wrappers); allowed: {}",
            fdw.wrapper,
            fdw.extension,
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        )));
    };
    if let Some(key) = fdw.server_options.keys().find(|k| !allowed.server_options.contains(k)) {
        return Err(PluginError::Invalid(format!(
            "plugin.fdw.serverOptions may not set {key:?} for {}: allowed are {}",
            fdw.wrapper,
            allowed.server_options.join(", ")
        )));
    }
    // The fence holds only where the admin said which options carry the
    // host: a server that sets none of them cannot be fenced.
    let hosts: Vec<&String> = allowed.host_options.iter().filter_map(|k| fdw.server_options.get(k)).collect();
    for host in &hosts {
        check_host(host, policy)?;
    }
    if hosts.is_empty() && !policy.hosts.is_open() {
        return Err(PluginError::Invalid(format!(
            "plugin.fdw.serverOptions must set the source's host ({}) for {}: the cluster admin fences sources (--source-hosts)",
            if allowed.host_options.is_empty() {
                "the cluster admin named no host option".to_owned()
            } else {
                allowed.host_options.join(" or ")
            },
            fdw.wrapper
        )));
    }
    let mapping_options = credentials
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            if !allowed.user_mapping_options.contains(k) {
                return Err(PluginError::Invalid(format!(
                    "the credentials Secret's key {k:?} is not a user-mapping option allowed for {}: allowed are {}",
                    fdw.wrapper,
                    allowed.user_mapping_options.join(", ")
                )));
            }
            Ok((k.clone(), text(k, v)?))
        })
        .collect::<Result<_, PluginError>>()?;
    Ok(Wrapper {
        label: format!("fdw/{}", fdw.wrapper),
        extension: fdw.extension.clone(),
        wrapper: fdw.wrapper.clone(),
        server_options: public(fdw.server_options.clone()),
        mapping_options,
        remote_schema: fdw.remote_schema.clone(),
        embedded_secrets: Vec::new(),
    })
}

/// An HCL identifier: a letter or `_`, then letters, digits, `_` or `-`.
pub(crate) fn is_hcl_identifier(key: &str) -> bool {
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

    fn pg(host: &str, options: &[(&str, &str)]) -> PluginSpec {
        PluginSpec {
            postgres: Some(PostgresPlugin {
                host: host.into(),
                port: 5433,
                database: "sales".into(),
                remote_schema: "public".into(),
                options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            }),
            steampipe: None,
            fdw: None,
        }
    }

    fn pg_plugin() -> PluginSpec {
        pg("db", &[("fetch_size", "1000")])
    }

    fn creds() -> BTreeMap<String, Vec<u8>> {
        secret(&[("user", "u"), ("password", "p")])
    }

    fn open() -> SourcePolicy {
        SourcePolicy::default()
    }

    fn invalid(result: Result<Wrapper, PluginError>) -> String {
        match result {
            Err(PluginError::Invalid(message)) => message,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn postgres_maps_fields_to_server_and_secret_to_mapping() {
        let w = resolve(&pg_plugin(), "sales", Some(&secret(&[("user", "u"), ("password", "p"), ("other", "x")])), &open()).unwrap();
        assert_eq!(w.extension, "postgres_fdw");
        let opts: Vec<_> = w.server_options.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(opts, [("host", "db"), ("port", "5433"), ("dbname", "sales"), ("fetch_size", "1000"), ("connect_timeout", "10")]);
        let mapping: Vec<_> = w.mapping_options.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(mapping, [("user", "u"), ("password", "p")]);
    }

    #[test]
    fn postgres_needs_a_user_and_a_password() {
        let err = resolve(&pg_plugin(), "sales", Some(&secret(&[("password", "p")])), &open()).unwrap_err();
        assert_eq!(err, PluginError::SecretKeyMissing("user".into()));
        let err = resolve(&pg_plugin(), "sales", Some(&secret(&[("user", "postgres")])), &open()).unwrap_err();
        assert_eq!(err, PluginError::SecretKeyMissing("password".into()));
        invalid(resolve(&pg_plugin(), "sales", Some(&secret(&[("user", "u"), ("password", "")])), &open()));
        invalid(resolve(&pg_plugin(), "sales", None, &open()));
    }

    #[test]
    fn sources_are_network_endpoints_with_allowed_options_only() {
        for host in ["/var/run/postgresql", "/tmp", "db,/tmp", "@x"] {
            assert!(invalid(resolve(&pg(host, &[]), "s", Some(&creds()), &open())).contains("network endpoints"), "{host}");
        }
        for option in [
            "passfile",
            "service",
            "sslkey",
            "sslcert",
            "sslrootcert",
            "sslpassword",
            "hostaddr",
            "require_auth",
            "host",
            "password_required",
        ] {
            let message = invalid(resolve(&pg("db", &[(option, "/etc/passwd")]), "s", Some(&creds()), &open()));
            assert!(message.contains(option) && !message.contains("/etc/passwd"), "{message}");
        }
        for option in POSTGRES_OPTIONS.iter().filter(|o| **o != "connect_timeout") {
            assert!(resolve(&pg("db", &[(option, "1")]), "s", Some(&creds()), &open()).is_ok(), "{option}");
        }
    }

    #[test]
    fn every_server_gets_a_bounded_connect_timeout() {
        let timeout = |options: &[(&str, &str)]| {
            let w = resolve(&pg("db", options), "s", Some(&creds()), &open()).unwrap();
            w.server_options.iter().find(|(k, _)| k == "connect_timeout").unwrap().1.expose().to_owned()
        };
        assert_eq!(timeout(&[]), "10");
        assert_eq!(timeout(&[("connect_timeout", "3")]), "3");
        assert_eq!(timeout(&[("connect_timeout", "600")]), "10");
        invalid(resolve(&pg("db", &[("connect_timeout", "0")]), "s", Some(&creds()), &open()));
        invalid(resolve(&pg("db", &[("connect_timeout", "soon")]), "s", Some(&creds()), &open()));
    }

    #[test]
    fn the_admin_fences_source_hosts() {
        let fence =
            HostFence::parse(&["*.svc.cluster.local".into(), "db.example.com".into(), "10.0.0.0/8".into(), "fd00::/8".into()]).unwrap();
        for ok in ["sales.shop.svc.cluster.local", "DB.example.com.", "10.1.2.3", "fd12::1"] {
            assert!(fence.allows(ok), "{ok}");
        }
        for bad in ["svc.cluster.local", "evil-svc.cluster.local", "example.com", "127.0.0.1", "11.0.0.1", "::1", "db.example.com.evil"] {
            assert!(!fence.allows(bad), "{bad}");
        }
        let policy = SourcePolicy { hosts: fence, ..Default::default() };
        assert!(invalid(resolve(&pg("127.0.0.1", &[]), "s", Some(&creds()), &policy)).contains("outside"));
        assert!(HostFence::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(HostFence::parse(&["/tmp".into()]).is_err());
        assert!(HostFence::default().allows("anything"));
    }

    #[test]
    fn nul_bytes_are_refused_without_showing_the_value() {
        let err = resolve(&pg_plugin(), "sales", Some(&secret(&[("user", "u"), ("password", "se\0cret")])), &open()).unwrap_err();
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
        let w = resolve(&plugin, "aws_prod", Some(&secret(&[("secret_key", "a\"b\\c${env}%{x}\nd")])), &open()).unwrap();
        assert_eq!(w.extension, "steampipe_postgres_aws");
        assert_eq!(w.remote_schema, "aws_prod");
        assert_eq!(w.server_options[0].1.expose(), "regions = [\"*\"]\nsecret_key = \"a\\\"b\\\\c$${env}%%{x}\\nd\"\n");
        // Each credential is redacted on its own, not only the whole config.
        assert_eq!(w.embedded_secrets.iter().map(|s| s.expose()).collect::<Vec<_>>(), ["a\"b\\c${env}%{x}\nd"]);
        let bad = resolve(&plugin, "aws", Some(&secret(&[("not valid", "x")])), &open()).unwrap_err();
        assert!(matches!(bad, PluginError::Invalid(_)));
    }

    #[test]
    fn hcl_strings_keep_lone_dollars_and_percents() {
        assert_eq!(hcl_string("$5 and 10%"), "\"$5 and 10%\"");
        assert_eq!(hcl_string("$${x}"), "\"$$${x}\"");
    }

    fn mysql(extension: &str, options: &[(&str, &str)]) -> PluginSpec {
        PluginSpec {
            postgres: None,
            steampipe: None,
            fdw: Some(FdwPlugin {
                extension: extension.into(),
                wrapper: "mysql_fdw".into(),
                server_options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                remote_schema: "shop".into(),
            }),
        }
    }

    fn mysql_allowed() -> SourcePolicy {
        SourcePolicy {
            wrappers: vec![AllowedWrapper {
                extension: "mysql_fdw".into(),
                wrapper: "mysql_fdw".into(),
                server_options: vec!["host".into(), "port".into()],
                user_mapping_options: vec!["username".into(), "password".into()],
                host_options: host_option(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn fdw_uses_only_what_the_admin_allowed() {
        let creds = secret(&[("username", "u"), ("password", "p")]);
        let w = resolve(&mysql("mysql_fdw", &[("host", "m")]), "shop", Some(&creds), &mysql_allowed()).unwrap();
        assert_eq!(w.label, "fdw/mysql_fdw");
        let keys: Vec<_> = w.mapping_options.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["password", "username"]);

        // Nothing is allowed by default; dblink never is unless listed.
        assert!(invalid(resolve(&mysql("mysql_fdw", &[]), "shop", Some(&creds), &open())).contains("not allowed"));
        assert!(invalid(resolve(&mysql("dblink", &[]), "shop", Some(&creds), &mysql_allowed())).contains("not allowed"));
        assert!(
            invalid(resolve(&mysql("mysql_fdw", &[("init_command", "x")]), "shop", Some(&creds), &mysql_allowed()))
                .contains("init_command")
        );
        assert!(
            invalid(resolve(&mysql("mysql_fdw", &[("host", "/tmp/mysql.sock")]), "shop", Some(&creds), &mysql_allowed()))
                .contains("network")
        );
        let extra = secret(&[("username", "u"), ("ssl_key", "/etc/key")]);
        assert!(invalid(resolve(&mysql("mysql_fdw", &[]), "shop", Some(&extra), &mysql_allowed())).contains("ssl_key"));
    }

    /// The admin names which server options carry the host; each one set
    /// is fenced, and with a fence one must be set.
    #[test]
    fn the_fence_holds_on_every_option_that_names_the_host() {
        let creds = secret(&[("username", "u"), ("password", "p")]);
        let tds = |hosts: Vec<String>| SourcePolicy {
            wrappers: vec![AllowedWrapper {
                extension: "tds_fdw".into(),
                wrapper: "mysql_fdw".into(),
                server_options: vec!["servername".into(), "host".into(), "port".into()],
                user_mapping_options: vec!["username".into(), "password".into()],
                host_options: hosts,
            }],
            hosts: HostFence::parse(&["10.0.0.0/8".into()]).unwrap(),
            ..Default::default()
        };
        let named = tds(vec!["servername".into()]);
        assert!(resolve(&mysql("tds_fdw", &[("servername", "10.1.2.3")]), "shop", Some(&creds), &named).is_ok());
        assert!(invalid(resolve(&mysql("tds_fdw", &[("servername", "192.168.1.1")]), "shop", Some(&creds), &named)).contains("outside"));
        assert!(invalid(resolve(&mysql("tds_fdw", &[("servername", "/var/run/x")]), "shop", Some(&creds), &named)).contains("network"));
        // No host at all, with a fence: nothing to check, so refused.
        assert!(
            invalid(resolve(&mysql("tds_fdw", &[("port", "1433")]), "shop", Some(&creds), &named)).contains("must set the source's host")
        );
        // Only `servername` carries the host here; `host` is another option.
        assert!(invalid(resolve(&mysql("tds_fdw", &[("host", "10.1.2.3")]), "shop", Some(&creds), &named)).contains("servername"));
        // An admin who named none: with a fence, nothing can be attached.
        assert!(
            invalid(resolve(&mysql("tds_fdw", &[("servername", "10.1.2.3")]), "shop", Some(&creds), &tds(Vec::new())))
                .contains("named no host option")
        );
        // Without a fence, a host is still a network endpoint, and may be absent.
        let open = SourcePolicy { hosts: HostFence::default(), ..named.clone() };
        assert!(resolve(&mysql("tds_fdw", &[("port", "1433")]), "shop", Some(&creds), &open).is_ok());
        assert!(invalid(resolve(&mysql("tds_fdw", &[("servername", "/var/run/x")]), "shop", Some(&creds), &open)).contains("network"));
        // Unset in the admin's JSON: `host`, as before.
        let parsed: AllowedWrapper =
            serde_json::from_str(r#"{"extension":"mysql_fdw","wrapper":"mysql_fdw","serverOptions":["host"]}"#).unwrap();
        assert_eq!(parsed.host_options, ["host"]);
    }
}
