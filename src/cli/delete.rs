//! `delete connection`: says which workspaces lose it, asks for its name to
//! be typed (as the console's Delete Connection does), then deletes its
//! attachments and the Connection.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use manifold::api::{Connection, WorkspaceConnection};

use super::{KubeFlags, Result, WriteFlags, is_not_found};

#[derive(Subcommand)]
pub enum DeleteKind {
    /// Delete a Connection and its attachments.
    #[command(visible_alias = "conn")]
    Connection(DeleteConnection),
}

#[derive(Args, Debug)]
pub struct DeleteConnection {
    /// Name of the Connection.
    pub name: String,
    /// Do not ask for the name to be typed.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub wait: super::WaitFlags,
    #[command(flatten)]
    pub write: WriteFlags,
}

pub async fn run(flags: &KubeFlags, kind: DeleteKind) -> Result<()> {
    let DeleteKind::Connection(args) = kind;
    let (client, ns) = flags.client().await?;
    let api: Api<Connection> = Api::namespaced(client.clone(), &ns);
    let connection = match api.get(&args.name).await {
        Ok(c) => c,
        Err(e) if is_not_found(&e) => return Err(format!("Connection {} not found in namespace {ns}", args.name).into()),
        Err(e) => return Err(super::explain(e)),
    };
    let attachments = super::attach::attachments_of(&client, &ns, &args.name, &[]).await?;
    let aggregators = aggregators_with(&api, &args.name).await?;
    let secret = connection.spec.credentials.as_ref().map(|c| c.secret_ref.name.as_str());
    Impact { ns: &ns, name: &args.name, attachments: &attachments, aggregators: &aggregators, secret }.tell()?;
    if !args.yes && args.write.dry_run == super::DryRun::None {
        confirm(&args.name)?;
    }
    super::attach::delete_attachments(&client, &ns, &attachments, &args.write, args.wait.bound()).await?;
    super::apply::delete::<Connection>(&client, &ns, &args.name, &args.write).await?;
    println!("connection.manifold.dev/{} deleted{}", args.name, args.write.suffix());
    if args.wait.wait && args.write.dry_run == super::DryRun::None {
        wait_until_gone(&api, &args.name, args.wait.timeout).await?;
    }
    Ok(())
}

/// The aggregators that have the Connection `name` among their members.
async fn aggregators_with(api: &Api<Connection>, name: &str) -> Result<Vec<String>> {
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(super::explain)?
        .items
        .iter()
        .filter(|c| c.status.as_ref().is_some_and(|s| s.members.iter().any(|m| m.name == name)))
        .map(|c| c.name_any())
        .collect())
}

/// What deleting a Connection takes away, told on stderr before the
/// question.
struct Impact<'a> {
    ns: &'a str,
    name: &'a str,
    attachments: &'a [WorkspaceConnection],
    aggregators: &'a [String],
    /// The Connection's credentials Secret, which stays.
    secret: Option<&'a str>,
}

impl Impact<'_> {
    /// Says which workspaces lose the connection and its schema (and where
    /// the schema stays), which aggregators lose it, and that its Secret
    /// stays.
    fn tell(&self) -> Result<()> {
        let Impact { ns, name, attachments, aggregators, secret } = self;
        let mut stderr = std::io::stderr();
        if attachments.is_empty() {
            writeln!(stderr, "Connection {ns}/{name} is attached to no workspace.")?;
        } else {
            writeln!(stderr, "Connection {ns}/{name} is removed from {} workspace(s), with its schema:", attachments.len())?;
            for a in attachments.iter() {
                let policy = if a.spec.deletion_policy == manifold::api::DeletionPolicy::Orphan {
                    " (deletionPolicy Orphan: the schema stays)"
                } else {
                    ""
                };
                writeln!(stderr, "  {} (workspaceconnection {}){policy}", a.spec.workspace, a.name_any())?;
            }
        }
        if !aggregators.is_empty() {
            writeln!(stderr, "It leaves the aggregators {}.", aggregators.join(", "))?;
        }
        if let Some(secret) = secret {
            writeln!(stderr, "Its Secret {secret} is not deleted.")?;
        }
        Ok(())
    }
}

/// Asks for the connection's name to be typed on stdin (with a prompt
/// when stdin is a terminal); anything else is an error, and nothing is
/// deleted.
fn confirm(name: &str) -> Result<()> {
    let mut stderr = std::io::stderr();
    if std::io::stdin().is_terminal() {
        write!(stderr, "Type the connection's name to delete it: ")?;
        stderr.flush()?;
    }
    let mut typed = String::new();
    std::io::stdin().lock().read_line(&mut typed)?;
    if typed.trim() != name {
        return Err("not deleted: the name typed is not the connection's (use --yes to skip the question)".into());
    }
    Ok(())
}

/// `--wait`: polls until the Connection `name` is gone, or fails after
/// `timeout`.
async fn wait_until_gone(api: &Api<Connection>, name: &str, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match api.get_metadata(name).await {
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(super::explain(e)),
            Ok(_) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("connection.manifold.dev/{name} is still being deleted after {timeout:?}").into());
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
