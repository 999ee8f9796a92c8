//! Postgres sources: a `postgres` connection with `connection_string` or
//! `host` becomes `spec.plugin.postgres`, through postgres_fdw.

use std::collections::BTreeMap;

use hcl_edit::expr::Expression;
use hcl_edit::structure::Attribute;
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization;

use super::super::ImportError;
use super::config::literal;
use super::conn::Conn;
use crate::api::{POSTGRES_OPTIONS, is_network_host};

/// A Postgres source's arguments under the names of its spec.
#[derive(Default)]
struct Arguments {
    /// `host`, `port`, `database`, `user`, `password` and `schema`.
    fields: BTreeMap<String, String>,
    /// postgres_fdw's allowed options.
    options: BTreeMap<String, String>,
}

impl Arguments {
    /// Sets one argument, by any of its names (`dbname` is `database`,
    /// `username` is `user`, ...). Any other argument is an error, for the
    /// caller to place.
    fn set(&mut self, key: &str, value: String) -> Result<(), String> {
        match key {
            "host" | "port" | "user" | "password" => self.fields.insert(key.to_owned(), value),
            "database" | "dbname" | "db" => self.fields.insert("database".to_owned(), value),
            "username" => self.fields.insert("user".to_owned(), value),
            "schema" | "schemas" | "remote_schema" => self.fields.insert("schema".to_owned(), value),
            option if POSTGRES_OPTIONS.contains(&option) => self.options.insert(option.to_owned(), value),
            _ => {
                return Err(format!(
                    "{key} is not an argument of a Postgres source: connection_string, host, port, database, user, password, schema, or one of postgres_fdw's allowed options ({})",
                    POSTGRES_OPTIONS.join(", ")
                ));
            }
        };
        Ok(())
    }
}

impl Conn<'_> {
    /// A Postgres source: the `postgres` plugin spec, and the user and
    /// password.
    pub(super) fn postgres(&self, arguments: &[&Attribute]) -> Result<(Value, BTreeMap<String, String>), ImportError> {
        let Arguments { mut fields, options } = self.postgres_arguments(arguments)?;
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

    /// A Postgres source's arguments, the parts of `connection_string`
    /// first: separate arguments override them.
    fn postgres_arguments(&self, arguments: &[&Attribute]) -> Result<Arguments, ImportError> {
        let mut set = Arguments::default();
        let mut ordered: Vec<&Attribute> = arguments.iter().copied().filter(|a| a.key.as_str() == "connection_string").collect();
        ordered.extend(arguments.iter().copied().filter(|a| a.key.as_str() != "connection_string"));
        for attr in ordered {
            let key = attr.key.as_str();
            let value = self.postgres_value(attr)?;
            if key == "connection_string" {
                for (k, v) in postgres_uri(&value).map_err(|e| self.error(attr, e))? {
                    set.set(&k, v).map_err(|e| self.error(attr, format_args!("in connection_string: {e}")))?;
                }
            } else {
                set.set(key, value).map_err(|e| self.error(attr, e))?;
            }
        }
        Ok(set)
    }

    /// An argument of a Postgres source as text: a bool, a plain string or
    /// number, or `schemas` as a list of one name.
    fn postgres_value(&self, attr: &Attribute) -> Result<String, ImportError> {
        let key = attr.key.as_str();
        Ok(match &attr.value {
            Expression::Bool(b) => b.value().to_string(),
            Expression::Array(items) if key == "schemas" => match items.iter().collect::<Vec<_>>().as_slice() {
                [Expression::String(s)] => s.value().clone(),
                _ => return Err(self.error(attr, "schemas names one schema: a Connection imports one remote schema")),
            },
            value => literal(self.file, value).ok_or_else(|| self.error(attr, format_args!("{key} must be a plain string or number")))?,
        })
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
