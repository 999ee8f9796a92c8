//! The operator's pin key: one Secret in the operator's own namespace,
//! made by the first replica that starts and read by every later one. It
//! derives every Workspace's pin (see `postgres::pin`), so it never leaves
//! the operator: no tenant can read it, and a database cannot be made to
//! show a pin without it. It is not opted in for Connections (it carries
//! no `manifold.dev/credentials` label), and a Connection cannot name a
//! Secret of another namespace anyway.
//!
//! Deleting it makes every Workspace `DatabaseMoved`: the pins its
//! successor derives are new. A cluster admin then clears each
//! Workspace's `status.pinnedAt` to pin its database again.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::postgres::pin::PinKey;

/// The Secret's key that holds the 32 bytes.
const KEY: &str = "key";

/// Reads the pin key from Secret `name` of namespace `ns`, or makes it.
pub async fn load_or_create(client: &kube::Client, ns: &str, name: &str) -> Result<PinKey, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let read = |secret: Secret| -> Result<PinKey, String> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(KEY))
            .and_then(|v| PinKey::from_bytes(&v.0))
            .ok_or_else(|| format!("Secret {ns}/{name} has no 32-byte key {KEY:?}: delete it to have a new one made"))
    };
    let reading = |e: kube::Error| format!("reading the pin key Secret {ns}/{name}: {e}");
    if let Some(secret) = api.get_opt(name).await.map_err(reading)? {
        return read(secret);
    }
    let key = PinKey::random();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), "manifold".to_owned())].into()),
            annotations: Some(
                [(
                    "manifold.dev/purpose".to_owned(),
                    "the key of every Workspace's database pin; deleting it makes every Workspace DatabaseMoved".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        data: Some([(KEY.to_owned(), ByteString(key.bytes().to_vec()))].into()),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(key),
        // Another replica made it first: its key is the key.
        Err(kube::Error::Api(e)) if e.code == 409 => read(api.get(name).await.map_err(reading)?),
        Err(e) => Err(format!("creating the pin key Secret {ns}/{name}: {e}")),
    }
}
