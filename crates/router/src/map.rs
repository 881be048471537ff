//! The shard map as a node caches it: every table's ranges, read from the
//! metadata group (group 0), whose `_paxsql_ranges` table is the truth.

use paxsql_sql::ranges::RangeRow;
use paxsql_types::{GroupId, Value};
use std::collections::BTreeMap;

/// Every table's ranges, sorted by start key.
#[derive(Clone, Debug, Default)]
pub struct ShardMap {
    tables: BTreeMap<String, Vec<RangeRow>>,
}

/// The statement that reads the map (from any group's `_paxsql_ranges`).
pub const READ_MAP: &str = paxsql_sql::ranges::READ_RANGES;

impl ShardMap {
    /// The map from the rows of `READ_MAP`.
    pub fn from_rows(rows: &[Vec<Value>]) -> Result<ShardMap, String> {
        let mut map = ShardMap::default();
        for row in rows {
            let r =
                RangeRow::from_row(row).ok_or_else(|| format!("malformed range row {row:?}"))?;
            map.tables.entry(r.table.clone()).or_default().push(r);
        }
        for ranges in map.tables.values_mut() {
            ranges.sort_by_key(|r| r.start.map_or(i128::MIN, i128::from));
        }
        Ok(map)
    }

    /// A table's ranges, by start key.
    pub fn ranges(&self, table: &str) -> Option<&[RangeRow]> {
        self.tables
            .get(&table.to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// Every table and its ranges.
    pub fn tables(&self) -> impl Iterator<Item = (&String, &Vec<RangeRow>)> {
        self.tables.iter()
    }

    /// A table's integer primary key column (the key its ranges split).
    pub fn pk(&self, table: &str) -> Option<String> {
        self.ranges(table)
            .and_then(|r| r.first())
            .and_then(|r| r.pk.clone())
    }

    /// A range by id.
    pub fn range(&self, id: u64) -> Option<&RangeRow> {
        self.tables.values().flatten().find(|r| r.range == id)
    }

    /// The next free range id.
    pub fn next_range_id(&self) -> u64 {
        self.tables
            .values()
            .flatten()
            .map(|r| r.range)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// The data group holding the fewest ranges (the lowest id of those):
    /// where a new table goes.
    pub fn emptiest(&self, groups: &[GroupId]) -> GroupId {
        let count = |g: &GroupId| {
            self.tables
                .values()
                .flatten()
                .filter(|r| r.group == g.0)
                .count()
        };
        groups
            .iter()
            .min_by_key(|g| (count(g), g.0))
            .copied()
            .unwrap_or(GroupId(1))
    }
}
