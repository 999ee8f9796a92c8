//! The operator under test: the `manifold` binary that cargo built beside
//! the test binary, run by devenv, with its admin server on a free port.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::cluster::control_plane;
use crate::devenv::Devenv;

/// The `manifold` binary of the build that runs the tests: cargo puts it
/// beside the directory of the test and bench binaries.
pub fn manifold_binary() -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let binary = dir.join("manifold");
    assert!(binary.exists(), "{} is missing: cargo builds it with the tests", binary.display());
    binary.to_string_lossy().into_owned()
}

// The operator

/// The operator under test, one per test binary, watching every namespace,
/// with a short resync so that drift tests finish quickly.
pub struct Operator {
    pub devenv: Devenv,
    pub log: PathBuf,
    /// The admin server: /healthz, /readyz, /metrics.
    pub admin: String,
}

static OPERATOR_LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The logs of every operator process this run started.
pub fn operator_logs() -> Vec<PathBuf> {
    OPERATOR_LOGS.lock().unwrap().clone()
}

/// A free 127.0.0.1 port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub const RESYNC_SECS: u64 = 3;

/// The wrapper allowlist of the shared operator: mysql_fdw, as a cluster
/// admin would allow it.
pub const MYSQL_FDW: &str =
    r#"[{"extension":"mysql_fdw","wrapper":"mysql_fdw","serverOptions":["host","port"],"userMappingOptions":["username","password"]}]"#;

static OPERATOR: OnceLock<Operator> = OnceLock::new();

pub fn operator() -> &'static Operator {
    OPERATOR.get_or_init(|| {
        let cp = control_plane();
        let resync = format!("{RESYNC_SECS}s");
        let admin = format!("127.0.0.1:{}", free_port());
        // The cluster admin's test database, where a Connection attached
        // nowhere is tested: a database of its own on the shared Postgres.
        let test_db = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let pg = crate::postgres();
                let db = pg.database("admin-tests").await;
                // The admin installs every wrapper the allowlist names.
                let (role, _) = crate::Postgres::owner(&db);
                pg.connect(&db)
                    .await
                    .batch_execute(&format!(
                        "CREATE EXTENSION mysql_fdw SCHEMA public; GRANT USAGE ON FOREIGN DATA WRAPPER mysql_fdw TO {role}"
                    ))
                    .await
                    .unwrap();
                pg.owner_uri(&db)
            })
        })
        .join()
        .unwrap();
        let test_db_file = std::env::temp_dir().join(format!("{}.uri", crate::unique("test-database")));
        std::fs::write(&test_db_file, test_db).unwrap();
        let test_db_file = test_db_file.to_string_lossy().into_owned();
        let devenv = Devenv::start_with_env(
            "exec",
            &[
                "--",
                &manifold_binary(),
                "run",
                "--resync",
                &resync,
                "--statement-timeout",
                "10s",
                "--lock-timeout",
                "3s",
                "--admin-address",
                &admin,
                // A cluster admin's allowlist: mysql_fdw, with the options
                // the MariaDB tests use.
                "--wrappers",
                MYSQL_FDW,
                "--test-database-uri-file",
                &test_db_file,
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
        let binary = manifold_binary();
        let mut all = vec!["--", binary.as_str(), "run", "--admin-address", &admin];
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

    /// SIGTERM, without waiting for the exit: what the kubelet sends.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    /// Whether the process has exited (devenv reaps it).
    pub fn exited(&self) -> bool {
        !std::path::Path::new(&format!("/proc/{}", self.pid())).exists()
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
