//! Fair admission of attaches to each workspace database.
//!
//! A workspace's pool bounds its sessions, but an attach that waits for a
//! session in the pool holds one of the controller's reconcile slots while
//! it waits. When a bulk apply queues thousands of attachments of one
//! workspace ahead of the others (a GitOps tool applies them in name
//! order), every slot ends up waiting on that one pool and the other
//! workspaces' databases sit idle.
//!
//! So an attach first asks for a ticket for its workspace. There are as
//! many tickets as the pool has sessions. Without one, the attachment
//! parks: its reconcile ends at once, freeing the slot, and it joins the
//! workspace's queue.
//!
//! The queue is kept in a `Turn` order that every workspace shares: the
//! connection's age, then names. In a bulk apply each workspace then works
//! through the same connections in the same order, so that one
//! connection's attachments in ten workspaces turn Ready close together and
//! its list of workspaces is written once or twice, not once per workspace.
//! A ticket that is handed back is handed on: the first parked attachment
//! that still exists is invited and woken, and the ticket is kept for it
//! (nobody else takes it meanwhile, so the order holds). An invited
//! attachment whose reconcile ends without an attach (it found nothing to
//! do) passes its invitation on when its `Visit` ends, and an invitation
//! nobody takes up (its wake was lost) lapses after `INVITATION_TTL`. A
//! parked reconcile is also requeued, in case nothing runs, after
//! `PARKED_RETRY` plus a share of the queue ahead of it: thousands of parked
//! attachments retrying every few seconds would be most of the controller's
//! work.
//!
//! A suspect (an attachment whose source last timed out or was unreachable)
//! never takes the last ticket, just as it never takes the pool's last
//! session: a handful of silent sources must not park every healthy
//! attachment of their workspace behind their connect timeouts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::stores::Stores;
use super::triggers::Triggers;

type WsKey = (String, String);

/// An attachment's place in its workspace's queue.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Turn {
    /// The connection's creation, in seconds since the epoch.
    pub created: i64,
    pub connection: String,
    pub attachment: String,
}

#[derive(Default)]
struct Gate {
    /// Tickets out.
    busy: usize,
    /// Parked attachments in turn order, and whether each is a suspect.
    queue: BTreeMap<Turn, bool>,
    /// Each parked attachment's turn.
    queued: HashMap<String, Turn>,
    /// Woken attachments a ticket is kept for, and since when.
    invited: HashMap<String, Instant>,
    /// How long a ticket is held, on average lately: the time one turn of
    /// the queue takes. `None` until a ticket came back.
    hold: Option<Duration>,
}

/// Queues a reconcile of a parked attachment; says whether it still exists.
type Wake = Box<dyn Fn(&WsKey, &str) -> bool + Send + Sync>;

struct Inner {
    limit: usize,
    ttl: Duration,
    gates: Mutex<HashMap<WsKey, Gate>>,
    wake: Wake,
    /// Whether sessions are short (someone waits for the session budget):
    /// then each workspace gets one ticket. A workspace's work then goes
    /// through one session, not one per ticket: with hundreds of workspace
    /// databases on a server, every session a workspace opens is a backend
    /// started and its catalog caches filled, for a handful of attaches.
    narrow: Box<dyn Fn() -> bool + Send + Sync>,
}

/// The tickets of every workspace of one scope.
#[derive(Clone)]
pub struct Admission(Arc<Inner>);

/// The right to run an attach against a workspace's database; handing it
/// back (dropping it) wakes the next parked attachment.
pub struct Ticket {
    inner: Arc<Inner>,
    key: WsKey,
    granted: Instant,
}

/// One reconcile of an attachment: when it ends, an invitation it was
/// woken for and did not take up goes to the next in the queue.
pub struct Visit {
    inner: Arc<Inner>,
    key: WsKey,
    attachment: String,
    started: Instant,
}

/// When a parked attachment tries again on its own, in case its wake was
/// lost: this long, plus the time the turns of the tickets ahead of it take
/// (each as long as a ticket is held lately, at least
/// `PARKED_RETRY_PER_TURN`), up to `PARKED_RETRY_MAX`. A wake is lost only
/// in rare cases (the wake of an attachment that is gone from the store
/// for a moment), while a retry that comes before its turn is a reconcile
/// for nothing: in a bulk apply of 12,000 with a 60-second cap, parked
/// retries were three quarters of all reconciles.
pub const PARKED_RETRY: Duration = Duration::from_secs(10);
const PARKED_RETRY_PER_TURN: Duration = Duration::from_millis(200);
/// A turn before any ticket of the workspace came back: a bulk apply parks
/// thousands at once, before there is anything to measure.
const PARKED_RETRY_FIRST_TURN: Duration = Duration::from_secs(1);
const PARKED_RETRY_MAX: Duration = Duration::from_secs(600);

/// How long a ticket is kept for a woken attachment that has not come for
/// it. A woken reconcile waits for a slot of the controller, which is
/// seconds at the most; a wake that is lost must not keep the ticket long.
pub const INVITATION_TTL: Duration = Duration::from_secs(20);

/// An attachment without a ticket, how many are parked ahead of it, and
/// how long a turn of the tickets takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    ahead: usize,
    limit: usize,
    turn: Duration,
}

impl Parked {
    /// When to try again if no wake comes.
    pub fn retry(&self) -> Duration {
        let turns = u32::try_from(self.ahead / self.limit).unwrap_or(u32::MAX);
        (PARKED_RETRY + self.turn.max(PARKED_RETRY_PER_TURN).saturating_mul(turns)).min(PARKED_RETRY_MAX)
    }
}

impl Admission {
    /// `wake` queues a reconcile of a parked attachment and says whether it
    /// still exists; tickets never narrow.
    #[cfg(test)]
    fn with_ttl(limit: usize, ttl: Duration, wake: impl Fn(&WsKey, &str) -> bool + Send + Sync + 'static) -> Self {
        Admission(Arc::new(Inner { limit: limit.max(1), ttl, gates: Mutex::default(), wake: Box::new(wake), narrow: Box::new(|| false) }))
    }

    /// Wakes parked attachments through the triggers, skipping those that
    /// are gone; `narrow` says when sessions are short (see `Inner::narrow`).
    pub fn for_scope(limit: usize, stores: Stores, triggers: Triggers, narrow: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        let wake = move |(ns, _): &WsKey, name: &str| {
            let exists = stores.attachment(ns, name).is_some();
            if exists {
                triggers.attachment(ns, name);
            }
            exists
        };
        Admission(Arc::new(Inner {
            limit: limit.max(1),
            ttl: INVITATION_TTL,
            gates: Mutex::default(),
            wake: Box::new(wake),
            narrow: Box::new(narrow),
        }))
    }

    /// Marks the start of one reconcile of `attachment`, whose workspace is
    /// `key`.
    pub fn visit(&self, key: &WsKey, attachment: &str) -> Visit {
        Visit { inner: self.0.clone(), key: key.clone(), attachment: attachment.to_owned(), started: Instant::now() }
    }

    /// A ticket for the attachment of `turn` to run against the workspace
    /// `key`, or `Parked`: it will be woken when a ticket comes back for
    /// it. An invited attachment takes the ticket kept for it; any other
    /// takes a free ticket only when no parked attachment ahead of it may.
    /// A `suspect` leaves the last ticket to the others.
    pub fn enter(&self, key: &WsKey, turn: &Turn, suspect: bool) -> Result<Ticket, Parked> {
        let now = Instant::now();
        let mut gates = self.0.gates.lock().unwrap();
        let gate = gates.entry(key.clone()).or_default();
        self.0.lapse(gate, key, now);
        let name = turn.attachment.as_str();
        let granted = gate.invited.remove(name).is_some() || {
            let out = gate.busy + gate.invited.len();
            let may = |suspect: bool| self.0.limit_for(suspect) > out;
            may(suspect) && !gate.queue.range(..turn).any(|(t, s)| t.attachment != name && may(*s))
        };
        if granted {
            gate.unqueue(name);
            gate.busy += 1;
            return Ok(Ticket { inner: self.0.clone(), key: key.clone(), granted: now });
        }
        if gate.queued.get(name) != Some(turn) {
            gate.unqueue(name);
            gate.queued.insert(name.to_owned(), turn.clone());
        }
        gate.queue.insert(turn.clone(), suspect);
        // A free ticket that this one may not take goes to those ahead.
        self.0.invite(gate, key, now);
        let ahead = gate.queue.range(..turn).count();
        Err(Parked { ahead, limit: self.0.limit, turn: gate.hold.unwrap_or(PARKED_RETRY_FIRST_TURN) })
    }

    /// Whether `attachment` waits in the queue of `key`, or a ticket is
    /// kept for it: it reconciles when its turn comes, and anything that
    /// would wake it before then wakes it for nothing.
    pub fn waiting(&self, key: &WsKey, attachment: &str) -> bool {
        let gates = self.0.gates.lock().unwrap();
        gates.get(key).is_some_and(|g| g.queued.contains_key(attachment) || g.invited.contains_key(attachment))
    }

    /// Attachments parked for `key`.
    #[cfg(test)]
    pub fn parked(&self, key: &WsKey) -> usize {
        self.0.gates.lock().unwrap().get(key).map_or(0, |g| g.queue.len())
    }
}

impl Gate {
    fn unqueue(&mut self, name: &str) {
        if let Some(turn) = self.queued.remove(name) {
            self.queue.remove(&turn);
        }
    }

    fn idle(&self) -> bool {
        self.busy == 0 && self.queue.is_empty() && self.invited.is_empty()
    }

    /// A ticket came back after `held`: the average moves a fifth of the way.
    fn held(&mut self, held: Duration) {
        self.hold = Some(match self.hold {
            Some(hold) => (hold * 4 + held) / 5,
            None => held,
        });
    }
}

impl Inner {
    /// How many tickets may be out now.
    fn limit(&self) -> usize {
        if (self.narrow)() { 1 } else { self.limit }
    }

    /// How many tickets may be out when `suspect` asks for one.
    fn limit_for(&self, suspect: bool) -> usize {
        let limit = self.limit();
        if suspect { limit.saturating_sub(1).max(1) } else { limit }
    }

    /// Keeps each free ticket for the first parked attachment that may
    /// take it and still exists, and wakes it.
    fn invite(&self, gate: &mut Gate, key: &WsKey, now: Instant) {
        loop {
            let out = gate.busy + gate.invited.len();
            if out >= self.limit() {
                return;
            }
            let Some(turn) = gate.queue.iter().find(|(_, s)| self.limit_for(**s) > out).map(|(t, _)| t.clone()) else {
                return;
            };
            gate.unqueue(&turn.attachment);
            if (self.wake)(key, &turn.attachment) {
                gate.invited.insert(turn.attachment, now);
            }
        }
    }

    /// Invitations nobody took up within the TTL go to the next.
    fn lapse(&self, gate: &mut Gate, key: &WsKey, now: Instant) {
        let before = gate.invited.len();
        gate.invited.retain(|_, since| now.duration_since(*since) < self.ttl);
        if gate.invited.len() < before {
            self.invite(gate, key, now);
        }
    }

    /// Hands a ticket, or an invitation, back.
    fn release(&self, key: &WsKey, f: impl FnOnce(&mut Gate)) {
        let now = Instant::now();
        let mut gates = self.gates.lock().unwrap();
        let Some(gate) = gates.get_mut(key) else {
            return;
        };
        f(gate);
        self.lapse(gate, key, now);
        self.invite(gate, key, now);
        if gate.idle() {
            gates.remove(key);
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("workspace", &self.key).finish()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let held = self.granted.elapsed();
        self.inner.release(&self.key, |gate| {
            gate.busy = gate.busy.saturating_sub(1);
            gate.held(held);
        });
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        let (name, started) = (&self.attachment, self.started);
        // Only an invitation this reconcile could have seen: one issued
        // while it ran is for the reconcile the wake queued after it.
        self.inner.release(&self.key, |gate| {
            if gate.invited.get(name).is_some_and(|since| *since <= started) {
                gate.invited.remove(name);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ws: &str) -> WsKey {
        ("ns".into(), ws.into())
    }

    /// A turn: connections created in name order.
    fn turn(name: &str) -> Turn {
        Turn { created: 0, connection: name.into(), attachment: name.into() }
    }

    fn admission(limit: usize) -> (Admission, Arc<Mutex<Vec<String>>>) {
        admission_with(limit, INVITATION_TTL)
    }

    fn admission_with(limit: usize, ttl: Duration) -> (Admission, Arc<Mutex<Vec<String>>>) {
        let woken: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = woken.clone();
        let a = Admission::with_ttl(limit, ttl, move |_, name| {
            log.lock().unwrap().push(name.to_owned());
            !name.contains("gone")
        });
        (a, woken)
    }

    fn enter(a: &Admission, ws: &str, name: &str, suspect: bool) -> Result<Ticket, Parked> {
        a.enter(&key(ws), &turn(name), suspect)
    }

    #[test]
    fn tickets_are_bounded_per_workspace() {
        let (a, woken) = admission(2);
        let t1 = enter(&a, "w", "a1", false).unwrap();
        let _t2 = enter(&a, "w", "a2", false).unwrap();
        assert!(enter(&a, "w", "a3", false).is_err());
        // Another workspace has its own tickets.
        let _other = enter(&a, "v", "b1", false).unwrap();
        assert_eq!(a.parked(&key("w")), 1);
        drop(t1);
        assert_eq!(*woken.lock().unwrap(), ["a3"]);
        assert_eq!(a.parked(&key("w")), 0);
        // The ticket is kept for a3: a newcomer parks.
        assert!(enter(&a, "w", "a0", false).is_err());
        let _t3 = enter(&a, "w", "a3", false).unwrap();
        assert!(enter(&a, "w", "a4", false).is_err());
    }

    #[test]
    fn when_sessions_are_short_each_workspace_gets_one_ticket() {
        let short = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = short.clone();
        let a = Admission(Arc::new(Inner {
            limit: 4,
            ttl: INVITATION_TTL,
            gates: Mutex::default(),
            wake: Box::new(|_, _| true),
            narrow: Box::new(move || flag.load(std::sync::atomic::Ordering::Relaxed)),
        }));
        let _t1 = enter(&a, "w", "a1", false).unwrap();
        let t2 = enter(&a, "w", "a2", false).unwrap();
        short.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(enter(&a, "w", "a3", false).is_err(), "two out already, one allowed now");
        assert!(enter(&a, "v", "b1", false).is_ok(), "another workspace still gets its one");
        drop(t2);
        assert!(enter(&a, "w", "a4", false).is_err(), "still one out: a3 waits, and so does a newcomer");
        short.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(enter(&a, "w", "a3", false).is_ok(), "sessions to spare again: a3's turn");
    }

    #[test]
    fn parked_attachments_come_in_turn_order_and_gone_ones_are_skipped() {
        let (a, woken) = admission(1);
        let t = enter(&a, "w", "a1", false).unwrap();
        for name in ["a3", "a2-gone", "a2", "a3"] {
            assert!(enter(&a, "w", name, false).is_err());
        }
        assert_eq!(a.parked(&key("w")), 3, "parked once each");
        drop(t);
        let t = enter(&a, "w", "a2", false).unwrap();
        drop(t);
        // "a2-gone" no longer exists: skipped and forgotten, a3 is woken.
        assert_eq!(*woken.lock().unwrap(), ["a2", "a2-gone", "a3"]);
        assert_eq!(a.parked(&key("w")), 0);
    }

    #[test]
    fn every_workspace_takes_the_same_connections_in_the_same_order() {
        // Attachments arrive in a different order in each workspace; the
        // connections' turns, not the arrivals, decide who goes next. c3's
        // connection is the youngest.
        let (a, woken) = admission(1);
        let turn = |ws: &str, c: &str| Turn { created: i64::from(c == "c3"), connection: c.into(), attachment: format!("{ws}-{c}") };
        for (ws, arrivals) in [("w1", ["c3", "c1", "c2", "c0"]), ("w2", ["c2", "c0", "c3", "c1"])] {
            let mut ticket = Some(a.enter(&key(ws), &turn(ws, arrivals[0]), false).expect("the first takes the free ticket"));
            for c in &arrivals[1..] {
                assert!(a.enter(&key(ws), &turn(ws, c), false).is_err());
            }
            // Each ticket handed back goes to the next in turn, which
            // takes it.
            while let Some(t) = ticket.take() {
                let before = woken.lock().unwrap().len();
                drop(t);
                let next = woken.lock().unwrap().get(before).cloned();
                if let Some(name) = next {
                    let c = name.rsplit('-').next().unwrap().to_owned();
                    ticket = Some(a.enter(&key(ws), &turn(ws, &c), false).unwrap());
                }
            }
        }
        assert_eq!(*woken.lock().unwrap(), ["w1-c0", "w1-c1", "w1-c2", "w2-c0", "w2-c1", "w2-c3"]);
    }

    #[test]
    fn suspects_leave_the_last_ticket_to_the_others() {
        let (a, woken) = admission(3);
        let s1 = enter(&a, "w", "s1", true).unwrap();
        let _s2 = enter(&a, "w", "s2", true).unwrap();
        assert!(enter(&a, "w", "s3", true).is_err(), "the last ticket is not for a suspect");
        let h1 = enter(&a, "w", "h1", false).unwrap();
        assert!(enter(&a, "w", "h2", false).is_err());
        // A ticket back with two out: only a healthy one may have it, so h2
        // is woken though the suspect is ahead of it.
        drop(h1);
        assert_eq!(*woken.lock().unwrap(), ["h2"]);
        let h2 = enter(&a, "w", "h2", false).unwrap();
        // With one out, the suspect's turn comes.
        drop(h2);
        drop(s1);
        assert_eq!(*woken.lock().unwrap(), ["h2", "s3"]);
        // With a single ticket, a suspect still gets it.
        let (one, _) = admission(1);
        assert!(enter(&one, "w", "s", true).is_ok());
    }

    #[test]
    fn the_retry_of_a_parked_attachment_grows_with_the_queue_ahead() {
        let (a, _) = admission(4);
        let _tickets: Vec<_> = (0..4).map(|i| enter(&a, "w", &format!("t{i}"), false).unwrap()).collect();
        let first = enter(&a, "w", "p0000", false).unwrap_err();
        assert_eq!(first.retry(), PARKED_RETRY);
        for i in 1..2_000 {
            assert!(enter(&a, "w", &format!("p{i:04}"), false).is_err());
        }
        // 100 ahead, 4 tickets: 25 turns of 1 s before a ticket came back.
        assert_eq!(enter(&a, "w", "p0100", false).unwrap_err().retry(), Duration::from_secs(35));
        // Tickets held 2 s lately: a turn takes 2 s.
        a.0.gates.lock().unwrap().get_mut(&key("w")).unwrap().hold = Some(Duration::from_secs(2));
        assert_eq!(enter(&a, "w", "p0100", false).unwrap_err().retry(), Duration::from_secs(60));
        assert_eq!(enter(&a, "w", "p1999", false).unwrap_err().retry(), PARKED_RETRY_MAX, "bounded");
        // Held 10 ms: a turn is 200 ms at the least.
        a.0.gates.lock().unwrap().get_mut(&key("w")).unwrap().hold = Some(Duration::from_millis(10));
        assert_eq!(enter(&a, "w", "p1000", false).unwrap_err().retry(), Duration::from_secs(60));
    }

    #[test]
    fn a_turn_is_as_long_as_tickets_are_held_lately() {
        let mut gate = Gate::default();
        gate.held(Duration::from_secs(1));
        assert_eq!(gate.hold, Some(Duration::from_secs(1)));
        for _ in 0..50 {
            gate.held(Duration::from_secs(3));
        }
        let hold = gate.hold.unwrap();
        assert!(hold > Duration::from_millis(2_990) && hold <= Duration::from_secs(3), "{hold:?}");
    }

    #[test]
    fn an_invitation_not_taken_up_goes_to_the_next() {
        let (a, woken) = admission(1);
        let t = enter(&a, "w", "a1", false).unwrap();
        assert!(enter(&a, "w", "a2", false).is_err());
        assert!(enter(&a, "w", "a3", false).is_err());
        assert!(a.waiting(&key("w"), "a2") && a.waiting(&key("w"), "a3"));
        assert!(!a.waiting(&key("w"), "a1"), "a ticket holder is not waiting");
        drop(t);
        assert_eq!(*woken.lock().unwrap(), ["a2"]);
        assert!(a.waiting(&key("w"), "a2"), "invited: a ticket is kept for it");
        // a2's reconcile starts after its wake, finds nothing to do and
        // ends: the ticket goes on to a3.
        drop(a.visit(&key("w"), "a2"));
        assert_eq!(*woken.lock().unwrap(), ["a2", "a3"]);
        // A reconcile that began before the wake does not pass it on.
        let earlier = a.visit(&key("w"), "a4");
        assert!(enter(&a, "w", "a4", false).is_err());
        let t = enter(&a, "w", "a3", false).unwrap();
        drop(t);
        drop(earlier);
        assert_eq!(*woken.lock().unwrap(), ["a2", "a3", "a4"]);
        let _t = enter(&a, "w", "a4", false).unwrap();
        assert!(!a.waiting(&key("w"), "a2") && !a.waiting(&key("w"), "a4"));
    }

    #[test]
    fn a_lost_wake_lapses() {
        let (a, woken) = admission_with(1, Duration::from_millis(20));
        let t = enter(&a, "w", "a1", false).unwrap();
        assert!(enter(&a, "w", "a2", false).is_err());
        assert!(enter(&a, "w", "a3", false).is_err());
        drop(t);
        // a2 never comes; a3's own retry finds the invitation lapsed and
        // the ticket now kept for it.
        assert!(enter(&a, "w", "a3", false).is_err());
        std::thread::sleep(Duration::from_millis(30));
        let _t = enter(&a, "w", "a3", false).unwrap();
        assert_eq!(*woken.lock().unwrap(), ["a2", "a3"]);
    }
}
