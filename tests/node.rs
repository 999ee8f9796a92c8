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
//!    Lease rather than letting it expire. An attachment created just after
//!    the deletion becomes Ready, and Postgres's own record of DDL (an event
//!    trigger in each workspace database) shows one attach's statements, the
//!    same as one attach made while the leader stays, and nothing of the
//!    attachments already there; the deleted leader ran none of them after
//!    the new one held the Lease;
//! 3. `helm upgrade` to a second image tag (the same build, tagged and
//!    imported again) rolls the pods, keeps the Deployment available and
//!    every attachment Ready throughout, and runs no DDL;
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
    /// Once two pods are Ready and one of them holds the Lease: the leader
    /// and the standby.
    fn leader_and_standby(&self) -> (String, String) {
        let pods = wait("two Ready pods", Duration::from_secs(120), || {
            let p = self.ready_pods();
            if p.len() == 2 { Ok(p) } else { Err(format!("{p:?}")) }
        });
        let leader = wait("a leader among the two", Duration::from_secs(60), || {
            let holder = self.lease_holder();
            pods.iter().find(|p| holder.starts_with(p.as_str())).cloned().ok_or(holder)
        });
        let standby = pods.iter().find(|p| **p != leader).unwrap().clone();
        (leader, standby)
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
    /// As the cluster Postgres's superuser.
    fn superuser(&self, db: &str, sql: &str) -> String {
        let password = self.env()["postgres"]["password"].as_str().unwrap().to_string();
        self.psql("postgres", &password, db, sql).unwrap_or_else(|e| panic!("psql -d {db}: {e}"))
    }
    /// Starts the DDL log (`DDL_LOG`) in every workspace database.
    fn log_ddl(&self) {
        for db in WORKSPACE_DBS {
            self.superuser(db, DDL_LOG);
        }
    }
    /// Where each workspace database's DDL log ends now.
    fn ddl_mark(&self) -> Vec<i64> {
        WORKSPACE_DBS
            .iter()
            .map(|db| self.superuser(db, "SELECT coalesce(max(id), 0) FROM public.node_test_ddl").trim().parse().unwrap())
            .collect()
    }
    /// The DDL statements run in the workspace databases since `mark`.
    fn ddl_since(&self, mark: &[i64]) -> Vec<Ddl> {
        let mut all = Vec::new();
        for (db, from) in WORKSPACE_DBS.iter().zip(mark) {
            let rows = self.superuser(
                db,
                &format!(
                    "SELECT tag || '|' || coalesce(host(client), 'local') || '|' || extract(epoch FROM at) \
                     FROM public.node_test_ddl WHERE id > {from} ORDER BY id"
                ),
            );
            for row in rows.lines() {
                let mut fields = row.split('|');
                let (tag, client, at) = (fields.next().unwrap(), fields.next().unwrap(), fields.next().unwrap());
                all.push(Ddl { db: db.to_string(), tag: tag.to_string(), client: client.to_string(), at: at.parse().unwrap() });
            }
        }
        all
    }
    fn pod_ip(&self, pod: &str) -> String {
        self.k(&["-n", NS, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
    }
    /// A counter from a pod's /metrics, read through the apiserver's pod proxy.
    fn pod_metric(&self, pod: &str, sample: &str) -> f64 {
        let path = format!("/api/v1/namespaces/{NS}/pods/{pod}:8080/proxy/metrics");
        let text = self.kubectl(&["get", "--raw", &path]).unwrap_or_default();
        // Summed over the labels when `sample` names none.
        text.lines()
            .filter(|l| {
                l.strip_prefix(sample).is_some_and(|rest| rest.starts_with(' ') || (!sample.contains('{') && rest.starts_with('{')))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
    /// Creates the attachment that the failover makes: sales-eu in
    /// reporting, a workspace without a search path or an aggregator, so that
    /// the DDL it causes is its attach's alone.
    fn create_failover_attachment(&self) {
        let file = self.dir.join("failover-attachment.yaml");
        let yaml = format!(
            "apiVersion: manifold.dev/v1alpha1\nkind: WorkspaceConnection\nmetadata: {{ name: {FAILOVER_ATTACHMENT} }}\n\
             spec: {{ workspace: reporting, connection: sales-eu }}\n"
        );
        std::fs::write(&file, yaml).unwrap();
        self.k(&["create", "-f", file.to_str().unwrap()]);
    }
    /// Deletes it, and waits until the operator has detached it.
    fn delete_failover_attachment(&self) {
        self.k(&["delete", "wsconn", FAILOVER_ATTACHMENT, "--timeout=120s"]);
    }
    /// Every change of the failover attachment's Ready condition, from before
    /// it exists.
    fn watch_failover_attachment(&self) -> Watch {
        let selector = format!("metadata.name={FAILOVER_ATTACHMENT}");
        Watch::start(
            self,
            &[
                "get",
                "wsconn",
                "--field-selector",
                &selector,
                "--watch",
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}{"\n"}"#,
            ],
        )
    }
}

/// One DDL statement, as the workspace database's event trigger saw it.
#[derive(Debug, Clone, PartialEq)]
struct Ddl {
    db: String,
    tag: String,
    /// The client's address: the pod that ran it.
    client: String,
    /// When, in seconds since the epoch (Postgres's clock: this machine's).
    at: f64,
}

/// The examples' workspace databases.
const WORKSPACE_DBS: [&str; 2] = ["analytics", "reporting"];

/// The attachment created while the leader changes.
const FAILOVER_ATTACHMENT: &str = "reporting-sales-eu";

/// Every DDL statement run in a workspace database, as Postgres saw it: an
/// event trigger on ddl_command_end (called once per statement) records the
/// command's tag and the client's address, whoever ran it, in the same
/// transaction. A deposed leader's statements would be counted as much as the
/// new leader's, and a rolled-back attempt not at all.
const DDL_LOG: &str = "
CREATE TABLE IF NOT EXISTS public.node_test_ddl (id bigserial PRIMARY KEY, tag text NOT NULL, client inet,
  at timestamptz NOT NULL DEFAULT clock_timestamp());
REVOKE ALL ON public.node_test_ddl FROM PUBLIC;
CREATE OR REPLACE FUNCTION public.node_test_ddl() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog AS
  $$ BEGIN INSERT INTO public.node_test_ddl (tag, client) VALUES (tg_tag, inet_client_addr()); END $$;
REVOKE ALL ON FUNCTION public.node_test_ddl() FROM PUBLIC;
DROP EVENT TRIGGER IF EXISTS node_test_ddl;
CREATE EVENT TRIGGER node_test_ddl ON ddl_command_end EXECUTE FUNCTION public.node_test_ddl();";

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
    eprintln!("node: pod {pod} (pid {pod_pid} on the node, uid 65532, root ro) holds the Lease as {leader}", pod_pid = pid);
    // From here on, Postgres records every DDL statement in the workspace
    // databases, and who sent it.
    cluster.log_ddl();

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
    let reference = reference_attach(&cluster);
    let mut handovers = Vec::new();
    let mut attached = Vec::new();
    for round in 1..=3 {
        let (leader_pod, standby) = cluster.leader_and_standby();
        let leader_ip = cluster.pod_ip(&leader_pod);
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
        let attachment = cluster.watch_failover_attachment();
        let mark = cluster.ddl_mark();
        std::thread::sleep(Duration::from_millis(500));
        let deleted = Instant::now();
        cluster.k(&["-n", NS, "delete", "pod", &leader_pod, "--wait=false"]);
        // While the leader changes, a user creates an attachment.
        cluster.create_failover_attachment();
        // All at once: another replica holding the Lease (the standby, or
        // the Deployment's replacement for the deleted pod, whichever tries
        // first), the deleted pod gone, and the new attachment Ready.
        // Times from the watches' events, not from polling.
        let taken = |l: &str| l.strip_prefix("holder=").is_some_and(|h| !h.is_empty() && h != leader_pod);
        let mut gone: Option<Duration> = None;
        wait("another replica holding the Lease, the deleted pod gone and the attachment Ready", Duration::from_secs(grace + 60), || {
            let handover = lease.first(taken);
            if gone.is_none() {
                match cluster.kubectl(&["-n", NS, "get", "pod", &leader_pod, "-o", "name"]) {
                    Err(e) if e.contains("NotFound") => gone = Some(deleted.elapsed()),
                    _ => {}
                }
            }
            let ready = attachment.first(|l| l == "True");
            if handover.is_some() && gone.is_some() && ready.is_some() {
                Ok(())
            } else {
                Err(format!("handover {handover:?}, gone {gone:?}, {FAILOVER_ATTACHMENT} Ready {ready:?}"))
            }
        });
        let (taken_at, holder) = lease.first(taken).unwrap();
        let holder = holder.trim_start_matches("holder=").to_string();
        let handover = taken_at - deleted;
        let gone = gone.unwrap();
        let ready = attachment.first(|l| l == "True").unwrap().0 - deleted;
        attachment.stop();
        attached.push(ready.as_secs_f64());
        // Seen through its event, not at the new leader's first requeue (the
        // resync, 30 s): a subscriber stalled by a gone object's buffered
        // reference (controller/subscriber.rs) made it 30.5 s once.
        assert!(ready < Duration::from_secs(10), "round {round}: {FAILOVER_ATTACHMENT} Ready only after {ready:?}");
        // The Lease's holder is the pod's name (POD_NAME).
        let leaders = Leaders { old: &leader_pod, old_ip: &leader_ip, new: &holder, new_from: epoch(taken_at) };
        nothing_ran_twice(&cluster, &reference, &mark, &leaders, round);
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
        println!(
            "node: round {round}: {FAILOVER_ATTACHMENT}, created just after the deletion, Ready {:.2} s after it (the new leader's first reconcile)",
            ready.as_secs_f64()
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
        cluster.delete_failover_attachment();
    }
    handovers.sort_by(f64::total_cmp);
    println!(
        "node: leader handover on deleting the leader pod, 3 rounds: {}",
        handovers.iter().map(|h| format!("{h:.2} s")).collect::<Vec<_>>().join(", ")
    );
    attached.sort_by(f64::total_cmp);
    println!(
        "node: an attachment created as the leader pod was deleted, Ready after (3 rounds): {}",
        attached.iter().map(|h| format!("{h:.2} s")).collect::<Vec<_>>().join(", ")
    );
    // The standby alone: with the node cordoned, the replacement pod cannot
    // start, so only the standby can take the released Lease. It reads the
    // Lease every second while it does not lead, and tries when it has no
    // holder (src/election.rs): about a second, where kube-lease-manager
    // alone slept until the expiry it last saw (2.7 to 9.8 s measured).
    let (leader_pod, standby) = cluster.leader_and_standby();
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
    cluster.leader_and_standby();

    step("3. helm upgrade to a second image tag: no Ready flap, no DDL");
    // The second tag: the same build under another tag, so another image
    // (its version label differs), imported as the first was.
    let tag = format!("{}-two", env!("CARGO_PKG_VERSION"));
    let archive = cluster.dir.join(format!("manifold-{tag}.oci.tar"));
    let out = Command::new(root.join("hack/image")).args(["--tag", &tag, "--out"]).arg(&archive).current_dir(&root).output().unwrap();
    assert!(out.status.success(), "hack/image --tag {tag} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    run(Command::new(cluster.bin("ctr"))
        .arg("--address")
        .arg(cluster.dir.join("containerd/containerd.sock"))
        .args(["-n", "k8s.io", "images", "import"])
        .arg(&archive))
    .unwrap();
    let image_of = |pod: &str| cluster.k(&["-n", NS, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].image}"]);
    let before: Vec<String> = cluster.ready_pods();
    let image_before = image_of(&before[0]);
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
    let mark = cluster.ddl_mark();
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
        &format!("image.tag={tag}"),
        "--wait",
        "--timeout",
        "3m",
    ]);
    let after = wait("the rolled pods", Duration::from_secs(120), || {
        let p = cluster.ready_pods();
        if p.len() == 2 && p.iter().all(|p| !before.contains(p)) { Ok(p) } else { Err(format!("{p:?}")) }
    });
    let rolled = upgrade_started.elapsed();
    for pod in &after {
        let image = image_of(pod);
        assert!(image.ends_with(&format!(":{tag}")) && image != image_before, "{pod} runs {image} (before: {image_before})");
    }
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
        "node: upgrade from {image_before} to the tag {tag} rolled {before:?} to {after:?} in {:.1} s; {} attachment events, all Ready; \
         availableReplicas stayed at least {min_available:?} over {} Deployment events",
        rolled.as_secs_f64(),
        attachments.len(),
        available.len()
    );
    let leader = wait("a leader after the upgrade", Duration::from_secs(60), || {
        let holder = cluster.lease_holder();
        if after.contains(&holder) { Ok(holder) } else { Err(holder) }
    });
    // The new leader has looked at every attachment (5), and changed
    // nothing in any database.
    wait("the new leader's reconciles of the attachments", Duration::from_secs(60), || {
        let n = cluster.pod_metric(&leader, "manifold_reconciles_total{kind=\"WorkspaceConnection\"}");
        if n >= 5.0 { Ok(()) } else { Err(format!("{n}")) }
    });
    std::thread::sleep(Duration::from_secs(2));
    let ddl = cluster.ddl_since(&mark);
    assert!(ddl.is_empty(), "DDL ran in the workspace databases during the upgrade: {ddl:?}");
    let metric = cluster.pod_metric(&leader, "manifold_sql_statements_total{kind=\"ddl\"}");
    let tests = cluster.pod_metric(&leader, "manifold_connection_tests_total") as u64;
    if tests == 0 {
        assert_eq!(metric, 0.0, "the upgrade's new leader counted DDL");
    }
    eprintln!(
        "node: the upgrade's new leader reconciled every attachment; no DDL ran in any workspace database \
         (its manifold_sql_statements_total{{kind=\"ddl\"}}: {metric}, after {tests} connection tests)"
    );

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

/// The failover attachment attached and detached once while the leader
/// stays: the DDL of one attach, as Postgres recorded it.
fn reference_attach(cluster: &Cluster) -> Vec<Ddl> {
    let leader = cluster.lease_holder();
    let attachment = cluster.watch_failover_attachment();
    let mark = cluster.ddl_mark();
    cluster.create_failover_attachment();
    wait("the reference attachment Ready", Duration::from_secs(120), || attachment.first(|l| l == "True").ok_or_else(String::new));
    std::thread::sleep(Duration::from_secs(2));
    attachment.stop();
    let ddl = cluster.ddl_since(&mark);
    let ip = cluster.pod_ip(&leader);
    assert!(!ddl.is_empty(), "the attach ran no DDL that Postgres saw");
    assert!(ddl.iter().all(|d| d.db == "reporting" && d.client == ip), "not all from the leader ({leader}, {ip}) in reporting: {ddl:?}");
    cluster.delete_failover_attachment();
    let tags: Vec<&str> = ddl.iter().map(|d| d.tag.as_str()).collect();
    eprintln!("node: one attach of {FAILOVER_ATTACHMENT}, the leader staying: {} DDL statements ({})", ddl.len(), tags.join(", "));
    ddl
}

/// The two leaders of a failover round.
struct Leaders<'a> {
    old: &'a str,
    old_ip: &'a str,
    new: &'a str,
    /// When the new one was seen holding the Lease (seconds since the epoch).
    new_from: f64,
}

/// This machine's clock at `at`, in seconds since the epoch.
fn epoch(at: Instant) -> f64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    now - at.elapsed().as_secs_f64()
}

/// The DDL since `mark` is the reference attach's, statement for
/// statement: nothing ran twice, and nothing of the attachments that were
/// already there ran again. The deleted leader may have run it, as a
/// reconcile that began before its SIGTERM, but only before the new leader
/// held the Lease: a leader keeps the Lease until its reconciles end
/// (`run_as_leader`), so two never run at once.
fn nothing_ran_twice(cluster: &Cluster, reference: &[Ddl], mark: &[i64], leaders: &Leaders, round: u32) {
    std::thread::sleep(Duration::from_secs(2));
    let ddl = cluster.ddl_since(mark);
    let (old, new) = (leaders.old, leaders.new);
    let new_ip = cluster.pod_ip(new);
    let strays: Vec<&Ddl> = ddl.iter().filter(|d| d.client != new_ip && d.client != leaders.old_ip).collect();
    assert!(strays.is_empty(), "round {round}: DDL from neither leader ({old} {}, {new} {new_ip}): {strays:?}", leaders.old_ip);
    let late: Vec<&Ddl> = ddl.iter().filter(|d| d.client == leaders.old_ip && d.at >= leaders.new_from).collect();
    assert!(late.is_empty(), "round {round}: the deleted leader {old} ran DDL after {new} held the Lease: {late:?}");
    let tags = |d: &[Ddl]| d.iter().map(|d| format!("{}:{}", d.db, d.tag)).collect::<Vec<_>>();
    assert_eq!(tags(&ddl), tags(reference), "round {round}: the failover's DDL is not one attach's");
    let by_new = ddl.iter().filter(|d| d.client == new_ip).count();
    // The new leader's own count agrees, unless it also tested a connection
    // (its tests' DDL is counted too).
    let metric = cluster.pod_metric(new, "manifold_sql_statements_total{kind=\"ddl\"}");
    let tests = cluster.pod_metric(new, "manifold_connection_tests_total") as u64;
    if tests == 0 {
        assert_eq!(metric, by_new as f64, "round {round}: the new leader's manifold_sql_statements_total{{kind=\"ddl\"}}");
    }
    println!(
        "node: round {round}: {} DDL statements in the workspace databases, one attach's, nothing twice: {} by the deleted leader \
         (before the new one held the Lease), {by_new} by the new leader (its manifold_sql_statements_total{{kind=\"ddl\"}}: {metric}, \
         after {tests} connection tests)",
        ddl.len(),
        ddl.len() - by_new
    );
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
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
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
                    sink.lock().unwrap().push((Instant::now(), line));
                }
            }
        });
        Watch { child, lines, reader }
    }
    /// The first line that `matches`, and when it came, if one has.
    fn first(&self, matches: impl Fn(&str) -> bool) -> Option<(Instant, String)> {
        self.lines.lock().unwrap().iter().find(|(_, l)| matches(l)).cloned()
    }
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.reader.join();
        std::mem::take(&mut *self.lines.lock().unwrap()).into_iter().map(|(_, l)| l).collect()
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
