//! A linearizability checker: the Wing–Gong search with Lowe's memoization,
//! as Porcupine implements it.
//!
//! The history is a list of operations with an invocation and a return time
//! (`Seq::MAX` for one that never returned: it may take effect at any time
//! after its invocation). The search walks the call and return events in
//! time order and tries to linearize, one at a time, calls whose every
//! predecessor has been linearized; reaching the return of an operation not
//! yet linearized means backtracking. A cache of (set of linearized
//! operations, model state) prunes configurations already explored, which
//! is what makes the search practical.
//!
//! Why not the `porcupine-rs` crate: it brings 85 crates (criterion
//! among its normal dependencies), threads and wall-clock timeouts into
//! every build of the simulator, and the algorithm fits here in 150 lines
//! that `tests/lincheck.rs` checks against known-good and known-bad
//! histories and against brute force on thousands of random small ones.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    /// The object's state.
    type State: Clone + Eq + Hash + std::fmt::Debug;
    /// An operation with its observed result.
    type Op: std::fmt::Debug;
    /// The initial state.
    fn init() -> Self::State;
    /// Applies `op` to `state`: the next state, or `None` if the observed
    /// result is impossible in `state`.
    fn step(state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Call<O> {
    /// Invocation time.
    pub invoke: u64,
    /// Return time; `u64::MAX` if it never returned.
    pub ret: u64,
    /// The operation and its result.
    pub op: O,
}

/// The checker's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some sequential order respects real time and the model.
    Linearizable,
    /// None does.
    NotLinearizable,
    /// The search gave up after its step budget.
    Unknown,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    op: usize,
    /// For a call: the node of its return; `None` for a return.
    matching: Option<usize>,
    prev: usize,
    next: Option<usize>,
}

/// Checks `history` against model `M`, giving up after `step_budget` steps.
pub fn check<M: Model>(history: &[Call<M::Op>], step_budget: u64) -> Verdict {
    for c in history {
        assert!(c.invoke < c.ret, "an operation returns after it is invoked");
    }
    // Events in time order; node 0 is the list head.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(history.len() * 2);
    for (i, c) in history.iter().enumerate() {
        events.push((c.invoke, true, i));
        events.push((c.ret, false, i));
    }
    // At equal times (only `u64::MAX` in practice) returns sort after calls.
    events.sort_by_key(|&(t, is_call, i)| (t, !is_call, i));
    let mut nodes: Vec<Node> = Vec::with_capacity(events.len() + 1);
    nodes.push(Node {
        op: usize::MAX,
        matching: None,
        prev: 0,
        next: None,
    });
    let mut return_node = vec![0usize; history.len()];
    let mut call_node = vec![0usize; history.len()];
    for (pos, &(_, is_call, i)) in events.iter().enumerate() {
        let id = pos + 1;
        nodes.push(Node {
            op: i,
            matching: None,
            prev: id - 1,
            next: None,
        });
        nodes[id - 1].next = Some(id);
        if is_call {
            call_node[i] = id;
        } else {
            return_node[i] = id;
        }
    }
    for i in 0..history.len() {
        nodes[call_node[i]].matching = Some(return_node[i]);
    }

    let words = history.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state = M::init();
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut calls: Vec<(usize, M::State)> = Vec::new();
    let mut entry = nodes[0].next;
    let mut steps = 0u64;
    while nodes[0].next.is_some() {
        steps += 1;
        if steps > step_budget {
            return Verdict::Unknown;
        }
        let Some(e) = entry else {
            // Unreachable: the list ends with a return, which backtracks.
            return Verdict::NotLinearizable;
        };
        let node = nodes[e];
        if node.matching.is_some() {
            let op = node.op;
            if let Some(next_state) = M::step(&state, &history[op].op) {
                let mut next_lin = linearized.clone();
                next_lin[op / 64] |= 1 << (op % 64);
                if cache.insert((next_lin.clone(), next_state.clone())) {
                    calls.push((e, state));
                    state = next_state;
                    linearized = next_lin;
                    lift(&mut nodes, e);
                    entry = nodes[0].next;
                    continue;
                }
            }
            entry = node.next;
        } else {
            let Some((e, previous)) = calls.pop() else {
                return Verdict::NotLinearizable;
            };
            state = previous;
            let op = nodes[e].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut nodes, e);
            entry = nodes[e].next;
        }
    }
    Verdict::Linearizable
}

/// Takes a call and its return out of the list (they stay linked to it).
fn lift(nodes: &mut [Node], call: usize) {
    let ret = nodes[call].matching.expect("a call");
    let (p, n) = (nodes[call].prev, nodes[call].next);
    nodes[p].next = n;
    if let Some(n) = n {
        nodes[n].prev = p;
    }
    let (p, n) = (nodes[ret].prev, nodes[ret].next);
    nodes[p].next = n;
    if let Some(n) = n {
        nodes[n].prev = p;
    }
}

/// Puts them back, in the reverse order of [`lift`].
fn unlift(nodes: &mut [Node], call: usize) {
    let ret = nodes[call].matching.expect("a call");
    let (p, n) = (nodes[ret].prev, nodes[ret].next);
    nodes[p].next = Some(ret);
    if let Some(n) = n {
        nodes[n].prev = ret;
    }
    let (p, n) = (nodes[call].prev, nodes[call].next);
    nodes[p].next = Some(call);
    if let Some(n) = n {
        nodes[n].prev = call;
    }
}

/// A read/write register holding an integer or nothing.
#[derive(Debug)]
pub struct Register;

/// An operation on a [`Register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    /// Sets the value.
    Write(i64),
    /// Observed this value.
    Read(Option<i64>),
}

impl Model for Register {
    type State = Option<i64>;
    type Op = RegisterOp;

    fn init() -> Self::State {
        None
    }

    fn step(state: &Self::State, op: &Self::Op) -> Option<Self::State> {
        match *op {
            RegisterOp::Write(v) => Some(Some(v)),
            RegisterOp::Read(v) if v == *state => Some(*state),
            RegisterOp::Read(_) => None,
        }
    }
}
