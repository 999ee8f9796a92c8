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
//! workspace's queue. A ticket that is handed back wakes the first parked
//! attachment that still exists. A woken attachment that does not come
//! back for its ticket (its reconcile found nothing to do) strands
//! nothing: the next ticket handed back wakes the next, and a parked
//! reconcile is also requeued, in case nothing runs, after `PARKED_RETRY`
//! plus a share of the queue ahead of it: thousands of parked attachments
//! retrying every few seconds would be most of the controller's work.
//!
//! A suspect (an attachment whose source last timed out or was unreachable)
//! never takes the last ticket, just as it never takes the pool's last
//! session: a handful of silent sources must not park every healthy
//! attachment of their workspace behind their connect timeouts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::context::{Stores, Triggers};

type WsKey = (String, String);

#[derive(Default)]
struct Gate {
    busy: usize,
    /// Parked attachments in order, and whether each is a suspect.
    queue: VecDeque<(String, bool)>,
    queued: HashSet<String>,
}

struct Inner {
    limit: usize,
    gates: Mutex<HashMap<WsKey, Gate>>,
    wake: Box<dyn Fn(&WsKey, &str) -> bool + Send + Sync>,
}

/// The tickets of every workspace of one scope.
#[derive(Clone)]
pub struct Admission(Arc<Inner>);

/// The right to run an attach against a workspace's database; handing it
/// back (dropping it) wakes the next parked attachment.
pub struct Ticket {
    inner: Arc<Inner>,
    key: WsKey,
}

/// When a parked attachment tries again on its own, in case its wake was
/// lost: this long, plus `PARKED_RETRY_PER_TURN` for each turn of the
/// tickets ahead of it, up to `PARKED_RETRY_MAX`.
pub const PARKED_RETRY: Duration = Duration::from_secs(10);
const PARKED_RETRY_PER_TURN: Duration = Duration::from_millis(200);
const PARKED_RETRY_MAX: Duration = Duration::from_secs(60);

/// An attachment without a ticket, and how many are parked ahead of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    ahead: usize,
    limit: usize,
}

impl Parked {
    /// When to try again if no wake comes.
    pub fn retry(&self) -> Duration {
        let turns = u32::try_from(self.ahead / self.limit).unwrap_or(u32::MAX);
        (PARKED_RETRY + PARKED_RETRY_PER_TURN.saturating_mul(turns)).min(PARKED_RETRY_MAX)
    }
}

impl Admission {
    /// `wake` queues a reconcile of a parked attachment and says whether it
    /// still exists.
    pub fn new(limit: usize, wake: impl Fn(&WsKey, &str) -> bool + Send + Sync + 'static) -> Self {
        Admission(Arc::new(Inner { limit: limit.max(1), gates: Mutex::default(), wake: Box::new(wake) }))
    }

    /// Wakes parked attachments through the triggers, skipping those that
    /// are gone.
    pub fn for_scope(limit: usize, stores: Stores, triggers: Triggers) -> Self {
        Admission::new(limit, move |(ns, _), name| {
            let exists = stores.attachment(ns, name).is_some();
            if exists {
                triggers.attachment(ns, name);
            }
            exists
        })
    }

    /// A ticket for `attachment` to run against the workspace `key`, or
    /// `Parked`: it will be woken when a ticket comes back. A `suspect`
    /// leaves the last ticket to the others.
    pub fn enter(&self, key: &WsKey, attachment: &str, suspect: bool) -> Result<Ticket, Parked> {
        let mut gates = self.0.gates.lock().unwrap();
        let gate = gates.entry(key.clone()).or_default();
        if gate.busy < self.0.limit_for(suspect) {
            if gate.queued.remove(attachment) {
                gate.queue.retain(|(a, _)| a != attachment);
            }
            gate.busy += 1;
            return Ok(Ticket { inner: self.0.clone(), key: key.clone() });
        }
        let ahead = match gate.queue.iter().position(|(a, _)| a == attachment) {
            Some(at) => {
                gate.queue[at].1 = suspect;
                at
            }
            None => {
                gate.queued.insert(attachment.to_owned());
                gate.queue.push_back((attachment.to_owned(), suspect));
                gate.queue.len() - 1
            }
        };
        Err(Parked { ahead, limit: self.0.limit })
    }

    /// Attachments parked for `key`.
    #[cfg(test)]
    pub fn parked(&self, key: &WsKey) -> usize {
        self.0.gates.lock().unwrap().get(key).map_or(0, |g| g.queue.len())
    }
}

impl Inner {
    /// How many tickets may be out when `suspect` asks for one.
    fn limit_for(&self, suspect: bool) -> usize {
        if suspect { self.limit.saturating_sub(1).max(1) } else { self.limit }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("workspace", &self.key).finish()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut gates = self.inner.gates.lock().unwrap();
        let Some(gate) = gates.get_mut(&self.key) else {
            return;
        };
        gate.busy = gate.busy.saturating_sub(1);
        // Wake the first parked attachment that still exists and may take
        // the ticket (a suspect may not take the last one); it leaves the
        // queue, and parks again at its end if another took the ticket.
        let suspects_too = gate.busy < self.inner.limit_for(true);
        let mut i = 0;
        while i < gate.queue.len() {
            if gate.queue[i].1 && !suspects_too {
                i += 1;
                continue;
            }
            let (name, _) = gate.queue.remove(i).expect("in range");
            gate.queued.remove(&name);
            if (self.inner.wake)(&self.key, &name) {
                break;
            }
        }
        if gate.busy == 0 && gate.queue.is_empty() {
            gates.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ws: &str) -> WsKey {
        ("ns".into(), ws.into())
    }

    fn admission(limit: usize) -> (Admission, Arc<Mutex<Vec<String>>>) {
        let woken: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = woken.clone();
        let a = Admission::new(limit, move |_, name| {
            log.lock().unwrap().push(name.to_owned());
            !name.starts_with("gone")
        });
        (a, woken)
    }

    #[test]
    fn tickets_are_bounded_per_workspace() {
        let (a, woken) = admission(2);
        let t1 = a.enter(&key("w"), "a1", false).unwrap();
        let _t2 = a.enter(&key("w"), "a2", false).unwrap();
        assert!(a.enter(&key("w"), "a3", false).is_err());
        // Another workspace has its own tickets.
        let _other = a.enter(&key("v"), "b1", false).unwrap();
        assert_eq!(a.parked(&key("w")), 1);
        drop(t1);
        assert_eq!(*woken.lock().unwrap(), ["a3"]);
        assert_eq!(a.parked(&key("w")), 0);
        let _t3 = a.enter(&key("w"), "a3", false).unwrap();
        assert!(a.enter(&key("w"), "a4", false).is_err());
    }

    #[test]
    fn parked_attachments_come_in_order_and_gone_ones_are_skipped() {
        let (a, woken) = admission(1);
        let t = a.enter(&key("w"), "a1", false).unwrap();
        for name in ["a2", "gone", "a3", "a2"] {
            assert!(a.enter(&key("w"), name, false).is_err());
        }
        assert_eq!(a.parked(&key("w")), 3, "parked once each");
        drop(t);
        let t = a.enter(&key("w"), "a2", false).unwrap();
        drop(t);
        // "gone" no longer exists: skipped and forgotten, a3 is woken.
        assert_eq!(*woken.lock().unwrap(), ["a2", "gone", "a3"]);
        assert_eq!(a.parked(&key("w")), 0);
    }

    #[test]
    fn suspects_leave_the_last_ticket_to_the_others() {
        let (a, woken) = admission(3);
        let s1 = a.enter(&key("w"), "s1", true).unwrap();
        let _s2 = a.enter(&key("w"), "s2", true).unwrap();
        assert!(a.enter(&key("w"), "s3", true).is_err(), "the last ticket is not for a suspect");
        let h1 = a.enter(&key("w"), "h1", false).unwrap();
        assert!(a.enter(&key("w"), "h2", false).is_err());
        // A ticket back with two out: only a healthy one may have it, so h2
        // is woken ahead of the suspect parked before it.
        drop(h1);
        assert_eq!(*woken.lock().unwrap(), ["h2"]);
        let h2 = a.enter(&key("w"), "h2", false).unwrap();
        // With one out, the suspect's turn comes.
        drop(h2);
        drop(s1);
        assert_eq!(*woken.lock().unwrap(), ["h2", "s3"]);
        // With a single ticket, a suspect still gets it.
        let (one, _) = admission(1);
        assert!(one.enter(&key("w"), "s", true).is_ok());
    }

    #[test]
    fn the_retry_of_a_parked_attachment_grows_with_the_queue_ahead() {
        let (a, _) = admission(4);
        let _tickets: Vec<_> = (0..4).map(|i| a.enter(&key("w"), &format!("t{i}"), false).unwrap()).collect();
        let first = a.enter(&key("w"), "p0", false).unwrap_err();
        assert_eq!(first.retry(), PARKED_RETRY);
        for i in 1..2_000 {
            assert!(a.enter(&key("w"), &format!("p{i}"), false).is_err());
        }
        // 100 ahead, 4 tickets: 25 turns of 200 ms.
        assert_eq!(a.enter(&key("w"), "p100", false).unwrap_err().retry(), Duration::from_secs(15));
        assert_eq!(a.enter(&key("w"), "p1000", false).unwrap_err().retry(), Duration::from_secs(60));
        assert_eq!(a.enter(&key("w"), "p1999", false).unwrap_err().retry(), PARKED_RETRY_MAX, "bounded");
    }

    #[test]
    fn a_lost_wake_leaves_the_ticket_free() {
        // The woken attachment never comes back; its ticket is free for the
        // next one, and the queue moves on when that one is done.
        let (a, woken) = admission(1);
        let t = a.enter(&key("w"), "a1", false).unwrap();
        assert!(a.enter(&key("w"), "a2", false).is_err());
        assert!(a.enter(&key("w"), "a3", false).is_err());
        drop(t);
        let t = a.enter(&key("w"), "a4", false).unwrap();
        drop(t);
        assert_eq!(*woken.lock().unwrap(), ["a2", "a3"]);
    }
}
