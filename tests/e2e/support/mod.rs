//! Test support for the end-to-end suite: one real control plane and one real
//! Postgres per test binary, started on first use by `devenv` (see
//! tests/controlplane), and stopped when this process exits, however it exits:
//! each devenv reads our end of a pipe and shuts down at end of input.
//!
//! Each test gets a fresh namespace and, when it asks, a fresh database.

#![allow(dead_code)]

pub mod harness;
pub mod world;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where tests/controlplane/build.sh put etcd, kube-apiserver, kubectl, helm
/// and devenv.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("MANIFOLD_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/controlplane/bin"))
}

/// A running devenv process, and the JSON it printed once ready.
pub struct Devenv {
    pub env: Value,
    pub dir: PathBuf,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    _child: Child,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name that is unique within this test run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

impl Devenv {
    /// Starts `devenv MODE` in a new directory and waits until it is ready.
    pub fn start(mode: &str, extra: &[&str]) -> Devenv {
        Devenv::start_with_env(mode, extra, &[])
    }

    /// Like `start`, with extra environment variables for devenv and what it
    /// runs.
    pub fn start_with_env(mode: &str, extra: &[&str], envs: &[(&str, &Path)]) -> Devenv {
        let devenv = bin_dir().join("devenv");
        assert!(
            devenv.exists(),
            "{} is missing: run tests/controlplane/build.sh first",
            devenv.display()
        );
        let dir = std::env::temp_dir().join(unique(&format!("manifold-{mode}")));
        let mut child = Command::new(&devenv)
            .arg(mode)
            .arg("--dir")
            .arg(&dir)
            .arg("--bin")
            .arg(bin_dir())
            .args(["--stdin", "--cleanup"])
            .args(extra)
            .envs(envs.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start devenv");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read devenv output");
        let env: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("devenv {mode} did not start ({e}); see the errors above"));
        Devenv { env, dir, io: Mutex::new((stdin, stdout)), _child: child }
    }

    /// Sends one command (see devenv's documentation) and waits for its answer.
    pub fn command(&self, cmd: &str) {
        let mut io = self.io.lock().unwrap();
        writeln!(io.0, "{cmd}").unwrap();
        io.0.flush().unwrap();
        let mut answer = String::new();
        io.1.read_line(&mut answer).unwrap();
        assert_eq!(answer.trim(), "ok", "devenv command {cmd:?} failed");
    }

    fn str(&self, key: &str) -> String {
        self.env[key].as_str().unwrap_or_else(|| panic!("devenv env has no {key}")).to_owned()
    }
}

// ---------------------------------------------------------------------------
// Control plane

/// The test binary's control plane, with the CRDs installed.
pub struct ControlPlane {
    pub devenv: Devenv,
    pub kubeconfig: PathBuf,
}

pub const CRD_NAMES: [&str; 3] = [
    "crd/workspaces.manifold.dev",
    "crd/connections.manifold.dev",
    "crd/workspaceconnections.manifold.dev",
];

pub(crate) static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// This run's secret marker: every credential the tests create contains it,
/// and after the suite it must appear nowhere else.
pub fn secret_marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        format!("Mk{}x{nanos}", std::process::id())
    })
}

static OPERATOR_LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The logs of every operator process this run started.
pub fn operator_logs() -> Vec<PathBuf> {
    OPERATOR_LOGS.lock().unwrap().clone()
}

pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        let devenv = Devenv::start("controlplane", &[]);
        let kubeconfig = PathBuf::from(devenv.str("kubeconfig"));
        let cp = ControlPlane { devenv, kubeconfig };
        for dir in ["crds", "admission"] {
            let out = cp.kubectl(&["apply", "-f", &repo_root().join(dir).to_string_lossy()]);
            assert!(out.status.success(), "installing {dir}/ failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        args.extend(CRD_NAMES.iter().map(|name| *name));
        let out = cp.kubectl(&args);
        assert!(out.status.success(), "CRDs not Established: {}", String::from_utf8_lossy(&out.stderr));
        cp
    })
}

impl ControlPlane {
    /// A kubeconfig that authenticates with a token of ServiceAccount
    /// `ns/name`, obtained through TokenRequest (`kubectl create token`).
    pub fn token_kubeconfig(&self, ns: &str, name: &str) -> PathBuf {
        let token = stdout_ok(&self.kubectl(&["create", "token", name, "-n", ns, "--duration", "2h"]));
        let view = |path: &str| {
            stdout_ok(&self.kubectl(&["config", "view", "--raw", "-o", &format!("jsonpath={{.clusters[0].cluster.{path}}}")]))
        };
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             users:\n- name: sa\n  user:\n    token: {}\ncontexts:\n- name: sa\n  context: {{ cluster: c, user: sa, namespace: {ns} }}\n\
             current-context: sa\n",
            view("server"),
            view("certificate-authority-data"),
            token.trim()
        );
        let path = std::env::temp_dir().join(format!("{}.kubeconfig", unique("sa")));
        std::fs::write(&path, config).unwrap();
        path
    }

    /// Runs the helm that was built with the control plane, against it.
    pub fn helm(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("helm"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", std::env::temp_dir().join("manifold-helm/cache"))
            .env("HELM_CONFIG_HOME", std::env::temp_dir().join("manifold-helm/config"))
            .env("HELM_DATA_HOME", std::env::temp_dir().join("manifold-helm/data"))
            .output()
            .expect("run helm")
    }

    /// Runs the kubectl that was built with the control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, "")
    }

    /// Runs kubectl with `input` on its standard input.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(bin_dir().join("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// A client for the admin kubeconfig. Made per test: a kube Client lives
    /// on the runtime that created it, and every #[tokio::test] has its own.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
        Client::try_from(config).unwrap()
    }
}

/// A client and a fresh namespace for one test.
pub struct TestNs {
    pub client: Client,
    pub ns: String,
}

pub async fn namespace(prefix: &str) -> TestNs {
    let cp = control_plane();
    let client = cp.client().await;
    let ns = unique(prefix);
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": ns, "labels": { "manifold.dev/test": "e2e" } }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    TestNs { client, ns }
}

impl TestNs {
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        control_plane().kubectl(&all)
    }

    /// `kubectl apply -f -` of a YAML document, in this namespace.
    pub fn apply(&self, yaml: &str) -> Output {
        control_plane().kubectl_stdin(&["-n", &self.ns, "apply", "-f", "-"], yaml)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }
}

/// Standard output of a successful command; panics with its stderr otherwise.
pub fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` until it returns Some, or panics after `timeout` with the
/// description and the last value seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if start.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

// ---------------------------------------------------------------------------
// Postgres

/// A private Postgres instance. TCP connections need the password
/// (scram-sha-256); the superuser is `postgres`.
pub struct Postgres {
    pub devenv: Devenv,
    pub host: String,
    pub port: u16,
    pub password: String,
}

static POSTGRES: OnceLock<Postgres> = OnceLock::new();

/// The test binary's shared Postgres instance.
pub fn postgres() -> &'static Postgres {
    POSTGRES.get_or_init(Postgres::start)
}

impl Postgres {
    /// Starts a new private instance. Most tests share `postgres()`; a test
    /// that stops or kills its database starts its own.
    pub fn start() -> Postgres {
        Postgres::start_with(&[])
    }

    /// A private instance that serves TLS with a certificate for
    /// `localhost` only, from a CA of its own (`ca_pem`).
    pub fn start_tls() -> Postgres {
        Postgres::start_with(&["--tls"])
    }

    /// The CA of an instance started with `start_tls`, as PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.devenv.str("caFile")).unwrap()
    }

    fn start_with(args: &[&str]) -> Postgres {
        let devenv = Devenv::start("postgres", args);
        Postgres {
            host: devenv.str("host"),
            port: devenv.env["port"].as_u64().unwrap() as u16,
            password: devenv.str("password"),
            devenv,
        }
    }

    /// A libpq URI for `user`/`password` and `database`.
    pub fn uri(&self, user: &str, password: &str, database: &str) -> String {
        format!("postgresql://{user}:{password}@{}:{}/{database}", self.host, self.port)
    }

    /// A superuser URI for `database`.
    pub fn admin_uri(&self, database: &str) -> String {
        self.uri("postgres", &self.password, database)
    }

    /// The owner of a database made by `database`: a role that is not a
    /// superuser, with USAGE on postgres_fdw, which an admin installed.
    pub fn owner(database: &str) -> (String, String) {
        (format!("{database}_owner"), format!("owner-{}-{database}", secret_marker()))
    }

    /// The least-privilege URI of a database made by `database`: what a
    /// Workspace uses, as CloudNativePG's `<cluster>-app` Secret would.
    pub fn owner_uri(&self, database: &str) -> String {
        let (role, password) = Postgres::owner(database);
        self.uri(&role, &password, database)
    }

    /// Connects as the superuser.
    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.admin_uri(database), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {database}: {e}"));
        tokio::spawn(connection);
        client
    }

    /// Connects as the owner of a database made by `database`: the
    /// workspace role, whose user mappings its foreign tables use.
    pub async fn connect_owner(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.owner_uri(database), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {database} as its owner: {e}"));
        tokio::spawn(connection);
        client
    }

    /// Creates a fresh database and returns its name. As CloudNativePG's
    /// `Database` declares it, the database is owned by a role of its own
    /// (`owner`), and an admin installed postgres_fdw and granted USAGE on
    /// it to that role.
    pub async fn database(&self, prefix: &str) -> String {
        let name = unique(prefix).replace('-', "_");
        let (role, password) = Postgres::owner(&name);
        let admin = self.connect("postgres").await;
        admin.batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'")).await.unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name} OWNER {role}")).await.unwrap();
        let db = self.connect(&name).await;
        db.batch_execute(&format!(
            "CREATE EXTENSION postgres_fdw SCHEMA public; GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {role}"
        ))
        .await
        .unwrap();
        name
    }

    /// Creates a fresh, empty database, owned by the superuser, with no
    /// extension: what a workspace whose role is a superuser starts from.
    pub async fn bare_database(&self, prefix: &str) -> String {
        let name = unique(prefix).replace('-', "_");
        self.connect("postgres").await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        name
    }

    pub fn data_dir(&self) -> &Path {
        Path::new(self.devenv.env["dataDir"].as_str().unwrap())
    }
}

// ---------------------------------------------------------------------------
// The operator

/// The operator under test, one per test binary, watching every namespace,
/// with a short resync so that drift tests finish quickly.
pub struct Operator {
    pub devenv: Devenv,
    pub log: PathBuf,
    /// The admin server: /healthz, /readyz, /metrics.
    pub admin: String,
}

/// A free 127.0.0.1 port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub const RESYNC_SECS: u64 = 3;

static OPERATOR: OnceLock<Operator> = OnceLock::new();

pub fn operator() -> &'static Operator {
    OPERATOR.get_or_init(|| {
        let cp = control_plane();
        let resync = format!("{RESYNC_SECS}s");
        let admin = format!("127.0.0.1:{}", free_port());
        let devenv = Devenv::start_with_env(
            "exec",
            &[
                "--",
                env!("CARGO_BIN_EXE_manifold"),
                "run",
                "--resync",
                &resync,
                "--statement-timeout",
                "10s",
                "--lock-timeout",
                "3s",
                "--admin-address",
                &admin,
            ],
            &[("KUBECONFIG", &cp.kubeconfig)],
        );
        let log = PathBuf::from(devenv.str("log"));
        OPERATOR_LOGS.lock().unwrap().push(log.clone());
        let op = Operator { devenv, log, admin };
        op.wait_up();
        op
    })
}

impl Operator {
    /// Starts an operator process of its own: `manifold run` with `args`,
    /// the given kubeconfig, and an admin server on a free port.
    pub fn start(kubeconfig: &Path, args: &[&str]) -> Operator {
        let admin = format!("127.0.0.1:{}", free_port());
        let mut all = vec!["--", env!("CARGO_BIN_EXE_manifold"), "run", "--admin-address", &admin];
        all.extend_from_slice(args);
        let devenv = Devenv::start_with_env("exec", &all, &[("KUBECONFIG", kubeconfig)]);
        let log = PathBuf::from(devenv.str("log"));
        OPERATOR_LOGS.lock().unwrap().push(log.clone());
        let op = Operator { devenv, log, admin };
        op.wait_up();
        op
    }

    /// Waits until the admin server answers; panics with the log if the
    /// process is not coming up (a bad flag, say).
    fn wait_up(&self) {
        let start = Instant::now();
        while self.try_admin_get("/healthz").is_none() {
            assert!(start.elapsed() < Duration::from_secs(30), "the operator did not start:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of the operator.
    pub fn pid(&self) -> u64 {
        self.devenv.env["pid"].as_u64().unwrap()
    }

    /// SIGKILL: no clean shutdown, no Lease release.
    pub fn kill(&self) {
        self.devenv.command("kill");
    }

    /// GET a path of the admin server; returns the status code and body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        self.try_admin_get(path).expect("the admin server answers")
    }

    /// Like `admin_get`, but None while nothing listens yet.
    pub fn try_admin_get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(&self.admin).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.admin).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Some((code, body.to_owned()))
    }

    /// The value of one sample of /metrics, such as
    /// `manifold_reconciles_total{kind="Workspace"}`; 0 if absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Everything the operator has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Source databases

/// A source database with a few tables, and a read-only role for it.
pub struct Source {
    pub db: String,
    pub user: String,
    pub password: String,
}

impl Postgres {
    /// Creates a source database: `public.orders` (3 rows),
    /// `public.customers` (2 rows), `archive.old_orders` (1 row), and a role
    /// that can read them.
    pub async fn source(&self, prefix: &str) -> Source {
        let db = self.database(prefix).await;
        let user = unique("reader").replace('-', "_");
        let password = format!("pw-{}-{}", secret_marker(), unique("s"));
        let admin = self.connect("postgres").await;
        admin.batch_execute(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'")).await.unwrap();
        let c = self.connect(&db).await;
        c.batch_execute(&format!(
            "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, amount numeric);
             INSERT INTO orders VALUES (1, 1, 10.5), (2, 1, 20), (3, 2, 7.25);
             CREATE TABLE customers (id int PRIMARY KEY, name text);
             INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');
             CREATE SCHEMA archive;
             CREATE TABLE archive.old_orders (id int, amount numeric);
             INSERT INTO archive.old_orders VALUES (100, 1);
             GRANT USAGE ON SCHEMA public, archive TO {user};
             GRANT SELECT ON ALL TABLES IN SCHEMA public, archive TO {user};"
        ))
        .await
        .unwrap();
        Source { db, user, password }
    }
}

/// YAML for a Secret with string data, opted in for Manifold's use.
pub fn secret_yaml(name: &str, data: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}, labels: {{ manifold.dev/credentials: \"true\" }} }}\nstringData:\n"
    );
    for (k, v) in data {
        yaml.push_str(&format!("  {k}: {}\n", serde_json::to_string(v).unwrap()));
    }
    yaml
}

/// YAML for a Secret with string data that nobody opted in.
pub fn unlabelled_secret_yaml(name: &str, data: &[(&str, &str)]) -> String {
    let mut yaml = format!("apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\nstringData:\n");
    for (k, v) in data {
        yaml.push_str(&format!("  {k}: {}\n", serde_json::to_string(v).unwrap()));
    }
    yaml
}

// ---------------------------------------------------------------------------
// A TCP proxy that can hold connections

/// A TCP proxy in front of a server, for faults: while paused it accepts
/// connections but forwards nothing, and it can delay every new connection.
pub struct Proxy {
    pub port: u16,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// Starts a proxy to 127.0.0.1:`target` on the current runtime.
    pub async fn start(target: u16) -> Proxy {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (p, d) = (paused.clone(), delay_ms.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (p, d) = (p.clone(), d.clone());
                tokio::spawn(async move {
                    while p.load(Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(d.load(Relaxed))).await;
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { port, paused, delay_ms }
    }

    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// Sources that are not what they seem

/// A server that speaks just enough of the Postgres protocol to ask a client
/// for its password in clear text, and records every byte it receives: the
/// tenant's own server in the attack a Connection could make. Then it
/// answers with `error`, a message of its choosing.
pub struct FakeSource {
    pub port: u16,
    received: std::sync::Arc<Mutex<Vec<u8>>>,
}

impl FakeSource {
    pub async fn start(error: &str) -> FakeSource {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: std::sync::Arc<Mutex<Vec<u8>>> = Default::default();
        let (log, error) = (received.clone(), error.to_owned());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (log, error) = (log.clone(), error.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    // The startup packet (after a refused SSLRequest, if any).
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if n == 8 && buf[4..8] == [0x04, 0xd2, 0x16, 0x2f] {
                            let _ = socket.write_all(b"N").await; // no TLS
                            continue;
                        }
                        break;
                    }
                    // AuthenticationCleartextPassword, then read the password.
                    let _ = socket.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await;
                    if let Ok(n) = socket.read(&mut buf).await {
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let mut fields = Vec::new();
                    for (code, value) in [(b'S', "FATAL"), (b'C', "28P01"), (b'M', error.as_str())] {
                        fields.push(code);
                        fields.extend_from_slice(value.as_bytes());
                        fields.push(0);
                    }
                    fields.push(0);
                    let mut message = vec![b'E'];
                    message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
                    message.extend_from_slice(&fields);
                    let _ = socket.write_all(&message).await;
                });
            }
        });
        FakeSource { port, received }
    }

    /// Everything any client sent, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// A source that accepts TCP connections and never answers: the source
/// that, unbounded, would hold a workspace session for a long time.
pub async fn silent_source() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}
