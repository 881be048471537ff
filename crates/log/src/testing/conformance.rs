//! One conformance suite for every OmniPaxos [`Storage`] in paxsql.
//!
//! Each function takes a factory of fresh, empty storages and panics on the first
//! difference from what OmniPaxos expects. The assertions only use the `Storage` trait and
//! only the call patterns OmniPaxos itself makes (a `trim(i)` always comes with
//! `set_compacted_idx(i)`), so they hold for any correct implementation. [`Workload`] drives
//! random, valid operations against a storage and an independent reference model.

use omnipaxos::{
    ballot_leader_election::Ballot,
    storage::{Entry, StopSign, Storage, StorageOp},
    ClusterConfig,
};

use super::TestRng;

/// What the suite needs from an entry type: a way to make distinct entries and snapshots.
pub trait ConformanceEntry: Entry<Snapshot: PartialEq> + PartialEq {
    /// The `n`-th test entry; different `n`, different entries.
    fn from_seq(n: u64) -> Self;
    /// Some snapshot value distinguished by `n` (`NoSnapshot` types ignore `n`).
    fn sample_snapshot(n: u64) -> Self::Snapshot;
}

/// Everything a storage shows through its getters.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed<T: ConformanceEntry> {
    /// `get_promise`.
    pub promise: Option<Ballot>,
    /// `get_accepted_round`.
    pub accepted_round: Option<Ballot>,
    /// `get_decided_idx`.
    pub decided_idx: usize,
    /// `get_compacted_idx`.
    pub compacted_idx: usize,
    /// `get_suffix(compacted_idx)`, checked against `get_log_len` and `get_entries`.
    pub entries: Vec<T>,
    /// `get_stopsign`.
    pub stopsign: Option<StopSign>,
    /// `get_snapshot`.
    pub snapshot: Option<T::Snapshot>,
}

/// Reads every getter of `s`, checking that the log getters agree with each other.
pub fn observe<T: ConformanceEntry, S: Storage<T>>(s: &S) -> Observed<T> {
    let compacted_idx = s.get_compacted_idx().unwrap();
    let log_len = s.get_log_len().unwrap();
    let entries = s.get_suffix(compacted_idx).unwrap();
    assert_eq!(
        entries.len(),
        log_len,
        "get_suffix(compacted) vs get_log_len"
    );
    assert_eq!(
        s.get_entries(compacted_idx, compacted_idx + log_len)
            .unwrap(),
        entries,
        "get_entries over the whole log vs get_suffix"
    );
    Observed {
        promise: s.get_promise().unwrap(),
        accepted_round: s.get_accepted_round().unwrap(),
        decided_idx: s.get_decided_idx().unwrap(),
        compacted_idx,
        entries,
        stopsign: s.get_stopsign().unwrap(),
        snapshot: s.get_snapshot().unwrap(),
    }
}

/// Runs every test of the suite against storages made by `factory`.
pub fn run_all<T: ConformanceEntry, S: Storage<T>>(factory: impl Fn() -> S) {
    empty_storage_has_no_state(&factory);
    appends_extend_the_log(&factory);
    reads_not_fully_available_are_empty(&factory);
    append_on_prefix_truncates_then_appends(&factory);
    metadata_round_trips(&factory);
    trim_keeps_absolute_indices(&factory);
    trim_past_the_end_then_sync_from_there(&factory);
    write_atomically_applies_ops_in_order(&factory);
    write_atomically_matches_single_calls(&factory, 7);
    for seed in 0..8 {
        random_ops_match_model(&factory, seed, 300);
    }
}

/// Entries `from_seq(n)` for `n` in `range`.
pub fn entries<T: ConformanceEntry>(range: std::ops::Range<u64>) -> Vec<T> {
    range.map(T::from_seq).collect()
}

fn ballot(n: u32, pid: u64) -> Ballot {
    Ballot::with(1, n, 0, pid)
}

fn stopsign(config_id: u32) -> StopSign {
    let config = ClusterConfig {
        configuration_id: config_id,
        nodes: vec![1, 2, 3],
        flexible_quorum: None,
    };
    StopSign::with(config, Some(vec![7, config_id as u8]))
}

/// A new storage holds nothing and reports defaults.
pub fn empty_storage_has_no_state<T: ConformanceEntry, S: Storage<T>>(factory: &impl Fn() -> S) {
    let s = factory();
    let seen = observe(&s);
    assert_eq!(seen.promise, None);
    assert_eq!(seen.accepted_round, None);
    assert_eq!(seen.decided_idx, 0);
    assert_eq!(seen.compacted_idx, 0);
    assert!(seen.entries.is_empty());
    assert_eq!(seen.stopsign, None);
    assert!(seen.snapshot.is_none());
    assert!(s.get_entries(0, 1).unwrap().is_empty());
    assert!(s.get_suffix(0).unwrap().is_empty());
}

/// `append_entry` and `append_entries` add at the end, in order.
pub fn appends_extend_the_log<T: ConformanceEntry, S: Storage<T>>(factory: &impl Fn() -> S) {
    let mut s = factory();
    s.append_entry(T::from_seq(0)).unwrap();
    s.append_entries(entries(1..4)).unwrap();
    s.append_entries(vec![]).unwrap();
    assert_eq!(s.get_log_len().unwrap(), 4);
    assert_eq!(s.get_entries(0, 4).unwrap(), entries::<T>(0..4));
    assert_eq!(s.get_entries(1, 3).unwrap(), entries::<T>(1..3));
    assert_eq!(s.get_suffix(2).unwrap(), entries::<T>(2..4));
}

/// Ranges that are not entirely held read as empty, never as a partial answer.
pub fn reads_not_fully_available_are_empty<T: ConformanceEntry, S: Storage<T>>(
    factory: &impl Fn() -> S,
) {
    let mut s = factory();
    s.append_entries(entries(0..5)).unwrap();
    assert!(
        s.get_entries(3, 6).unwrap().is_empty(),
        "range past the end"
    );
    assert!(s.get_entries(5, 6).unwrap().is_empty());
    assert!(s.get_entries(2, 2).unwrap().is_empty());
    assert!(s.get_suffix(5).unwrap().is_empty());
    assert!(s.get_suffix(9).unwrap().is_empty());
}

/// `append_on_prefix(i, es)` keeps `0..i` and replaces the rest with `es`.
pub fn append_on_prefix_truncates_then_appends<T: ConformanceEntry, S: Storage<T>>(
    factory: &impl Fn() -> S,
) {
    let mut s = factory();
    s.append_entries(entries(0..5)).unwrap();
    s.append_on_prefix(3, entries(10..12)).unwrap();
    let mut expected = entries::<T>(0..3);
    expected.extend(entries(10..12));
    assert_eq!(s.get_entries(0, 5).unwrap(), expected);
    s.append_on_prefix(5, entries(12..13)).unwrap();
    expected.extend(entries(12..13));
    assert_eq!(
        s.get_suffix(0).unwrap(),
        expected,
        "at the end it is an append"
    );
    s.append_on_prefix(6, vec![]).unwrap();
    assert_eq!(
        s.get_log_len().unwrap(),
        6,
        "empty suffix at the end changes nothing"
    );
    s.append_on_prefix(0, entries(20..21)).unwrap();
    assert_eq!(s.get_suffix(0).unwrap(), entries::<T>(20..21));
}

/// Every metadata setter is read back by its getter, including clearing to `None`.
pub fn metadata_round_trips<T: ConformanceEntry, S: Storage<T>>(factory: &impl Fn() -> S) {
    let mut s = factory();
    s.set_promise(ballot(1, 2)).unwrap();
    s.set_promise(ballot(3, 1)).unwrap();
    assert_eq!(s.get_promise().unwrap(), Some(ballot(3, 1)));
    s.set_accepted_round(ballot(2, 3)).unwrap();
    assert_eq!(s.get_accepted_round().unwrap(), Some(ballot(2, 3)));
    s.append_entries(entries(0..4)).unwrap();
    s.set_decided_idx(3).unwrap();
    assert_eq!(s.get_decided_idx().unwrap(), 3);
    s.set_stopsign(Some(stopsign(2))).unwrap();
    assert_eq!(s.get_stopsign().unwrap(), Some(stopsign(2)));
    s.set_stopsign(None).unwrap();
    assert_eq!(s.get_stopsign().unwrap(), None);
    s.set_snapshot(Some(T::sample_snapshot(5))).unwrap();
    assert!(s.get_snapshot().unwrap() == Some(T::sample_snapshot(5)));
    s.set_snapshot(None).unwrap();
    assert!(s.get_snapshot().unwrap().is_none());
    assert_eq!(
        s.get_entries(0, 4).unwrap(),
        entries::<T>(0..4),
        "log untouched"
    );
}

/// After a trim, indices stay absolute and the trimmed prefix reads as unavailable.
pub fn trim_keeps_absolute_indices<T: ConformanceEntry, S: Storage<T>>(factory: &impl Fn() -> S) {
    let mut s = factory();
    s.append_entries(entries(0..10)).unwrap();
    s.trim(4).unwrap();
    s.set_compacted_idx(4).unwrap();
    assert_eq!(
        s.get_log_len().unwrap(),
        6,
        "log length excludes trimmed entries"
    );
    assert_eq!(s.get_compacted_idx().unwrap(), 4);
    assert_eq!(s.get_entries(4, 6).unwrap(), entries::<T>(4..6));
    assert!(
        s.get_entries(3, 5).unwrap().is_empty(),
        "reaches into the trimmed prefix"
    );
    assert_eq!(s.get_suffix(7).unwrap(), entries::<T>(7..10));
    assert!(s.get_suffix(2).unwrap().is_empty());
    s.append_on_prefix(7, entries(20..21)).unwrap();
    s.append_entry(T::from_seq(21)).unwrap();
    let mut expected = entries::<T>(4..7);
    expected.extend(entries(20..22));
    assert_eq!(s.get_suffix(4).unwrap(), expected);
    s.trim(6).unwrap();
    s.set_compacted_idx(6).unwrap();
    assert_eq!(s.get_suffix(6).unwrap(), expected[2..].to_vec());
}

/// A follower installing a snapshot trims past its own log end and continues from there.
pub fn trim_past_the_end_then_sync_from_there<T: ConformanceEntry, S: Storage<T>>(
    factory: &impl Fn() -> S,
) {
    let mut s = factory();
    s.append_entries(entries(0..3)).unwrap();
    s.write_atomically(vec![
        StorageOp::Trim(10),
        StorageOp::SetCompactedIdx(10),
        StorageOp::SetSnapshot(Some(T::sample_snapshot(10))),
        StorageOp::AppendOnPrefix(10, entries(10..12)),
    ])
    .unwrap();
    assert_eq!(s.get_log_len().unwrap(), 2);
    assert_eq!(s.get_compacted_idx().unwrap(), 10);
    assert_eq!(s.get_entries(10, 12).unwrap(), entries::<T>(10..12));
    assert!(s.get_entries(0, 3).unwrap().is_empty());
    assert!(s.get_snapshot().unwrap() == Some(T::sample_snapshot(10)));
}

/// `write_atomically` applies its ops in the order given (a later op sees earlier ones).
pub fn write_atomically_applies_ops_in_order<T: ConformanceEntry, S: Storage<T>>(
    factory: &impl Fn() -> S,
) {
    let mut s = factory();
    s.append_entries(entries(0..4)).unwrap();
    s.write_atomically(vec![
        StorageOp::SetPromise(ballot(4, 2)),
        StorageOp::SetAcceptedRound(ballot(4, 2)),
        StorageOp::SetDecidedIndex(1),
        StorageOp::AppendOnPrefix(1, entries(10..12)),
        StorageOp::AppendEntry(T::from_seq(12)),
        StorageOp::AppendEntries(entries(13..14)),
        StorageOp::Trim(2),
        StorageOp::SetCompactedIdx(2),
        StorageOp::SetStopsign(Some(stopsign(3))),
        StorageOp::SetDecidedIndex(3),
    ])
    .unwrap();
    let seen = observe(&s);
    assert_eq!(seen.promise, Some(ballot(4, 2)));
    assert_eq!(seen.accepted_round, Some(ballot(4, 2)));
    assert_eq!(seen.decided_idx, 3, "the later SetDecidedIndex wins");
    assert_eq!(seen.compacted_idx, 2);
    assert_eq!(seen.entries, entries::<T>(11..14));
    assert_eq!(seen.stopsign, Some(stopsign(3)));
}

/// The same random ops give the same state whether batched or called one by one.
pub fn write_atomically_matches_single_calls<T: ConformanceEntry, S: Storage<T>>(
    factory: &impl Fn() -> S,
    seed: u64,
) {
    let (mut batched, mut single) = (factory(), factory());
    let (mut w1, mut w2) = (Workload::<T>::new(seed), Workload::<T>::new(seed));
    for _ in 0..100 {
        let batch = w1.next_batch();
        assert_eq!(batch, w2.next_batch());
        apply_batch(&mut batched, &batch, true, |_| {});
        apply_batch(&mut single, &batch, false, |_| {});
        assert_eq!(observe(&batched), observe(&single));
    }
}

/// Random valid ops leave the storage in the same state as a reference model.
pub fn random_ops_match_model<T: ConformanceEntry, S: Storage<T>>(
    factory: &impl Fn() -> S,
    seed: u64,
    steps: usize,
) {
    let mut s = factory();
    let mut workload = Workload::<T>::new(seed);
    for step in 0..steps {
        workload.step(&mut s, |_| {});
        assert_eq!(
            observe(&s),
            workload.expected(),
            "seed {seed}, step {step}: storage differs from the model"
        );
    }
}

/// One logical change, as OmniPaxos would make it. Cloneable, unlike `StorageOp`.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `append_entry(from_seq(n))`.
    AppendEntry(u64),
    /// `append_entries` of `from_seq(n)` for each `n`.
    AppendEntries(Vec<u64>),
    /// `append_on_prefix(from, ..)`.
    AppendOnPrefix(usize, Vec<u64>),
    /// `set_promise`.
    Promise(Ballot),
    /// `set_accepted_round`.
    AcceptedRound(Ballot),
    /// `set_decided_idx`.
    DecidedIdx(usize),
    /// `Trim(i)` and `SetCompactedIdx(i)` in one `write_atomically`, as OmniPaxos does
    /// (apart, a crash between them would leave a log whose start and compacted index differ).
    TrimTo(usize),
    /// `set_stopsign`, with `stopsign(config_id)`.
    Stopsign(Option<u32>),
    /// `set_snapshot`, with `sample_snapshot(n)`.
    Snapshot(Option<u64>),
}

impl Change {
    fn storage_ops<T: ConformanceEntry>(&self) -> Vec<StorageOp<T>> {
        let seq = |ns: &[u64]| ns.iter().map(|n| T::from_seq(*n)).collect();
        match self {
            Change::AppendEntry(n) => vec![StorageOp::AppendEntry(T::from_seq(*n))],
            Change::AppendEntries(ns) => vec![StorageOp::AppendEntries(seq(ns))],
            Change::AppendOnPrefix(from, ns) => vec![StorageOp::AppendOnPrefix(*from, seq(ns))],
            Change::Promise(b) => vec![StorageOp::SetPromise(*b)],
            Change::AcceptedRound(b) => vec![StorageOp::SetAcceptedRound(*b)],
            Change::DecidedIdx(i) => vec![StorageOp::SetDecidedIndex(*i)],
            Change::TrimTo(i) => vec![StorageOp::Trim(*i), StorageOp::SetCompactedIdx(*i)],
            Change::Stopsign(c) => vec![StorageOp::SetStopsign(c.map(stopsign))],
            Change::Snapshot(n) => vec![StorageOp::SetSnapshot(n.map(T::sample_snapshot))],
        }
    }
}

/// Applies `batch` to `s`, with one `write_atomically` if `atomically`, else one trait call
/// per change (a [`Change::TrimTo`] is always one `write_atomically`); `after_call` sees the
/// storage after every call.
pub fn apply_batch<T: ConformanceEntry, S: Storage<T>>(
    s: &mut S,
    batch: &[Change],
    atomically: bool,
    mut after_call: impl FnMut(&S),
) {
    if atomically {
        let ops = batch.iter().flat_map(|c| c.storage_ops()).collect();
        s.write_atomically(ops).unwrap();
        after_call(s);
        return;
    }
    for change in batch {
        let mut ops = change.storage_ops::<T>();
        if ops.len() == 1 {
            call(s, ops.pop().unwrap());
        } else {
            s.write_atomically(ops).unwrap();
        }
        after_call(s);
    }
}

/// The trait call that performs `op` alone.
fn call<T: Entry, S: Storage<T>>(s: &mut S, op: StorageOp<T>) {
    match op {
        StorageOp::AppendEntry(e) => s.append_entry(e),
        StorageOp::AppendEntries(es) => s.append_entries(es),
        StorageOp::AppendOnPrefix(from, es) => s.append_on_prefix(from, es),
        StorageOp::SetPromise(b) => s.set_promise(b),
        StorageOp::SetDecidedIndex(i) => s.set_decided_idx(i),
        StorageOp::SetAcceptedRound(b) => s.set_accepted_round(b),
        StorageOp::SetCompactedIdx(i) => s.set_compacted_idx(i),
        StorageOp::Trim(i) => s.trim(i),
        StorageOp::SetStopsign(ss) => s.set_stopsign(ss),
        StorageOp::SetSnapshot(snap) => s.set_snapshot(snap),
    }
    .unwrap()
}

/// A seeded stream of valid random changes, with the state they should produce.
///
/// The reference model stores the log as one slot per absolute index (`None` once trimmed),
/// a different representation from any real storage, so the two fail independently.
#[derive(Debug, Clone)]
pub struct Workload<T: ConformanceEntry> {
    rng: TestRng,
    next_seq: u64,
    slots: Vec<Option<T>>,
    expected: Observed<T>,
}

impl<T: ConformanceEntry> Workload<T> {
    /// A workload that starts from an empty storage.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: TestRng::new(seed),
            next_seq: 0,
            slots: Vec::new(),
            expected: Observed {
                promise: None,
                accepted_round: None,
                decided_idx: 0,
                compacted_idx: 0,
                entries: Vec::new(),
                stopsign: None,
                snapshot: None,
            },
        }
    }

    /// A workload that continues from `state`, e.g. what a storage holds after a crash
    /// dropped some of the changes an earlier workload made.
    pub fn resume(seed: u64, state: Observed<T>) -> Self {
        let mut slots: Vec<Option<T>> = vec![None; state.compacted_idx];
        slots.extend(state.entries.iter().cloned().map(Some));
        Self {
            rng: TestRng::new(seed),
            next_seq: 1 << 32,
            slots,
            expected: state,
        }
    }

    /// Generates the next batch (usually one change), applies it to `s` atomically or call
    /// by call at random, and updates the expected state. `after_call` as in [`apply_batch`].
    pub fn step<S: Storage<T>>(&mut self, s: &mut S, after_call: impl FnMut(&S)) {
        let batch = self.next_batch();
        let atomically = batch.len() > 1 && self.rng.chance(50);
        apply_batch(s, &batch, atomically, after_call);
    }

    /// The state every correct storage is in after the batches generated so far.
    pub fn expected(&self) -> Observed<T> {
        self.expected.clone()
    }

    /// Generates one batch of valid changes and applies it to the model.
    pub fn next_batch(&mut self) -> Vec<Change> {
        let len = if self.rng.chance(20) {
            self.rng.between(2, 5)
        } else {
            1
        };
        (0..len)
            .map(|_| {
                let change = self.next_change();
                self.apply(&change);
                change
            })
            .collect()
    }

    fn log_end(&self) -> usize {
        self.slots.len()
    }

    fn fresh(&mut self, max: usize) -> Vec<u64> {
        let n = self.rng.between(0, max);
        (0..n).map(|_| self.next_seq()).collect()
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn next_change(&mut self) -> Change {
        let (start, end) = (self.expected.compacted_idx, self.log_end());
        let round = self.rng.between(0, 50) as u32;
        let pid = self.rng.between(1, 3) as u64;
        match self.rng.below(100) {
            0..=19 => Change::AppendEntry(self.next_seq()),
            20..=39 => Change::AppendEntries(self.fresh(4)),
            40..=54 => {
                let from = self.rng.between(start, end);
                Change::AppendOnPrefix(from, self.fresh(4))
            }
            55..=62 => Change::TrimTo(self.rng.between(start + 1, end + 3)),
            63..=72 => Change::DecidedIdx(self.rng.between(0, end)),
            73..=80 => Change::Promise(ballot(round, pid)),
            81..=88 => Change::AcceptedRound(ballot(round, pid)),
            89..=94 => Change::Stopsign(self.rng.chance(70).then_some(round + 2)),
            _ => Change::Snapshot(self.rng.chance(70).then(|| self.rng.below(1000))),
        }
    }

    fn apply(&mut self, change: &Change) {
        let e = &mut self.expected;
        match change {
            Change::AppendEntry(n) => self.slots.push(Some(T::from_seq(*n))),
            Change::AppendEntries(ns) => {
                self.slots.extend(ns.iter().map(|n| Some(T::from_seq(*n))))
            }
            Change::AppendOnPrefix(from, ns) => {
                self.slots.truncate(*from);
                self.slots.extend(ns.iter().map(|n| Some(T::from_seq(*n))));
            }
            Change::Promise(b) => e.promise = Some(*b),
            Change::AcceptedRound(b) => e.accepted_round = Some(*b),
            Change::DecidedIdx(i) => e.decided_idx = *i,
            Change::TrimTo(i) => {
                if self.slots.len() < *i {
                    self.slots.resize_with(*i, || None);
                }
                self.slots[..*i].iter_mut().for_each(|slot| *slot = None);
                e.compacted_idx = *i;
            }
            Change::Stopsign(c) => e.stopsign = c.map(stopsign),
            Change::Snapshot(n) => e.snapshot = n.map(T::sample_snapshot),
        }
        e.entries = self.slots[e.compacted_idx..]
            .iter()
            .map(|slot| slot.clone().expect("model: untrimmed slot is empty"))
            .collect();
    }
}
