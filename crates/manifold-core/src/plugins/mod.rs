//! The plugin catalog: what each kind of Connection becomes in Postgres. A
//! plugin spec and the credentials Secret's data turn into the extension,
//! the wrapper, the server options, the user-mapping options and the remote
//! schema, under the cluster admin's `SourcePolicy`: which wrappers exist,
//! where sources may be, and how long a connect may take. Everything a spec
//! may not do is refused here, before any SQL runs. Pure: no I/O, so every
//! case is tested with plain values.

use std::collections::BTreeMap;

use crate::api::{FdwPlugin, POSTGRES_OPTIONS, PluginSpec, PostgresPlugin, SteampipePlugin, is_network_host};
use crate::secret::SecretString;

/// The schema every extension Manifold creates goes into. Extensions an
/// admin installed may be anywhere; their functions are called qualified.
pub const EXTENSION_SCHEMA: &str = "public";

mod fdw;
mod policy;
mod postgres;
mod steampipe;

pub use fdw::{caches_connections, imported_options};
pub use policy::*;
pub use steampipe::hcl_string;
pub use steampipe::is_hcl_identifier;

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

/// The kind of a plugin spec: one variant per file of this module, so that
/// a new kind is one file and one variant, and every `match` on `Kind`
/// (the label, the resolution) fails to compile until it knows the new one.
#[derive(Clone, Copy, Debug)]
pub enum Kind<'a> {
    Postgres(&'a PostgresPlugin),
    Steampipe(&'a SteampipePlugin),
    Fdw(&'a FdwPlugin),
}

impl<'a> Kind<'a> {
    /// The one kind a spec sets. The CRD admits exactly one (CEL); an
    /// object that got past it is refused here too.
    pub fn of(plugin: &'a PluginSpec) -> Result<Kind<'a>, PluginError> {
        match (&plugin.postgres, &plugin.steampipe, &plugin.fdw) {
            (Some(pg), None, None) => Ok(Kind::Postgres(pg)),
            (None, Some(sp), None) => Ok(Kind::Steampipe(sp)),
            (None, None, Some(fdw)) => Ok(Kind::Fdw(fdw)),
            _ => Err(PluginError::Invalid("exactly one of plugin.postgres, plugin.steampipe or plugin.fdw must be set".into())),
        }
    }

    /// The short name for status and printer columns.
    pub fn label(&self) -> String {
        match self {
            Kind::Postgres(_) => "postgres".into(),
            Kind::Steampipe(s) => format!("steampipe/{}", s.name),
            Kind::Fdw(f) => format!("fdw/{}", f.wrapper),
        }
    }

    fn resolve(
        &self,
        schema: &str,
        credentials: Option<&BTreeMap<String, Vec<u8>>>,
        policy: &SourcePolicy,
    ) -> Result<Wrapper, PluginError> {
        match self {
            Kind::Postgres(pg) => postgres::resolve(pg, credentials, policy),
            Kind::Steampipe(sp) => steampipe::resolve(sp, schema, credentials),
            Kind::Fdw(fdw) => fdw::resolve(fdw, credentials, policy),
        }
    }
}

/// The plugin's label, known from the spec alone (`aggregator` without one).
pub fn label(plugin: Option<&PluginSpec>) -> String {
    match plugin.map(Kind::of) {
        None => "aggregator".into(),
        Some(Ok(kind)) => kind.label(),
        Some(Err(_)) => "none".into(),
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
    let wrapper = Kind::of(plugin)?.resolve(schema, credentials, policy)?;
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

#[cfg(test)]
mod tests;
