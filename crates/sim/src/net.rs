//! The simulated network: one FIFO session per directed link, as the
//! production transport has one TCP connection per direction.
//!
//! - A message sent at tick `t` is due at `max(t + delay, previous due on
//!   that link)`: delays vary, order on a link never does (OmniPaxos stalls
//!   when a link reorders; TCP never does).
//! - A message is lost only with its whole session: the session breaks (a
//!   partition starts, a crash, a random reset), everything in flight on it
//!   is dropped, and sends are dropped until it is back up. When it comes
//!   back, both ends are told (`Replica::connected`), as production's
//!   transport tells both ends of every new session.
//! - Partitions are sets of cut directed links, each with an end tick; a cut
//!   link cannot reconnect until every partition cutting it has healed.

use crate::rng::SimRng;
use paxsql_replica::PeerMsg;

/// A message between two nodes: its group, and what the group's replica
/// sent (all groups share the node's sessions, as production's transport
/// does).
pub(crate) type Packet = (u32, PeerMsg);
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Debug, Default)]
struct Link {
    up: bool,
    /// In flight: (due tick, message), in send order.
    queue: VecDeque<(u64, Packet)>,
    /// Due tick of the last message queued (FIFO floor).
    last_due: u64,
    /// The session may be re-established from this tick on.
    reconnect_at: u64,
    /// Extra delay until the given tick.
    slow: Option<(u64, u64)>,
}

/// Links cut by one partition, until a tick.
#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) name: String,
    pub(crate) cut: BTreeSet<(u64, u64)>,
    pub(crate) until: u64,
}

#[derive(Debug)]
pub(crate) struct Net {
    links: BTreeMap<(u64, u64), Link>,
    partitions: Vec<Partition>,
    delay_ticks_max: u64,
    pub(crate) sent: u64,
    pub(crate) dropped: u64,
}

/// What happened to a message handed to the network.
pub(crate) enum Sent {
    Queued(u64),
    Dropped,
}

impl Net {
    pub(crate) fn new(nodes: &[u64], delay_ticks_max: u64) -> Net {
        let mut links = BTreeMap::new();
        for &a in nodes {
            for &b in nodes {
                if a != b {
                    links.insert((a, b), Link::default());
                }
            }
        }
        Net {
            links,
            partitions: Vec::new(),
            delay_ticks_max,
            sent: 0,
            dropped: 0,
        }
    }

    pub(crate) fn send(
        &mut self,
        now: u64,
        rng: &mut SimRng,
        from: u64,
        to: u64,
        msg: Packet,
    ) -> Sent {
        let delay = 1 + rng.below(self.delay_ticks_max);
        let Some(link) = self.links.get_mut(&(from, to)) else {
            self.dropped += 1;
            return Sent::Dropped;
        };
        if !link.up {
            self.dropped += 1;
            return Sent::Dropped;
        }
        let extra = match link.slow {
            Some((until, extra)) if until > now => extra,
            _ => 0,
        };
        let due = (now + delay + extra).max(link.last_due);
        link.last_due = due;
        link.queue.push_back((due, msg));
        self.sent += 1;
        Sent::Queued(due)
    }

    /// Breaks a session: drops what is in flight; returns how many messages
    /// that was, or `None` if it was already down.
    pub(crate) fn break_session(&mut self, from: u64, to: u64, reconnect_at: u64) -> Option<usize> {
        let link = self.links.get_mut(&(from, to))?;
        link.reconnect_at = link.reconnect_at.max(reconnect_at);
        if !link.up {
            return None;
        }
        link.up = false;
        let lost = link.queue.len();
        self.dropped += lost as u64;
        link.queue.clear();
        link.last_due = 0;
        Some(lost)
    }

    /// Every link touching `node`, both directions.
    pub(crate) fn links_of(&self, node: u64) -> Vec<(u64, u64)> {
        self.links
            .keys()
            .filter(|(a, b)| *a == node || *b == node)
            .copied()
            .collect()
    }

    pub(crate) fn up_links(&self) -> Vec<(u64, u64)> {
        self.links
            .iter()
            .filter(|(_, l)| l.up)
            .map(|(k, _)| *k)
            .collect()
    }

    pub(crate) fn all_links(&self) -> Vec<(u64, u64)> {
        self.links.keys().copied().collect()
    }

    pub(crate) fn all_up(&self) -> bool {
        self.links.values().all(|l| l.up)
    }

    /// Links whose session can start now: down, past their backoff, both
    /// ends alive, not cut. They are marked up; the caller tells both ends.
    pub(crate) fn reconnect(&mut self, now: u64, alive: &BTreeSet<u64>) -> Vec<(u64, u64)> {
        let cut: BTreeSet<(u64, u64)> = self
            .partitions
            .iter()
            .flat_map(|p| p.cut.iter().copied())
            .collect();
        let mut started = Vec::new();
        for (&(a, b), link) in self.links.iter_mut() {
            if !link.up
                && link.reconnect_at <= now
                && alive.contains(&a)
                && alive.contains(&b)
                && !cut.contains(&(a, b))
            {
                link.up = true;
                link.last_due = 0;
                started.push((a, b));
            }
        }
        started
    }

    /// Messages due now, each link's in order, links interleaved at random.
    pub(crate) fn due(&mut self, now: u64, rng: &mut SimRng) -> Vec<(u64, u64, Packet)> {
        let mut per_link: Vec<((u64, u64), VecDeque<Packet>)> = Vec::new();
        for (&key, link) in self.links.iter_mut() {
            let mut ready = VecDeque::new();
            while link.queue.front().is_some_and(|(due, _)| *due <= now) {
                ready.push_back(link.queue.pop_front().expect("front checked").1);
            }
            if !ready.is_empty() {
                per_link.push((key, ready));
            }
        }
        let mut out = Vec::new();
        while !per_link.is_empty() {
            let i = rng.below(per_link.len() as u64) as usize;
            let ((a, b), q) = &mut per_link[i];
            let (a, b) = (*a, *b);
            out.push((a, b, q.pop_front().expect("non-empty")));
            if q.is_empty() {
                per_link.swap_remove(i);
            }
        }
        out
    }

    /// Starts a partition; returns the sessions it broke.
    pub(crate) fn partition(&mut self, p: Partition, reconnect_at: u64) -> Vec<(u64, u64, usize)> {
        let mut broken = Vec::new();
        for &(a, b) in &p.cut {
            if let Some(lost) = self.break_session(a, b, reconnect_at) {
                broken.push((a, b, lost));
            }
        }
        self.partitions.push(p);
        broken
    }

    /// Removes partitions whose time is up (or all, with `all`); returns
    /// their names.
    pub(crate) fn heal(&mut self, now: u64, all: bool) -> Vec<String> {
        let mut healed = Vec::new();
        self.partitions.retain(|p| {
            let keep = !all && p.until > now;
            if !keep {
                healed.push(p.name.clone());
            }
            keep
        });
        healed
    }

    pub(crate) fn partitioned(&self) -> bool {
        !self.partitions.is_empty()
    }

    pub(crate) fn slow_down(&mut self, from: u64, to: u64, until: u64, extra: u64) {
        if let Some(link) = self.links.get_mut(&(from, to)) {
            link.slow = Some((until, extra));
        }
    }

    pub(crate) fn clear_slow(&mut self) {
        for link in self.links.values_mut() {
            link.slow = None;
        }
    }
}
