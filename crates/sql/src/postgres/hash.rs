//! A hash of a replica's user-visible content, to compare replicas.

use super::session::storage;
use crate::EngineError;
use tokio_postgres::Client;

/// Hashes every user table (name, columns, rows in a fixed order) and
/// every sequence's position.
pub(super) async fn state_hash(client: &Client) -> Result<u64, EngineError> {
    let fail = |e: tokio_postgres::Error| storage("hashing the state", &e);
    let mut h = Fnv64::new();
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(fail)?;
    let tables = client
        .query(
            "SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'paxsql_internal'
               AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
             ORDER BY format('%I.%I', n.nspname, c.relname) COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(fail)?;
    for t in &tables {
        let oid: u32 = t.get(0);
        let name: String = t.get(1);
        h.write(name.as_bytes());
        let columns = client
            .query(
                "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod), attnotnull
                 FROM pg_catalog.pg_attribute
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(fail)?;
        for c in &columns {
            let (n, ty, not_null): (String, String, bool) = (c.get(0), c.get(1), c.get(2));
            h.write(format!("{n} {ty} {not_null}").as_bytes());
        }
        let rows = client
            .query(
                &format!(
                    "SELECT r FROM (SELECT x::text AS r FROM {name} AS x) q ORDER BY r COLLATE \"C\""
                ),
                &[],
            )
            .await
            .map_err(fail)?;
        for r in &rows {
            let text: String = r.get(0);
            h.write(text.as_bytes());
        }
    }
    let sequences = client
        .query(
            "SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value::text, '-')
             FROM pg_catalog.pg_sequences WHERE schemaname <> 'paxsql_internal'
             ORDER BY format('%I.%I', schemaname, sequencename) COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(fail)?;
    for s in &sequences {
        let (name, value): (String, String) = (s.get(0), s.get(1));
        h.write(format!("sequence {name} {value}").as_bytes());
    }
    client.batch_execute("ROLLBACK").await.map_err(fail)?;
    Ok(h.0)
}

/// FNV-1a, 64 bit, with a separator after each write (as the SQLite engine).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(std::iter::once(&0xff)) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
