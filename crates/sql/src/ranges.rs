//! Range ownership in the replicated state: what makes a data group refuse
//! a write meant for another (docs/sharding.md).
//!
//! Every database holds `_paxsql_ranges`, one row per range of a table's
//! integer primary key: `[start, end)` (NULL = unbounded), the data group
//! that holds it, and its **generation**, raised by every change of the
//! range. The metadata group's table is the shard map; a data group's
//! holds exactly the ranges it owns. Both change only through their log,
//! by directives the router sends as statements:
//!
//! ```text
//! PAXSQL RANGES {"expect":[[3,2]],"drop":[3],"put":[{...}]}   -- compare and set
//! PAXSQL CLAIM [[3,2],[4,1]]                                 -- fails the whole request
//! ```
//!
//! A routed write starts with a `CLAIM` of the ranges (and generations) the
//! router believed the group owns; if the group's table disagrees, the
//! request fails as a whole with a [`WRONG_RANGE`] error before any of its
//! statements ran, and the router refreshes its map and retries. A table
//! with an integer primary key also gets triggers that refuse, at apply
//! time, a row whose key lies outside the ranges the group owns — however
//! the statement computed it.
//!
//! Users cannot send directives (the router refuses them) nor write the
//! table (the authorizer denies it); they may read it.

use paxsql_types::{Statement, Value};
use serde::{Deserialize, Serialize};

/// The internal table of ranges.
pub const RANGES_TABLE: &str = "_paxsql_ranges";

/// How every "wrong range" error starts: the router retries on it.
pub const WRONG_RANGE: &str = "wrong range";

/// Creates the table (run by the engine at open).
pub(crate) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS _paxsql_ranges (
        range_id INTEGER PRIMARY KEY,
        tbl TEXT NOT NULL,
        start INTEGER,
        \"end\" INTEGER,
        grp INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        pk TEXT
    );
    CREATE INDEX IF NOT EXISTS _paxsql_ranges_by_table ON _paxsql_ranges (tbl, start);
";

/// One range as the table holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRow {
    /// Unique in the cluster, never reused.
    pub range: u64,
    /// The table, lower-cased.
    pub table: String,
    /// First key (inclusive); `None` = unbounded.
    pub start: Option<i64>,
    /// First key after the range; `None` = unbounded.
    pub end: Option<i64>,
    /// The data group holding its rows.
    pub group: u32,
    /// Raised by every change of the range.
    pub generation: u64,
    /// The table's integer primary key column, if it has one: a data group
    /// then guards the keys of the rows written (triggers).
    pub pk: Option<String>,
}

/// The statement that reads a table of ranges (the map, at the metadata
/// group; what a data group owns, at a data group): rows for
/// [`RangeRow::from_row`].
pub const READ_RANGES: &str =
    "SELECT range_id, tbl, start, \"end\", grp, generation, pk FROM _paxsql_ranges";

impl RangeRow {
    /// A row of [`READ_RANGES`]; `None` if it is not one.
    pub fn from_row(row: &[Value]) -> Option<RangeRow> {
        let int = |v: &Value| match v {
            Value::Integer(i) => Some(Some(*i)),
            Value::Null => Some(None),
            _ => None,
        };
        let [id, tbl, start, end, grp, generation, pk] = row else {
            return None;
        };
        let Value::Text(table) = tbl else { return None };
        Some(RangeRow {
            range: int(id)?? as u64,
            table: table.clone(),
            start: int(start)?,
            end: int(end)?,
            group: int(grp)?? as u32,
            generation: int(generation)?? as u64,
            pk: match pk {
                Value::Text(p) => Some(p.clone()),
                _ => None,
            },
        })
    }

    /// Whether key `k` lies in the range.
    pub fn holds(&self, k: i64) -> bool {
        self.start.is_none_or(|s| s <= k) && self.end.is_none_or(|e| k < e)
    }

    /// ` WHERE pk >= start AND pk < end`: the range's rows (empty for a
    /// table without an integer primary key, or an unbounded range).
    pub fn key_filter(&self) -> String {
        match self.key_condition() {
            Some(c) => format!(" WHERE {c}"),
            None => String::new(),
        }
    }

    /// `pk >= start AND pk < end`: the condition of [`RangeRow::key_filter`]
    /// alone, `None` where that is empty.
    pub fn key_condition(&self) -> Option<String> {
        let pk = self.pk.as_ref()?;
        let mut parts = Vec::new();
        if let Some(s) = self.start {
            parts.push(format!("{} >= {s}", ident(pk)));
        }
        if let Some(e) = self.end {
            parts.push(format!("{} < {e}", ident(pk)));
        }
        (!parts.is_empty()).then(|| parts.join(" AND "))
    }

    /// The range on another group, one generation on.
    pub fn moved_to(&self, group: u32) -> RangeRow {
        RangeRow {
            group,
            generation: self.generation + 1,
            ..self.clone()
        }
    }
}

/// A compare-and-set of ranges: every `expect` must hold, then `drop`
/// goes and `put` is written (replacing rows of the same range id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeChange {
    /// `(range, generation)`: the range must be there at that generation;
    /// `None`: the range must not be there.
    pub expect: Vec<(u64, Option<u64>)>,
    /// Ranges removed.
    pub drop: Vec<u64>,
    /// Ranges written.
    pub put: Vec<RangeRow>,
    /// A table that must have no ranges yet (placing a new table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_table: Option<String>,
    /// A table whose ranges are all dropped first (`put` then holds all
    /// this group keeps of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_table: Option<String>,
}

impl RangeChange {
    /// The map change splitting range `r` at key `at` (inside it, not its
    /// start): `r` keeps the keys below `at` and the new range `id` takes
    /// the rest, both at the next generation, on the same group (no data
    /// moves).
    pub fn split(r: &RangeRow, at: i64, id: u64) -> RangeChange {
        let generation = r.generation + 1;
        let left = RangeRow {
            end: Some(at),
            generation,
            ..r.clone()
        };
        let right = RangeRow {
            range: id,
            start: Some(at),
            generation,
            ..r.clone()
        };
        RangeChange {
            expect: vec![(r.range, Some(r.generation)), (id, None)],
            put: vec![left, right],
            ..RangeChange::default()
        }
    }
}

/// A range a routed request expects its group to own, at a generation.
pub type Claim = (u64, u64);

/// A directive: a statement only the router sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directive {
    /// Change the table of ranges.
    Ranges(RangeChange),
    /// Check the group owns these ranges at these generations.
    Claim(Vec<Claim>),
    /// The commit of an interactive transaction: the statements after the
    /// directive must return results with these digests
    /// ([`paxsql_types::StmtResult::digest`]) — what the client was
    /// answered — or the request fails as a serialization failure and
    /// nothing of it is applied.
    Expect(Vec<u64>),
    /// Two-phase commit: prepare the statements after it
    /// ([`crate::twopc`]).
    Prepare(crate::twopc::Prepare),
    /// Two-phase commit: record a decision in the coordinator.
    Decide(crate::twopc::Decision),
    /// Two-phase commit: apply a decision in a participant.
    Outcome(crate::twopc::Decision),
    /// In a probe only: run the group's prepared transaction here, as its
    /// commit would (a read that must see it committed).
    WithPrepared,
}

const PREFIX: &str = "PAXSQL ";

impl Directive {
    /// Recognises a directive's text; `Some(Err)` for a malformed one.
    pub fn parse(sql: &str) -> Option<Result<Directive, String>> {
        let text = sql.trim_start();
        let head = text.get(..PREFIX.len())?;
        if !head.eq_ignore_ascii_case(PREFIX) {
            return None;
        }
        let rest = text[PREFIX.len()..].trim_start();
        let (word, body) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let parsed = match word.to_ascii_uppercase().as_str() {
            "RANGES" => serde_json::from_str(body).map(Directive::Ranges),
            "CLAIM" => serde_json::from_str(body).map(Directive::Claim),
            "EXPECT" => serde_json::from_str(body).map(Directive::Expect),
            "PREPARE" => serde_json::from_str(body).map(Directive::Prepare),
            "DECIDE" => serde_json::from_str(body).map(Directive::Decide),
            "OUTCOME" => serde_json::from_str(body).map(Directive::Outcome),
            "WITH_PREPARED" => Ok(Directive::WithPrepared),
            _ => return None,
        };
        Some(parsed.map_err(|e| format!("malformed PAXSQL {word} directive: {e}")))
    }

    /// The directive's text.
    pub fn to_sql(&self) -> String {
        let (word, body) = match self {
            Directive::Ranges(c) => ("RANGES", serde_json::to_string(c)),
            Directive::Claim(c) => ("CLAIM", serde_json::to_string(c)),
            Directive::Expect(d) => ("EXPECT", serde_json::to_string(d)),
            Directive::Prepare(p) => ("PREPARE", serde_json::to_string(p)),
            Directive::Decide(d) => ("DECIDE", serde_json::to_string(d)),
            Directive::Outcome(d) => ("OUTCOME", serde_json::to_string(d)),
            Directive::WithPrepared => ("WITH_PREPARED", Ok(String::new())),
        };
        format!("{PREFIX}{word} {}", body.expect("ranges encode as JSON"))
    }

    /// The directive as a statement to send.
    pub fn statement(&self) -> Statement {
        Statement::new(self.to_sql())
    }

    /// Whether a text is a directive at all (well-formed or not): users may
    /// not send one.
    pub fn is_directive(sql: &str) -> bool {
        Directive::parse(sql).is_some()
    }
}

/// The statement a claimed read starts with: the claimed ranges'
/// `(range_id, generation)` as the group holds them, read in the same read
/// transaction as the rest (the read is good only if they equal the claim).
pub fn claim_check_sql(claims: &[Claim]) -> String {
    let ids = claims
        .iter()
        .map(|(id, _)| id.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!("SELECT range_id, generation FROM _paxsql_ranges WHERE range_id IN ({ids})")
}

/// The error of a claim the group does not hold.
pub fn wrong_range(range: u64, expected: u64, found: Option<u64>) -> String {
    match found {
        Some(g) => format!(
            "{WRONG_RANGE}: range {range} is at generation {g} on this group, the request \
             expected {expected} (the shard map changed); retry"
        ),
        None => format!(
            "{WRONG_RANGE}: range {range} is not on this group (the shard map changed); retry"
        ),
    }
}

/// Quotes an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The triggers that refuse a row whose key this group does not own.
pub(crate) fn guard_sql(table: &str) -> String {
    let owned = format!(
        "EXISTS (SELECT 1 FROM _paxsql_ranges WHERE tbl = {t} \
           AND (start IS NULL OR start <= NEW.rowid) AND (\"end\" IS NULL OR NEW.rowid < \"end\"))",
        t = literal(table)
    );
    let raise = "SELECT RAISE(ABORT, 'key out of range: the row''s key belongs to a range this \
                 group does not own: a statement may not move a key to a range on another group')";
    let name = |what: &str| ident(&format!("_paxsql_keys_{table}_{what}"));
    format!(
        "CREATE TRIGGER IF NOT EXISTS {ins} AFTER INSERT ON {t} WHEN NOT {owned} BEGIN {raise}; END;
         CREATE TRIGGER IF NOT EXISTS {upd} AFTER UPDATE ON {t} \
           WHEN NEW.rowid IS NOT OLD.rowid AND NOT {owned} BEGIN {raise}; END;",
        ins = name("ins"),
        upd = name("upd"),
        t = ident(table),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_round_trip() {
        let d = Directive::Ranges(RangeChange {
            expect: vec![(1, Some(2)), (5, None)],
            drop: vec![1],
            put: vec![RangeRow {
                range: 5,
                table: "t".into(),
                start: None,
                end: Some(100),
                group: 2,
                generation: 3,
                pk: Some("id".into()),
            }],
            new_table: None,
            replace_table: None,
        });
        assert_eq!(Directive::parse(&d.to_sql()), Some(Ok(d)));
        let c = Directive::Claim(vec![(1, 2)]);
        assert_eq!(Directive::parse(&c.to_sql()), Some(Ok(c)));
        assert_eq!(
            Directive::parse("paxsql claim [[1,2]]"),
            Some(Ok(Directive::Claim(vec![(1, 2)])))
        );
    }

    #[test]
    fn other_texts_are_not_directives() {
        assert!(Directive::parse("SELECT 1").is_none());
        assert!(Directive::parse("SET PAXSQL STATEMENT_BUDGET = 1").is_none());
        assert!(Directive::parse("PAXSQL FOO").is_none());
        assert!(matches!(
            Directive::parse("PAXSQL CLAIM nope"),
            Some(Err(_))
        ));
    }
}
