//! `devenv`, the launcher of the private control planes, Postgres instances
//! and programs the tests use (see tests/controlplane/devenv): one process
//! per service, stopped when the test process's pipe closes.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Where tests/controlplane/build.sh put etcd, kube-apiserver, kubectl, helm
/// and devenv.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("MANIFOLD_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("tests/controlplane/bin"))
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
        assert!(devenv.exists(), "{} is missing: run tests/controlplane/build.sh first", devenv.display());
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
        let env: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("devenv {mode} did not start ({e}); see the errors above"));
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

    pub fn str(&self, key: &str) -> String {
        self.env[key].as_str().unwrap_or_else(|| panic!("devenv env has no {key}")).to_owned()
    }
}
