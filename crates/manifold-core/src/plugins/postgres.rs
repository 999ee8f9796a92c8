//! `plugin.postgres`: another Postgres database, through postgres_fdw.

use super::*;

pub(super) fn resolve(
    pg: &PostgresPlugin,
    credentials: Option<&BTreeMap<String, Vec<u8>>>,
    policy: &SourcePolicy,
) -> Result<Wrapper, PluginError> {
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
