//! New Connection's form, generated from the Connection CRD's OpenAPI
//! schema (the one the operator installs): a plugin kind's properties
//! become fields with their type, whether they are required, their
//! default and their description; a form filled in becomes the manifests
//! of a draft. Pure, so that it is unit tested without a server.

use std::collections::BTreeMap;

use kube::CustomResourceExt;
use manifold::api::{Connection, DRAFT_ANNOTATION, SECRET_LABEL};
use serde_json::{Map, Value, json};

/// The plugin kinds New Connection offers, as `spec.plugin` names them,
/// with what a person reads about each.
pub const PLUGINS: &[(&str, &str)] = &[
    ("postgres", "Another Postgres database, through postgres_fdw."),
    ("steampipe", "A Steampipe plugin (aws, github, ...), through its standalone FDW extension."),
    ("fdw", "Any other foreign-data wrapper that your cluster admin allowed (mysql_fdw, ...)."),
];

/// How a field is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Text,
    Number,
    /// `key=value`, one per line (a map of strings).
    Pairs,
    /// Free text over several lines (HCL).
    Lines,
}

/// One field of a plugin's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The property's name in `spec.plugin.<kind>`.
    pub name: String,
    pub input: Input,
    pub required: bool,
    pub default: Option<String>,
    pub description: String,
}

/// The schema of `spec.plugin.<kind>` in the CRD.
fn plugin_schema(kind: &str) -> Option<Value> {
    let crd = serde_json::to_value(Connection::crd()).ok()?;
    let version = crd["spec"]["versions"].as_array()?.iter().find(|v| v["storage"] == json!(true))?.clone();
    let schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["plugin"]["properties"][kind].clone();
    schema.is_object().then_some(schema)
}

/// The fields of a plugin kind, in the schema's order (required first).
pub fn fields(kind: &str) -> Option<Vec<Field>> {
    let schema = plugin_schema(kind)?;
    let required: Vec<&str> = schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let mut out: Vec<Field> = schema["properties"]
        .as_object()?
        .iter()
        .map(|(name, p)| {
            let input = match p["type"].as_str() {
                Some("integer") | Some("number") => Input::Number,
                Some("object") => Input::Pairs,
                _ if name == "config" => Input::Lines,
                _ => Input::Text,
            };
            Field {
                name: name.clone(),
                input,
                required: required.contains(&name.as_str()),
                default: match &p["default"] {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                },
                description: p["description"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect();
    out.sort_by_key(|f| !f.required);
    Some(out)
}

/// What a submitted form holds, by field name.
pub type Values = BTreeMap<String, String>;

/// The credential keys a plugin kind asks for by name; others take free
/// keys.
pub fn credential_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "postgres" => &["user", "password"],
        _ => &[],
    }
}

/// How many free credential rows the form shows.
pub const FREE_CREDENTIAL_ROWS: usize = 3;

/// The Secret a form creates for a connection.
pub fn secret_name(connection: &str) -> String {
    format!("{connection}-credentials")
}

/// A draft made from a form: the Connection and, when the form gives new
/// credential values, the Secret's name and data (the values never leave
/// the server except to the apiserver).
#[derive(Debug)]
pub struct Draft {
    pub name: String,
    pub connection: Value,
    pub secret: Option<(String, BTreeMap<String, String>)>,
}

fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// A form value, trimmed, if it is filled in.
fn filled<'v>(values: &'v Values, key: &str) -> Option<&'v str> {
    values.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// The draft Connection (and credentials) of a filled-in form for plugin
/// `kind` in namespace `ns`. Errors name the field.
pub fn draft(ns: &str, kind: &str, values: &Values) -> Result<Draft, String> {
    let name = filled(values, "name").ok_or("Name is required")?.to_string();
    if !dns_label(&name) {
        return Err(format!("Name {name:?} must be lowercase letters, digits, '-' and '.', and start and end with a letter or digit"));
    }
    let plugin = plugin_settings(kind, values)?;
    let mut spec = Map::new();
    spec.insert("plugin".into(), json!({ kind: plugin }));
    if let Some(schema) = filled(values, "schema") {
        spec.insert("schema".into(), json!(schema));
    }
    if let Some(tables) = tables(values)? {
        spec.insert("tables".into(), tables);
    }
    if let Some(interval) = filled(values, "test.interval") {
        spec.insert("test".into(), json!({ "interval": interval }));
    }
    let secret = credentials(&mut spec, kind, &name, values)?;
    let connection = json!({
        "apiVersion": "manifold.dev/v1alpha1",
        "kind": "Connection",
        "metadata": { "name": name, "namespace": ns, "annotations": { DRAFT_ANNOTATION: "true" } },
        "spec": spec,
    });
    serde_json::from_value::<Connection>(connection.clone()).map_err(|e| format!("the connection: {e}"))?;
    Ok(Draft { name, connection, secret })
}

/// `spec.plugin.<kind>` from the form's `plugin.<field>` values, each as
/// its field's input makes it; a field left empty is left out, unless it
/// is required. Errors name the field.
fn plugin_settings(kind: &str, values: &Values) -> Result<Map<String, Value>, String> {
    let fields = fields(kind).ok_or_else(|| format!("unknown plugin {kind:?}"))?;
    let mut plugin = Map::new();
    for field in &fields {
        let key = format!("plugin.{}", field.name);
        let raw = values.get(&key).map(String::as_str).unwrap_or_default();
        let value = match field.input {
            Input::Lines if !raw.trim().is_empty() => json!(raw.replace("\r\n", "\n").trim_end().to_string() + "\n"),
            Input::Pairs => {
                let mut map = Map::new();
                for line in lines(raw) {
                    let (k, v) = line.split_once('=').ok_or_else(|| format!("{}: {line:?} is not key=value", field.name))?;
                    map.insert(k.trim().to_string(), json!(v.trim()));
                }
                if map.is_empty() {
                    continue;
                }
                Value::Object(map)
            }
            Input::Number if !raw.trim().is_empty() => {
                json!(raw.trim().parse::<i64>().map_err(|_| format!("{}: {:?} is not a whole number", field.name, raw.trim()))?)
            }
            Input::Text if !raw.trim().is_empty() => json!(raw.trim()),
            _ if field.required => return Err(format!("{} is required", field.name)),
            _ => continue,
        };
        plugin.insert(field.name.clone(), value);
    }
    Ok(plugin)
}

/// `spec.tables` from the Tables choice: the tables to include or to
/// exclude, one per line or comma-separated. None when the form takes
/// every table.
fn tables(values: &Values) -> Result<Option<Value>, String> {
    match filled(values, "tables.mode") {
        Some(mode @ ("include" | "exclude")) => {
            let list: Vec<&str> = values
                .get("tables.list")
                .map(|t| lines(t).flat_map(|l| l.split(',')).map(str::trim).filter(|t| !t.is_empty()).collect())
                .unwrap_or_default();
            if list.is_empty() {
                return Err(format!("Tables: list the tables to {mode}"));
            }
            Ok(Some(json!({ mode: list })))
        }
        _ => Ok(None),
    }
}

/// A Secret the form makes: its name and data.
type NewSecret = (String, BTreeMap<String, String>);

/// The Credentials choice: an existing Secret, or a new one (named by
/// `secret_name`) of the plugin's named keys and the free rows filled in.
/// Sets `spec.credentials` to either, and returns the new Secret's name
/// and data.
fn credentials(spec: &mut Map<String, Value>, kind: &str, name: &str, values: &Values) -> Result<Option<NewSecret>, String> {
    match filled(values, "cred.mode") {
        Some("existing") => {
            let existing = filled(values, "cred.secret").ok_or("Credentials: name the Secret")?;
            spec.insert("credentials".into(), json!({ "secretRef": { "name": existing } }));
            Ok(None)
        }
        Some("new") => {
            let mut data = BTreeMap::new();
            for key in credential_keys(kind) {
                if let Some(v) = values.get(&format!("cred.value.{key}")).filter(|v| !v.is_empty()) {
                    data.insert(key.to_string(), v.clone());
                }
            }
            for i in 0..FREE_CREDENTIAL_ROWS {
                if let Some(k) = filled(values, &format!("cred.key.{i}"))
                    && let Some(v) = values.get(&format!("cred.value.{i}")).filter(|v| !v.is_empty())
                {
                    data.insert(k.to_string(), v.clone());
                }
            }
            let secret_name = secret_name(name);
            spec.insert("credentials".into(), json!({ "secretRef": { "name": secret_name } }));
            Ok(Some((secret_name, data)))
        }
        _ => Ok(None),
    }
}

/// A form's values from an existing draft, so that the page shows what it
/// holds. Credential values are never read back.
pub fn values_of(conn: &Connection) -> Values {
    let mut values = Values::new();
    let spec = serde_json::to_value(&conn.spec).unwrap_or_default();
    values.insert("name".into(), conn.metadata.name.clone().unwrap_or_default());
    if let Some(plugin) = spec["plugin"].as_object().and_then(|p| p.values().next()).and_then(Value::as_object) {
        for (k, v) in plugin {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Object(map) => {
                    map.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join("\n")
                }
                other => other.to_string(),
            };
            values.insert(format!("plugin.{k}"), text);
        }
    }
    if let Some(schema) = &conn.spec.schema {
        values.insert("schema".into(), schema.clone());
    }
    if let Some(tables) = &conn.spec.tables {
        let (mode, list) = if tables.include.is_empty() { ("exclude", &tables.exclude) } else { ("include", &tables.include) };
        values.insert("tables.mode".into(), mode.into());
        values.insert("tables.list".into(), list.join("\n"));
    }
    if let Some(interval) = conn.spec.test.as_ref().and_then(|t| t.interval.clone()) {
        values.insert("test.interval".into(), interval);
    }
    if let Some(credentials) = &conn.spec.credentials {
        let name = credentials.secret_ref.name.clone();
        let mode = if name == secret_name(&values["name"]) { "new" } else { "existing" };
        values.insert("cred.mode".into(), mode.into());
        values.insert("cred.secret".into(), name);
    }
    values
}

/// The Secret a form creates: opted in for Manifold, and marked as this
/// draft's so that Discard removes it and nothing else.
pub fn secret_manifest(ns: &str, name: &str, connection: &str, data: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": { SECRET_LABEL: "true" },
            "annotations": { DRAFT_ANNOTATION: connection },
        },
        "type": "Opaque",
        "stringData": data,
    })
}

/// A manifest as it goes into Git: no status, server fields or the
/// console's annotations.
pub fn for_git(object: &Value) -> Value {
    let mut out = json!({ "apiVersion": object["apiVersion"], "kind": object["kind"], "metadata": { "name": object["metadata"]["name"] } });
    if let Some(ns) = object["metadata"]["namespace"].as_str() {
        out["metadata"]["namespace"] = json!(ns);
    }
    for key in ["labels", "annotations"] {
        if let Some(map) = object["metadata"][key].as_object() {
            let kept: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| !k.starts_with("manifold.dev/") && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !kept.is_empty() {
                out["metadata"][key] = Value::Object(kept);
            }
        }
    }
    out["spec"] = object["spec"].clone();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Values {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_postgres_form_follows_the_crd() {
        let f = fields("postgres").unwrap();
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(&names[..2], ["database", "host"], "required first: {names:?}");
        let port = f.iter().find(|f| f.name == "port").unwrap();
        assert_eq!((port.input, port.required, port.default.as_deref()), (Input::Number, false, Some("5432")));
        assert!(port.description.contains("TCP port"));
        assert_eq!(f.iter().find(|f| f.name == "options").unwrap().input, Input::Pairs);
        assert_eq!(fields("steampipe").unwrap().iter().find(|f| f.name == "config").unwrap().input, Input::Lines);
        assert!(fields("nope").is_none());
    }

    #[test]
    fn a_filled_form_is_a_draft_with_its_secret_apart() {
        let d = draft(
            "team",
            "postgres",
            &form(&[
                ("name", "shop"),
                ("plugin.host", "db.example"),
                ("plugin.database", "shop"),
                ("plugin.port", "6432"),
                ("plugin.options", "fetch_size=500\n\nsslmode = require"),
                ("tables.mode", "include"),
                ("tables.list", "orders, customers"),
                ("cred.mode", "new"),
                ("cred.value.user", "reader"),
                ("cred.value.password", "s3cret"),
            ]),
        )
        .unwrap();
        let spec = &d.connection["spec"];
        assert_eq!(spec["plugin"]["postgres"]["port"], json!(6432));
        assert_eq!(spec["plugin"]["postgres"]["options"], json!({ "fetch_size": "500", "sslmode": "require" }));
        assert_eq!(spec["tables"], json!({ "include": ["orders", "customers"] }));
        assert_eq!(spec["credentials"]["secretRef"]["name"], "shop-credentials");
        assert_eq!(d.connection["metadata"]["annotations"][DRAFT_ANNOTATION], "true");
        assert!(!d.connection.to_string().contains("s3cret"), "no credential in the Connection");
        let (secret, data) = d.secret.unwrap();
        assert_eq!((secret.as_str(), data["password"].as_str()), ("shop-credentials", "s3cret"));
    }

    #[test]
    fn a_missing_or_bad_field_is_named() {
        let err = draft("team", "postgres", &form(&[("name", "shop"), ("plugin.host", "h")])).unwrap_err();
        assert!(err.contains("database is required"), "{err}");
        let err = draft("team", "postgres", &form(&[("name", "Shop")])).unwrap_err();
        assert!(err.contains("Name"), "{err}");
        let err = draft("team", "postgres", &form(&[("name", "s"), ("plugin.host", "h"), ("plugin.database", "d"), ("plugin.port", "x")]))
            .unwrap_err();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn a_draft_reads_back_without_its_credentials() {
        let d = draft(
            "team",
            "postgres",
            &form(&[("name", "shop"), ("plugin.host", "h"), ("plugin.database", "d"), ("cred.mode", "new"), ("cred.value.password", "pw")]),
        )
        .unwrap();
        let conn: Connection = serde_json::from_value(d.connection.clone()).unwrap();
        let back = values_of(&conn);
        assert_eq!(back["plugin.host"], "h");
        assert_eq!(back["cred.mode"], "new");
        assert!(!back.values().any(|v| v == "pw"));
        let git = for_git(&d.connection);
        assert!(git["metadata"].get("annotations").is_none(), "{git}");
    }
}
