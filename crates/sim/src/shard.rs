//! Sharded runs (`--groups N`): every node hosts the metadata group 0 and
//! `N` data groups, each the real [`paxsql_replica::Replica`] with its own
//! log and SQLite file; all of a node's groups crash and restart together
//! and share its network sessions.
//!
//! The register table `kv` is placed as one range on group 1 and then, in
//! the fault schedule, split and moved between the data groups by the same
//! steps, directives and apply-time checks as `crates/router`'s `ALTER TABLE
//! .. SPLIT AT` and `RELOCATE` (docs/sharding.md):
//!
//! - **split**: a compare-and-set of the map at the metadata group
//!   ([`RangeChange::split`]), then the data group is given its new ranges;
//! - **relocate**: the source drops the range (it refuses claimed writes
//!   from then on and keeps its rows), its rows are read (linearizable) and
//!   written to the target with the range at the next generation, the map
//!   names the target (compare-and-set), the source deletes the rows.
//!
//! Clients route by their own copy of the map, refreshed from a random
//! node's metadata replica only when a group says "wrong range" (so it is
//! often stale). A write starts with `PAXSQL CLAIM [[range, generation]]`; a
//! read starts with the claim check and is good only if the group holds the
//! claim. A write whose outcome is unknown is retried at the **same** group
//! with the same request id until that group answers for sure; only a
//! "wrong range" answer (the claim failed there, so the write can never
//! apply there) sends it on, under a new request id (the group would
//! answer the old one from its table of answered requests), to the group
//! the refreshed map names.
//!
//! The checks: every client operation goes into the same history as in a
//! one-group run (linearizable registers, no lost or doubled write, each
//! request id applied once over all groups), and after the heal
//! [`Sim::ownership_check`] reads every replica: each group's table of
//! ranges is what the map gives it, each row lies on the group owning its
//! key, no key is on two groups. `--unclaimed-writes` drops the claims to
//! show that a router without them loses acknowledged writes.

use crate::checks::{FinalState, Violation};
use crate::client::{
    read_outcome, write_verdict, ClientState, WriteVerdict, READ_KV, SETUP, WRITE_KV, WRITE_OPS,
};
use crate::history::{OpKind, Outcome};
use crate::sim::{Phase, Sim, Waiter};
use paxsql_replica::ClientRequest;
use paxsql_sql::ranges::{
    claim_check_sql, Directive, RangeChange, RangeRow, READ_RANGES, WRONG_RANGE,
};
use paxsql_sql::SqlEngine;
use paxsql_types::{
    Params, ReadLevel, RequestError, RequestId, Response, Statement, StmtResult, Value,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The sharded table.
const TABLE: &str = "kv";
/// Times one operation is sent to another group before it gives up.
const REROUTES_MAX: u32 = 30;
/// Ticks a map change step waits for its answer before asking again.
const STEP_TIMEOUT_TICKS: u64 = 100;

/// A change of ranges as a statement.
fn ranges(change: RangeChange) -> Statement {
    Directive::Ranges(change).statement()
}

/// A read's answer: each key with its value, if it has one.
type Registers = Vec<(i64, Option<i64>)>;

/// Where a client operation went.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) group: u32,
    /// The range and generation claimed (none for the setup's steps).
    pub(crate) claim: Option<(u64, u64)>,
    /// Times the operation was sent to another group already.
    pub(crate) reroutes: u32,
}

/// What a sharded run keeps beside the one-group state.
#[derive(Debug)]
pub(crate) struct ShardState {
    /// The `kv` ranges as the map changes made them: after the setup they
    /// are the only writer of the map, so this is what it must say.
    pub(crate) map: Vec<RangeRow>,
    /// The setup's writes still to send: (group, statements).
    setup: VecDeque<(u32, Vec<Statement>)>,
    job: Option<Job>,
    /// Map changes started so far (each one's request ids are its own).
    jobs: u64,
    /// No new map change before this tick.
    next_change_at: u64,
    /// The step sent and not yet answered.
    wait: Option<StepWait>,
    /// A step to send again from this tick on.
    retry_at: Option<u64>,
    /// Final reads answered so far: node -> group -> rows.
    pub(crate) probe_parts: BTreeMap<u64, BTreeMap<u32, Registers>>,
    /// Map changes done (splits, relocations) and operations sent to
    /// another group after a "wrong range".
    pub(crate) splits: u64,
    pub(crate) relocations: u64,
    pub(crate) reroutes: u64,
}

#[derive(Debug)]
struct StepWait {
    token: u64,
    node: u64,
    deadline: u64,
}

/// A map change in progress, and its next step.
#[derive(Clone, Debug)]
enum Job {
    Split {
        r: RangeRow,
        at: i64,
        id: u64,
        step: u8,
    },
    Relocate {
        r: RangeRow,
        to: u32,
        step: u8,
        /// The rows read from the source.
        rows: Vec<Vec<Value>>,
    },
}

/// One step: a write or a (linearizable) read at a group.
enum Step {
    Write(u32, Vec<Statement>),
    Read(u32, Statement),
}

impl ShardState {
    pub(crate) fn new(data_groups: u32) -> ShardState {
        let first = RangeRow {
            range: 1,
            table: TABLE.into(),
            start: None,
            end: None,
            group: 1,
            generation: 1,
            pk: Some("k".into()),
        };
        let mut setup: VecDeque<(u32, Vec<Statement>)> = (1..=data_groups)
            .map(|g| {
                let mut stmts: Vec<Statement> = SETUP.iter().map(|s| Statement::new(*s)).collect();
                if g == first.group {
                    stmts.push(ranges(RangeChange {
                        put: vec![first.clone()],
                        ..RangeChange::default()
                    }));
                }
                (g, stmts)
            })
            .collect();
        setup.push_back((
            0,
            vec![ranges(RangeChange {
                new_table: Some(TABLE.into()),
                put: vec![first.clone()],
                ..RangeChange::default()
            })],
        ));
        ShardState {
            map: vec![first],
            setup,
            job: None,
            jobs: 0,
            next_change_at: 0,
            wait: None,
            retry_at: None,
            probe_parts: BTreeMap::new(),
            splits: 0,
            relocations: 0,
            reroutes: 0,
        }
    }

    /// No map change in flight.
    pub(crate) fn idle(&self) -> bool {
        self.job.is_none()
    }

    /// The ranges the map gives group `g`.
    fn ranges_of(&self, g: u32) -> Vec<RangeRow> {
        self.map.iter().filter(|r| r.group == g).cloned().collect()
    }
}

impl Job {
    /// The next step, or `None` when the change is complete.
    fn step(&self, shard: &ShardState) -> Option<Step> {
        match self {
            Job::Split { r, at, id, step } => match step {
                0 => Some(Step::Write(
                    0,
                    vec![ranges(RangeChange::split(r, *at, *id))],
                )),
                1 => Some(Step::Write(
                    r.group,
                    vec![ranges(RangeChange {
                        replace_table: Some(TABLE.into()),
                        put: shard.ranges_of(r.group),
                        ..RangeChange::default()
                    })],
                )),
                _ => None,
            },
            Job::Relocate { r, to, step, rows } => {
                let moved = r.moved_to(*to);
                let filter = r.key_filter();
                match step {
                    0 => Some(Step::Write(
                        r.group,
                        vec![ranges(RangeChange {
                            drop: vec![r.range],
                            ..RangeChange::default()
                        })],
                    )),
                    1 => Some(Step::Read(
                        r.group,
                        Statement::new(format!("SELECT k, v FROM kv{filter} ORDER BY k")),
                    )),
                    2 => {
                        let mut stmts = vec![
                            ranges(RangeChange {
                                put: vec![moved],
                                ..RangeChange::default()
                            }),
                            Statement::new(format!("DELETE FROM kv{filter}")),
                        ];
                        stmts.extend(rows.iter().map(|row| Statement {
                            sql: "INSERT INTO kv (k, v) VALUES (?1, ?2)".into(),
                            params: Params::Positional(row.clone()),
                        }));
                        Some(Step::Write(*to, stmts))
                    }
                    3 => Some(Step::Write(
                        0,
                        vec![ranges(RangeChange {
                            expect: vec![(r.range, Some(r.generation))],
                            put: vec![moved],
                            ..RangeChange::default()
                        })],
                    )),
                    4 => Some(Step::Write(
                        r.group,
                        vec![Statement::new(format!("DELETE FROM kv{filter}"))],
                    )),
                    _ => None,
                }
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Job::Split { r, at, id, step } => format!(
                "split of range {} (gen {}, group {}) at {at} (new range {id}), step {step}",
                r.range, r.generation, r.group
            ),
            Job::Relocate { r, to, step, .. } => format!(
                "relocation of range {} (gen {}) from group {} to group {to}, step {step}",
                r.range, r.generation, r.group
            ),
        }
    }
}

impl Sim {
    fn shard(&mut self) -> &mut ShardState {
        self.shard.as_mut().expect("a sharded run")
    }

    // ----- the setup ------------------------------------------------------

    /// Sends the setup's next write (tables and first range on the data
    /// groups, then the map); `false` when there is none left.
    pub(crate) fn next_setup_step(&mut self, op: usize) -> bool {
        let Some(shard) = self.shard.as_mut() else {
            return false;
        };
        let Some((group, stmts)) = shard.setup.pop_front() else {
            return false;
        };
        let req = ClientRequest::Write {
            id: RequestId(format!("setup-{group}")),
            stmts,
            transaction: true,
            env: self.env(),
        };
        let route = Route {
            group,
            claim: None,
            reroutes: 0,
        };
        self.send_attempt(0, op, 1, req, Some(route));
        true
    }

    // ----- clients --------------------------------------------------------

    /// Sends client `i`'s operation `op` to the group its map says owns the
    /// key, with a claim of the range.
    pub(crate) fn send_routed(&mut self, i: usize, op: usize, reroutes: u32) {
        if reroutes > 0 || self.clients[i].map.is_empty() {
            self.refresh_map(i);
        }
        let (key, write) = match &self.history.ops[op].kind {
            OpKind::Write { key, value, req } => (*key, Some((*value, req.clone()))),
            OpKind::Read { key, .. } => (*key, None),
            other => unreachable!("clients route writes and reads, not {other:?}"),
        };
        let Some(r) = self.clients[i].map.iter().find(|r| r.holds(key)).cloned() else {
            // The node asked had no map yet: ask another one shortly.
            let at = self.now + self.rng.between(1, 5);
            self.clients[i].state = ClientState::Reroute {
                op,
                reroutes: reroutes + 1,
                at,
            };
            return;
        };
        let claim = (r.range, r.generation);
        let int = Value::Integer;
        let req = match write {
            Some((value, id)) => {
                let mut stmts = Vec::new();
                if !self.cfg.unclaimed_writes {
                    stmts.push(Directive::Claim(vec![claim]).statement());
                }
                stmts.push(Statement {
                    sql: WRITE_KV.into(),
                    params: Params::Positional(vec![int(key), int(value)]),
                });
                stmts.push(Statement {
                    sql: WRITE_OPS.into(),
                    params: Params::Positional(vec![Value::Text(id.clone())]),
                });
                // A group that answered "wrong range" keeps that answer for
                // the request id: the write goes on under a new one (the
                // one in `ops` stays the operation's).
                let id = match reroutes {
                    0 => id,
                    n => format!("{id}/{n}"),
                };
                ClientRequest::Write {
                    id: RequestId(id),
                    stmts,
                    transaction: true,
                    env: self.env(),
                }
            }
            None => {
                let OpKind::Read { level, .. } = self.history.ops[op].kind else {
                    unreachable!("a read")
                };
                ClientRequest::Read {
                    stmts: vec![
                        Statement::new(claim_check_sql(&[claim])),
                        Statement {
                            sql: READ_KV.into(),
                            params: Params::Positional(vec![int(key)]),
                        },
                    ],
                    level,
                }
            }
        };
        let route = Route {
            group: r.group,
            claim: Some(claim),
            reroutes,
        };
        self.send_attempt(i, op, 1, req, Some(route));
    }

    /// Client `i`'s copy of the map, from a random live node's metadata
    /// replica as it is now (possibly behind).
    fn refresh_map(&mut self, i: usize) {
        let alive = self.alive_nodes();
        if alive.is_empty() {
            return;
        }
        let node = *self.rng.pick(&alive);
        if let Some(map) = self.ranges_at(node, 0) {
            self.clients[i].map = map;
        }
    }

    /// The `kv` ranges of group `g`'s replica at `node`, by start key;
    /// `None` if they cannot be read.
    fn ranges_at(&mut self, node: u64, g: u32) -> Option<Vec<RangeRow>> {
        let sql = format!("{READ_RANGES} WHERE tbl = '{TABLE}'");
        let engine = self.replica(node, g).engine_mut();
        let rows = match engine.query(&[Statement::new(sql)]).pop() {
            Some(StmtResult::Rows { values, .. }) => values,
            _ => return None,
        };
        let mut ranges: Vec<RangeRow> = rows.iter().filter_map(|r| RangeRow::from_row(r)).collect();
        ranges.sort_by_key(|r| r.start.map_or(i128::MIN, i128::from));
        Some(ranges)
    }

    /// A routed operation's answer: `Some` to go on with (a read's claim
    /// check taken off), `None` when the operation went to another group.
    pub(crate) fn routed_reply(
        &mut self,
        i: usize,
        op: usize,
        result: Result<Response, RequestError>,
    ) -> Option<Result<Response, RequestError>> {
        let ClientState::Waiting(a) = &self.clients[i].state else {
            return Some(result);
        };
        let Some(Route {
            claim: Some(claim),
            reroutes,
            group,
        }) = a.route.clone()
        else {
            return Some(result); // a setup step
        };
        let Ok(mut response) = result else {
            return Some(result);
        };
        let wrong = match self.history.ops[op].kind {
            OpKind::Write { .. } => response.results.iter().find_map(|r| match r {
                StmtResult::Error(e) if e.starts_with(WRONG_RANGE) => Some(e.clone()),
                _ => None,
            }),
            _ => {
                let check = (!response.results.is_empty()).then(|| response.results.remove(0));
                match check {
                    Some(StmtResult::Rows { values, .. }) => {
                        let held: BTreeSet<(i64, i64)> = values
                            .iter()
                            .filter_map(|row| match row[..] {
                                [Value::Integer(r), Value::Integer(g)] => Some((r, g)),
                                _ => None,
                            })
                            .collect();
                        let wanted = BTreeSet::from([(claim.0 as i64, claim.1 as i64)]);
                        (held != wanted).then(|| {
                            format!(
                                "{WRONG_RANGE}: group {group} does not hold range {} at \
                                 generation {}",
                                claim.0, claim.1
                            )
                        })
                    }
                    other => {
                        // Not served (e.g. the group has not applied the setup).
                        let why = format!("claim check answered {other:?}");
                        return Some(Err(RequestError::Unavailable(why)));
                    }
                }
            }
        };
        let Some(why) = wrong else {
            return Some(Ok(response));
        };
        self.shard().reroutes += 1;
        let n = reroutes + 1;
        self.trace
            .event(self.now, || format!("client {i}: {why}; re-route {n}"));
        if n > REROUTES_MAX {
            self.finish(i, op, Outcome::Fail(format!("{why} ({n} groups tried)")));
        } else {
            let at = self.now + self.rng.between(1, 5);
            self.clients[i].state = ClientState::Reroute {
                op,
                reroutes: n,
                at,
            };
        }
        None
    }

    // ----- map changes ----------------------------------------------------

    /// The map changes' turn: starts one now and then (during the load),
    /// sends each step, asks again after a timeout.
    pub(crate) fn admin_act(&mut self) {
        let now = self.now;
        let loading = matches!(self.phase, Phase::Workload { .. });
        let shard = self.shard();
        if let Some(w) = &shard.wait {
            if now >= w.deadline {
                let token = w.token;
                shard.wait = None;
                shard.retry_at = Some(now);
                self.tokens.remove(&token);
                self.trace
                    .event(now, || "map change step timed out; asking again".into());
            }
            return;
        }
        if shard.job.is_none() {
            if !loading || now < shard.next_change_at {
                return;
            }
            let job = self.choose_job();
            let shard = self.shard();
            shard.jobs += 1;
            shard.retry_at = None;
            shard.job = job;
        }
        let shard = self.shard();
        if shard.retry_at.is_some_and(|at| at > now) {
            return;
        }
        let Some(job) = shard.job.clone() else {
            return;
        };
        let step = match job.step(shard) {
            Some(step) => step,
            None => {
                match job {
                    Job::Split { .. } => shard.splits += 1,
                    Job::Relocate { .. } => shard.relocations += 1,
                }
                shard.job = None;
                let every = self.params.map_change_every_ticks;
                let next = now + self.rng.between(1, 2 * every);
                self.shard().next_change_at = next;
                let d = job.describe();
                self.trace.event(now, || format!("map change done: {d}"));
                return;
            }
        };
        self.send_step(&job, step);
    }

    /// A split of a range at a key inside it, or a relocation of a range to
    /// another data group.
    fn choose_job(&mut self) -> Option<Job> {
        let keys = self.params.keys;
        let data_groups = self.groups - 1;
        let map = self.shard().map.clone();
        let splits: Vec<(RangeRow, i64)> = map
            .iter()
            .flat_map(|r| {
                (2..=keys)
                    .filter(|&k| r.holds(k) && r.start != Some(k))
                    .map(move |k| (r.clone(), k))
            })
            .collect();
        let relocate = data_groups > 1 && (splits.is_empty() || self.rng.chance(0.5));
        if relocate {
            let r = self.rng.pick(&map).clone();
            let others: Vec<u32> = (1..=data_groups).filter(|&g| g != r.group).collect();
            let to = *self.rng.pick(&others);
            Some(Job::Relocate {
                r,
                to,
                step: 0,
                rows: Vec::new(),
            })
        } else if !splits.is_empty() {
            let (r, at) = self.rng.pick(&splits).clone();
            let id = map.iter().map(|r| r.range).max().unwrap_or(0) + 1;
            Some(Job::Split { r, at, id, step: 0 })
        } else {
            None
        }
    }

    fn send_step(&mut self, job: &Job, step: Step) {
        let alive = self.alive_nodes();
        if alive.is_empty() {
            self.shard().retry_at = Some(self.now + 5);
            return;
        }
        let node = *self.rng.pick(&alive);
        let (group, req) = match step {
            Step::Write(group, stmts) => {
                let id = {
                    let shard = self.shard();
                    let step = match job {
                        Job::Split { step, .. } | Job::Relocate { step, .. } => step,
                    };
                    format!("map-{}-{step}", shard.jobs)
                };
                let req = ClientRequest::Write {
                    id: RequestId(id),
                    stmts,
                    transaction: true,
                    env: self.env(),
                };
                (group, req)
            }
            Step::Read(group, stmt) => (
                group,
                ClientRequest::Read {
                    stmts: vec![stmt],
                    level: ReadLevel::Linearizable,
                },
            ),
        };
        let token = self.next_token;
        self.next_token += 1;
        self.tokens.insert(token, (Waiter::Admin, usize::MAX));
        let d = job.describe();
        self.trace.event(self.now, || {
            format!("map change -> node {node} group {group}: {d}")
        });
        self.replica(node, group).submit(token, req);
        let deadline = self.now + STEP_TIMEOUT_TICKS;
        self.shard().wait = Some(StepWait {
            token,
            node,
            deadline,
        });
    }

    /// A step's answer: the next step, the same again, or (a step that
    /// failed for sure) a finding.
    pub(crate) fn admin_reply(&mut self, result: Result<Response, RequestError>) {
        let now = self.now;
        self.shard().wait = None;
        let Some(mut job) = self.shard().job.clone() else {
            return;
        };
        let is_read = matches!(job, Job::Relocate { step: 1, .. });
        let verdict = match (&result, is_read) {
            (Ok(r), true) => match r.results.first() {
                Some(StmtResult::Rows { values, .. }) => {
                    if let Job::Relocate { rows, .. } = &mut job {
                        *rows = values.clone();
                    }
                    WriteVerdict::Ok
                }
                other => WriteVerdict::Unknown(format!("{other:?}")),
            },
            (Err(e), true) => WriteVerdict::Unknown(e.to_string()),
            (_, false) => write_verdict(&result),
        };
        let d = job.describe();
        match verdict {
            WriteVerdict::Ok => {
                let shard = self.shard();
                match &mut job {
                    Job::Split { r, at, id, step } => {
                        if *step == 0 {
                            let change = RangeChange::split(r, *at, *id);
                            shard.map.retain(|x| x.range != r.range);
                            shard.map.extend(change.put);
                            shard
                                .map
                                .sort_by_key(|r| r.start.map_or(i128::MIN, i128::from));
                        }
                        *step += 1;
                    }
                    Job::Relocate { r, to, step, .. } => {
                        if *step == 3 {
                            let moved = r.moved_to(*to);
                            for x in shard.map.iter_mut().filter(|x| x.range == r.range) {
                                *x = moved.clone();
                            }
                        }
                        *step += 1;
                    }
                }
                shard.job = Some(job);
                shard.retry_at = None;
                self.trace
                    .event(now, || format!("map change step done: {d}"));
            }
            WriteVerdict::Unknown(why) => {
                let at = now + self.rng.between(1, 10);
                self.shard().retry_at = Some(at);
                self.trace
                    .event(now, || format!("map change step: {why}; again at t={at}"));
            }
            WriteVerdict::Fail(why) => {
                self.violations.push(Violation {
                    check: "ownership",
                    tick: now,
                    detail: format!("{d} failed: {why}"),
                });
                self.shard().job = None;
            }
        }
    }

    /// Node `node` crashed: a step waiting there is sent again.
    pub(crate) fn admin_lose(&mut self, node: u64) {
        let now = self.now;
        let Some(shard) = self.shard.as_mut() else {
            return;
        };
        if shard.wait.as_ref().is_some_and(|w| w.node == node) {
            let token = shard.wait.take().expect("checked").token;
            shard.retry_at = Some(now + 1);
            self.tokens.remove(&token);
        }
    }

    // ----- the end --------------------------------------------------------

    /// One data group's part of a final read at `node`; once every group
    /// answered, the read is put together.
    pub(crate) fn probe_part(
        &mut self,
        node: u64,
        g: u32,
        op: usize,
        result: Result<Response, RequestError>,
    ) {
        let Outcome::Read(rows) = read_outcome(&result, None, self.params.keys) else {
            self.trace.event(self.now, || {
                format!("final read at node {node} group {g} failed; again")
            });
            self.submit_probe_part(node, g, op);
            return;
        };
        let groups = self.groups;
        let parts = self.shard().probe_parts.entry(node).or_default();
        parts.insert(g, rows);
        if parts.len() < (groups - 1) as usize {
            return;
        }
        let parts = self.shard().probe_parts.remove(&node).unwrap_or_default();
        let merged = (1..=self.params.keys)
            .map(|k| {
                let v = parts
                    .values()
                    .flatten()
                    .find_map(|&(key, v)| (key == k).then_some(v).flatten());
                (k, v)
            })
            .collect();
        self.probe_done(node, op, Outcome::Read(merged));
    }

    /// After the heal, every replica of every node: the map and each
    /// group's table of ranges are what the map changes made them, and
    /// every row lies on the one group that owns its key.
    pub(crate) fn ownership_check(
        &mut self,
        per_group: &BTreeMap<u32, Vec<FinalState>>,
    ) -> Vec<Violation> {
        let now = self.now;
        let map = self.shard().map.clone();
        let mut out = Vec::new();
        let mut found = |detail: String| {
            out.push(Violation {
                check: "ownership",
                tick: now,
                detail,
            })
        };
        for node in self.alive_nodes() {
            for g in self.group_ids() {
                let want: Vec<RangeRow> = match g {
                    0 => map.clone(),
                    g => map.iter().filter(|r| r.group == g).cloned().collect(),
                };
                let have = self.ranges_at(node, g);
                if have.as_ref() != Some(&want) {
                    found(format!(
                        "node {node} group {g} holds ranges {have:?}, the map changes made {want:?}"
                    ));
                }
            }
            let mut seen: BTreeMap<i64, u32> = BTreeMap::new();
            for (&g, finals) in per_group.iter().filter(|(&g, _)| g > 0) {
                let Some(f) = finals.iter().find(|f| f.node == node) else {
                    continue;
                };
                for &k in f.kv.keys() {
                    let owner = map.iter().find(|r| r.holds(k)).map(|r| r.group);
                    if owner != Some(g) {
                        found(format!(
                            "node {node}: key {k} is on group {g}, its range is on group {owner:?}"
                        ));
                    }
                    if let Some(other) = seen.insert(k, g) {
                        found(format!("node {node}: key {k} is on groups {other} and {g}"));
                    }
                }
            }
        }
        out
    }
}
