//! Sharding helpers for paxsql's router, with no network IO.
//!
//! paxsql splits each table's INTEGER PRIMARY KEY (rowid) space into ranges
//! `[start, end)`, each living on one data group. The router above the
//! groups needs four things this crate gives it:
//!
//! 1. [`keys`]: what one SQL statement touches — a schema change, a write of
//!    one table and the keys it may touch, a read of some tables — so the
//!    statement goes only to the groups whose ranges it overlaps.
//! 2. [`command`]: the sharding commands users type (`ALTER TABLE t SPLIT AT
//!    VALUES (...)`, `ALTER RANGE n RELOCATE TO GROUP g`, `SHOW RANGES`),
//!    which no SQL parser knows.
//! 3. [`gather`]: a query that needs rows from several groups runs over
//!    copies of those rows in a private in-memory SQLite, bounded in bytes.
//! 4. [`pushdown`]: what of such a query each range's SELECT can do itself
//!    (the WHERE of a one-table query, its `ORDER BY ... LIMIT`), so that
//!    fewer rows are copied.
//!
//! Everything here is a pure function of its inputs (the in-memory SQLite
//! included): the router owns the IO.

#![warn(missing_docs)]

pub mod command;
pub mod gather;
pub mod keys;
pub mod pushdown;
pub mod rewrite;

pub use command::{check_split_keys, Command};
pub use gather::Gather;
pub use keys::{shape, InsertShape, KeyInterval, KeylessRows, Keys, SchemaChange, Shape};
