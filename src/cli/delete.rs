//! `delete connection`: says which workspaces lose it, asks for its name to
//! be typed (as the console's Delete Connection does), then deletes its
//! attachments and the Connection.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use manifold::api::Connection;

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
    let aggregators: Vec<String> = api
        .list(&ListParams::default())
        .await
        .map_err(super::explain)?
        .items
        .iter()
        .filter(|c| c.status.as_ref().is_some_and(|s| s.members.iter().any(|m| m.name == args.name)))
        .map(|c| c.name_any())
        .collect();
    let mut stderr = std::io::stderr();
    if attachments.is_empty() {
        writeln!(stderr, "Connection {ns}/{} is attached to no workspace.", args.name)?;
    } else {
        writeln!(stderr, "Connection {ns}/{} is removed from {} workspace(s), with its schema:", args.name, attachments.len())?;
        for a in &attachments {
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
    if let Some(secret) = connection.spec.credentials.as_ref().map(|c| &c.secret_ref.name) {
        writeln!(stderr, "Its Secret {secret} is not deleted.")?;
    }
    if !args.yes && args.write.dry_run == super::DryRun::None {
        if std::io::stdin().is_terminal() {
            write!(stderr, "Type the connection's name to delete it: ")?;
            stderr.flush()?;
        }
        let mut typed = String::new();
        std::io::stdin().lock().read_line(&mut typed)?;
        if typed.trim() != args.name {
            return Err("not deleted: the name typed is not the connection's (use --yes to skip the question)".into());
        }
    }
    super::attach::delete_attachments(&client, &ns, &attachments, &args.write, args.wait.bound()).await?;
    super::apply::delete::<Connection>(&client, &ns, &args.name, &args.write).await?;
    println!("connection.manifold.dev/{} deleted{}", args.name, args.write.suffix());
    if args.wait.wait && args.write.dry_run == super::DryRun::None {
        let deadline = tokio::time::Instant::now() + args.wait.timeout;
        loop {
            match api.get_metadata(&args.name).await {
                Err(e) if is_not_found(&e) => break,
                Err(e) => return Err(super::explain(e)),
                Ok(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(
                        format!("connection.manifold.dev/{} is still being deleted after {:?}", args.name, args.wait.timeout).into()
                    );
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
    Ok(())
}
