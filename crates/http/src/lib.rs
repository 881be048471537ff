//! paxsql's HTTP API, compatible with rqlite's so its clients work.

mod db;

pub use db::{Db, WriteOptions};
