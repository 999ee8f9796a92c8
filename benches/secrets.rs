//! What the operator caches of the cluster's Secrets: its resident memory
//! with 200 unrelated 512 KiB Secrets in the cluster, watching only the
//! Secrets opted in for Manifold (the default) against watching them all,
//! side by side in one run, against the project's real control plane.
//!
//!   cargo bench --bench secrets

use manifold_test_support as support;

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use support::{Operator, control_plane, namespace};

fn secrets() -> usize {
    if quick() { 10 } else { 200 }
}
const SIZE: usize = 512 * 1024;

fn rss_mib(op: &Operator) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", op.pid())).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Starts an operator, waits for its caches, lets it settle, and returns
/// its resident memory.
async fn measure(args: &[&str]) -> f64 {
    let op = Operator::start(&control_plane().kubeconfig, args);
    while op.try_admin_get("/readyz").map(|(code, _)| code) != Some(200) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    rss_mib(&op)
}

/// Run by `cargo test` rather than `cargo bench`.
fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn main() {
    // Under `cargo test` (no --bench): every step in a quick mode, so that
    // the suite fails when one breaks; the figures mean nothing there.
    if quick() {
        println!("secrets benchmark, quick mode (cargo bench --bench secrets for the figures)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let labelled = ["--resync", "5m"];
        let all = ["--resync", "5m", "--secret-selector", ""];
        let before = measure(&labelled).await;

        let t = namespace("rss-noise").await;
        let api: Api<Secret> = Api::namespaced(t.client.clone(), &t.ns);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..secrets() {
            // Incompressible bytes, as a certificate bundle or a Helm
            // release would be.
            let data: Vec<u8> = (0..SIZE)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let secret: Secret = serde_json::from_value(serde_json::json!({ "metadata": { "name": format!("noise-{i}") } })).unwrap();
            let secret = Secret { data: Some([("blob".to_owned(), ByteString(data))].into()), ..secret };
            api.create(&PostParams::default(), &secret).await.unwrap();
        }

        let with_label = measure(&labelled).await;
        let watching_all = measure(&all).await;
        println!("operator RSS with {} unrelated Secrets of {} KiB in the cluster:", secrets(), SIZE / 1024);
        println!("  before they exist, opted-in Secrets only:  {before:6.1} MiB");
        println!("  opted-in Secrets only (the default):       {with_label:6.1} MiB");
        println!("  every Secret (--secret-selector \"\"):        {watching_all:6.1} MiB");
        println!("  ratio, default / every Secret:             {:6.2}", with_label / watching_all);
    });
}
