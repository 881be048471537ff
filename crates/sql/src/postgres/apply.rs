//! Applying one log entry: one PostgreSQL transaction with the entry's
//! requests, their recorded answers, the applied index and the sequences.
//!
//! The entry first takes the admission gate (`paxsql_internal.admission`
//! in EXCLUSIVE mode), which dry runs hold in ROW SHARE mode: no dry run
//! overlaps an entry, so a dry run's row locks never make an entry wait or
//! deadlock, and the `nextval()` calls a dry run made (sequences ignore
//! rollbacks) are undone by the sequence restore that follows, before any
//! statement of the entry runs. Then `statement_timeout` is set to the
//! apply backstop ([`super::admission`]).

use super::admission::apply_backstop_ms;
use super::session::storage;
use super::statement::{fatal, run_statement, Around, Fatal, How};
use super::{read_budget, PostgresOptions};
use crate::settings::{self, Setting};
use crate::{Applied, EngineError};
use paxsql_types::{Entry, LogIndex, Proposal, RequestId, StmtResult, WriteRequest};
use std::collections::HashMap;
use tokio_postgres::Client;

/// Records every sequence's position, in the entry's transaction.
const SAVE_SEQUENCES: &str = "
    INSERT INTO paxsql_internal.sequences (name, last_value)
        SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_catalog.pg_sequences
        WHERE schemaname <> 'paxsql_internal'
    ON CONFLICT (name) DO UPDATE SET last_value = EXCLUDED.last_value
        WHERE paxsql_internal.sequences.last_value IS DISTINCT FROM EXCLUDED.last_value;
    DELETE FROM paxsql_internal.sequences s WHERE NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_sequences p
        WHERE format('%I.%I', p.schemaname, p.sequencename) = s.name);
";

/// Puts sequences back where the last committed entry left them. Runs
/// before every entry (and after every dry run), so it goes from the
/// stored names straight to each sequence: no `pg_sequences` view to plan,
/// and about the cost of a `SELECT 1` when nothing moved.
pub(super) const RESTORE_SEQUENCES: &str = "
    SELECT CASE WHEN s.last_value IS NULL
                THEN pg_catalog.setval(q.seqrelid, q.seqstart, false)
                ELSE pg_catalog.setval(q.seqrelid, s.last_value, true) END
    FROM paxsql_internal.sequences s
    JOIN pg_catalog.pg_sequence q ON q.seqrelid = pg_catalog.to_regclass(s.name)
    WHERE s.last_value IS DISTINCT FROM pg_catalog.pg_sequence_last_value(q.seqrelid)
";

/// How often (in entries) old request ids are forgotten.
const DEDUP_PRUNE_EVERY: u64 = 1024;

/// What an entry's transaction needs to know besides the entry.
pub(super) struct EntryContext<'a> {
    pub(super) options: &'a PostgresOptions,
    /// The statement budget when the entry starts.
    pub(super) budget: u64,
    /// The operator's backstop for this database, if set (ms).
    pub(super) backstop_override_ms: Option<u64>,
}

impl EntryContext<'_> {
    fn backstop_ms(&self, budget: u64) -> u64 {
        self.backstop_override_ms
            .unwrap_or_else(|| apply_backstop_ms(budget))
    }
}

/// One entry's transaction: which requests it completed, to record at commit.
struct EntryWork {
    index: LogIndex,
    /// Requests completed before this entry, or earlier in it: their first answer.
    completed: HashMap<String, Vec<StmtResult>>,
    /// (id, encoded results) of the requests this entry applied.
    records: Vec<(String, String)>,
    /// Whether a statement set the budget (it is read again after the commit).
    budget_set: bool,
}

/// What applying an entry produced: the answers, and whether the budget
/// may have changed.
pub(super) struct EntryDone {
    pub(super) applied: Vec<Applied>,
    pub(super) budget_set: bool,
}

/// Applies a whole entry: BEGIN with the gate, the backstop, the sequence
/// restore and the duplicate lookup; the proposals; then the records, the
/// applied index and the sequences with the COMMIT.
pub(super) async fn apply_entry(
    client: &Client,
    cx: &EntryContext<'_>,
    index: LogIndex,
    entry: &Entry,
) -> Result<EntryDone, Fatal> {
    let ids: Vec<&str> = entry
        .proposals
        .iter()
        .filter_map(|p| match p {
            Proposal::Write(w) => Some(w.id.0.as_str()),
            Proposal::Barrier(_) => None,
        })
        .collect();
    let lookup: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
    // In PostgreSQL 13 and later each statement of a simple query has its
    // own timeout: the wait for the gate has none (dry runs end by their
    // own), what follows has the backstop.
    let start = format!(
        "BEGIN; LOCK TABLE paxsql_internal.admission IN EXCLUSIVE MODE; \
         SET LOCAL statement_timeout = {}; {RESTORE_SEQUENCES}",
        cx.backstop_ms(cx.budget)
    );
    let (begun, known) = tokio::join!(
        client.batch_execute(&start),
        client.query(
            "SELECT id, results FROM paxsql_internal.requests WHERE id = ANY($1)",
            &lookup,
        )
    );
    begun.map_err(|e| fatal("starting an entry", &e))?;
    let mut work = EntryWork {
        index,
        completed: HashMap::new(),
        records: Vec::new(),
        budget_set: false,
    };
    for row in known.map_err(|e| fatal("looking up request ids", &e))? {
        let id: String = row.get(0);
        let results = decode_results(&RequestId(id.clone()), row.get(1))?;
        work.completed.insert(id, results);
    }
    let mut out = Vec::with_capacity(entry.proposals.len());
    for p in &entry.proposals {
        match p {
            Proposal::Write(w) => out.push(apply_write(client, cx, &mut work, w).await?),
            Proposal::Barrier(b) => out.push(Applied::Barrier(*b)),
        }
    }
    let budget_set = work.budget_set;
    commit_entry(client, cx.options, work).await?;
    Ok(EntryDone {
        applied: out,
        budget_set,
    })
}

/// The records, the applied index, the sequences and the COMMIT, pipelined.
async fn commit_entry(
    client: &Client,
    options: &PostgresOptions,
    work: EntryWork,
) -> Result<(), Fatal> {
    let next = LogIndex(work.index.0 + 1);
    let mut finish = format!(
        "UPDATE paxsql_internal.meta SET value = '{}' WHERE key = 'applied_index'; {SAVE_SEQUENCES}",
        next.0
    );
    if next.0.is_multiple_of(DEDUP_PRUNE_EVERY) && next.0 >= options.dedup_window_entries {
        let horizon = next.0 - options.dedup_window_entries;
        finish.push_str(&format!(
            "DELETE FROM paxsql_internal.requests WHERE applied_index < {horizon};"
        ));
    }
    finish.push_str("COMMIT");
    let (ids, results): (Vec<String>, Vec<String>) = work.records.into_iter().unzip();
    let at = work.index.0 as i64;
    // The records go first; if they fail, the batch after them fails too
    // (the transaction is aborted) and never reaches its COMMIT.
    let (recorded, committed) = tokio::join!(
        async {
            if ids.is_empty() {
                return Ok(0);
            }
            client
                .execute(
                    "INSERT INTO paxsql_internal.requests (id, applied_index, results) \
                     SELECT unnest($1::text[]), $2, unnest($3::text[])",
                    &[&ids, &at, &results],
                )
                .await
        },
        client.batch_execute(&finish)
    );
    recorded.map_err(|e| fatal("recording requests", &e))?;
    committed.map_err(|e| fatal("committing an entry", &e))?;
    Ok(())
}

/// Applies one write request inside the entry's transaction.
async fn apply_write(
    client: &Client,
    cx: &EntryContext<'_>,
    work: &mut EntryWork,
    w: &WriteRequest,
) -> Result<Applied, Fatal> {
    if let Some(results) = work.completed.get(&w.id.0) {
        return Ok(Applied::Write {
            id: w.id.clone(),
            results: results.clone(),
            duplicate: true,
        });
    }
    let setup = format!(
        "SAVEPOINT paxsql_request; SELECT pg_catalog.set_config('paxsql.now', '{}', true), \
         pg_catalog.setseed({:?}); DISCARD SEQUENCES",
        clock_text(w.env.unix_ms),
        seed_arg(w.env.seed)
    );
    // Several independent statements each get a savepoint; otherwise the
    // request's savepoint is the statement's.
    let per_statement = !w.transaction && w.stmts.len() > 1;
    let mut results = Vec::with_capacity(w.stmts.len());
    let mut failed = false;
    let mut ended = false;
    for (i, stmt) in w.stmts.iter().enumerate() {
        let last = i + 1 == w.stmts.len();
        let around = Around {
            before: if i == 0 { &setup } else { "" },
            savepoint: per_statement,
            after: if last {
                "RELEASE SAVEPOINT paxsql_request"
            } else {
                ""
            },
        };
        let ran = match Setting::parse(&stmt.sql) {
            Some(setting) => {
                work.budget_set |= setting.is_write();
                apply_setting(client, cx, setting, &around).await
            }
            None => {
                let how = How::Apply {
                    rows_max: cx.options.result_rows_max,
                };
                run_statement(client, stmt, &around, how).await
            }
        };
        let (r, after_ran) = ran.map_err(|f| beyond_backstop(f, cx, w, i))?;
        ended = last && after_ran;
        let is_error = matches!(r, StmtResult::Error(_));
        results.push(r);
        if is_error && !per_statement {
            failed = true;
            break;
        }
    }
    let end = if failed {
        "ROLLBACK TO SAVEPOINT paxsql_request; RELEASE SAVEPOINT paxsql_request"
    } else if w.stmts.is_empty() {
        &*format!("{setup}; RELEASE SAVEPOINT paxsql_request")
    } else if !ended {
        "RELEASE SAVEPOINT paxsql_request"
    } else {
        ""
    };
    if !end.is_empty() {
        client
            .batch_execute(end)
            .await
            .map_err(|e| fatal("ending a request", &e))?;
    }
    let encoded = serde_json::to_string(&results)
        .map_err(|e| EngineError::Inconsistent(format!("encoding results: {e}")))?;
    work.records.push((w.id.0.clone(), encoded));
    work.completed.insert(w.id.0.clone(), results.clone());
    Ok(Applied::Write {
        id: w.id.clone(),
        results,
        duplicate: false,
    })
}

/// A statement cancelled while applying cannot become its answer: another
/// replica may have finished it. The replica stops, saying what to do.
fn beyond_backstop(f: Fatal, cx: &EntryContext<'_>, w: &WriteRequest, i: usize) -> Fatal {
    let Fatal::Cancelled(e) = f else {
        return f;
    };
    let database = &cx.options.database;
    Fatal::Cancelled(EngineError::Inconsistent(format!(
        "statement {} of request {} was cancelled while it was applied ({e}): it ran longer \
         than the apply backstop of {} ms, or an operator cancelled it; its outcome is not \
         recorded, and this replica stops rather than differ from replicas where it \
         finished. It passed the dry run before the log, so the state it met here made it \
         costlier. To let it finish on this replica, raise the backstop with ALTER DATABASE \
         \"{database}\" SET paxsql.apply_backstop_ms = '<ms>' and restart the node",
        i + 1,
        w.id,
        cx.backstop_ms(cx.budget),
    )))
}

/// A settings statement inside the entry's transaction: the budget lives
/// in `paxsql_internal.meta`, so it changes with the entry that commits it
/// (and not at all if its request fails), on every replica alike.
async fn apply_setting(
    client: &Client,
    cx: &EntryContext<'_>,
    setting: Setting,
    around: &Around<'_>,
) -> Result<(StmtResult, bool), Fatal> {
    if !around.before.is_empty() {
        client
            .batch_execute(around.before)
            .await
            .map_err(|e| fatal("starting a request", &e))?;
    }
    let result = match setting {
        Setting::SetStatementBudget(Err(e)) => {
            return Ok((StmtResult::Error(e.to_string()), false))
        }
        Setting::SetStatementBudget(Ok(budget)) => {
            let set = format!(
                "INSERT INTO paxsql_internal.meta (key, value) VALUES ('{}', '{budget}') \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value; \
                 SET LOCAL statement_timeout = {}",
                settings::STATEMENT_BUDGET_KEY,
                cx.backstop_ms(budget)
            );
            client
                .batch_execute(&set)
                .await
                .map_err(|e| fatal("setting the statement budget", &e))?;
            StmtResult::Exec {
                last_insert_id: 0,
                rows_affected: 0,
            }
        }
        Setting::ShowStatementBudget => budget_rows(read_budget(client).await?),
    };
    if !around.after.is_empty() {
        client
            .batch_execute(around.after)
            .await
            .map_err(|e| fatal("ending a request", &e))?;
    }
    Ok((result, true))
}

/// `SHOW PAXSQL STATEMENT_BUDGET`'s answer.
pub(super) fn budget_rows(budget: u64) -> StmtResult {
    crate::settings::budget_rows(budget, "int8")
}

/// `setseed()`'s argument (in [-1, 1]) for an entry's seed.
fn seed_arg(seed: u64) -> f64 {
    (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// The entry's clock as a `timestamptz` literal's text.
fn clock_text(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms = unix_ms.rem_euclid(86_400_000);
    let (y, m, d) = crate::pg_values::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}+00",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

pub(super) async fn completed_in(
    client: &Client,
    id: &RequestId,
) -> Result<Option<Vec<StmtResult>>, EngineError> {
    let row = client
        .query_opt(
            "SELECT results FROM paxsql_internal.requests WHERE id = $1",
            &[&id.0],
        )
        .await
        .map_err(|e| storage("looking up a request id", &e))?;
    row.map(|r| decode_results(id, &r.get::<_, String>(0)))
        .transpose()
}

fn decode_results(id: &RequestId, encoded: &str) -> Result<Vec<StmtResult>, EngineError> {
    serde_json::from_str(encoded)
        .map_err(|e| EngineError::Inconsistent(format!("stored results of {id}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_text_is_utc() {
        assert_eq!(clock_text(1_700_000_000_123), "2023-11-14 22:13:20.123+00");
        assert!((-1.0..=1.0).contains(&seed_arg(u64::MAX)));
        assert!((-1.0..=1.0).contains(&seed_arg(0)));
    }
}
