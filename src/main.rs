//! The `manifold` command: `run` the controller, print the `crds`, or `test`
//! a connection.

mod cli;
mod election;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use manifold::controller::Settings;
use manifold::plugins::{AllowedWrapper, HostFence, SourcePolicy};
use manifold::postgres::budget::BudgetSettings;
use manifold::postgres::{PoolSizes, Timeouts};

#[derive(Parser)]
#[command(name = "manifold", version, about = "Steampipe-style data connections on Kubernetes")]
#[command(after_help = "Installed as kubectl-manifold, this is the kubectl plugin `kubectl manifold`.")]
struct Cli {
    #[command(flatten)]
    kube: cli::KubeFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Create a connection, with its credentials Secret and attachments.
    #[command(subcommand)]
    Create(cli::create::CreateKind),
    /// Attach a connection to workspaces.
    Attach(cli::attach::AttachArgs),
    /// Detach a connection from workspaces.
    Detach(cli::attach::DetachArgs),
    /// Test a connection now and print the result.
    ///
    /// Sets the manifold.dev/test-request annotation, then waits for the
    /// operator's answer. Exits 0 if the test passed, 1 if it failed or could not run,
    /// 2 if no answer came in time.
    Test(cli::test::TestArgs),
    /// Show connections, workspaces or attachments with their status.
    #[command(visible_alias = "status")]
    Get(cli::get::GetArgs),
    /// Delete a connection from every workspace, after confirmation.
    #[command(subcommand)]
    Delete(cli::delete::DeleteKind),
    /// Serve the web console on 127.0.0.1, acting as the kubeconfig's user.
    Console(cli::console::ConsoleArgs),
    /// Turn other tools' configuration into Manifold's objects.
    #[command(subcommand)]
    Import(cli::import::ImportKind),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crds {
        /// Write one file per kind into this directory instead of printing.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Completion candidates for the words given (the last one is being
    /// typed), as kubectl's plugin completion asks for them.
    #[command(name = "__complete", hide = true)]
    Complete {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

#[derive(ValueEnum, Clone, Copy)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args)]
struct RunArgs {
    /// How often each workspace's catalog is observed and drift healed.
    #[arg(long, env = "MANIFOLD_RESYNC", default_value = "5m", value_parser = duration)]
    resync: Duration,
    /// Sessions per workspace database for attaches and detaches: bounds
    /// concurrent work in each.
    #[arg(long, env = "MANIFOLD_POOL_SIZE", default_value_t = 4)]
    pool_size: usize,
    /// Sessions per workspace database for connection tests, apart from
    /// attaches so that neither starves the other.
    #[arg(long, env = "MANIFOLD_TEST_POOL_SIZE", default_value_t = 2)]
    test_pool_size: usize,
    /// Sessions the operator may hold to one Postgres server (host and
    /// port), all of its workspace databases together: keep it well under
    /// the server's max_connections (100 by default, and in CloudNativePG).
    #[arg(long, env = "MANIFOLD_SERVER_SESSIONS", default_value_t = 32)]
    server_sessions: usize,
    /// Sessions the operator may hold to all servers together.
    #[arg(long, env = "MANIFOLD_SESSIONS", default_value_t = 256)]
    sessions: usize,
    /// A session unused this long is closed: at rest the operator holds
    /// next to nothing.
    #[arg(long, env = "MANIFOLD_SESSION_IDLE", default_value = "30s", value_parser = duration)]
    session_idle: Duration,
    /// How long a new session may wait for the budget before its work is
    /// reported `SessionsBusy` and tried again.
    #[arg(long, env = "MANIFOLD_SESSION_WAIT", default_value = "2m", value_parser = duration)]
    session_wait: Duration,
    /// Reconciles running at once, per kind.
    #[arg(long, env = "MANIFOLD_CONCURRENCY", default_value_t = 64)]
    concurrency: u16,
    /// Connect timeout for workspace databases.
    #[arg(long, env = "MANIFOLD_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    connect_timeout: Duration,
    /// Statement timeout of the work done in workspace databases.
    #[arg(long, env = "MANIFOLD_STATEMENT_TIMEOUT", default_value = "30s", value_parser = duration)]
    statement_timeout: Duration,
    /// Lock timeout of the work done in workspace databases.
    #[arg(long, env = "MANIFOLD_LOCK_TIMEOUT", default_value = "10s", value_parser = duration)]
    lock_timeout: Duration,
    /// Bounds every statement of a connection test.
    #[arg(long, env = "MANIFOLD_TEST_TIMEOUT", default_value = "10s", value_parser = duration)]
    test_timeout: Duration,
    /// A file holding the libpq URI of a test database that a cluster admin
    /// provides (the chart mounts it from a Secret): a Connection attached
    /// to no Workspace is tested there, and nowhere a tenant could choose.
    /// Without it, a Connection is tested only where it is attached.
    #[arg(long, env = "MANIFOLD_TEST_DATABASE_URI_FILE")]
    test_database_uri_file: Option<PathBuf>,
    /// The label selector of the Secrets Manifold may read and use; a Secret
    /// outside it is never read. Empty: every Secret (not recommended).
    #[arg(long, env = "MANIFOLD_SECRET_SELECTOR", default_value = "manifold.dev/credentials=true")]
    secret_selector: String,
    /// Wrappers the `fdw` plugin may use, as JSON: a list of objects with
    /// `extension`, `wrapper`, `serverOptions` and `userMappingOptions`
    /// (the option names a spec and a Secret may set). postgres_fdw and the
    /// steampipe extensions need no entry.
    #[arg(long, env = "MANIFOLD_WRAPPERS", default_value = "[]", value_parser = wrappers)]
    wrappers: WrapperList,
    /// Extensions whose types an imported column may have, comma-separated
    /// (`citext,hstore`). Built-in types are always trusted; any other type
    /// (a domain a database user made, above all) is refused before anything
    /// is read through it, since reading a value runs its type's code.
    #[arg(long, env = "MANIFOLD_TYPE_EXTENSIONS", value_delimiter = ',')]
    type_extensions: Vec<String>,
    /// The Secret, in the operator's namespace (POD_NAMESPACE), that holds
    /// the key of every Workspace's database pin; made on first start.
    /// Default: `<lease name>-pin-key`.
    #[arg(long, env = "MANIFOLD_PIN_KEY_SECRET")]
    pin_key_secret: Option<String>,
    /// Where sources may be: DNS patterns (`db.example.com`,
    /// `*.svc.cluster.local`) and CIDRs, comma-separated. Empty: anywhere.
    #[arg(long, env = "MANIFOLD_SOURCE_HOSTS", value_delimiter = ',')]
    source_hosts: Vec<String>,
    /// Every postgres_fdw server gets this connect_timeout, unless its spec
    /// sets a lower one.
    #[arg(long, env = "MANIFOLD_SOURCE_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    source_connect_timeout: Duration,
    /// How long the deletion of a Workspace or an attachment waits for a
    /// database it cannot reach before it gives up (with a Warning Event),
    /// leaving that database's objects in place.
    #[arg(long, env = "MANIFOLD_CLEANUP_TIMEOUT", default_value = "10m", value_parser = duration)]
    cleanup_timeout: Duration,
    /// The same wait while the object's namespace is being deleted: a
    /// database that went with its namespace (a CloudNativePG Cluster in
    /// it) does not come back, and the namespace waits for nothing else.
    #[arg(long, env = "MANIFOLD_TERMINATING_CLEANUP_TIMEOUT", default_value = "1m", value_parser = duration)]
    terminating_cleanup_timeout: Duration,
    /// On SIGTERM, how long the reconciles already running may take to
    /// finish before they are abandoned (their transactions roll back).
    /// The leader Lease is released only after that, so that no two
    /// replicas ever reconcile at once: keep it below the pod's
    /// terminationGracePeriodSeconds (30 s by default).
    #[arg(long, env = "MANIFOLD_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = duration)]
    shutdown_timeout: Duration,
    /// Watch only these namespaces (comma-separated); empty means all. Use
    /// with the chart's namespaced RBAC.
    #[arg(long, env = "MANIFOLD_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Address of the admin server: /healthz, /readyz and /metrics.
    #[arg(long, env = "MANIFOLD_ADMIN_ADDRESS", default_value = "127.0.0.1:8080")]
    admin_address: std::net::SocketAddr,
    /// Elect a leader through a Lease, so that only one replica reconciles.
    #[arg(long, env = "MANIFOLD_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "MANIFOLD_LEASE_NAME", default_value = "manifold")]
    lease_name: String,
    /// Namespace of the leader Lease; defaults to the pod's (POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Log format: text or json.
    #[arg(long, env = "MANIFOLD_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

/// Parses a Go-style duration such as `90s`, `5m` or `1h30m`.
fn duration(s: &str) -> Result<Duration, String> {
    manifold::api::duration::parse(s)
}

/// The `--wrappers` list: one JSON value, not a repeated flag.
#[derive(Clone, Debug)]
struct WrapperList(Vec<AllowedWrapper>);

fn wrappers(s: &str) -> Result<WrapperList, String> {
    serde_json::from_str(s).map(WrapperList).map_err(|e| format!("not a JSON list of wrappers: {e}"))
}

/// The name the binary was started under: `kubectl-manifold` as a kubectl
/// plugin, `kubectl_complete-manifold` for kubectl's completion.
fn invoked_as() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "manifold".into())
}

fn main() {
    let name = invoked_as();
    if name.starts_with("kubectl_complete-") {
        let words: Vec<String> = std::env::args().skip(1).collect();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(cli::complete::answer(&Cli::command(), &words));
        return;
    }
    let mut command = Cli::command();
    if name.starts_with("kubectl-") {
        command = command.bin_name("kubectl manifold").name("kubectl manifold");
    }
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // One TLS provider for every client (kube, Postgres), whichever rustls
    // features other crates of a build turn on.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match dispatch(cli, &name) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn dispatch(cli: Cli, name: &str) -> Result<i32, Box<dyn std::error::Error>> {
    let flags = cli.kube;
    let verb = |future: std::pin::Pin<Box<dyn std::future::Future<Output = cli::Result<i32>>>>| {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(future)
    };
    match cli.command {
        Command::Crds { write } => print_crds(write).map(|()| 0),
        Command::Run(args) => run(flags, args).map(|()| 0),
        Command::Test(args) => verb(Box::pin(async move { cli::test::run(&flags, args).await })),
        Command::Create(kind) => verb(Box::pin(async move { cli::create::run(&flags, kind).await.map(|()| 0) })),
        Command::Attach(args) => verb(Box::pin(async move { cli::attach::attach(&flags, args).await.map(|()| 0) })),
        Command::Detach(args) => verb(Box::pin(async move { cli::attach::detach(&flags, args).await.map(|()| 0) })),
        Command::Get(args) => verb(Box::pin(async move { cli::get::run(&flags, args).await.map(|()| 0) })),
        Command::Delete(kind) => verb(Box::pin(async move { cli::delete::run(&flags, kind).await.map(|()| 0) })),
        Command::Console(args) => verb(Box::pin(async move { cli::console::run(&flags, args).await.map(|()| 0) })),
        Command::Import(kind) => verb(Box::pin(async move { cli::import::run(&flags, kind).await.map(|()| 0) })),
        Command::Complete { words } => verb(Box::pin(async move {
            cli::complete::answer(&Cli::command(), &words).await;
            Ok(0)
        })),
        Command::Completion { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            let bin = if name.starts_with("kubectl-") { name.to_string() } else { "manifold".to_string() };
            clap_complete::generate(shell, &mut Cli::command(), bin, &mut std::io::stdout());
            Ok(0)
        }
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

fn init_tracing(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// `manifold run`: the controllers, with the admin server, until SIGTERM or
/// SIGINT. With `--leader-elect`, a replica that loses the Lease it held
/// exits with status 1.
fn run(flags: cli::KubeFlags, args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    init_tracing(&args.log_format);
    let settings = settings(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let lost = runtime.block_on(async move {
        let client = kube::Client::try_from(flags.config().await?)?;
        let metrics = std::sync::Arc::new(manifold::metrics::Metrics::default());
        let health = manifold::metrics::Health::default();
        let admin = manifold::metrics::serve(args.admin_address, metrics.clone(), health.clone()).await?;
        tracing::info!(address = %admin, "admin server listening");
        let pin_key_secret = args.pin_key_secret.clone().unwrap_or_else(|| format!("{}-pin-key", args.lease_name));
        let pin_key = manifold::controller::pin_key::load_or_create(&client, &args.lease_namespace, &pin_key_secret).await?;
        let shared = manifold::controller::Shared::new(client.clone(), settings, metrics, pin_key);

        if !args.leader_elect {
            manifold::controller::run(shared, &args.namespaces, health, std::future::ready(()), shutdown_signal()).await;
            return Ok::<bool, Box<dyn std::error::Error>>(false);
        }
        run_as_leader(client, shared, health, &args).await
    })?;
    if lost {
        std::process::exit(1);
    }
    Ok(())
}

/// The controller's settings from `run`'s flags. A bad `--source-hosts` is
/// the one error.
fn settings(args: &RunArgs) -> Result<Settings, String> {
    Ok(Settings {
        resync: args.resync,
        pool_sizes: PoolSizes { work: args.pool_size, tests: args.test_pool_size },
        sessions: BudgetSettings {
            per_server: args.server_sessions.max(1),
            total: args.sessions.max(1),
            idle: args.session_idle,
            wait: args.session_wait,
        },
        concurrency: args.concurrency,
        timeouts: Timeouts { connect: args.connect_timeout, statement: args.statement_timeout, lock: args.lock_timeout },
        test_timeout: args.test_timeout,
        test_database: args.test_database_uri_file.clone(),
        sources: SourcePolicy {
            wrappers: args.wrappers.0.clone(),
            hosts: HostFence::parse(&args.source_hosts).map_err(|e| format!("--source-hosts: {e}"))?,
            connect_timeout_secs: args.source_connect_timeout.as_secs().max(1),
            type_extensions: args.type_extensions.iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect(),
        },
        secret_selector: args.secret_selector.clone(),
        cleanup_timeout: args.cleanup_timeout,
        terminating_cleanup_timeout: args.terminating_cleanup_timeout,
        shutdown_timeout: args.shutdown_timeout,
    })
}

/// The controllers under leader election: they start once this replica
/// holds the Lease, and stop when asked or when the Lease is lost after it
/// was held. Returns whether the Lease was lost.
async fn run_as_leader(
    client: kube::Client,
    shared: manifold::controller::Shared,
    health: manifold::metrics::Health,
    args: &RunArgs,
) -> Result<bool, Box<dyn std::error::Error>> {
    // Leader election: a Lease held for 15 s and renewed 5 s before it
    // expires, so a standby takes over about 15 s after the leader dies,
    // and within about a second of a leader that releases it (SIGTERM).
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "manifold".into()), std::process::id()));
    // A replica that is not leading also takes a released Lease at once
    // (election.rs): the leader releases it on SIGTERM.
    let params = election::Params {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone(),
        identity: identity.clone(),
        duration: 15,
        grace: 5,
    };
    let (mut is_leader, lease_task) = election::watch(client, params).await?;
    // The Lease task releases the Lease when every receiver is gone. This
    // one is kept until the controllers have stopped: the futures below
    // drop theirs as soon as they end (on SIGTERM), and the next leader
    // must not start while a reconcile of ours still runs.
    let held = is_leader.clone();
    tracing::info!(identity = %identity, lease = %args.lease_name, "waiting for leadership");
    let lost_rx = is_leader.clone();
    let elected = async move {
        while !*is_leader.borrow_and_update() {
            if is_leader.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let (lost_tx, mut lost) = tokio::sync::watch::channel(false);
    // Stop when asked, or when the Lease is lost after it was held.
    let shutdown = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = lease_lost(lost_rx, lost_tx) => {}
        }
    };
    let run = manifold::controller::run(shared, &args.namespaces, health, elected, shutdown);
    tokio::select! {
        _ = run => {}
        // Asked to stop, the leader lets its reconciles end; a lost Lease
        // may be another's already, so nothing of ours runs on.
        Ok(_) = lost.wait_for(|lost| *lost) => {
            tracing::error!("leader Lease lost: the reconciles still running are abandoned (their transactions roll back)");
        }
    }
    let was_lost = *lost.borrow();
    // The controllers have stopped: the Lease task releases the Lease for
    // the next leader, and ends.
    drop(held);
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    Ok(was_lost)
}

/// Resolves when the Lease is lost after it was held, setting `lost`.
/// Resolves without it if the Lease task ends before the Lease was ever
/// held.
async fn lease_lost(mut lost_rx: tokio::sync::watch::Receiver<bool>, lost: tokio::sync::watch::Sender<bool>) {
    while !*lost_rx.borrow_and_update() {
        if lost_rx.changed().await.is_err() {
            return;
        }
    }
    while *lost_rx.borrow_and_update() {
        if lost_rx.changed().await.is_err() {
            break;
        }
    }
    lost.send_replace(true);
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
