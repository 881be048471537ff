//! The fault injector: at random ticks of the load, one fault of the kinds
//! the seed allows (see `FaultKind`), and what a crash does to a node, its
//! sessions and the clients waiting on it.

use crate::config::FaultKind;
use crate::net::Partition;
use crate::sim::{Phase, Sim, Waiter};
use std::collections::BTreeSet;

impl Sim {
    pub(crate) fn maybe_fault(&mut self) {
        if !self.cfg.faults || !matches!(self.phase, Phase::Workload { .. }) {
            return;
        }
        if let Some((x, by, lose_database)) = self.crash_pending {
            let node = &self.nodes[&x];
            if !node.alive() {
                self.crash_pending = None;
            } else if node.unsynced_bytes().iter().sum::<usize>() > 0 || self.now >= by {
                self.crash_pending = None;
                let keep = self.torn_tail(x);
                let at = self.now + self.rng.between(1, 200);
                self.crash(x, keep, lose_database, at);
            }
        }
        if !self.rng.chance(1.0 / self.params.fault_every_ticks as f64) {
            return;
        }
        let kind = self.params.pick_fault(&mut self.rng);
        let ids = self.node_ids();
        let n = ids.len();
        let now = self.now;
        match kind {
            FaultKind::SessionLoss => {
                let up = self.net.up_links();
                if up.is_empty() {
                    return;
                }
                let (a, b) = *self.rng.pick(&up);
                let back = now + self.rng.between(1, 20);
                if let Some(lost) = self.net.break_session(a, b, back) {
                    self.stats.session_losses += 1;
                    self.trace.event(now, || {
                        format!(
                            "session {a}->{b} lost ({lost} in flight dropped), back at t>={back}"
                        )
                    });
                }
            }
            FaultKind::Isolate => {
                let leader = self
                    .cfg
                    .isolate_leaders
                    .then(|| self.leader_of_group_0())
                    .flatten();
                let x = match leader {
                    Some(l) => l,
                    None => *self.rng.pick(&ids),
                };
                let cut = self.cut_between(&[x], &others(&ids, &[x]));
                let what = if leader.is_some() { "leader" } else { "node" };
                self.start_partition(format!("{what} {x} isolated"), cut);
            }
            FaultKind::Split => {
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                let minority = self.rng.between(1, ((n - 1) / 2) as u64) as usize;
                let (a, b) = shuffled.split_at(minority);
                let cut = self.cut_between(a, b);
                self.start_partition(format!("split {a:?} | {b:?}"), cut);
            }
            FaultKind::OneWay => {
                let x = *self.rng.pick(&ids);
                let rest = others(&ids, &[x]);
                let (name, cut): (String, BTreeSet<(u64, u64)>) = match self.rng.below(3) {
                    0 => {
                        let y = *self.rng.pick(&rest);
                        (format!("one-way: {x}->{y} cut"), [(x, y)].into())
                    }
                    1 => (
                        format!("one-way: node {x} deaf (hears nobody)"),
                        rest.iter().map(|&y| (y, x)).collect(),
                    ),
                    _ => (
                        format!("one-way: node {x} mute (nobody hears it)"),
                        rest.iter().map(|&y| (x, y)).collect(),
                    ),
                };
                self.start_partition(name, cut);
            }
            FaultKind::Bridge => {
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                let bridge = shuffled[0];
                let rest = &shuffled[1..];
                let left = self.rng.between(1, (rest.len() - 1) as u64) as usize;
                let (a, b) = rest.split_at(left);
                let cut = self.cut_between(a, b);
                self.start_partition(format!("bridge: {a:?} | {bridge} | {b:?}"), cut);
            }
            FaultKind::Crash => {
                let alive = self.alive_nodes();
                if alive.is_empty() {
                    return;
                }
                // The crash waits (a little) for the node to have unsynced
                // log bytes: then it has something to lose or tear.
                let x = *self.rng.pick(&alive);
                let by = now + self.rng.between(0, 30);
                self.crash_pending = Some((x, by, false));
            }
            FaultKind::LoseDatabase => {
                // Only while every other node holds its data: below a
                // node's trimmed prefix its database is the only copy it
                // has, so two nodes without theirs could lose decided
                // entries for good (more disks lost than the cluster
                // can stand).
                let alive = self.alive_nodes();
                if alive.is_empty() {
                    return;
                }
                let x = *self.rng.pick(&alive);
                let others_whole = self
                    .nodes
                    .values()
                    .filter(|n| n.id != x)
                    .all(|n| n.holds_its_data());
                if !others_whole {
                    self.trace.event(now, || {
                        format!("database loss at node {x} skipped: another node lacks its data")
                    });
                    return;
                }
                let by = now + self.rng.between(0, 30);
                self.crash_pending = Some((x, by, true));
            }
            FaultKind::CrashAll => {
                self.trace
                    .event(now, || "power loss: every node crashes".into());
                for x in self.alive_nodes() {
                    let keep = self.torn_tail(x);
                    let at = now + self.rng.between(1, 100);
                    self.crash(x, keep, false, at);
                }
            }
            FaultKind::SlowLink => {
                let links = self.net.all_links();
                let (a, b) = *self.rng.pick(&links);
                let until = now + self.rng.between(20, 200);
                let extra = self.rng.between(5, 40);
                self.net.slow_down(a, b, until, extra);
                self.trace.event(now, || {
                    format!("link {a}->{b} slow (+{extra} ticks) until t={until}")
                });
            }
        }
    }

    /// The node that most live replicas of group 0 believe leads it.
    fn leader_of_group_0(&self) -> Option<u64> {
        let mut votes: std::collections::BTreeMap<u64, usize> = Default::default();
        for n in self.nodes.values() {
            let believed = n.slot(0).replica.as_ref().and_then(|r| r.status().leader);
            if let Some(l) = believed {
                *votes.entry(l.0).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|&(id, v)| (v, std::cmp::Reverse(id)))
            .map(|(id, _)| id)
    }

    pub(crate) fn cut_between(&self, a: &[u64], b: &[u64]) -> BTreeSet<(u64, u64)> {
        let mut cut = BTreeSet::new();
        for &x in a {
            for &y in b {
                cut.insert((x, y));
                cut.insert((y, x));
            }
        }
        cut
    }

    pub(crate) fn start_partition(&mut self, name: String, cut: BTreeSet<(u64, u64)>) {
        let until = self.now + self.rng.between(10, 300);
        self.stats.partitions += 1;
        let now = self.now;
        self.trace
            .event(now, || format!("partition: {name} until t={until}"));
        let back = now + 1;
        let broken = self.net.partition(Partition { name, cut, until }, back);
        for (a, b, lost) in broken {
            self.trace.event(now, || {
                format!("session {a}->{b} broken ({lost} in flight dropped)")
            });
        }
    }

    /// How many unsynced bytes of each log a crash of `x` keeps: usually
    /// none, sometimes a torn prefix, sometimes all (the page cache made it).
    pub(crate) fn torn_tail(&mut self, x: u64) -> Vec<usize> {
        let unsynced = self.nodes[&x].unsynced_bytes();
        unsynced
            .into_iter()
            .map(|u| match self.rng.below(4) {
                0 | 1 => 0,
                2 => self.rng.between(0, u as u64) as usize,
                _ => u,
            })
            .collect()
    }

    pub(crate) fn crash(
        &mut self,
        id: u64,
        keep_unsynced: Vec<usize>,
        lose_database: bool,
        restart_at: u64,
    ) {
        let unsynced: usize = self.nodes[&id].unsynced_bytes().iter().sum();
        let before = self.trace.events().then(|| {
            let s = self.nodes[&id]
                .slot(0)
                .replica
                .as_ref()
                .expect("alive")
                .status();
            format!(
                " (log {}..{}, decided {}, applied {})",
                s.compacted.0, s.accepted.0, s.decided.0, s.applied.0
            )
        });
        let node = self.nodes.get_mut(&id).expect("known node");
        node.crash(&keep_unsynced, lose_database);
        let keep_unsynced: usize = keep_unsynced.iter().sum();
        node.restart_at = restart_at;
        self.stats.crashes += 1;
        if lose_database {
            self.stats.database_losses += 1;
        }
        let now = self.now;
        self.trace.event(now, || {
            format!(
                "crash node {id}{}: kept {keep_unsynced} of {unsynced} unsynced log bytes{}; restart at t={restart_at}",
                before.unwrap_or_default(),
                if lose_database {
                    "; its database file is lost (log kept)"
                } else {
                    ""
                }
            )
        });
        for (a, b) in self.net.links_of(id) {
            if let Some(lost) = self.net.break_session(a, b, now + 1) {
                self.trace.event(now, || {
                    format!("session {a}->{b} broken ({lost} in flight dropped)")
                });
            }
        }
        self.clients_lose(id);
        self.admin_lose(id);
        // A final read waiting there is asked again after the restart.
        self.tokens
            .retain(|_, (w, _)| !matches!(w, Waiter::Probe(n, _) if *n == id));
        self.roles.retain(|&(n, _), _| n != id);
    }
}

fn others(ids: &[u64], except: &[u64]) -> Vec<u64> {
    ids.iter()
        .copied()
        .filter(|x| !except.contains(x))
        .collect()
}
