//! Simulated clients. Each has one operation in flight at a time (as a
//! Jepsen client does), sends it to a random live node, waits for it at
//! most `client_timeout_ticks`, and retries a write whose outcome is
//! unknown at another node with the **same** request id, a few times. A
//! client whose node crashes under it sees its connection drop: outcome
//! unknown.

use crate::history::{OpKind, Outcome};
use crate::shard::Route;
use crate::sim::{Phase, Sim, Waiter};
use paxsql_replica::ClientRequest;
use paxsql_sql::ranges::RangeRow;
use paxsql_types::{
    ApplyEnv, Params, ReadLevel, RequestError, RequestId, Response, Statement, StmtResult, Value,
};

/// Upsert of a key plus the request id in `ops`, in one transaction.
pub(crate) const WRITE_KV: &str =
    "INSERT INTO kv (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v";
pub(crate) const WRITE_OPS: &str = "INSERT INTO ops (req) VALUES (?1)";
pub(crate) const READ_KV: &str = "SELECT v FROM kv WHERE k = ?1";
pub(crate) const READ_ALL: &str = "SELECT k, v FROM kv ORDER BY k";
/// A runaway write: it never ends unless the statement budget stops it,
/// and would write a value no client wrote if it ever succeeded.
const WRITE_KV_RUNAWAY: &str = "INSERT INTO kv (k, v) VALUES (?1, ?2 + (WITH RECURSIVE \
    c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c)) \
    ON CONFLICT(k) DO UPDATE SET v = excluded.v";
pub(crate) const SETUP: [&str; 3] = [
    "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
    "CREATE TABLE ops (req TEXT NOT NULL)",
    // Small, so that runaways cost little simulated work.
    "SET PAXSQL STATEMENT_BUDGET = 100000",
];

#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) state: ClientState,
    writes: u64,
    /// Sharded runs: the client's copy of the `kv` ranges (stale until a
    /// group says otherwise).
    pub(crate) map: Vec<RangeRow>,
}

#[derive(Debug)]
pub(crate) enum ClientState {
    Idle {
        next_at: u64,
    },
    Waiting(Attempt),
    /// A retry, due at a tick.
    Backoff {
        op: usize,
        attempt: u32,
        req: ClientRequest,
        route: Option<Route>,
        at: u64,
    },
    /// Sharded runs: the operation goes to the group the (refreshed) map
    /// names, due at a tick.
    Reroute {
        op: usize,
        reroutes: u32,
        at: u64,
    },
}

#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) op: usize,
    pub(crate) node: u64,
    pub(crate) token: u64,
    deadline: u64,
    attempt: u32,
    req: ClientRequest,
    /// Sharded runs: the group and range the request went to.
    pub(crate) route: Option<Route>,
}

impl Client {
    pub(crate) fn new() -> Self {
        Client {
            state: ClientState::Idle { next_at: 0 },
            writes: 0,
            map: Vec::new(),
        }
    }

    pub(crate) fn idle(&self) -> bool {
        matches!(self.state, ClientState::Idle { .. })
    }
}

/// What an answer means for a write.
pub(crate) enum WriteVerdict {
    Ok,
    Fail(String),
    Unknown(String),
}

pub(crate) fn write_verdict(result: &Result<Response, RequestError>) -> WriteVerdict {
    match result {
        Ok(r) => match r.results.iter().find_map(|s| match s {
            StmtResult::Error(e) => Some(e.clone()),
            _ => None,
        }) {
            // The transaction rolled back, deterministically, everywhere.
            Some(e) => WriteVerdict::Fail(e),
            None => WriteVerdict::Ok,
        },
        Err(RequestError::BadRequest(m) | RequestError::Conflict(m)) => {
            WriteVerdict::Fail(m.clone())
        }
        Err(e @ (RequestError::Unavailable(_) | RequestError::Overloaded(_))) => {
            WriteVerdict::Unknown(e.to_string())
        }
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        _ => None,
    }
}

/// What an answer means for a read of `keys` (`None` for a single-key read
/// of `key`).
pub(crate) fn read_outcome(
    result: &Result<Response, RequestError>,
    key: Option<i64>,
    keys: i64,
) -> Outcome {
    let r = match result {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(e.to_string()),
    };
    match r.results.first() {
        Some(StmtResult::Rows { values, .. }) => match key {
            Some(k) => Outcome::Read(vec![(k, values.first().and_then(|row| int(&row[0])))]),
            None => Outcome::Read(
                (1..=keys)
                    .map(|k| {
                        let v = values
                            .iter()
                            .find(|row| int(&row[0]) == Some(k))
                            .and_then(|row| int(&row[1]));
                        (k, v)
                    })
                    .collect(),
            ),
        },
        // A replica that has not applied the setup yet: every key is empty.
        Some(StmtResult::Error(e)) if e.contains("no such table") => match key {
            Some(k) => Outcome::Read(vec![(k, None)]),
            None => Outcome::Read((1..=keys).map(|k| (k, None)).collect()),
        },
        other => Outcome::Fail(format!("unexpected result {other:?}")),
    }
}

impl Sim {
    /// Every client's turn: timeouts, retries due, new operations.
    pub(crate) fn clients_act(&mut self) {
        for i in 0..self.clients.len() {
            match &self.clients[i].state {
                ClientState::Waiting(a) if self.now >= a.deadline => {
                    let token = a.token;
                    self.tokens.remove(&token);
                    self.attempt_failed(i, "timed out".into());
                }
                ClientState::Backoff { at, .. } if *at <= self.now => {
                    let ClientState::Backoff {
                        op,
                        attempt,
                        req,
                        route,
                        ..
                    } = std::mem::replace(
                        &mut self.clients[i].state,
                        ClientState::Idle { next_at: 0 },
                    )
                    else {
                        unreachable!("matched above")
                    };
                    self.send_attempt(i, op, attempt, req, route);
                }
                &ClientState::Reroute { op, reroutes, at } if at <= self.now => {
                    self.clients[i].state = ClientState::Idle { next_at: 0 };
                    self.send_routed(i, op, reroutes);
                }
                ClientState::Idle { next_at } if *next_at <= self.now => match self.phase {
                    Phase::Setup { started: false } if i == 0 => self.start_setup(),
                    Phase::Workload { .. } => self.start_op(i),
                    _ => {}
                },
                _ => {}
            }
        }
        if self.shard.is_some() {
            self.admin_act();
        }
    }

    fn start_setup(&mut self) {
        self.phase = Phase::Setup { started: true };
        if self.shard.is_some() {
            let op = self.history.invoke(0, OpKind::Setup, 0, self.now);
            self.history.ops[op].nodes.clear();
            self.next_setup_step(op);
            return;
        }
        let req = ClientRequest::Write {
            id: RequestId("setup".into()),
            stmts: SETUP.iter().map(|s| Statement::new(*s)).collect(),
            transaction: true,
            env: self.env(),
        };
        let op = self.history.invoke(0, OpKind::Setup, 0, self.now);
        self.history.ops[op].nodes.clear();
        self.send_attempt(0, op, 1, req, None);
    }

    pub(crate) fn env(&mut self) -> ApplyEnv {
        ApplyEnv {
            unix_ms: 1_700_000_000_000 + self.now as i64 * 10,
            seed: self.rng.u64(),
        }
    }

    fn start_op(&mut self, i: usize) {
        let key = self.rng.between(1, self.params.keys as u64) as i64;
        let (kind, req) = if self.rng.chance(self.params.write_ratio) {
            self.next_value += 1;
            let value = self.next_value;
            self.clients[i].writes += 1;
            let id = format!("c{i}-w{}", self.clients[i].writes);
            let params = |v: Vec<Value>| paxsql_types::Params::Positional(v);
            // A runaway must fail on every replica alike (the budget), so
            // it is a write that is never applied; the checkers catch it
            // otherwise (a value nobody wrote, or replicas that differ).
            let percent = self.cfg.runaways_percent;
            let runaway = percent > 0 && self.rng.below(100) < u64::from(percent);
            self.stats.runaways += u64::from(runaway);
            let write_kv = if runaway { WRITE_KV_RUNAWAY } else { WRITE_KV };
            let req = ClientRequest::Write {
                id: RequestId(id.clone()),
                stmts: vec![
                    Statement {
                        sql: write_kv.into(),
                        params: params(vec![Value::Integer(key), Value::Integer(value)]),
                    },
                    Statement {
                        sql: WRITE_OPS.into(),
                        params: params(vec![Value::Text(id.clone())]),
                    },
                ],
                transaction: true,
                env: self.env(),
            };
            (
                OpKind::Write {
                    key,
                    value,
                    req: id,
                },
                req,
            )
        } else {
            let level = match self.rng.below(4) {
                0 => ReadLevel::Local,
                1 => ReadLevel::Leader,
                _ => ReadLevel::Linearizable,
            };
            let req = ClientRequest::Read {
                stmts: vec![Statement {
                    sql: READ_KV.into(),
                    params: Params::Positional(vec![Value::Integer(key)]),
                }],
                level,
            };
            (OpKind::Read { key, level }, req)
        };
        let op = self.history.invoke(i, kind, 0, self.now);
        self.history.ops[op].nodes.clear();
        match self.shard {
            None => self.send_attempt(i, op, 1, req, None),
            Some(_) => self.send_routed(i, op, 0),
        }
    }

    /// Sends an attempt of `op` to a random live node (another one than the
    /// last attempt's, when there is a choice); in a sharded run, to the
    /// route's group there.
    pub(crate) fn send_attempt(
        &mut self,
        i: usize,
        op: usize,
        attempt: u32,
        req: ClientRequest,
        route: Option<Route>,
    ) {
        let alive = self.alive_nodes();
        let last = self.history.ops[op].nodes.last().copied();
        let choices: Vec<u64> = match alive.iter().filter(|&&n| Some(n) != last).count() {
            0 => alive.clone(),
            _ => alive.iter().copied().filter(|&n| Some(n) != last).collect(),
        };
        if choices.is_empty() {
            // Nobody to talk to: try again shortly.
            self.clients[i].state = ClientState::Backoff {
                op,
                attempt,
                req,
                route,
                at: self.now + 5,
            };
            return;
        }
        let group = route.as_ref().map_or(0, |r| r.group);
        let node = *self.rng.pick(&choices);
        let token = self.next_token;
        self.next_token += 1;
        self.tokens.insert(token, (Waiter::Client(i), op));
        self.history.ops[op].nodes.push(node);
        let describe = self.history.ops[op].describe();
        let label = self.group_label(group);
        self.trace.event(self.now, || {
            format!("client {i} -> node {node}{label} attempt {attempt}: {describe}")
        });
        self.replica(node, group).submit(token, req.clone());
        self.clients[i].state = ClientState::Waiting(Attempt {
            op,
            node,
            token,
            deadline: self.now + self.params.client_timeout_ticks,
            attempt,
            req,
            route,
        });
    }

    /// The current attempt of client `i` ended without a definite answer.
    pub(crate) fn attempt_failed(&mut self, i: usize, why: String) {
        let state = std::mem::replace(&mut self.clients[i].state, ClientState::Idle { next_at: 0 });
        let ClientState::Waiting(a) = state else {
            self.clients[i].state = state;
            return;
        };
        let kind = self.history.ops[a.op].kind.clone();
        let retry = match kind {
            OpKind::Setup => true,
            OpKind::Write { .. } => a.attempt < self.params.write_attempts_max,
            _ => false,
        };
        self.trace.event(self.now, || {
            format!(
                "client {i} attempt {} at node {}: {why}{}",
                a.attempt,
                a.node,
                if retry { "; will retry" } else { "" }
            )
        });
        if retry {
            let at = self.now + self.rng.between(1, 10);
            // The same group again, whatever the map says now: another
            // group could apply what this one may already have.
            self.clients[i].state = ClientState::Backoff {
                op: a.op,
                attempt: a.attempt + 1,
                req: a.req,
                route: a.route,
                at,
            };
        } else {
            self.finish(i, a.op, Outcome::Info(why));
        }
    }

    pub(crate) fn finish(&mut self, i: usize, op: usize, outcome: Outcome) {
        self.history.complete(op, outcome, self.now);
        let describe = self.history.ops[op].describe();
        self.trace
            .event(self.now, || format!("client {i} done: {describe}"));
        let think = self.rng.between(0, self.params.think_ticks_max);
        self.clients[i].state = ClientState::Idle {
            next_at: self.now + think,
        };
    }

    /// A node answered client `i`'s current attempt.
    pub(crate) fn client_reply(
        &mut self,
        i: usize,
        op: usize,
        result: Result<Response, RequestError>,
    ) {
        let result = match self.shard {
            None => result,
            Some(_) => match self.routed_reply(i, op, result) {
                Some(r) => r,
                None => return, // sent elsewhere
            },
        };
        let kind = self.history.ops[op].kind.clone();
        match kind {
            OpKind::Setup => match write_verdict(&result) {
                WriteVerdict::Ok if self.next_setup_step(op) => {}
                WriteVerdict::Ok => {
                    self.finish(i, op, Outcome::Written);
                    self.phase = Phase::Workload {
                        until: self.now + self.cfg.ticks,
                    };
                    self.trace.event(self.now, || {
                        "tables created; workload and faults begin".into()
                    });
                }
                WriteVerdict::Fail(why) => {
                    panic!("creating the tables failed: {why}");
                }
                WriteVerdict::Unknown(why) => self.attempt_failed(i, why),
            },
            OpKind::Write { .. } => match write_verdict(&result) {
                WriteVerdict::Ok => self.finish(i, op, Outcome::Written),
                WriteVerdict::Fail(why) => self.finish(i, op, Outcome::Fail(why)),
                WriteVerdict::Unknown(why) => self.attempt_failed(i, why),
            },
            OpKind::Read { key, .. } => {
                let outcome = read_outcome(&result, Some(key), self.params.keys);
                self.finish(i, op, outcome);
            }
            OpKind::ReadAll => unreachable!("clients do not read all"),
        }
    }

    /// Node `node` crashed: clients waiting on it lose their connection.
    pub(crate) fn clients_lose(&mut self, node: u64) {
        for i in 0..self.clients.len() {
            if let ClientState::Waiting(a) = &self.clients[i].state {
                if a.node == node {
                    let token = a.token;
                    self.tokens.remove(&token);
                    self.attempt_failed(i, format!("connection to node {node} lost"));
                }
            }
        }
    }
}
