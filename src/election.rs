//! Leader election over kube-lease-manager, with one thing added: a replica
//! that is not leading takes a Lease its holder released at once, instead of
//! at the expiry it last saw.
//!
//! kube-lease-manager's watcher, when another identity holds the Lease,
//! sleeps until that holder's expiry; it does not watch the Lease. So on a
//! rolling update or a deleted leader pod, the leader releases the Lease on
//! SIGTERM, and yet a standby (or a replacement pod that started a moment
//! before) took it only when the released holder's term ran out: up to 15 s
//! (measured on a real node: 13 s in one round of three, BENCHMARKS.md). Here
//! a replica that is not leading also reads the Lease every second, and when
//! it has no holder, starts a new manager, which tries to take it at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a replica that is not leading reads the Lease.
const POLL: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Params {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: u64,
    pub grace: u64,
}

async fn manager(client: &Client, p: &Params) -> kube_lease_manager::Result<kube_lease_manager::LeaseManager> {
    kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &p.name)
        .with_namespace(&p.namespace)
        .with_identity(&p.identity)
        .with_duration(p.duration)
        .with_grace(p.grace)
        .build()
        .await
}

/// Resolves when the Lease exists and has no holder.
async fn released(api: &Api<Lease>, name: &str) {
    loop {
        tokio::time::sleep(POLL).await;
        if let Ok(Some(lease)) = api.get_opt(name).await {
            let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
            if holder.is_empty() {
                return;
            }
        }
    }
}

/// How waiting to lead ended.
enum Waited {
    Leading,
    /// The manager ended, or the Lease was released: a new manager tries.
    Retry,
    /// Every receiver is gone.
    Closed,
}

/// A manager, rebuilt until that works (the first one is built by `watch`).
async fn next_manager(
    client: &Client,
    params: &Params,
    first: &mut Option<kube_lease_manager::LeaseManager>,
) -> kube_lease_manager::LeaseManager {
    if let Some(m) = first.take() {
        return m;
    }
    loop {
        match manager(client, params).await {
            Ok(m) => return m,
            Err(e) => {
                tracing::warn!(error = %e, "leader election: rebuilding the Lease manager failed; retrying");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Not leading: until we lead, the Lease is released by its holder, or our
/// receivers are gone.
async fn until_leading(tx: &watch::Sender<bool>, inner: &mut watch::Receiver<bool>, api: &Api<Lease>, name: &str) -> Waited {
    let released = released(api, name);
    tokio::pin!(released);
    loop {
        tokio::select! {
            _ = tx.closed() => return Waited::Closed,
            changed = inner.changed() => {
                if changed.is_err() {
                    return Waited::Retry;
                }
                if *inner.borrow_and_update() {
                    return Waited::Leading;
                }
            }
            _ = &mut released => {
                tracing::info!(lease = %name, "the Lease was released; trying it now");
                return Waited::Retry;
            }
        }
    }
}

/// Leading: pass on every change until our receivers are gone (the manager
/// then releases the Lease), or the manager ends.
async fn lead<T>(tx: &watch::Sender<bool>, mut inner: watch::Receiver<bool>, inner_task: JoinHandle<T>) {
    loop {
        tokio::select! {
            _ = tx.closed() => {
                drop(inner);
                let _ = inner_task.await;
                return;
            }
            changed = inner.changed() => {
                if changed.is_err() {
                    let _ = tx.send(false);
                    // The manager ended: wait for our receivers to go.
                    tx.closed().await;
                    return;
                }
                let _ = tx.send(*inner.borrow_and_update());
            }
        }
    }
}

/// Like `LeaseManager::watch`: the receiver says whether this replica leads;
/// when every receiver is gone, the task releases the Lease (if held) and
/// ends.
pub async fn watch(client: Client, params: Params) -> kube_lease_manager::Result<(watch::Receiver<bool>, JoinHandle<()>)> {
    // The first manager is built here, so that a bad Lease name or missing
    // permission fails at start, as before.
    let mut first = Some(manager(&client, &params).await?);
    let (tx, rx) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client.clone(), &params.namespace);
    let task = tokio::spawn(async move {
        loop {
            let m = next_manager(&client, &params, &mut first).await;
            let (mut inner, inner_task) = m.watch().await;
            match until_leading(&tx, &mut inner, &api, &params.name).await {
                Waited::Leading => {}
                // A manager whose receivers are gone releases the Lease if
                // it holds it (it may have just taken it) and ends; after a
                // release, the next one tries at once.
                Waited::Retry => {
                    drop(inner);
                    let _ = inner_task.await;
                    continue;
                }
                Waited::Closed => {
                    drop(inner);
                    let _ = inner_task.await;
                    return;
                }
            }
            let _ = tx.send(true);
            lead(&tx, inner, inner_task).await;
            return;
        }
    });
    Ok((rx, task))
}
