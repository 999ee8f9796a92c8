//! The `manifold` command: `run` the controller, print the `crds`, or `test`
//! a connection.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "manifold", version, about = "Steampipe-style data connections on Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run,
    /// Print the CustomResourceDefinitions as YAML.
    Crds {
        /// Write one file per kind into this directory instead of printing.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { write } => print_crds(write),
        Command::Run => run(),
    }
}

fn print_crds(write: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    for (file, crd) in manifold::api::crds() {
        let yaml = manifold::api::crd_yaml(&crd);
        match &write {
            Some(dir) => std::fs::write(dir.join(file), yaml)?,
            None => print!("{yaml}"),
        }
    }
    Ok(())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    Err("not yet".into())
}
