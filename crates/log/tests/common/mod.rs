//! Entry types shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different part

use omnipaxos::{macros::Entry, storage::Snapshot};
use paxsql_log::testing::conformance::ConformanceEntry;
use serde::{Deserialize, Serialize};

/// A log entry without snapshots; `payload` lets tests make records of any size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Entry)]
pub struct TestEntry {
    pub id: u64,
    pub payload: Vec<u8>,
}

impl TestEntry {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            payload: Vec::new(),
        }
    }
}

impl ConformanceEntry for TestEntry {
    fn from_seq(n: u64) -> Self {
        Self::new(n)
    }

    fn sample_snapshot(_n: u64) -> Self::Snapshot {
        omnipaxos::storage::NoSnapshot
    }
}

/// A log entry whose snapshot is the running sum, so snapshots carry data to persist.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Entry)]
#[snapshot(SumSnapshot)]
pub struct SnapEntry {
    pub value: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SumSnapshot {
    pub sum: u64,
    pub count: u64,
}

impl Snapshot<SnapEntry> for SumSnapshot {
    fn create(entries: &[SnapEntry]) -> Self {
        Self {
            sum: entries.iter().map(|e| e.value).sum(),
            count: entries.len() as u64,
        }
    }

    fn merge(&mut self, delta: Self) {
        self.sum += delta.sum;
        self.count += delta.count;
    }

    fn use_snapshots() -> bool {
        true
    }
}

impl ConformanceEntry for SnapEntry {
    fn from_seq(n: u64) -> Self {
        Self { value: n }
    }

    fn sample_snapshot(n: u64) -> SumSnapshot {
        SumSnapshot {
            sum: n * 7,
            count: n,
        }
    }
}
