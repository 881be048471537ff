//! Dry runs of writes: their statements in a transaction that is always
//! rolled back, each under the time the statement budget buys
//! ([`super::admission`] says why and what for).
//!
//! A dry run is on the path of every write of a PostgreSQL cluster, so it
//! is done the way the log is applied: in groups. The writes waiting for a
//! dry run share one transaction, each in a savepoint of its own that is
//! rolled back to after it, so each sees the replica as the log left it and
//! none sees another. The transaction's start (the admission gate, the
//! budget read and the limits it implies, set in SQL by the same rule as
//! [`time_budget_ms`]), each write's statements and savepoints, and the
//! end all go out pipelined: a group of single-statement writes costs one
//! round trip and one transaction; a write's second and later statements
//! one round trip each, since what is sent before them depends on how the
//! one before ended.
//!
//! A group holds the admission gate, which entries of the log wait for, so
//! it is paced ([`Pace`]): at most 8 writes per round trip, no new write
//! after 50 ms (the rest go to the next group, after a waiting entry), and
//! after a group that met a runaway, one write per round trip — each
//! runaway holds the gate for its whole time budget.

use super::admission::{dry_run_lock_ms, time_budget_ms, STEPS_PER_MS, TIME_BUDGET_MIN_MS};
use super::apply::RESTORE_SEQUENCES;
use super::session::error_text;
use super::statement::{checked_sql, fatal, Fatal};
use crate::settings::{self, Setting};
use crate::Dialect;
use paxsql_types::Statement;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

/// What a dry run found for one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum DryRun {
    /// Every statement ended within the time budget (or failed on its own).
    Fits,
    /// Statement `statement` (from 0) ran past the time `budget` buys.
    OverBudget {
        /// The statement.
        statement: usize,
        /// The budget in force for it, in steps.
        budget: u64,
    },
    /// A lock wait spoilt the measure (another session held a row, a
    /// deadlock, the gate was held too long): run it again.
    Inconclusive(String),
    /// Not run: the group had held the gate long enough (see [`Pace`]).
    Later,
}

/// How much a group may do before the log's apply gets its turn: a group
/// holds the admission gate, which an entry waits for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pace {
    /// Writes sent in one round trip at most. Each may run for its whole
    /// time budget, so after a group that met a runaway the next sends one
    /// at a time.
    pub(super) round_writes_max: usize,
    /// No write starts after the group held the gate this long; the rest
    /// wait for the next group.
    pub(super) hold_max: Duration,
}

/// A statement the dry run runs.
struct Trial {
    /// Its place in the write.
    at: usize,
    /// The budget an earlier statement of the same write set, if one did.
    budget_set: Option<u64>,
    /// The text, rewritten as the log would have it, parameters inlined.
    sql: String,
}

/// The statements of a write that reach PostgreSQL: settings are the
/// engine's, and what the log would refuse never runs, here either.
fn trials_of(stmts: &[Statement]) -> Vec<Trial> {
    let mut state = now_nanos();
    let mut random = move || crate::splitmix64(&mut state);
    let mut env = crate::determinism::Env {
        unix_ms: (now_nanos() / 1_000_000) as i64,
        random: &mut random,
    };
    let mut budget_set = None;
    let mut out = Vec::with_capacity(stmts.len());
    for (at, stmt) in stmts.iter().enumerate() {
        match Setting::parse(&stmt.sql) {
            Some(Setting::SetStatementBudget(Ok(b))) => budget_set = Some(b),
            Some(_) => {}
            None => {
                let Ok(sql) = Dialect::Postgres.make_deterministic(&stmt.sql, &mut env) else {
                    continue;
                };
                let rewritten = Statement {
                    sql: sql.into_owned(),
                    params: stmt.params.clone(),
                };
                if let Ok(sql) = checked_sql(&rewritten) {
                    out.push(Trial {
                        at,
                        budget_set,
                        sql: sql.into_owned(),
                    });
                }
            }
        }
    }
    out
}

/// A dry run needs no determinism; any seed will do.
fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Reads the replica's budget and sets the statements' limits from it:
/// `statement_timeout` as [`time_budget_ms`], `lock_timeout` as
/// [`dry_run_lock_ms`].
fn budget_limits() -> String {
    format!(
        "SELECT b, pg_catalog.set_config('statement_timeout', ms::text, true), \
                pg_catalog.set_config('lock_timeout', greatest(ms / 2, 5)::text, true) \
         FROM (SELECT coalesce((SELECT value FROM paxsql_internal.meta WHERE key = '{}'), \
                               '{}')::bigint AS b) s, \
              LATERAL (SELECT greatest(s.b / {STEPS_PER_MS}, {TIME_BUDGET_MIN_MS}) AS ms) t",
        settings::STATEMENT_BUDGET_KEY,
        settings::STATEMENT_BUDGET_DEFAULT
    )
}

/// After a write: none of it stays for the next write to see. The
/// savepoint, taken once at the start of the group, stays for the next.
const END_WRITE: &str = "ROLLBACK TO SAVEPOINT paxsql_write";

/// The end of a group: sequences go back where the log left them while
/// the gate is still held (the next entry puts them back anyway; this is
/// for the reads in between) ...
const END_RESTORE: &str = RESTORE_SEQUENCES;

/// ... then the transaction ends, and any session advisory lock a
/// statement took is dropped (they ignore the rollback, and the log's
/// apply would wait for them). Sent apart, so that it runs even when the
/// transaction is broken.
const END: &str = "ROLLBACK; SELECT pg_catalog.pg_advisory_unlock_all()";

type Sent<'c> = Pin<Box<dyn Future<Output = Result<Reply, tokio_postgres::Error>> + 'c>>;

/// What came back for one message sent.
enum Reply {
    Rows(Vec<SimpleQueryMessage>),
    Done,
}

/// What a sent message was, to read its answer.
#[derive(Clone, Copy)]
enum Part {
    /// The group's start.
    Begin,
    /// Savepoints, releases and limits around statements.
    Around,
    /// Statement `trial` of write `write`.
    Statement { write: usize, trial: usize },
    /// The restore at the end (may fail harmlessly).
    Restore,
    /// The rollback at the end.
    End,
}

/// Messages sent together, answered in order.
struct Pipeline<'c> {
    client: &'c Client,
    sent: Vec<(Part, Sent<'c>)>,
}

impl<'c> Pipeline<'c> {
    fn batch(&mut self, part: Part, sql: String) {
        let client = self.client;
        self.sent.push((
            part,
            Box::pin(async move { client.batch_execute(&sql).await.map(|()| Reply::Done) }),
        ));
    }

    fn begin(&mut self, sql: String) {
        let client = self.client;
        self.sent.push((
            Part::Begin,
            Box::pin(async move { client.simple_query(&sql).await.map(Reply::Rows) }),
        ));
    }

    fn statement(&mut self, part: Part, sql: &'c str) {
        let client = self.client;
        self.sent.push((
            part,
            Box::pin(async move {
                let no_params: [(&(dyn ToSql + Sync), Type); 0] = [];
                client
                    .execute_typed(sql, &no_params)
                    .await
                    .map(|_| Reply::Done)
            }),
        ));
    }

    /// Sends everything queued (in order: each message leaves when it is
    /// first polled) and waits for every answer.
    async fn flush(&mut self) -> Vec<(Part, Result<Reply, tokio_postgres::Error>)> {
        let mut sent = std::mem::take(&mut self.sent);
        let mut answers: Vec<Option<Result<Reply, tokio_postgres::Error>>> =
            sent.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (i, (_, fut)) in sent.iter_mut().enumerate() {
                if answers[i].is_none() {
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(answer) => answers[i] = Some(answer),
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        sent.into_iter()
            .zip(answers)
            .map(|((part, _), answer)| (part, answer.expect("every answer arrived")))
            .collect()
    }
}

/// The state of one write in a group.
struct Write {
    /// Its trials.
    len: usize,
    /// The trial to send next.
    next: usize,
    /// Sent before the next trial (the previous one's release or undo).
    owed: String,
    found: Option<DryRun>,
}

/// Runs a group of writes' dry runs on `client` in one transaction, which
/// is always ended; one answer per write.
pub(super) async fn dry_run(
    client: &Client,
    writes: &[&[Statement]],
    gate_wait: Duration,
    pace: Pace,
) -> Result<Vec<DryRun>, Fatal> {
    let trials: Vec<Vec<Trial>> = writes.iter().map(|stmts| trials_of(stmts)).collect();
    let mut group: Vec<Write> = trials
        .iter()
        .map(|t| Write {
            len: t.len(),
            next: 0,
            owed: String::new(),
            found: t.is_empty().then_some(DryRun::Fits),
        })
        .collect();
    if group.iter().all(|w| w.found.is_some()) {
        return Ok(group.into_iter().map(|w| w.found.expect("set")).collect());
    }
    let mut pipe = Pipeline {
        client,
        sent: Vec::new(),
    };
    pipe.begin(format!(
        "BEGIN; SET LOCAL lock_timeout = {}; \
         LOCK TABLE paxsql_internal.admission IN ROW SHARE MODE; {}; SAVEPOINT paxsql_write",
        gate_wait.as_millis().max(1),
        budget_limits()
    ));
    let mut budget = None;
    let mut begun = true;
    // Set once the gate is held (the first answers are in).
    let mut holding: Option<std::time::Instant> = None;
    // Each round sends, for every write still running, its next statement
    // (and, after a write's last one, its end); writes follow one another
    // in the transaction, so a round stops at the first write that must
    // wait for an answer before its next statement.
    loop {
        let mut queued = false;
        let mut in_round = 0;
        let held_long = holding.is_some_and(|since| since.elapsed() > pace.hold_max);
        for (j, w) in group.iter_mut().enumerate() {
            if w.found.is_some() {
                continue;
            }
            if w.next == 0 && held_long {
                w.found = Some(DryRun::Later);
                continue;
            }
            if in_round == pace.round_writes_max.max(1) {
                break;
            }
            in_round += 1;
            let trial = &trials[j][w.next];
            let mut before = std::mem::take(&mut w.owed);
            if let Some(b) = trial.budget_set {
                let ms = time_budget_ms(b);
                before.push_str(&format!(
                    "SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {}; ",
                    dry_run_lock_ms(ms)
                ));
            }
            // Only a statement with others after it in its write needs a
            // savepoint of its own, to undo it alone if it fails.
            if w.next + 1 < w.len {
                before.push_str("SAVEPOINT paxsql_stmt");
            }
            if !before.is_empty() {
                pipe.batch(Part::Around, before);
            }
            let part = Part::Statement {
                write: j,
                trial: w.next,
            };
            pipe.statement(part, &trial.sql);
            queued = true;
            w.next += 1;
            if w.next < w.len {
                // The rest of this write, and every write after it, waits.
                break;
            }
            pipe.batch(Part::Around, END_WRITE.into());
            w.found = Some(DryRun::Fits);
        }
        let finished = group.iter().all(|w| w.found.is_some());
        if finished {
            pipe.batch(Part::Restore, END_RESTORE.into());
            pipe.batch(Part::End, END.into());
        }
        debug_assert!(queued || finished);
        for (part, answer) in pipe.flush().await {
            let outcome = Outcome {
                trials: &trials,
                group: &mut group,
                budget: &mut budget,
                begun: &mut begun,
            };
            outcome.read(part, answer, gate_wait)?;
        }
        holding.get_or_insert_with(std::time::Instant::now);
        if finished {
            return Ok(group.into_iter().map(|w| w.found.expect("set")).collect());
        }
        // A write stopped by its answer ends here.
        for w in &mut group {
            if w.next > 0 && w.next < w.len && w.found.is_some() {
                w.owed.clear();
                pipe.batch(Part::Around, END_WRITE.into());
                w.next = w.len;
            }
        }
    }
}

/// Where the answers of a group's pipeline go.
struct Outcome<'a> {
    trials: &'a [Vec<Trial>],
    group: &'a mut [Write],
    /// The budget the start read.
    budget: &'a mut Option<u64>,
    /// False once the start failed: what follows fails with it.
    begun: &'a mut bool,
}

impl Outcome<'_> {
    /// Reads one answer into the writes' outcomes.
    fn read(
        self,
        part: Part,
        answer: Result<Reply, tokio_postgres::Error>,
        gate_wait: Duration,
    ) -> Result<(), Fatal> {
        let code = |e: &tokio_postgres::Error| e.code().map(|c| c.code().to_owned());
        match (part, answer) {
            (Part::Begin, Ok(Reply::Rows(rows))) => *self.budget = budget_of(&rows),
            (Part::Begin, Err(e)) if code(&e).as_deref() == Some("55P03") => {
                *self.begun = false;
                let why = format!(
                    "applying the log held this replica for more than {} ms",
                    gate_wait.as_millis()
                );
                for w in self.group.iter_mut() {
                    w.found = Some(DryRun::Inconclusive(why.clone()));
                }
            }
            (Part::Begin, Err(e)) => return Err(fatal("starting a dry run", &e)),
            (Part::Statement { write, trial }, Ok(_)) => {
                let w = &mut self.group[write];
                if trial + 1 < w.len {
                    w.owed = "RELEASE SAVEPOINT paxsql_stmt; ".into();
                }
            }
            (Part::Statement { write, trial }, Err(e)) => {
                let Some(code) = code(&e) else {
                    return Err(fatal("running a statement of a dry run", &e));
                };
                let t = &self.trials[write][trial];
                let w = &mut self.group[write];
                let stop = match code.as_str() {
                    _ if !*self.begun => None,
                    "57014" => Some(DryRun::OverBudget {
                        statement: t.at,
                        budget: t
                            .budget_set
                            .or(*self.budget)
                            .unwrap_or(settings::STATEMENT_BUDGET_DEFAULT),
                    }),
                    "55P03" | "40P01" | "40001" => Some(DryRun::Inconclusive(error_text(&e))),
                    // The statement's own error: the log will record it.
                    _ => None,
                };
                match stop {
                    // After its last statement, its end is already sent.
                    Some(found) => w.found = Some(found),
                    None if trial + 1 < w.len => {
                        w.owed = "ROLLBACK TO SAVEPOINT paxsql_stmt; \
                                  RELEASE SAVEPOINT paxsql_stmt; "
                            .into();
                    }
                    None => {}
                }
            }
            (Part::Around, Err(e)) if *self.begun => {
                return Err(fatal("around a statement of a dry run", &e))
            }
            (Part::End, Err(e)) => return Err(fatal("ending a dry run", &e)),
            // The restore may fail in a broken transaction; the next entry
            // puts sequences back anyway.
            _ => {}
        }
        Ok(())
    }
}

/// The budget the start of a dry run read.
fn budget_of(messages: &[SimpleQueryMessage]) -> Option<u64> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).and_then(|b| b.parse().ok()),
        _ => None,
    })
}
