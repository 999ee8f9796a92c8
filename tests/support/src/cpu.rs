//! What the benchmarks read of processes from /proc: CPU seconds (of one
//! process, of a postmaster with its backends, of the parts a run spans)
//! and memory; and what pg_stat_statements says the statements cost.

/// User plus system CPU seconds of a process so far.
pub fn cpu_seconds(pid: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 =
        fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0) + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds of a process and of its reaped and live children: a
/// postmaster with its backends.
pub fn tree_cpu_seconds(pid: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<f64> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0.0)).collect()).unwrap_or_default();
    // utime, stime, cutime, cstime
    let own: f64 = fields.get(11..15).map(|f| f.iter().sum()).unwrap_or(0.0) / 100.0;
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    own + children.split_whitespace().filter_map(|c| c.parse().ok()).map(cpu_seconds).sum::<f64>()
}

/// CPU seconds so far of the parts the bulk attach runs on.
pub fn parts_cpu(operator: u64, postmaster: u64) -> [(&'static str, f64); 4] {
    let by_name = |name: &str| {
        let out = std::process::Command::new("pgrep").args(["-x", name]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        out.unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).map(cpu_seconds).sum::<f64>()
    };
    [
        ("kube-apiserver", by_name("kube-apiserver")),
        ("etcd", by_name("etcd")),
        ("postgres", tree_cpu_seconds(postmaster)),
        ("operator", cpu_seconds(operator)),
    ]
}

pub fn status_kib(pid: u64, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The postmaster's pid of a Postgres started by devenv.
pub fn postmaster(pg: &crate::Postgres) -> u64 {
    std::fs::read_to_string(pg.data_dir().join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        .expect("the postmaster's pid")
}

/// What pg_stat_statements holds, every database together, by statement
/// (numbers and names folded into one shape): milliseconds of planning and
/// execution, and calls, the largest first.
pub async fn statement_profile(admin: &tokio_postgres::Client) -> Vec<(String, f64, f64, i64)> {
    let rows = admin
        .query(
            "SELECT left(regexp_replace(regexp_replace(query, '\\s+', ' ', 'g'), '(\"?[a-z]+)[0-9]+', '\\1N', 'g'), 90) AS q,
                    sum(total_plan_time)::float8, sum(total_exec_time)::float8, sum(calls)::bigint
               FROM pg_stat_statements GROUP BY 1 ORDER BY sum(total_plan_time + total_exec_time) DESC",
            &[],
        )
        .await
        .unwrap_or_default();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect()
}
