//! The history of client operations, as a Jepsen-style checker sees it: each
//! operation's invocation and completion, stamped with a logical time (a
//! global sequence number: every event of the run gets the next one, so the
//! real-time order is exact even within a tick) and the tick.

use paxsql_types::ReadLevel;

/// A logical time: events of a run are numbered in the order they happen.
pub type Seq = u64;

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Creates the tables; not part of any key's history.
    Setup,
    /// `kv[key] = value` and `ops += req`, in one transaction.
    Write {
        /// The key.
        key: i64,
        /// Unique across the run.
        value: i64,
        /// The request id, the same on every attempt.
        req: String,
    },
    /// `SELECT v FROM kv WHERE k = key`.
    Read {
        /// The key.
        key: i64,
        /// How fresh.
        level: ReadLevel,
    },
    /// Every key at once, at the end of the run (a linearizable read).
    ReadAll,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished (yet).
    Pending,
    /// A write that took effect.
    Written,
    /// A read's answer: each key read and its value (`None`: no row).
    Read(Vec<(i64, Option<i64>)>),
    /// Definitely did not take effect.
    Fail(String),
    /// Unknown: may or may not have taken effect.
    Info(String),
}

/// One client operation.
#[derive(Clone, Debug)]
pub struct Op {
    /// Position in the history.
    pub id: usize,
    /// The client that issued it.
    pub client: usize,
    /// What it asked.
    pub kind: OpKind,
    /// When it was invoked.
    pub invoke: Seq,
    /// The tick it was invoked at.
    pub invoke_tick: u64,
    /// When it completed (ok, fail or info), if it did.
    pub complete: Option<(Seq, u64)>,
    /// How it ended.
    pub outcome: Outcome,
    /// The nodes it was sent to, one per attempt.
    pub nodes: Vec<u64>,
}

impl Op {
    /// The completion time, or `Seq::MAX` for an operation that may still
    /// take effect at any later time (pending or unknown outcome).
    pub fn return_seq(&self) -> Seq {
        match (&self.outcome, self.complete) {
            (Outcome::Written | Outcome::Read(_) | Outcome::Fail(_), Some((s, _))) => s,
            _ => Seq::MAX,
        }
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        let what = match &self.kind {
            OpKind::Setup => "setup".to_string(),
            OpKind::Write { key, value, req } => format!("write k{key}={value} ({req})"),
            OpKind::Read { key, level } => format!("read k{key} @{}", level.as_str()),
            OpKind::ReadAll => "read all @linearizable".to_string(),
        };
        let outcome = match &self.outcome {
            Outcome::Pending => "pending".to_string(),
            Outcome::Written => "ok".to_string(),
            Outcome::Read(kv) => format!(
                "ok {}",
                kv.iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("k{k}={v}"),
                        None => format!("k{k}=nil"),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Outcome::Fail(why) => format!("fail: {why}"),
            Outcome::Info(why) => format!("info: {why}"),
        };
        let end = match self.complete {
            Some((s, t)) => format!("{s}@t{t}"),
            None => "-".to_string(),
        };
        format!(
            "op{} c{} {what} on {:?} [{}@t{} .. {end}] {outcome}",
            self.id, self.client, self.nodes, self.invoke, self.invoke_tick
        )
    }
}

/// Every operation of a run.
#[derive(Debug, Default)]
pub struct History {
    /// In invocation order.
    pub ops: Vec<Op>,
    next_seq: Seq,
}

impl History {
    /// The next logical time.
    pub fn seq(&mut self) -> Seq {
        self.next_seq += 1;
        self.next_seq
    }

    /// Records an invocation; returns the operation's id.
    pub fn invoke(&mut self, client: usize, kind: OpKind, node: u64, tick: u64) -> usize {
        let id = self.ops.len();
        let invoke = self.seq();
        self.ops.push(Op {
            id,
            client,
            kind,
            invoke,
            invoke_tick: tick,
            complete: None,
            outcome: Outcome::Pending,
            nodes: vec![node],
        });
        id
    }

    /// Records how an operation ended.
    pub fn complete(&mut self, id: usize, outcome: Outcome, tick: u64) {
        let seq = self.seq();
        let op = &mut self.ops[id];
        assert!(op.complete.is_none(), "op{id} completed twice");
        op.complete = Some((seq, tick));
        op.outcome = outcome;
    }

    /// Marks every unfinished operation as of unknown outcome.
    pub fn close(&mut self, tick: u64) {
        let pending: Vec<usize> = self
            .ops
            .iter()
            .filter(|o| o.complete.is_none())
            .map(|o| o.id)
            .collect();
        for id in pending {
            self.complete(id, Outcome::Info("still in flight at the end".into()), tick);
        }
    }
}
