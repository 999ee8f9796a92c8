//! `create connection`: a Connection from flags, its opted-in Secret from
//! `--from-literal`, and with `--workspace` its attachments. Credentials go
//! into the Secret only, never into the spec.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use manifold::api::{Connection, SECRET_LABEL};
use serde_json::{Value, json};

use super::{KubeFlags, Result, WriteFlags, key_value};

#[derive(Subcommand)]
pub enum CreateKind {
    /// Create a Connection (and its credentials Secret, and attachments).
    #[command(visible_alias = "conn")]
    Connection(CreateConnection),
}

#[derive(Args, Clone, Debug, Default)]
pub struct CreateConnection {
    /// Name of the Connection.
    pub name: String,
    /// `postgres`, `fdw`, or `steampipe/<plugin>` (for example
    /// `steampipe/aws`).
    #[arg(long, required_unless_present = "aggregate")]
    pub plugin: Option<String>,
    /// A setting of the plugin, `key=value`. postgres: `host`, `port`
    /// (default 5432), `database`, `remote_schema`, and any allowed server
    /// option. fdw: `extension`, `wrapper` (default: the extension),
    /// `remote_schema`, and server options. steampipe: an HCL argument whose
    /// value is a string.
    #[arg(long = "set", value_parser = key_value, value_name = "KEY=VALUE")]
    pub set: Vec<(String, String)>,
    /// steampipe: HCL arguments added as they are written (lists, maps).
    #[arg(long, value_name = "HCL")]
    pub config: Option<String>,
    /// The schema of its tables in every workspace (default: the name, with
    /// `-` and `.` turned to `_`).
    #[arg(long)]
    pub schema: Option<String>,
    /// The opted-in Secret holding the credentials; with `--from-literal`,
    /// the name of the Secret to create (default: `<name>-credentials`).
    #[arg(long, value_name = "SECRET")]
    pub credentials: Option<String>,
    /// A credential, `key=value`, put in a new Secret labelled
    /// `manifold.dev/credentials=true`. postgres: `user` and `password`.
    #[arg(long = "from-literal", value_parser = key_value, value_name = "KEY=VALUE")]
    pub from_literal: Vec<(String, String)>,
    /// Import only these remote tables.
    #[arg(long, conflicts_with = "exclude")]
    pub include: Vec<String>,
    /// Import every remote table but these.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Test it again at this interval (for example `1h`).
    #[arg(long, value_name = "DURATION")]
    pub test_interval: Option<String>,
    /// An aggregator instead of a plugin: member names or globs (`aws-*`).
    #[arg(long, conflicts_with_all = ["plugin", "credentials", "from_literal", "include", "exclude", "test_interval"])]
    pub aggregate: Vec<String>,
    /// Also attach it to this Workspace (repeat for several).
    #[arg(long = "workspace", value_name = "WORKSPACE")]
    pub workspaces: Vec<String>,
    #[command(flatten)]
    pub write: WriteFlags,
}

/// The manifests `create connection` writes, in the order it writes them:
/// the Secret, the Connection, the attachments.
pub fn manifests(args: &CreateConnection, namespace: Option<&str>) -> Result<Vec<Value>> {
    let meta = |name: &str| match namespace {
        Some(ns) => json!({ "name": name, "namespace": ns }),
        None => json!({ "name": name }),
    };
    let mut objects = Vec::new();
    let secret_name = args.credentials.clone().unwrap_or_else(|| format!("{}-credentials", args.name));
    let mut spec = serde_json::Map::new();
    if let Some(schema) = &args.schema {
        spec.insert("schema".into(), json!(schema));
    }
    if args.aggregate.is_empty() {
        let plugin = args.plugin.as_deref().unwrap_or_default();
        let literal_keys: Vec<&str> = args.from_literal.iter().map(|(k, _)| k.as_str()).collect();
        spec.insert("plugin".into(), plugin_spec(plugin, &args.set, args.config.as_deref(), &literal_keys)?);
        if !args.from_literal.is_empty() || args.credentials.is_some() {
            spec.insert("credentials".into(), json!({ "secretRef": { "name": secret_name } }));
        } else if plugin == "postgres" {
            return Err(
                "a postgres connection needs credentials: --from-literal user=... --from-literal password=..., or --credentials SECRET"
                    .into(),
            );
        }
        if !args.include.is_empty() {
            spec.insert("tables".into(), json!({ "include": args.include }));
        } else if !args.exclude.is_empty() {
            spec.insert("tables".into(), json!({ "exclude": args.exclude }));
        }
        if let Some(interval) = &args.test_interval {
            spec.insert("test".into(), json!({ "interval": interval }));
        }
    } else {
        spec.insert("aggregator".into(), json!({ "connections": args.aggregate }));
    }
    if !args.from_literal.is_empty() {
        let data: BTreeMap<String, ByteString> =
            args.from_literal.iter().map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec()))).collect();
        let mut secret = Secret { data: Some(data), type_: Some("Opaque".into()), ..Default::default() };
        secret.metadata = serde_json::from_value(meta(&secret_name))?;
        secret.metadata.labels = Some([(SECRET_LABEL.to_string(), "true".to_string())].into());
        let mut value = serde_json::to_value(&secret)?;
        value["apiVersion"] = json!("v1");
        value["kind"] = json!("Secret");
        objects.push(value);
    }
    let connection = json!({ "apiVersion": "manifold.dev/v1alpha1", "kind": "Connection", "metadata": meta(&args.name), "spec": spec });
    // The typed object catches a bad value here rather than at the apiserver.
    serde_json::from_value::<Connection>(connection.clone()).map_err(|e| format!("connection {}: {e}", args.name))?;
    objects.push(connection);
    for workspace in &args.workspaces {
        objects.push(super::attach::attachment(&args.name, workspace, None, None, namespace)?);
    }
    Ok(objects)
}

/// `spec.plugin` from `--plugin` and `--set`.
fn plugin_spec(plugin: &str, set: &[(String, String)], config: Option<&str>, literal_keys: &[&str]) -> Result<Value> {
    let mut settings: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in set {
        if settings.insert(k.replace('-', "_"), v.clone()).is_some() {
            return Err(format!("--set {k} is given twice").into());
        }
    }
    let mut take = |key: &str| settings.remove(key).or_else(|| settings.remove(&camel(key)));
    match plugin {
        "postgres" => {
            if literal_keys.iter().any(|k| !matches!(*k, "user" | "password")) || (!literal_keys.is_empty() && literal_keys.len() != 2) {
                return Err("a postgres connection's --from-literal keys are exactly user and password".into());
            }
            let host = take("host").ok_or("--set host=... is required for postgres")?;
            let port = take("port").unwrap_or_else(|| "5432".into());
            let port: i32 = port.parse().map_err(|_| format!("--set port={port}: not a port number"))?;
            let database = take("database").or_else(|| take("dbname")).ok_or("--set database=... is required for postgres")?;
            let remote_schema = take("remote_schema").ok_or("--set remote_schema=... is required for postgres")?;
            if config.is_some() {
                return Err("--config is for steampipe plugins".into());
            }
            let mut spec = json!({ "host": host, "port": port, "database": database, "remoteSchema": remote_schema });
            if !settings.is_empty() {
                spec["options"] = json!(settings);
            }
            Ok(json!({ "postgres": spec }))
        }
        "fdw" => {
            let extension = take("extension").ok_or("--set extension=... is required for fdw")?;
            let wrapper = take("wrapper").unwrap_or_else(|| extension.clone());
            let remote_schema = take("remote_schema").ok_or("--set remote_schema=... is required for fdw")?;
            if config.is_some() {
                return Err("--config is for steampipe plugins".into());
            }
            Ok(json!({ "fdw": { "extension": extension, "wrapper": wrapper, "remoteSchema": remote_schema, "serverOptions": settings } }))
        }
        other => {
            let Some(name) = other.strip_prefix("steampipe/") else {
                return Err(format!("--plugin {other}: use postgres, fdw or steampipe/<plugin> (for example steampipe/aws)").into());
            };
            let mut lines: Vec<String> = Vec::new();
            for (key, value) in &settings {
                if !is_hcl_identifier(key) {
                    return Err(format!("--set {key}: not an HCL argument name").into());
                }
                lines.push(format!("{key} = {}", manifold::plugins::hcl_string(value)));
            }
            lines.extend(config.map(|c| c.trim_end().to_string()));
            let mut spec = json!({ "name": name });
            if !lines.is_empty() {
                spec["config"] = json!(lines.join("\n") + "\n");
            }
            Ok(json!({ "steampipe": spec }))
        }
    }
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn is_hcl_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Runs `create connection`.
pub async fn run(flags: &KubeFlags, kind: CreateKind) -> Result<()> {
    let CreateKind::Connection(args) = kind;
    let objects = manifests(&args, flags.namespace.as_deref())?;
    if args.write.dry_run == super::DryRun::Client {
        return super::print_objects(&objects, args.write.output, "created", args.write.suffix());
    }
    let (client, ns) = flags.client().await?;
    if let (Some(secret), true) = (&args.credentials, args.from_literal.is_empty()) {
        check_secret(&client, &ns, secret).await?;
    }
    if !args.workspaces.is_empty() {
        super::check_attach(&client, &ns, &args.name).await?;
    }
    let written = super::apply::create_all(&client, &ns, &objects, &args.write).await?;
    super::print_objects(&written, args.write.output, "created", args.write.suffix())
}

/// Says what to do when the Secret named by `--credentials` cannot be used:
/// missing, unreadable for the user (the admission policy would refuse the
/// Connection), or not opted in (the operator would never read it).
pub async fn check_secret(client: &Client, ns: &str, name: &str) -> Result<()> {
    match Api::<Secret>::namespaced(client.clone(), ns).get_metadata(name).await {
        Ok(secret) => {
            let opted_in = secret.metadata.labels.as_ref().and_then(|l| l.get(SECRET_LABEL)).is_some_and(|v| v == "true");
            if opted_in {
                Ok(())
            } else {
                Err(format!(
                    "Secret {name} in namespace {ns} is not opted in: Manifold reads only Secrets labelled {SECRET_LABEL}=true \
                     (kubectl label secret {name} -n {ns} {SECRET_LABEL}=true)"
                )
                .into())
            }
        }
        Err(e) if super::is_not_found(&e) => Err(format!(
            "Secret {name} not found in namespace {ns}: create it with --from-literal, or with kubectl create secret generic and the label {SECRET_LABEL}=true"
        )
        .into()),
        Err(kube::Error::Api(status)) if status.code == 403 => Err(format!(
            "you may not get Secret {name} in namespace {ns}: a Connection may name only a Secret its author can read"
        )
        .into()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres() -> CreateConnection {
        CreateConnection {
            name: "sales".into(),
            plugin: Some("postgres".into()),
            set: vec![
                ("host".into(), "db.example.com".into()),
                ("database".into(), "shop".into()),
                ("remote-schema".into(), "public".into()),
                ("sslmode".into(), "require".into()),
            ],
            from_literal: vec![("user".into(), "u".into()), ("password".into(), "s3cret-value".into())],
            workspaces: vec!["analytics".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_postgres_connection_keeps_its_credentials_in_the_secret() {
        let objects = manifests(&postgres(), Some("payments")).unwrap();
        let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Secret", "Connection", "WorkspaceConnection"]);
        let secret = &objects[0];
        assert_eq!(secret["metadata"]["labels"][SECRET_LABEL], "true");
        assert_eq!(secret["metadata"]["name"], "sales-credentials");
        assert_eq!(secret["data"]["password"], "czNjcmV0LXZhbHVl");
        let connection = &objects[1];
        assert_eq!(connection["metadata"]["namespace"], "payments");
        assert_eq!(connection["spec"]["plugin"]["postgres"]["port"], 5432);
        assert_eq!(connection["spec"]["plugin"]["postgres"]["remoteSchema"], "public");
        assert_eq!(connection["spec"]["plugin"]["postgres"]["options"]["sslmode"], "require");
        assert_eq!(connection["spec"]["credentials"]["secretRef"]["name"], "sales-credentials");
        assert!(!connection.to_string().contains("s3cret"));
        assert_eq!(objects[2]["metadata"]["name"], "analytics-sales");
        assert_eq!(objects[2]["spec"], json!({ "workspace": "analytics", "connection": "sales" }));
    }

    #[test]
    fn a_postgres_connection_without_credentials_is_refused() {
        let args = CreateConnection { from_literal: vec![], ..postgres() };
        assert!(manifests(&args, None).unwrap_err().to_string().contains("needs credentials"));
        let args = CreateConnection { from_literal: vec![("token".into(), "x".into())], ..postgres() };
        assert!(manifests(&args, None).unwrap_err().to_string().contains("user and password"));
        let args = CreateConnection { credentials: Some("existing".into()), from_literal: vec![], ..postgres() };
        let objects = manifests(&args, None).unwrap();
        assert_eq!(objects.len(), 2, "no Secret is written for an existing one");
        assert_eq!(objects[0]["spec"]["credentials"]["secretRef"]["name"], "existing");
    }

    #[test]
    fn steampipe_settings_become_hcl_that_stays_data() {
        let args = CreateConnection {
            name: "aws-prod".into(),
            plugin: Some("steampipe/aws".into()),
            set: vec![("profile".into(), "prod ${evil}".into())],
            config: Some("regions = [\"*\"]".into()),
            from_literal: vec![("secret_key".into(), "k".into())],
            ..Default::default()
        };
        let objects = manifests(&args, None).unwrap();
        let spec = &objects[1]["spec"]["plugin"]["steampipe"];
        assert_eq!(spec["name"], "aws");
        assert_eq!(spec["config"], "profile = \"prod $${evil}\"\nregions = [\"*\"]\n");
    }

    #[test]
    fn an_aggregator_and_a_bad_plugin() {
        let args = CreateConnection { name: "all".into(), aggregate: vec!["aws-*".into()], ..Default::default() };
        let objects = manifests(&args, None).unwrap();
        assert_eq!(objects[0]["spec"], json!({ "aggregator": { "connections": ["aws-*"] } }));
        let args = CreateConnection { name: "x".into(), plugin: Some("mysql".into()), ..Default::default() };
        assert!(manifests(&args, None).unwrap_err().to_string().contains("steampipe/<plugin>"));
        let mut args = postgres();
        args.set.push(("port".into(), "http".into()));
        assert!(manifests(&args, None).unwrap_err().to_string().contains("not a port"));
    }
}
