//! Manifold as a pod, on a real node: `hack/cluster up` (control plane,
//! containerd, kubelet and kube-proxy in a network namespace of their own),
//! then `hack/cluster deploy` (the image from hack/image imported into the
//! node, never pulled; the chart installed with Helm; the examples applied
//! and read through with psql). Then, in order, on the same cluster:
//!
//! 1. the pod is Ready through its probes, runs as 65532 on a read-only root
//!    filesystem (read off the running process, not the spec);
//! 2. two replicas: deleting the leader pod hands the Lease to the other,
//!    and the time it takes is printed (BENCHMARKS.md); the deleted pod's
//!    SIGTERM ends it well within its grace period, and it releases the
//!    Lease rather than letting it expire;
//! 3. `helm upgrade` that rolls the pods keeps the Deployment available and
//!    every attachment Ready throughout;
//! 4. `helm uninstall` leaves the CRDs, the objects and the schemas.
//!
//! One scenario, because the cluster costs a minute to start: a test binary
//! of its own, so that nothing else runs beside it. Needs root (network
//! namespace, cgroups, containerd), as CI and hack/test run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};

fn main() {
    let args = Arguments::from_args();
    let trials = vec![Trial::test("node::manifold_runs_as_a_pod_on_a_real_node", || {
        scenario();
        Ok(())
    })];
    libtest_mimic::run(&args, trials).exit()
}

const NS: &str = "manifold-system";
const LEASE: &str = "manifold";

struct Cluster {
    root: PathBuf,
    dir: PathBuf,
    netns: String,
}

impl Cluster {
    fn hack(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.root.join("hack/cluster"));
        cmd.args(args).env("CLUSTER_DIR", &self.dir).env("CLUSTER_NETNS", &self.netns).current_dir(&self.root);
        cmd
    }
    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    fn bin(&self, name: &str) -> PathBuf {
        self.root.join("tests/controlplane/bin").join(name)
    }
    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(self.bin("kubectl")).args(args).env("KUBECONFIG", self.kubeconfig()))
    }
    fn k(&self, args: &[&str]) -> String {
        self.kubectl(args).unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
    }
    fn helm(&self, args: &[&str]) -> String {
        run(Command::new(self.bin("helm")).args(args).env("KUBECONFIG", self.kubeconfig()))
            .unwrap_or_else(|e| panic!("helm {}: {e}", args.join(" ")))
    }
    fn env(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("env.json")).unwrap()).unwrap()
    }
    fn psql(&self, user: &str, password: &str, db: &str, sql: &str) -> Result<String, String> {
        let port = self.env()["postgres"]["hostPort"].as_u64().unwrap().to_string();
        run(Command::new("psql")
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &port, "-U", user, "-d", db, "-c", sql])
            .env("PGPASSWORD", password))
    }
    fn lease_holder(&self) -> String {
        self.kubectl(&["-n", NS, "get", "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}"]).unwrap_or_default()
    }
    fn ready_pods(&self) -> Vec<String> {
        let out = self.k(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=manifold",
            "-o",
            r#"jsonpath={range .items[?(@.metadata.deletionTimestamp)]}{"-"}{.metadata.name}{"\n"}{end}"#,
        ]);
        let deleting: Vec<String> = out.lines().map(|l| l.trim_start_matches('-').to_string()).collect();
        let out = self.k(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=manifold",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ]);
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(name, ready)| *ready == "True" && !deleting.iter().any(|d| d == name))
            .map(|(name, _)| name.to_string())
            .collect()
    }
    /// The attachments that are not Ready, as "name=status".
    fn unready_attachments(&self) -> Vec<String> {
        let out = self.k(&[
            "get",
            "wsconn",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name}{"="}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        ]);
        out.lines().filter(|l| !l.ends_with("=True")).map(str::to_string).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("MANIFOLD_KEEP_CLUSTER").is_some() {
            eprintln!("node: keeping the cluster (CLUSTER_DIR={})", self.dir.display());
            return;
        }
        let out = self.hack(&["down"]).output();
        if let Ok(out) = out {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{}: {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

fn wait<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => panic!("timed out after {timeout:?} waiting for {what}; last: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn step(name: &str) {
    eprintln!("node: {name}");
}

fn scenario() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target = if target.is_absolute() { target } else { root.join(target) };
    let cluster = Cluster { root: root.clone(), dir: target.join("node-cluster"), netns: "manifold-node-test".into() };
    // A cluster left by a killed run: remove it first.
    let _ = cluster.hack(&["down"]).output();

    let host_links_before = host_links();
    let sysctls_before = sysctls();

    step("hack/cluster up");
    let started = Instant::now();
    let out = cluster.hack(&["up"]).output().unwrap();
    assert!(out.status.success(), "hack/cluster up failed:\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("node: cluster up in {:.1} s", started.elapsed().as_secs_f64());

    step("hack/cluster deploy (image, chart, examples, psql through them)");
    let started = Instant::now();
    // The Lease's every step in the operators' logs (printed when a leader
    // is slow to go).
    let out = cluster.hack(&["deploy", "--set", r"operator.logLevel=info\,kube=warn\,kube_lease_manager=debug"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hack/cluster deploy failed:\n{stderr}");
    eprintln!("node: deployed in {:.1} s", started.elapsed().as_secs_f64());
    for line in stderr.lines().filter(|l| l.starts_with("image: ") || l.starts_with("cluster: ")) {
        eprintln!("node:   {line}");
    }
    // The analyst read the aggregator's rows through the attachments.
    assert!(stderr.contains("sales"), "no rows through the attachments:\n{stderr}");

    step("0. the cluster stays in its namespace, and leaves the machine's settings alone");
    assert_eq!(host_links(), host_links_before, "the host's network interfaces changed");
    assert_eq!(sysctls(), sysctls_before, "the machine's kernel settings changed");
    let links = run(Command::new("ip").args(["-n", &cluster.netns, "-o", "link", "show"])).unwrap();
    for link in links.lines() {
        let name = link.split(':').nth(1).unwrap().trim().split('@').next().unwrap();
        assert!(
            ["lo", "node0", "node0-end", "cni0"].contains(&name) || name.starts_with("veth"),
            "an unexpected interface in the namespace: {link}"
        );
    }
    let routes = run(Command::new("ip").args(["-n", &cluster.netns, "route", "show"])).unwrap();
    assert!(routes.lines().all(|r| r.contains("dev node0") || r.contains("dev cni0")), "{routes}");

    step("1. Ready through the probes; non-root; read-only root filesystem");
    let pods = cluster.ready_pods();
    assert_eq!(pods.len(), 1, "one Ready pod: {pods:?}");
    let pod = &pods[0];
    let restarts = cluster.k(&["-n", NS, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"]);
    assert_eq!(restarts, "0", "the pod restarted");
    let container_id = cluster.k(&["-n", NS, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].containerID}"]);
    let container_id = container_id.trim_start_matches("containerd://");
    let pid = container_pid(&cluster, container_id);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == "65532"), "not 65532: {uid_line}");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root_mount = mountinfo.lines().find(|l| l.split(' ').nth(4) == Some("/")).unwrap();
    let options = root_mount.split(' ').nth(5).unwrap();
    assert!(options.split(',').any(|o| o == "ro"), "root filesystem not read-only: {root_mount}");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, Path::new("/manifold"));
    // Writing to the root filesystem fails inside the container.
    assert!(std::fs::write(format!("/proc/{pid}/root/probe"), b"x").is_err(), "the root filesystem took a write");
    assert!(cluster.unready_attachments().is_empty(), "{:?}", cluster.unready_attachments());
    let leader = wait("the Lease held by the pod", Duration::from_secs(60), || {
        let holder = cluster.lease_holder();
        if holder.starts_with(pod.as_str()) { Ok(holder) } else { Err(holder) }
    });
    eprintln!("node: pod {pod} (pid {pid} on the node, uid 65532, root ro) holds the Lease as {leader}");

    step("2. two replicas; delete the leader; another takes the Lease (three rounds)");
    cluster.helm(&[
        "upgrade",
        "manifold",
        "charts/manifold",
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "replicaCount=2",
        "--wait",
        "--timeout",
        "3m",
    ]);
    let mut handovers = Vec::new();
    for round in 1..=3 {
        let pods = wait("two Ready pods", Duration::from_secs(120), || {
            let p = cluster.ready_pods();
            if p.len() == 2 { Ok(p) } else { Err(format!("{p:?}")) }
        });
        let leader_pod = wait("a leader among the two", Duration::from_secs(60), || {
            let holder = cluster.lease_holder();
            pods.iter().find(|p| holder.starts_with(p.as_str())).cloned().ok_or(holder)
        });
        let standby = pods.iter().find(|p| **p != leader_pod).unwrap().clone();
        let grace: u64 =
            cluster.k(&["-n", NS, "get", "pod", &leader_pod, "-o", "jsonpath={.spec.terminationGracePeriodSeconds}"]).parse().unwrap();
        // The kubelet reports the container's end before the pod goes.
        let exits = Watch::start(
            &cluster,
            &[
                "-n",
                NS,
                "get",
                "pod",
                &leader_pod,
                "--watch",
                "-o",
                r#"jsonpath={.status.containerStatuses[0].state.terminated.reason}/{.status.containerStatuses[0].state.terminated.exitCode}{"\n"}"#,
            ],
        );
        let leader_log = Watch::start(&cluster, &["-n", NS, "logs", "-f", &leader_pod]);
        let lease =
            Watch::start(&cluster, &["-n", NS, "get", "lease", LEASE, "--watch", "-o", r#"jsonpath=holder={.spec.holderIdentity}{"\n"}"#]);
        std::thread::sleep(Duration::from_millis(500));
        let deleted = Instant::now();
        cluster.k(&["-n", NS, "delete", "pod", &leader_pod, "--wait=false"]);
        // Both at once: another replica holding the Lease (the standby, or
        // the Deployment's replacement for the deleted pod, whichever tries
        // first), and the deleted pod gone.
        let mut handover: Option<(String, Duration)> = None;
        let mut gone: Option<Duration> = None;
        wait("another replica holding the Lease and the deleted pod gone", Duration::from_secs(grace + 30), || {
            if handover.is_none() {
                let holder = cluster.lease_holder();
                if !holder.is_empty() && !holder.starts_with(leader_pod.as_str()) {
                    handover = Some((holder, deleted.elapsed()));
                }
            }
            if gone.is_none() {
                match cluster.kubectl(&["-n", NS, "get", "pod", &leader_pod, "-o", "name"]) {
                    Err(e) if e.contains("NotFound") => gone = Some(deleted.elapsed()),
                    _ => {}
                }
            }
            if handover.is_some() && gone.is_some() { Ok(()) } else { Err(format!("{handover:?} {gone:?}")) }
        });
        let (holder, handover) = handover.unwrap();
        let gone = gone.unwrap();
        let exits = exits.stop();
        let lease = lease.stop();
        let leader_log = leader_log.stop();
        // The deleted leader released the Lease: it went to no holder before
        // the next one.
        let released = lease.iter().skip_while(|l| **l != format!("holder={leader_pod}")).any(|l| l == "holder=");
        let who = if holder.starts_with(standby.as_str()) { "the standby" } else { "the replacement pod" };
        println!(
            "node: round {round}: leader handover on deleting the leader pod: {:.2} s (delete to {holder} holding the Lease; {who}); \
             the deleted pod released the Lease: {released}, exited {} and was gone after {:.2} s (grace period {grace} s)",
            handover.as_secs_f64(),
            exits.last().map(String::as_str).unwrap_or("?"),
            gone.as_secs_f64()
        );
        if gone > Duration::from_secs(5) || !released {
            eprintln!("node: the deleted leader's log:\n{}\nthe Lease's holders: {lease:?}", leader_log.join("\n"));
        }
        // SIGTERM: a clean exit, well within the grace period, and the Lease
        // released on the way out.
        assert!(exits.iter().any(|e| e == "Completed/0"), "the leader did not exit cleanly on SIGTERM: {exits:?}");
        assert!(gone < Duration::from_secs(10), "the pod took {gone:?} to go (grace period {grace} s)");
        assert!(released, "the deleted leader did not release the Lease: {lease:?}");
        // Released on SIGTERM, the Lease goes to whichever replica looks
        // first: the replacement pod, or the standby, which reads the Lease
        // every second while it does not lead (src/election.rs). Without
        // that, a replica that last saw it held slept until the old expiry,
        // up to 15 s (kube-lease-manager does not watch the Lease).
        assert!(handover < Duration::from_secs(6), "handover took {handover:?}");
        handovers.push(handover.as_secs_f64());
        // The apiserver reaches the kubelet (logs): the standby's.
        let logs = cluster.k(&["-n", NS, "logs", &standby]);
        assert!(!logs.is_empty(), "no logs from the standby");
    }
    handovers.sort_by(f64::total_cmp);
    println!(
        "node: leader handover on deleting the leader pod, 3 rounds: {}",
        handovers.iter().map(|h| format!("{h:.2} s")).collect::<Vec<_>>().join(", ")
    );
    // The standby alone: with the node cordoned, the replacement pod cannot
    // start, so only the standby can take the released Lease. It reads the
    // Lease every second while it does not lead, and tries when it has no
    // holder (src/election.rs): about a second, where kube-lease-manager
    // alone slept until the expiry it last saw (2.7 to 9.8 s measured).
    let pods = wait("two Ready pods again", Duration::from_secs(120), || {
        let p = cluster.ready_pods();
        if p.len() == 2 { Ok(p) } else { Err(format!("{p:?}")) }
    });
    let leader_pod = wait("a leader among the two", Duration::from_secs(60), || {
        let holder = cluster.lease_holder();
        pods.iter().find(|p| holder.starts_with(p.as_str())).cloned().ok_or(holder)
    });
    let standby = pods.iter().find(|p| **p != leader_pod).unwrap().clone();
    cluster.k(&["cordon", "manifold-node"]);
    let deleted = Instant::now();
    cluster.k(&["-n", NS, "delete", "pod", &leader_pod, "--wait=false"]);
    let standby_handover = wait("the standby to take the Lease", Duration::from_secs(30), || {
        let holder = cluster.lease_holder();
        if holder.starts_with(standby.as_str()) { Ok(deleted.elapsed()) } else { Err(holder) }
    });
    cluster.k(&["uncordon", "manifold-node"]);
    println!("node: leader handover to the standby alone (node cordoned, no replacement pod): {:.2} s", standby_handover.as_secs_f64());
    assert!(standby_handover < Duration::from_secs(6), "the standby took {standby_handover:?}");
    wait("two Ready pods again", Duration::from_secs(120), || {
        let p = cluster.ready_pods();
        if p.len() == 2 { Ok(()) } else { Err(format!("{p:?}")) }
    });

    step("3. helm upgrade that rolls the pods: no Ready flap");
    let before: Vec<String> = cluster.ready_pods();
    // Every change, not samples: watches on the attachments and on the
    // Deployment, for the whole upgrade.
    let attachments = Watch::start(
        &cluster,
        &["get", "wsconn", "--watch", "-o", r#"jsonpath={.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}"#],
    );
    let available = Watch::start(
        &cluster,
        &["-n", NS, "get", "deployment", "manifold", "--watch", "-o", r#"jsonpath={.status.availableReplicas}{"\n"}"#],
    );
    std::thread::sleep(Duration::from_millis(500));
    let upgrade_started = Instant::now();
    cluster.helm(&[
        "upgrade",
        "manifold",
        "charts/manifold",
        "-n",
        NS,
        "--reuse-values",
        "--set",
        "podAnnotations.rollout=two",
        "--wait",
        "--timeout",
        "3m",
    ]);
    let after = wait("the rolled pods", Duration::from_secs(120), || {
        let p = cluster.ready_pods();
        if p.len() == 2 && p.iter().all(|p| !before.contains(p)) { Ok(p) } else { Err(format!("{p:?}")) }
    });
    let rolled = upgrade_started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let attachments = attachments.stop();
    let available = available.stop();
    let flaps: Vec<&String> = attachments.iter().filter(|l| !l.ends_with("=True")).collect();
    assert!(flaps.is_empty(), "an attachment left Ready during the upgrade: {flaps:?}");
    let min_available = available.iter().filter_map(|l| l.parse::<u32>().ok()).min();
    assert!(
        available.iter().all(|l| l.parse::<u32>().is_ok_and(|n| n >= 2)),
        "the Deployment had fewer than 2 available replicas during the upgrade: {available:?}"
    );
    eprintln!(
        "node: upgrade rolled {before:?} to {after:?} in {:.1} s; {} attachment events, all Ready; \
         availableReplicas stayed at least {min_available:?} over {} Deployment events",
        rolled.as_secs_f64(),
        attachments.len(),
        available.len()
    );
    wait("a leader after the upgrade", Duration::from_secs(60), || {
        let holder = cluster.lease_holder();
        if after.iter().any(|p| holder.starts_with(p.as_str())) { Ok(()) } else { Err(holder) }
    });

    step("4. helm uninstall leaves the CRDs, the objects and the schemas");
    cluster.helm(&["uninstall", "manifold", "-n", NS, "--wait", "--timeout", "2m"]);
    for crd in ["workspaces.manifold.dev", "connections.manifold.dev", "workspaceconnections.manifold.dev"] {
        cluster.k(&["get", "crd", crd, "-o", "name"]);
    }
    let wsconns = cluster.k(&["get", "wsconn", "-o", "name"]);
    assert_eq!(wsconns.lines().count(), 5, "{wsconns}");
    let schemas = cluster
        .psql(
            "analyst",
            "analyst",
            "analytics",
            "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace WHERE nspname IN ('sales','stock','sales_eu','all_sales')",
        )
        .unwrap();
    assert_eq!(schemas.trim(), "all_sales,sales,sales_eu,stock");
    let rows = cluster.psql("analyst", "analyst", "analytics", "SELECT count(*) FROM sales.orders").unwrap();
    assert!(rows.trim().parse::<u64>().unwrap() > 0, "no rows through sales after uninstall");
}

/// The host's network interfaces (of its own network namespace).
fn host_links() -> Vec<String> {
    let out = run(Command::new("ip").args(["-o", "link", "show"])).unwrap();
    let mut names: Vec<String> = out.lines().filter_map(|l| l.split(':').nth(1)).map(|n| n.trim().to_string()).collect();
    names.sort();
    names
}

/// The kernel settings a kubelet would change if let.
fn sysctls() -> Vec<String> {
    ["vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "vm/panic_on_oom"]
        .iter()
        .map(|k| format!("{k}={}", std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap().trim()))
        .collect()
}

/// `kubectl ... --watch`, its lines collected until `stop`.
struct Watch {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Watch {
    fn start(cluster: &Cluster, args: &[&str]) -> Watch {
        let mut child = Command::new(cluster.bin("kubectl"))
            .args(args)
            .env("KUBECONFIG", cluster.kubeconfig())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if !line.is_empty() {
                    sink.lock().unwrap().push(line);
                }
            }
        });
        Watch { child, lines, reader }
    }
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.reader.join();
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

/// The pid on the node of a container's first process, from containerd.
fn container_pid(cluster: &Cluster, id: &str) -> u32 {
    let out = run(Command::new(cluster.bin("ctr"))
        .args(["--address"])
        .arg(cluster.dir.join("containerd/containerd.sock"))
        .args(["-n", "k8s.io", "tasks", "ls"]))
    .unwrap();
    out.lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no task {id} in:\n{out}"))
}
