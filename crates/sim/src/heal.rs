//! The end of a run: everything heals and restarts, the cluster settles,
//! every node answers a final linearizable read, and the final state of
//! every replica is checked against the history.

use crate::checks::{exactly_once, linearizability, liveness, lost_writes, stale_reads};
use crate::checks::{FinalState, Violation};
use crate::client::{Client, READ_ALL};
use crate::history::{OpKind, Outcome};
use crate::sim::{Phase, Sim, Waiter, QUIET_TICKS, SETUP_TICKS_MAX};
use paxsql_replica::{ClientRequest, ReplicaStatus, Role};
use paxsql_sql::SqlEngine;
use paxsql_types::{ReadLevel, Statement, StmtResult, Value};
use std::collections::BTreeMap;

impl Sim {
    pub(crate) fn advance_phase(&mut self) {
        match self.phase {
            Phase::Setup { .. } if self.now > SETUP_TICKS_MAX => {
                let statuses = self.all_statuses();
                self.violations.push(liveness::stuck(
                    self.now,
                    self.now,
                    "the tables were never created",
                    &statuses,
                ));
                self.phase = Phase::Done;
            }
            Phase::Workload { until } if self.now >= until => self.begin_heal(),
            Phase::Heal { since, .. } if self.now - since > self.cfg.heal_ticks_max => {
                let statuses = self.all_statuses();
                let why = self.not_converged().unwrap_or("final reads unanswered");
                self.violations
                    .push(liveness::stuck(self.now, self.now - since, why, &statuses));
                self.phase = Phase::Done;
            }
            Phase::Heal {
                since,
                probing,
                quiet_since,
            } => {
                let converged = self.not_converged().is_none();
                let quiet_since = match (converged, quiet_since) {
                    (false, _) => None,
                    (true, None) => Some(self.now),
                    (true, q) => q,
                };
                let quiet = quiet_since.is_some_and(|q| self.now - q >= QUIET_TICKS);
                if quiet && !probing {
                    self.start_probes();
                    self.phase = Phase::Heal {
                        since,
                        probing: true,
                        quiet_since: None,
                    };
                } else if quiet && self.probes.values().all(|p| p.1) {
                    self.phase = Phase::Done;
                } else {
                    self.phase = Phase::Heal {
                        since,
                        probing,
                        quiet_since,
                    };
                }
            }
            _ => {}
        }
    }

    pub(crate) fn begin_heal(&mut self) {
        let now = self.now;
        self.trace.event(now, || {
            "workload over: healing everything, restarting every node".into()
        });
        for name in self.net.heal(now, true) {
            self.trace.event(now, || format!("heal: {name}"));
        }
        self.net.clear_slow();
        for node in self.nodes.values_mut() {
            if !node.alive() {
                node.restart_at = node.restart_at.min(now + 1);
            }
        }
        self.phase = Phase::Heal {
            since: now,
            probing: false,
            quiet_since: None,
        };
    }

    /// Why the cluster is not yet settled, if it is not.
    pub(crate) fn not_converged(&mut self) -> Option<&'static str> {
        if self.nodes.values().any(|n| !n.alive()) {
            return Some("a node is down");
        }
        if self.net.partitioned() || !self.net.all_up() {
            return Some("a session is down");
        }
        if !self.clients.iter().all(Client::idle) {
            return Some("client operations in flight");
        }
        if self.shard.as_ref().is_some_and(|s| !s.idle()) {
            return Some("a shard map change in flight");
        }
        for g in self.group_ids() {
            let statuses = self.statuses(g);
            let decided = statuses.iter().map(|s| s.decided.0).max().unwrap_or(0);
            if statuses
                .iter()
                .any(|s| s.applied.0 != decided || s.decided.0 != decided)
            {
                return Some("replicas have not applied the same entries");
            }
            if !statuses.iter().any(|s| s.role == Role::Leader) {
                return Some("no leader");
            }
        }
        None
    }

    pub(crate) fn start_probes(&mut self) {
        self.trace.event(self.now, || {
            "settled: a final linearizable read at every node".into()
        });
        for id in self.node_ids() {
            let op = self
                .history
                .invoke(usize::MAX, OpKind::ReadAll, id, self.now);
            self.probes.insert(id, (op, false));
            self.submit_probe(id, op);
        }
    }

    /// The final read at a node: of its one group, or of every data group
    /// (the parts are put together in `probe_part`).
    pub(crate) fn submit_probe(&mut self, node: u64, op: usize) {
        let groups: Vec<u32> = match &mut self.shard {
            None => vec![0],
            Some(shard) => {
                shard.probe_parts.remove(&node);
                (1..self.groups).collect()
            }
        };
        for g in groups {
            self.submit_probe_part(node, g, op);
        }
    }

    /// The final read at a node, of one group.
    pub(crate) fn submit_probe_part(&mut self, node: u64, g: u32, op: usize) {
        let token = self.next_token;
        self.next_token += 1;
        self.tokens.insert(token, (Waiter::Probe(node, g), op));
        let req = ClientRequest::Read {
            stmts: vec![Statement::new(READ_ALL)],
            level: ReadLevel::Linearizable,
        };
        self.replica(node, g).submit(token, req);
    }

    /// A final read at `node` is answered (all its parts).
    pub(crate) fn probe_done(&mut self, node: u64, op: usize, outcome: Outcome) {
        self.history.complete(op, outcome, self.now);
        self.probes.insert(node, (op, true));
        let d = self.history.ops[op].describe();
        self.trace.event(self.now, || format!("final read: {d}"));
    }

    /// The live replicas of group `g`.
    pub(crate) fn statuses(&self, g: u32) -> Vec<ReplicaStatus> {
        self.nodes
            .values()
            .filter_map(|n| n.slot(g).replica.as_ref().map(|r| r.status()))
            .collect()
    }

    /// The live replicas of every group.
    pub(crate) fn all_statuses(&self) -> Vec<ReplicaStatus> {
        self.group_ids().flat_map(|g| self.statuses(g)).collect()
    }

    /// `" group g"` in a sharded run, nothing otherwise (traces).
    pub(crate) fn group_label(&self, g: u32) -> String {
        match self.groups {
            1 => String::new(),
            _ => format!(" group {g}"),
        }
    }

    /// Records what a per-group watcher found, naming the group in a
    /// sharded run.
    pub(crate) fn found(&mut self, g: u32, found: impl IntoIterator<Item = Violation>) {
        let label = self.group_label(g);
        for mut v in found {
            if !label.is_empty() {
                v.detail = format!("{}: {}", label.trim_start(), v.detail);
            }
            self.violations.push(v);
        }
    }

    pub(crate) fn final_checks(&mut self) {
        let now = self.now;
        self.history.close(now);
        // What each group's replicas hold, and (for the history checks) what
        // each node holds over all of its groups.
        let data_groups: Vec<u32> = match self.groups {
            1 => vec![0],
            n => (1..n).collect(),
        };
        let mut per_group: BTreeMap<u32, Vec<FinalState>> = BTreeMap::new();
        for id in self.alive_nodes() {
            for g in self.group_ids() {
                let with_rows = data_groups.contains(&g);
                match self.final_state(id, g, with_rows) {
                    Ok(f) => per_group.entry(g).or_default().push(f),
                    Err(e) => self.violations.push(Violation {
                        check: "replica_error",
                        tick: now,
                        detail: format!(
                            "node {id}{}: reading the final state: {e}",
                            self.group_label(g)
                        ),
                    }),
                }
            }
        }
        let finals = merge_groups(&per_group, &data_groups);
        // A stuck run's final state is not the settled state the checks
        // below assume; the liveness violation already says what is wrong.
        let settled = !self.violations.iter().any(|v| v.check == "liveness");
        let mut found = Vec::new();
        found.extend(linearizability::check(&self.history, now));
        found.extend(stale_reads::check(&self.history, now));
        if settled {
            found.extend(lost_writes::check(&self.history, &finals, now));
            for (&g, fs) in &per_group {
                let v = self.divergence[g as usize].finish(fs, now);
                self.found(g, v);
            }
            if self.shard.is_some() {
                found.extend(self.ownership_check(&per_group));
            }
        }
        found.extend(exactly_once::check(&self.history, &finals, now));
        self.violations.extend(found);
    }

    /// Group `g`'s replica at node `id` after the heal: its applied index
    /// and hash, and with `rows` its `kv` and `ops` tables.
    pub(crate) fn final_state(
        &mut self,
        id: u64,
        g: u32,
        rows: bool,
    ) -> Result<FinalState, String> {
        let replica = self.replica(id, g);
        let applied = replica.status().applied.0;
        let engine = replica.engine_mut();
        let hash = engine.state_hash().map_err(|e| e.to_string())?;
        let mut state = FinalState {
            node: id,
            applied,
            hash,
            kv: BTreeMap::new(),
            ops: BTreeMap::new(),
        };
        if !rows {
            return Ok(state);
        }
        let results = engine.query(&[
            Statement::new("SELECT k, v FROM kv"),
            Statement::new("SELECT req, count(*) FROM ops GROUP BY req"),
        ]);
        let rows = |r: &StmtResult| -> Result<Vec<Vec<Value>>, String> {
            match r {
                StmtResult::Rows { values, .. } => Ok(values.clone()),
                other => Err(format!("{other:?}")),
            }
        };
        for row in rows(&results[0])? {
            if let (Value::Integer(k), Value::Integer(v)) = (&row[0], &row[1]) {
                state.kv.insert(*k, *v);
            }
        }
        for row in rows(&results[1])? {
            if let (Value::Text(req), Value::Integer(n)) = (&row[0], &row[1]) {
                state.ops.insert(req.clone(), *n as u64);
            }
        }
        Ok(state)
    }
}

/// What each node holds over its data groups: every group's `kv` rows and
/// `ops` counts added up (a key held by two groups is the ownership
/// check's to report; here the higher group's value stands). Applied index
/// and hash are per group (checked per group), so 0 here.
fn merge_groups(per_group: &BTreeMap<u32, Vec<FinalState>>, data: &[u32]) -> Vec<FinalState> {
    let mut by_node: BTreeMap<u64, FinalState> = BTreeMap::new();
    for g in data {
        for f in per_group.get(g).into_iter().flatten() {
            let merged = by_node.entry(f.node).or_insert_with(|| FinalState {
                node: f.node,
                applied: 0,
                hash: 0,
                kv: BTreeMap::new(),
                ops: BTreeMap::new(),
            });
            merged.kv.extend(f.kv.iter().map(|(k, v)| (*k, *v)));
            for (req, n) in &f.ops {
                *merged.ops.entry(req.clone()).or_default() += n;
            }
        }
    }
    by_node.into_values().collect()
}
