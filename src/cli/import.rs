//! `import steampipe FILE...`: Steampipe `.spc` connections as Secrets,
//! Connections and WorkspaceConnections, printed as YAML for a GitOps
//! repository or applied with `--apply`. The rules are in
//! `manifold::import`; this reads the files, reports what was renamed or
//! left out on stderr, and prints or applies all of it, or nothing.

use clap::{Args, Subcommand};
use kube::api::{Api, DynamicObject, Patch, PatchParams};

use super::{DryRun, FIELD_MANAGER, KubeFlags, Output, Result, explain};
use manifold::import::{Options, Source};

#[derive(Subcommand)]
pub enum ImportKind {
    /// Turn Steampipe `.spc` connections into Connections and opted-in
    /// Secrets.
    Steampipe(SteampipeArgs),
}

#[derive(Args, Debug)]
pub struct SteampipeArgs {
    /// The `.spc` files, read together as Steampipe reads its config
    /// directory.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<std::path::PathBuf>,
    /// Import only the connections whose Steampipe name matches one of
    /// these globs (`aws_*`).
    #[arg(long = "connections", value_name = "GLOB")]
    pub connections: Vec<String>,
    /// Put before every name: `P-` before the Kubernetes name, `P_` before
    /// the schema.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Treat this argument as a credential too (repeat for several): its
    /// value goes into the Secret, never into a spec.
    #[arg(long = "secret-key", value_name = "ARGUMENT")]
    pub secret_keys: Vec<String>,
    /// Also attach every imported connection to this Workspace (repeat for
    /// several).
    #[arg(long = "attach", value_name = "WORKSPACE")]
    pub attach: Vec<String>,
    /// Apply the objects (server-side apply) instead of printing them.
    #[arg(long)]
    pub apply: bool,
    /// With `--apply`: `server` has the apiserver check everything and store
    /// nothing.
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    pub dry_run: DryRun,
    /// Output format of the objects (default yaml); with `--apply`, of what
    /// was applied.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

pub async fn run(flags: &KubeFlags, kind: ImportKind) -> Result<()> {
    let ImportKind::Steampipe(args) = kind;
    let mut texts = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        texts.push((path.display().to_string(), text));
    }
    let sources: Vec<Source> = texts.iter().map(|(path, text)| Source { path, text }).collect();
    let options = Options {
        namespace: flags.namespace.clone(),
        connections: args.connections.clone(),
        prefix: args.prefix.clone(),
        secret_keys: args.secret_keys.clone(),
        attach: args.attach.clone(),
    };
    let import = manifold::import::steampipe(&sources, &options)?;
    for renamed in &import.renamed {
        eprintln!("renamed: {renamed}");
    }
    for note in &import.notes {
        eprintln!("note: {note}");
    }
    if !args.apply || args.dry_run == DryRun::Client {
        let suffix = if args.apply { " (dry run)" } else { "" };
        let output = if args.apply { args.output } else { Some(args.output.unwrap_or(Output::Yaml)) };
        return super::print_objects(&import.objects, output, "serverside-applied", suffix);
    }
    let (client, ns) = flags.client().await?;
    let params = PatchParams { dry_run: args.dry_run == DryRun::Server, ..PatchParams::apply(FIELD_MANAGER) };
    let mut applied = Vec::new();
    for object in &import.objects {
        let resource = super::apply::resource(object)?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
        let done =
            api.patch(name, &params, &Patch::Apply(object)).await.map_err(|e| format!("{}: {}", super::kind_name(object), explain(e)))?;
        applied.push(super::apply::without_managed_fields(serde_json::to_value(done)?));
    }
    let suffix = if args.dry_run == DryRun::Server { " (server dry run)" } else { "" };
    super::print_objects(&applied, args.output, "serverside-applied", suffix)
}
