//! `kubectl manifold`: the imperative verbs beside GitOps. The same binary
//! runs the controller (`manifold run`) and, installed as
//! `kubectl-manifold`, is a kubectl plugin with kubectl's own connection
//! flags. Every verb acts as the user of the kubeconfig, never as the
//! operator: what the user may not do, the plugin cannot do either.

pub mod apply;
pub mod attach;
pub mod complete;
pub mod console;
pub mod create;
pub mod delete;
pub mod get;
pub mod import;
pub mod test;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use manifold::api::GROUP;

/// What a verb returns: errors are printed as they are, for a person.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The field manager of every write the plugin makes.
pub const FIELD_MANAGER: &str = "kubectl-manifold";

/// kubectl's flags for reaching a cluster, accepted by every verb.
#[derive(Args, Clone, Debug, Default)]
pub struct KubeFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// The namespace (the organization); defaults to the context's.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Username to impersonate for the operation.
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate for the operation; repeat for several.
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_group: Vec<String>,
}

impl KubeFlags {
    /// The client configuration these flags select, as kubectl would.
    pub async fn config(&self) -> Result<Config> {
        let options = KubeConfigOptions { context: self.context.clone(), cluster: self.cluster.clone(), user: self.user.clone() };
        let chosen = options.context.is_some() || options.cluster.is_some() || options.user.is_some();
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| format!("reading --kubeconfig {}: {e}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            None if chosen => Config::from_kubeconfig(&options).await?,
            None => Config::infer().await?,
        };
        if let Some(ns) = &self.namespace {
            config.default_namespace = ns.clone();
        }
        if let Some(user) = &self.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !self.as_group.is_empty() {
            config.auth_info.impersonate_groups = Some(self.as_group.clone());
        }
        Ok(config)
    }

    /// A client and the namespace the verb works in.
    pub async fn client(&self) -> Result<(Client, String)> {
        let config = self.config().await?;
        let ns = config.default_namespace.clone();
        Ok((Client::try_from(config)?, ns))
    }
}

/// `--wait` and how long it waits, for the verbs that can wait.
#[derive(Args, Clone, Debug)]
pub struct WaitFlags {
    /// Wait until the change has reached the workspace databases.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "2m", value_parser = test::duration)]
    pub timeout: std::time::Duration,
}

impl WaitFlags {
    /// The time to wait, if waiting was asked for.
    pub fn bound(&self) -> Option<std::time::Duration> {
        self.wait.then_some(self.timeout)
    }
}

/// kubectl's `--dry-run`.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DryRun {
    /// Write for real.
    #[default]
    None,
    /// Print what would be sent; the cluster is not asked.
    Client,
    /// Send it for validation and admission, but persist nothing.
    Server,
}

/// kubectl's `-o`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Yaml,
    Json,
    Name,
}

/// `--dry-run` and `-o`, as every mutating verb takes them.
#[derive(Args, Clone, Debug, Default)]
pub struct WriteFlags {
    /// `client` prints the manifests without sending them (GitOps YAML);
    /// `server` has the apiserver validate and admit them without storing.
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    pub dry_run: DryRun,
    /// Print the objects instead of a line per object.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

impl WriteFlags {
    pub fn post_params(&self) -> PostParams {
        PostParams { dry_run: self.dry_run == DryRun::Server, field_manager: Some(FIELD_MANAGER.into()) }
    }

    /// The suffix kubectl puts on a line of a dry run.
    pub fn suffix(&self) -> &'static str {
        match self.dry_run {
            DryRun::None => "",
            DryRun::Client => " (dry run)",
            DryRun::Server => " (server dry run)",
        }
    }
}

/// Prints `objects` as a YAML stream, a JSON list, or kubectl's
/// `kind.group/name <verb>` lines.
pub fn print_objects(objects: &[serde_json::Value], output: Option<Output>, verb: &str, suffix: &str) -> Result<()> {
    match output {
        Some(Output::Yaml) => print!("{}", manifold::import::to_yaml(objects)),
        Some(Output::Json) => {
            let value = if objects.len() == 1 {
                objects[0].clone()
            } else {
                serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objects })
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Some(Output::Name) => objects.iter().for_each(|o| println!("{}", kind_name(o))),
        None => objects.iter().for_each(|o| println!("{} {verb}{suffix}", kind_name(o))),
    }
    Ok(())
}

/// `connection.manifold.dev/sales`, as kubectl names an object.
pub fn kind_name(object: &serde_json::Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("object").to_lowercase();
    let group = object["apiVersion"].as_str().and_then(|v| v.rsplit_once('/')).map(|(g, _)| format!(".{g}")).unwrap_or_default();
    format!("{kind}{group}/{}", object["metadata"]["name"].as_str().unwrap_or(""))
}

/// Whether the user may do `verb` on `resource` (`name`) in `ns`, asked of
/// the apiserver as the user itself.
pub async fn may(client: &Client, ns: &str, group: &str, resource: &str, verb: &str, name: Option<&str>) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                namespace: Some(ns.into()),
                name: name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Refuses early, naming the verb and the resource, when the user may not
/// attach `connection`: the admission policy would refuse the
/// WorkspaceConnection for the same reason.
pub async fn check_attach(client: &Client, ns: &str, connection: &str) -> Result<()> {
    if may(client, ns, GROUP, "connections", "attach", Some(connection)).await? || may(client, ns, "", "secrets", "get", None).await? {
        return Ok(());
    }
    Err(format!(
        "you may not attach Connection {connection} in namespace {ns}: attaching shares its credentials with whoever controls the \
         workspace database, so it needs the verb attach on connections.{GROUP} (ask for a RoleBinding to the chart's attacher ClusterRole)"
    )
    .into())
}

/// An API error as a person reads it: the apiserver's message (which for
/// the admission policies names the verb, the object and what to do).
pub fn explain(error: kube::Error) -> Box<dyn std::error::Error> {
    match error {
        kube::Error::Api(status) => status.message.clone().into(),
        other => other.into(),
    }
}

/// Whether an API error is a 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// The `key=value` of `--set` and `--from-literal`.
pub fn key_value(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_follow_kubectl() {
        let object = serde_json::json!({ "apiVersion": "manifold.dev/v1alpha1", "kind": "Connection", "metadata": { "name": "sales" } });
        assert_eq!(kind_name(&object), "connection.manifold.dev/sales");
        let secret = serde_json::json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s" } });
        assert_eq!(kind_name(&secret), "secret/s");
    }

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(key_value("password=a=b").unwrap(), ("password".into(), "a=b".into()));
        assert!(key_value("=x").is_err());
        assert!(key_value("novalue").is_err());
    }

    /// The krew manifest, rendered as krew-release-bot renders it, is a
    /// Plugin whose every platform installs this binary as kubectl-manifold.
    #[test]
    fn the_krew_manifest_renders_to_a_plugin() {
        let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.krew.yaml")).unwrap();
        let mut rendered = String::new();
        for line in template.lines() {
            let line = line.replace("{{ .TagName }}", "v0.1.0");
            match line.trim_start().strip_prefix("{{addURIAndSha \"") {
                Some(rest) => {
                    let indent = &line[..line.len() - line.trim_start().len()];
                    let uri = rest.split('"').next().unwrap();
                    rendered.push_str(&format!("{indent}uri: {uri}\n{indent}sha256: \"{}\"\n", "0".repeat(64)));
                }
                None => rendered.push_str(&(line + "\n")),
            }
        }
        let plugin: serde_json::Value = serde_saphyr::from_str(&rendered).unwrap();
        assert_eq!(plugin["kind"], "Plugin");
        assert_eq!(plugin["metadata"]["name"], "manifold");
        assert_eq!(plugin["spec"]["version"], "v0.1.0");
        let platforms = plugin["spec"]["platforms"].as_array().unwrap();
        assert!(platforms.len() >= 2);
        for platform in platforms {
            assert_eq!(platform["bin"], "kubectl-manifold");
            assert!(platform["uri"].as_str().unwrap().ends_with(".tar.gz"));
            assert_eq!(platform["sha256"].as_str().unwrap().len(), 64);
        }
    }
}
