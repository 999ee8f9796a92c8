//! The pin of a workspace database, as every new session checks it.
//!
//! A Workspace is the database its attachments' credentials were first
//! sent to, and its Secret's URI only says how to reach it: `hostaddr=`,
//! a host list, a re-pointed DNS name or Service all lead elsewhere while
//! the URI's host and dbname stay. So the database proves who it is. On
//! first contact Manifold writes a token into `manifold.workspace_pin`, a
//! table only the workspace role can read (see `sql::PIN_CREATE`); every
//! new session of the Workspace's pools reads it back and compares it, in
//! constant time, before the pool hands the session out, so before any
//! statement that carries a secret. A server that is not that database
//! cannot show the token: it never travels to a server that has to prove
//! it holds it, and it is derived from the Workspace's uid with the
//! operator's own key (`PinKey`, from a Secret in the operator's
//! namespace), so nothing a tenant can read or edit names it.
//!
//! "First contact" is what the Workspace's status says: until it records
//! `pinnedAt`, a session writes the token (a Workspace made before pins
//! existed is pinned this way on its first session after the upgrade);
//! afterwards a session only reads it. Only the operator writes status.
//!
//! The same check records which server sessions are Manifold's own (pid
//! and start time), so that a workspace observation can name the others
//! that use its login (`others`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use deadpool_postgres::{ClientWrapper, HookError};
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

use super::sql;
use crate::api::{Failure, Reason};

/// The operator's key for Workspace tokens. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct PinKey(Arc<[u8; 32]>);

impl std::fmt::Debug for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinKey(<redacted>)")
    }
}

impl PinKey {
    /// The key stored in the operator's Secret.
    pub fn from_bytes(bytes: &[u8]) -> Option<PinKey> {
        let key: [u8; 32] = bytes.try_into().ok()?;
        Some(PinKey(Arc::new(key)))
    }

    /// A new random key, from the kernel.
    pub fn random() -> PinKey {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the kernel's random numbers");
        PinKey(Arc::new(key))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The pin of the Workspace with this uid: HMAC-SHA256 of the uid
    /// under the key. `establish`: its status records no pin yet, so a
    /// session may write it.
    pub fn pin(&self, workspace_uid: &str, establish: bool) -> Pin {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.0.as_slice()).expect("HMAC takes any key length");
        mac.update(b"manifold.dev/workspace-pin\0");
        mac.update(workspace_uid.as_bytes());
        let token: [u8; 32] = mac.finalize().into_bytes().into();
        Pin { workspace: workspace_uid.to_owned(), token, establish }
    }
}

/// What a Workspace's sessions must find in its database. Two pins are the
/// same pin whatever `establish` says (it changes once, when status
/// records the pin, and the pools need not be rebuilt for it). Its `Debug`
/// shows no token.
#[derive(Clone)]
pub struct Pin {
    pub workspace: String,
    token: [u8; 32],
    pub establish: bool,
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pin").field("workspace", &self.workspace).field("establish", &self.establish).finish_non_exhaustive()
    }
}

impl PartialEq for Pin {
    fn eq(&self, other: &Pin) -> bool {
        self.workspace == other.workspace && bool::from(self.token.ct_eq(&other.token))
    }
}

impl Eq for Pin {}

impl std::hash::Hash for Pin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.workspace.hash(state);
        self.token.hash(state);
    }
}

/// A database's pin as its pools check it: the pin, whether a session may
/// write it now, whether one found or wrote it, and why the last session
/// was refused.
pub(super) struct PinState {
    pin: Pin,
    establish: AtomicBool,
    pinned: AtomicBool,
    /// A session found the pin's schema and table to be the workspace
    /// role's own: only then may a query read the table directly.
    owned: AtomicBool,
    refused: Mutex<Option<Failure>>,
}

impl PinState {
    pub(super) fn new(pin: &Pin) -> Arc<PinState> {
        Arc::new(PinState {
            establish: AtomicBool::new(pin.establish),
            pin: pin.clone(),
            pinned: AtomicBool::new(false),
            owned: AtomicBool::new(false),
            refused: Mutex::new(None),
        })
    }

    /// Takes up what a reconcile read of the Workspace's status: once
    /// status records the pin, sessions only read it. A reconcile that
    /// says "not pinned yet" after that read an older status (its store
    /// lags by a moment), unless the sessions are being refused: then a
    /// cluster admin cleared `pinnedAt` to pin the database anew.
    pub(super) fn take_up(&self, establish: bool) {
        if !establish {
            self.establish.store(false, Ordering::Relaxed);
        } else if self.refused.lock().unwrap().is_some() {
            self.establish.store(true, Ordering::Relaxed);
        }
    }

    /// The uid of the Workspace this pin is of.
    pub(super) fn workspace(&self) -> &str {
        &self.pin.workspace
    }

    /// A session found the pin (or wrote it).
    pub(super) fn pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Whether the pin table is known to be the workspace role's own, and
    /// the pin is only to be read (not written) now.
    pub(super) fn readable(&self) -> bool {
        self.owned.load(Ordering::Relaxed) && !self.establish.load(Ordering::Relaxed)
    }

    /// Checks a token a query read from the pin table (None: no row): the
    /// way an observation checks the pin in its own round trip.
    pub(super) fn accept(&self, stored: Option<&[u8]>) -> Result<(), Failure> {
        if stored.is_some_and(|t| bool::from(t.ct_eq(self.pin.token.as_slice()))) {
            self.pinned.store(true, Ordering::Relaxed);
            *self.refused.lock().unwrap() = None;
            return Ok(());
        }
        if stored.is_none() && unpinned(&self.pin.workspace) {
            return Ok(());
        }
        let _ = self.refuse(moved());
        Err(moved())
    }

    /// Why the last new session was refused, if it was.
    pub(super) fn refusal(&self) -> Option<Failure> {
        self.refused.lock().unwrap().clone()
    }

    fn refuse(&self, failure: Failure) -> HookError {
        let message = failure.message.clone();
        *self.refused.lock().unwrap() = Some(failure);
        self.pinned.store(false, Ordering::Relaxed);
        HookError::message(message)
    }
}

/// What a new session found of the pin table.
struct Found {
    pid: i32,
    started: Option<i64>,
    schema_ours: Option<bool>,
    table_ours: Option<bool>,
}

async fn found(client: &tokio_postgres::Client) -> Result<Found, tokio_postgres::Error> {
    let row = client.query_one(sql::PIN_STATE, &[]).await?;
    Ok(Found { pid: row.get("pid"), started: row.get("started"), schema_ours: row.get("schema_ours"), table_ours: row.get("table_ours") })
}

fn conflict(what: &str) -> Failure {
    Failure::new(
        Reason::SchemaConflict,
        format!(
            "{what} of this database belongs to another role: Manifold keeps each Workspace's pin in schema \"{}\" and \
             writes nothing into one it does not own; its owner drops or renames it",
            sql::PIN_SCHEMA
        ),
    )
}

fn moved() -> Failure {
    Failure::new(
        Reason::DatabaseMoved,
        "the database the Secret's URI leads to cannot show this Workspace's pin, which Manifold wrote into the database \
         it first reached: it is another server or database (a changed hostaddr or host list, a re-pointed name or Service), \
         and nothing was sent to it. Restore what the URI and its names pointed at; a cluster admin who moved the database on \
         purpose clears status.pinnedAt and status.database (kubectl patch mws NAME --subresource=status --type merge -p \
         '{\"status\":{\"pinnedAt\":null,\"database\":null}}') so that the database it names now is pinned",
    )
}

/// The `post_create` hook of every pool of a pinned database: the session
/// is handed out only if the database shows the pin (or, on first
/// contact, once it holds it).
pub(super) async fn check(client: &mut ClientWrapper, state: &PinState, database: u64) -> Result<(), HookError> {
    // Where the table is known to be ours, one round trip does.
    if state.readable() {
        match client.query_one(sql::PIN_STATE_AND_TOKEN, &[&state.pin.workspace]).await {
            Ok(row)
                if row.get::<_, Option<bool>>("schema_ours") == Some(true) && row.get::<_, Option<bool>>("table_ours") == Some(true) =>
            {
                if let Some(started) = row.get::<_, Option<i64>>("started") {
                    register(row.get("pid"), started, database);
                }
                return state.accept(row.get::<_, Option<Vec<u8>>>("token").as_deref()).map_err(|f| HookError::message(f.message));
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.code(),
                    Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE | &tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME)
                ) => {}
            Err(e) => return Err(HookError::Backend(e)),
        }
    }
    let seen = found(client).await.map_err(HookError::Backend)?;
    if let Some(started) = seen.started {
        register(seen.pid, started, database);
    }
    if seen.schema_ours == Some(false) {
        return Err(state.refuse(conflict(&format!("schema \"{}\"", sql::PIN_SCHEMA))));
    }
    if seen.schema_ours == Some(true) && seen.table_ours == Some(false) {
        return Err(state.refuse(conflict(&format!("table \"{}\".workspace_pin", sql::PIN_SCHEMA))));
    }
    let stored = match seen.table_ours {
        Some(true) => client.query_opt(sql::PIN_READ, &[&state.pin.workspace]).await.map_err(HookError::Backend)?.map(|r| r.get(0)),
        _ => None,
    };
    if seen.schema_ours == Some(true) && seen.table_ours == Some(true) {
        state.owned.store(true, Ordering::Relaxed);
    }
    let matches = |stored: &Option<Vec<u8>>| stored.as_deref().is_some_and(|t| bool::from(t.ct_eq(state.pin.token.as_slice())));
    if matches(&stored) {
        state.pinned.store(true, Ordering::Relaxed);
        *state.refused.lock().unwrap() = None;
        return Ok(());
    }
    // The Workspace is going, and this process took its pin away: what is
    // left to do there (an attachment's orphan mark or drop) carries no
    // secret, and must not be held by the pin it removed.
    if stored.is_none() && unpinned(&state.pin.workspace) {
        return Ok(());
    }
    if !state.establish.load(Ordering::Relaxed) {
        return Err(state.refuse(moved()));
    }
    establish(client, state).await
}

/// First contact: writes the pin, then checks that what holds it is ours.
async fn establish(client: &mut ClientWrapper, state: &PinState) -> Result<(), HookError> {
    let tx = client.transaction().await.map_err(HookError::Backend)?;
    tx.batch_execute(sql::PIN_CREATE).await.map_err(HookError::Backend)?;
    let seen = found(tx.client()).await.map_err(HookError::Backend)?;
    if seen.schema_ours != Some(true) || seen.table_ours != Some(true) {
        return Err(state.refuse(conflict(&format!("schema \"{}\"", sql::PIN_SCHEMA))));
    }
    tx.execute(sql::PIN_WRITE, &[&state.pin.workspace, &state.pin.token.as_slice()]).await.map_err(HookError::Backend)?;
    tx.commit().await.map_err(HookError::Backend)?;
    state.owned.store(true, Ordering::Relaxed);
    state.pinned.store(true, Ordering::Relaxed);
    *state.refused.lock().unwrap() = None;
    Ok(())
}

/// Forgets the pin of a Workspace that is being deleted (the last thing
/// its removal does: a session opened after it would not find the pin),
/// and the pin table with it when no other Workspace's is left.
pub(super) async fn forget_pin(client: &tokio_postgres::Client, workspace: &str) -> Result<(), tokio_postgres::Error> {
    let seen = found(client).await?;
    if seen.schema_ours != Some(true) || seen.table_ours != Some(true) {
        return Ok(());
    }
    let others: bool = client.query_one(sql::PIN_FORGET, &[&workspace]).await?.get("others");
    UNPINNED.lock().unwrap().get_or_insert_with(std::collections::HashSet::new).insert(workspace.to_owned());
    if !others {
        // Someone's object in the schema keeps it; the pins are gone anyway.
        let _ = client.batch_execute(sql::PIN_DROP).await;
    }
    Ok(())
}

/// The Workspaces whose pin this process removed as they went.
static UNPINNED: Mutex<Option<std::collections::HashSet<String>>> = Mutex::new(None);

fn unpinned(workspace: &str) -> bool {
    UNPINNED.lock().unwrap().as_ref().is_some_and(|u| u.contains(workspace))
}

/// The hook of a database with no pin (the admin's test database): it only
/// records the session as Manifold's.
pub(super) async fn register_session(client: &mut ClientWrapper, database: u64) -> Result<(), HookError> {
    let seen = found(client).await.map_err(HookError::Backend)?;
    if let Some(started) = seen.started {
        register(seen.pid, started, database);
    }
    Ok(())
}

/// Manifold's own sessions, by (pid, backend start in µs), each with the
/// `Database` whose pool opened it.
static OURS: Mutex<Option<HashMap<(i32, i64), u64>>> = Mutex::new(None);

fn register(pid: i32, started: i64, database: u64) {
    OURS.lock().unwrap().get_or_insert_with(HashMap::new).insert((pid, started), database);
}

/// Forgets the sessions a closed `Database` opened.
pub(super) fn forget(database: u64) {
    if let Some(ours) = OURS.lock().unwrap().as_mut() {
        ours.retain(|_, d| *d != database);
    }
}

/// One session of the workspace role in the workspace database, as
/// `pg_stat_activity` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Session {
    pub pid: i32,
    pub started: Option<i64>,
    #[serde(default)]
    pub application: Option<String>,
    #[serde(default)]
    pub client: Option<String>,
}

/// The sessions that are not Manifold's, among all of the role's sessions
/// in a database that `database` observed; the sessions `database` opened
/// that are gone are forgotten on the way.
/// `observer` is the pid of the observation's own session.
pub(super) fn others(database: u64, observer: i32, sessions: Vec<Session>) -> Vec<Session> {
    let mut guard = OURS.lock().unwrap();
    let ours = guard.get_or_insert_with(HashMap::new);
    let live: std::collections::HashSet<(i32, i64)> = sessions.iter().filter_map(|s| Some((s.pid, s.started?))).collect();
    ours.retain(|key, d| *d != database || live.contains(key));
    sessions.into_iter().filter(|s| s.pid != observer && s.started.is_none_or(|started| !ours.contains_key(&(s.pid, started)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_depends_on_the_key_and_the_uid_and_shows_no_token() {
        let key = PinKey::random();
        let a = key.pin("uid-a", true);
        assert_eq!(a, key.pin("uid-a", false), "establish is not part of the pin");
        assert_ne!(a, key.pin("uid-b", true));
        assert_ne!(a, PinKey::random().pin("uid-a", true), "another key, another token");
        assert!(!format!("{a:?}").contains(&format!("{:?}", a.token)), "{a:?}");
        assert_eq!(format!("{key:?}"), "PinKey(<redacted>)");
        assert!(PinKey::from_bytes(&[0; 31]).is_none());
        assert_eq!(PinKey::from_bytes(key.bytes()).unwrap().pin("uid-a", true), a);
    }

    #[test]
    fn the_others_are_the_sessions_no_pool_of_ours_opened() {
        register(10, 1000, 7);
        register(11, 1100, 8);
        let session = |pid, started, app: &str| Session { pid, started: Some(started), application: Some(app.into()), client: None };
        // pid 10 is ours (database 7); pid 12 is someone's psql; pid 11
        // reused by another backend (another start) is not ours either.
        let seen = vec![session(10, 1000, "manifold"), session(11, 2000, "manifold"), session(12, 1200, "psql")];
        let others: Vec<i32> = others(7, 0, seen.clone()).iter().map(|s| s.pid).collect();
        assert_eq!(others, [11, 12]);
        assert_eq!(super::others(7, 12, seen).iter().map(|s| s.pid).collect::<Vec<_>>(), [11], "the observation's own session");
        // What database 7 opened and is gone is forgotten; 8's stays.
        others_forget_check();
    }

    fn others_forget_check() {
        let _ = others(7, 0, Vec::new());
        let guard = OURS.lock().unwrap();
        let ours = guard.as_ref().unwrap();
        assert!(!ours.contains_key(&(10, 1000)));
        assert!(ours.contains_key(&(11, 1100)));
    }
}
