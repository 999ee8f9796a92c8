//! `plugin.fdw`: any other foreign-data wrapper that the cluster admin
//! allowed, and what Manifold knows of particular wrappers.

use super::*;

pub(super) fn resolve(
    fdw: &FdwPlugin,
    credentials: Option<&BTreeMap<String, Vec<u8>>>,
    policy: &SourcePolicy,
) -> Result<Wrapper, PluginError> {
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
    check_server_options(fdw, allowed, policy)?;
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

/// The server options a spec sets: only those the admin allowed, and the
/// host ones inside the fence. The fence holds only where the admin said
/// which options carry the host: a server that sets none of them cannot be
/// fenced, and is refused while there is a fence.
fn check_server_options(fdw: &FdwPlugin, allowed: &AllowedWrapper, policy: &SourcePolicy) -> Result<(), PluginError> {
    if let Some(key) = fdw.server_options.keys().find(|k| !allowed.server_options.contains(k)) {
        return Err(PluginError::Invalid(format!(
            "plugin.fdw.serverOptions may not set {key:?} for {}: allowed are {}",
            fdw.wrapper,
            allowed.server_options.join(", ")
        )));
    }
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
    Ok(())
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

/// Whether a wrapper keeps its remote connections open in the session that
/// used them (postgres_fdw caches one per user mapping). After a change or
/// a test such a session disconnects, so that a pooled session holds no
/// connection made with settings or credentials that are gone.
pub fn caches_connections(wrapper: &str) -> bool {
    wrapper == "postgres_fdw"
}
