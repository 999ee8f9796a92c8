//! `attach` and `detach`: a WorkspaceConnection made or deleted by hand,
//! checked first against the user's own permissions.

use std::time::Duration;

use clap::{Args, ValueEnum};
use kube::Client;
use kube::api::{Api, ListParams};
use manifold::api::{Connection, Workspace, WorkspaceConnection, conditions};
use serde_json::{Value, json};

use super::{KubeFlags, Result, WriteFlags, is_not_found};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    #[value(name = "Delete")]
    Delete,
    #[value(name = "Orphan")]
    Orphan,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The Connection to attach.
    pub connection: String,
    /// The Workspace to attach it to (repeat for several).
    #[arg(long = "workspace", short = 'w', required = true, value_name = "WORKSPACE")]
    pub workspaces: Vec<String>,
    /// Name of the WorkspaceConnection (default: `<workspace>-<connection>`).
    #[arg(long)]
    pub name: Option<String>,
    /// What a later detach does to the schema: drop it (`Delete`) or leave
    /// it (`Orphan`).
    #[arg(long, value_enum, ignore_case = true)]
    pub deletion_policy: Option<Policy>,
    #[command(flatten)]
    pub wait: super::WaitFlags,
    #[command(flatten)]
    pub write: WriteFlags,
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    /// The Connection to detach.
    pub connection: String,
    /// The Workspace to detach it from (repeat for several).
    #[arg(long = "workspace", short = 'w', value_name = "WORKSPACE", required_unless_present = "all")]
    pub workspaces: Vec<String>,
    /// Detach it from every workspace of the namespace.
    #[arg(long, conflicts_with = "workspaces")]
    pub all: bool,
    #[command(flatten)]
    pub wait: super::WaitFlags,
    #[command(flatten)]
    pub write: WriteFlags,
}

/// The WorkspaceConnection manifest of one attachment, named as the
/// examples name them.
pub fn attachment(connection: &str, workspace: &str, name: Option<&str>, policy: Option<Policy>, namespace: Option<&str>) -> Result<Value> {
    let name = name.map(str::to_string).unwrap_or_else(|| format!("{workspace}-{connection}"));
    if name.len() > 253 {
        return Err(format!("the attachment's name {name} is longer than 253 characters: give one with --name").into());
    }
    let mut metadata = json!({ "name": name });
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    let mut spec = json!({ "workspace": workspace, "connection": connection });
    if let Some(policy) = policy {
        spec["deletionPolicy"] = json!(if policy == Policy::Orphan { "Orphan" } else { "Delete" });
    }
    let object = json!({ "apiVersion": "manifold.dev/v1alpha1", "kind": "WorkspaceConnection", "metadata": metadata, "spec": spec });
    serde_json::from_value::<WorkspaceConnection>(object.clone()).map_err(|e| format!("attachment {name}: {e}"))?;
    Ok(object)
}

pub async fn attach(flags: &KubeFlags, args: AttachArgs) -> Result<()> {
    if args.name.is_some() && args.workspaces.len() > 1 {
        return Err("--name names one attachment: give one --workspace".into());
    }
    let objects: Vec<Value> = args
        .workspaces
        .iter()
        .map(|ws| attachment(&args.connection, ws, args.name.as_deref(), args.deletion_policy, flags.namespace.as_deref()))
        .collect::<Result<_>>()?;
    if args.write.dry_run == super::DryRun::Client {
        return super::print_objects(&objects, args.write.output, "created", args.write.suffix());
    }
    let (client, ns) = flags.client().await?;
    must_exist::<Connection>(&client, &ns, &args.connection).await?;
    for ws in &args.workspaces {
        must_exist::<Workspace>(&client, &ns, ws).await?;
    }
    super::check_attach(&client, &ns, &args.connection).await?;
    let written = super::apply::create_all(&client, &ns, &objects, &args.write).await?;
    super::print_objects(&written, args.write.output, "created", args.write.suffix())?;
    if args.wait.wait && args.write.dry_run == super::DryRun::None {
        let api: Api<WorkspaceConnection> = Api::namespaced(client, &ns);
        for object in &written {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            wait_ready(&api, name, args.wait.timeout).await?;
        }
    }
    Ok(())
}

/// A clear error when the named object is not there; a user who may not
/// read it gets the apiserver's answer later, on the write.
async fn must_exist<K>(client: &Client, ns: &str, name: &str) -> Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::namespaced(client.clone(), ns).get_metadata(name).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Err(format!("{} {name} not found in namespace {ns}", K::kind(&())).into()),
        Err(_) => Ok(()),
    }
}

/// Waits for Ready=True, printing the reason while it is not.
async fn wait_ready(api: &Api<WorkspaceConnection>, name: &str, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let attachment = api.get(name).await.map_err(super::explain)?;
        let status = attachment.status.unwrap_or_default();
        if let Some(ready) = conditions::find(&status.conditions, conditions::READY) {
            if ready.status == "True" && status.observed_generation == attachment.metadata.generation {
                let tables = status.tables.unwrap_or(0);
                println!("workspaceconnection.manifold.dev/{name} Ready: {tables} tables in schema {}", status.schema.unwrap_or_default());
                return Ok(());
            }
            let now = format!("{}: {}", ready.reason, ready.message);
            if now != last {
                eprintln!("workspaceconnection.manifold.dev/{name} not ready: {now}");
                last = now;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("workspaceconnection.manifold.dev/{name} was not Ready after {timeout:?}: {last}").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The attachments of `connection`, limited to `workspaces` unless empty.
pub async fn attachments_of(client: &Client, ns: &str, connection: &str, workspaces: &[String]) -> Result<Vec<WorkspaceConnection>> {
    let list = Api::<WorkspaceConnection>::namespaced(client.clone(), ns).list(&ListParams::default()).await.map_err(super::explain)?;
    Ok(list
        .items
        .into_iter()
        .filter(|a| a.spec.connection == connection && (workspaces.is_empty() || workspaces.contains(&a.spec.workspace)))
        .collect())
}

/// Deletes attachments, then with `wait` waits until they are gone.
pub async fn delete_attachments(
    client: &Client,
    ns: &str,
    found: &[WorkspaceConnection],
    write: &WriteFlags,
    wait: Option<Duration>,
) -> Result<()> {
    use kube::ResourceExt;
    for attachment in found {
        super::apply::delete::<WorkspaceConnection>(client, ns, &attachment.name_any(), write).await?;
        println!("workspaceconnection.manifold.dev/{} deleted{}", attachment.name_any(), write.suffix());
    }
    if let (Some(timeout), super::DryRun::None) = (wait, write.dry_run) {
        let api: Api<WorkspaceConnection> = Api::namespaced(client.clone(), ns);
        let deadline = tokio::time::Instant::now() + timeout;
        for attachment in found {
            let name = attachment.name_any();
            loop {
                match api.get(&name).await {
                    Err(e) if is_not_found(&e) => break,
                    Err(e) => return Err(super::explain(e)),
                    Ok(still) if tokio::time::Instant::now() >= deadline => {
                        let why =
                            still.status.and_then(|s| conditions::ready(&s.conditions).map(|c| format!("{}: {}", c.reason, c.message)));
                        return Err(format!(
                            "workspaceconnection.manifold.dev/{name} is still being deleted after {timeout:?}: {}",
                            why.unwrap_or_default()
                        )
                        .into());
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        }
    }
    Ok(())
}

pub async fn detach(flags: &KubeFlags, args: DetachArgs) -> Result<()> {
    let (client, ns) = flags.client().await?;
    let found = attachments_of(&client, &ns, &args.connection, &args.workspaces).await?;
    if found.is_empty() {
        let place = if args.all { "any workspace".to_string() } else { format!("workspace {}", args.workspaces.join(", ")) };
        return Err(format!("Connection {} is not attached to {place} in namespace {ns}", args.connection).into());
    }
    if let Some(missing) = args.workspaces.iter().find(|ws| !found.iter().any(|a| &a.spec.workspace == *ws)) {
        eprintln!("Connection {} is not attached to workspace {missing}", args.connection);
    }
    delete_attachments(&client, &ns, &found, &args.write, args.wait.bound()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attachment_is_named_as_the_examples_name_it() {
        let object = attachment("sales", "analytics", None, Some(Policy::Orphan), None).unwrap();
        assert_eq!(object["metadata"], json!({ "name": "analytics-sales" }));
        assert_eq!(object["spec"]["deletionPolicy"], "Orphan");
        assert!(attachment("sales", &"w".repeat(250), None, None, None).unwrap_err().to_string().contains("--name"));
    }
}
