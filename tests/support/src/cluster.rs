//! The test binary's control plane (etcd, kube-apiserver,
//! kube-controller-manager) with the CRDs and the admission policy
//! installed, a fresh namespace per test, and the waits every test uses.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::devenv::{Devenv, bin_dir, repo_root, unique};

/// The test binary's control plane, with the CRDs installed.
pub struct ControlPlane {
    pub devenv: Devenv,
    pub kubeconfig: PathBuf,
}

pub const CRD_NAMES: [&str; 3] = ["crd/workspaces.manifold.dev", "crd/connections.manifold.dev", "crd/workspaceconnections.manifold.dev"];

pub(crate) static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        let devenv = Devenv::start("controlplane", &[]);
        let kubeconfig = PathBuf::from(devenv.str("kubeconfig"));
        let cp = ControlPlane { devenv, kubeconfig };
        for dir in ["crds", "admission"] {
            let out = cp.kubectl(&["apply", "-f", &repo_root().join(dir).to_string_lossy()]);
            assert!(out.status.success(), "installing {dir}/ failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // A CRD created a moment ago may have no status yet, and `kubectl
        // wait` then fails at once ("accessor error: <nil>") instead of
        // waiting: ask again until the deadline.
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        args.extend(CRD_NAMES.iter().copied());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = cp.kubectl(&args);
            if out.status.success() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "CRDs not Established: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        cp
    })
}

impl ControlPlane {
    /// A kubeconfig that authenticates with a token of ServiceAccount
    /// `ns/name`, obtained through TokenRequest (`kubectl create token`).
    pub fn token_kubeconfig(&self, ns: &str, name: &str) -> PathBuf {
        let token = stdout_ok(&self.kubectl(&["create", "token", name, "-n", ns, "--duration", "2h"]));
        let view =
            |path: &str| stdout_ok(&self.kubectl(&["config", "view", "--raw", "-o", &format!("jsonpath={{.clusters[0].cluster.{path}}}")]));
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
    assert!(out.status.success(), "command failed: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
