//! The end-to-end binaries' own harness: it runs every test (each on a
//! runtime of its own, in parallel like libtest), then checks the whole run
//! for leaked secrets. Every credential the tests create carries one marker;
//! after the suite, no operator log, Event or status may contain it.

use std::future::Future;
use std::pin::Pin;

use libtest_mimic::{Arguments, Trial};

pub type TestFn = fn() -> Pin<Box<dyn Future<Output = ()>>>;

/// Registers tests by path: `tests![attach::detach_drops, crds::explain]`.
#[macro_export]
macro_rules! tests {
    ($($module:ident :: $name:ident),* $(,)?) => {
        vec![$((concat!(stringify!($module), "::", stringify!($name)), (|| Box::pin($module::$name())) as $crate::harness::TestFn)),*]
    };
}

pub fn run(tests: Vec<(&'static str, TestFn)>) -> ! {
    let args = Arguments::from_args();
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            Trial::test(name, move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(test());
                Ok(())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if !args.list && crate::cluster::CONTROL_PLANE.get().is_some() {
        match secret_scan() {
            Ok(summary) => println!("secret scan: ok ({summary})"),
            Err(leak) => {
                println!("secret scan: FAILED: {leak}");
                std::process::exit(101);
            }
        }
    }
    conclusion.exit()
}

/// Looks for the run's secret marker in every operator log, every Event and
/// every Manifold object (spec and status) of the control plane.
fn secret_scan() -> Result<String, String> {
    let marker = crate::secret_marker();
    let cp = crate::control_plane();
    let mut leaks = Vec::new();
    let logs = crate::operator_logs();
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(marker) {
            leaks.push(format!("operator log {}", log.display()));
        }
    }
    let events = crate::stdout_ok(&cp.kubectl(&["get", "events", "-A", "-o", "json"]));
    if events.contains(marker) {
        leaks.push("an Event".to_owned());
    }
    let objects = crate::stdout_ok(&cp.kubectl(&["get", "conn,mws,wsconn", "-A", "-o", "json"]));
    if objects.contains(marker) {
        leaks.push("a Manifold object's spec or status".to_owned());
    }
    // The marker is really in use: the scan would see a leak.
    let secrets = crate::stdout_ok(&cp.kubectl(&["get", "secrets", "-A", "-o", "json"]));
    let used = secrets.contains(&base64_of(marker)) || secrets.contains(marker);
    if leaks.is_empty() {
        Ok(format!(
            "marker {}in the credentials; {} operator logs, {} bytes of Events, {} bytes of objects",
            if used { "" } else { "not " },
            logs.len(),
            events.len(),
            objects.len()
        ))
    } else {
        Err(format!("the secret marker appears in: {}", leaks.join(", ")))
    }
}

/// The base64 of `s` as it appears inside a longer base64 value: the marker
/// sits at an arbitrary offset, so check the three alignments' cores.
fn base64_of(s: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
