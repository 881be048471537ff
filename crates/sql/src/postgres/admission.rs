//! Runaway writes on PostgreSQL: admission by a dry run before the log,
//! and a backstop at apply.
//!
//! SQLite counts a statement's work in VM steps, the same on every replica,
//! so a statement over the budget fails alike everywhere. PostgreSQL counts
//! nothing of the kind: its only bound is `statement_timeout`, a wall
//! clock, which would fire on a slow replica and not on a fast one — the
//! replicas would record different answers and diverge. So the clock must
//! not decide the outcome of anything in the log. It decides *admission*
//! instead:
//!
//! 1. **Dry run.** The node that receives a write runs its statements
//!    first, on a connection of its own replica (the threads of a
//!    [`PostgresAdmission`], never the group's thread nor an async task),
//!    in a transaction that is always rolled back — writes waiting
//!    together share one, as entries share one when applied
//!    ([`super::dry_run`]) — each statement under the **time budget**: the
//!    replicated statement budget converted at [`STEPS_PER_MS`] steps per
//!    millisecond ([`time_budget_ms`]; the default 100 million steps buy
//!    one second). A statement that runs past it makes the write refused
//!    with a budget error: it never enters the log, so there is nothing
//!    for replicas to disagree about.
//! 2. **Backstop.** Applying the log runs under a generous
//!    `statement_timeout` ([`apply_backstop_ms`]: ten times the time
//!    budget, at least ten seconds). A statement that reaches it is not
//!    made an error (another replica may have finished it): the entry is
//!    rolled back and the replica stops with an [`EngineError`], loudly
//!    (`/status` failure, `/readyz`, `paxsql_group_failed`).
//!
//! The residual risk: a write whose cost depends on the state it meets —
//! `UPDATE t SET a = (<runaway>) WHERE id = 5` passes its dry run while row
//! 5 does not exist, and an entry before it in the log inserts the row —
//! can pass admission and run away at apply; it then stops every replica
//! it runs away on. An operator raises the backstop of a replica's
//! database (`ALTER DATABASE ... SET paxsql.apply_backstop_ms = '<ms>'`)
//! and restarts the node to let it finish.
//!
//! Dry runs and the log's apply never overlap: an entry holds the
//! admission gate (a lock on `paxsql_internal.admission`) exclusively, dry
//! runs share it. So a dry run's row locks never make an entry wait or
//! deadlock, and the sequence positions a dry run consumed (`nextval()`
//! ignores rollbacks) are put back by the entry before its first statement
//! — a dry run cannot change what a replica hands out.

use super::dry_run::{DryRun, Pace};
use super::reader::PostgresReader;
use super::session::replica_config;
use crate::{EngineError, ReadLimits};
use paxsql_types::Statement;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Statement-budget steps per millisecond of PostgreSQL time: 100 million
/// steps (the default budget, about 0.3–1 s of SQLite work) buy one second.
pub(super) const STEPS_PER_MS: u64 = 100_000;

/// The shortest time budget, whatever the steps.
pub(super) const TIME_BUDGET_MIN_MS: u64 = 10;

/// The shortest apply backstop.
pub(super) const APPLY_BACKSTOP_MIN_MS: u64 = 10_000;

/// How many times a dry run whose measure a lock wait spoilt runs again.
const DRY_RUN_ATTEMPTS: usize = 3;

/// The time a statement budget buys a statement on PostgreSQL.
pub(super) fn time_budget_ms(steps: u64) -> u64 {
    (steps / STEPS_PER_MS).max(TIME_BUDGET_MIN_MS)
}

/// The wall-clock bound of a statement applied from the log.
pub(super) fn apply_backstop_ms(steps: u64) -> u64 {
    time_budget_ms(steps)
        .saturating_mul(10)
        .max(APPLY_BACKSTOP_MIN_MS)
}

/// How long a dry-run statement may wait for a row lock (held by another
/// dry run) before its measure is called spoilt: half its time, so that
/// waiting alone never looks like running over the budget.
pub(super) fn dry_run_lock_ms(time_budget_ms: u64) -> u64 {
    (time_budget_ms / 2).max(5)
}

/// Why a write was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A statement ran past the time budget: the write would run away.
    #[error("{0}")]
    OverBudget(String),
    /// The dry run could not be done (the database is unreachable, or
    /// busy for longer than the wait allows): retry.
    #[error("{0}")]
    Unavailable(String),
    /// Too many writes are waiting for a dry run: retry after a moment.
    #[error("{0}")]
    Busy(String),
}

/// What a caller gets back: its statements, and whether they are admitted.
pub type Admitted = (Vec<Statement>, Result<(), Refused>);

/// A write waiting for its dry run.
struct Job {
    stmts: Vec<Statement>,
    /// Dry runs already spoilt by lock waits.
    spoilt: usize,
    why: String,
    reply: Box<dyn FnOnce(Admitted) + Send>,
}

/// Writes one dry run takes at most; more wait for the next.
const GROUP_WRITES_MAX: usize = 64;

/// How a group of dry runs goes while none meets a runaway ...
const PACE: Pace = Pace {
    round_writes_max: 8,
    hold_max: Duration::from_millis(50),
};

/// ... and after one did: one write per round trip, so that an entry
/// waiting for the gate waits about one time budget, not one per write.
const CAUTIOUS: Pace = Pace {
    round_writes_max: 1,
    hold_max: Duration::from_millis(50),
};

/// Dry runs of writes on one replica's database: `connections` threads,
/// each with a connection of its own (opened when first needed, opened
/// again when it broke), take the writes waiting in a bounded queue and
/// run each group of them as one dry run, in one transaction.
pub struct PostgresAdmission {
    jobs: SyncSender<Job>,
    database: String,
}

impl std::fmt::Debug for PostgresAdmission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresAdmission")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl PostgresAdmission {
    /// Starts the threads for database `database` of the server at `url`;
    /// connects to nothing yet. A dry run waits at most `gate_wait` for an
    /// entry being applied; at most `queue_max` writes wait for one.
    pub fn start(
        url: &str,
        database: &str,
        gate_wait: Duration,
        connections: usize,
        queue_max: usize,
    ) -> Result<Self, EngineError> {
        let config = replica_config(url, database)?;
        let (jobs, rx) = sync_channel::<Job>(queue_max.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..connections.max(1) {
            let conn = PostgresReader::lazy(config.clone(), ReadLimits::default())?;
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("dry-run-{i}"))
                .spawn(move || serve(conn, &rx, gate_wait))
                .map_err(|e| EngineError::Storage(format!("starting a dry-run thread: {e}")))?;
        }
        Ok(PostgresAdmission {
            jobs,
            database: database.to_owned(),
        })
    }

    /// The time a statement budget (in steps) buys one statement on
    /// PostgreSQL: 100,000 steps per millisecond (the default budget buys
    /// one second), at least 10 ms.
    pub fn time_budget(steps: u64) -> Duration {
        Duration::from_millis(time_budget_ms(steps))
    }

    /// The wall-clock bound of a statement applied from the log under a
    /// budget: ten times its time budget, at least 10 s.
    pub fn apply_backstop(steps: u64) -> Duration {
        Duration::from_millis(apply_backstop_ms(steps))
    }

    /// Queues a write for its dry run; `reply` gets the statements back
    /// and the verdict (`Ok`: admitted to the log), on a dry-run thread.
    /// A full queue answers at once, here.
    pub fn submit(
        &self,
        stmts: Vec<Statement>,
        reply: impl FnOnce(Admitted) + Send + 'static,
    ) -> Result<(), Admitted> {
        let job = Job {
            stmts,
            spoilt: 0,
            why: String::new(),
            reply: Box::new(reply),
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                let busy = Refused::Busy(format!(
                    "too many writes are waiting for their dry run on database {}; \
                     retry after a moment",
                    self.database
                ));
                Err((job.stmts, Err(busy)))
            }
        }
    }

    /// [`Self::submit`], waiting for the verdict (for plain threads).
    pub fn check(&self, stmts: &[Statement]) -> Result<(), Refused> {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Err((_, refused)) = self.submit(stmts.to_vec(), move |a| {
            let _ = tx.send(a.1);
        }) {
            return refused;
        }
        rx.recv()
            .unwrap_or_else(|_| Err(unavailable("the dry-run thread stopped")))
    }
}

/// A dry-run thread: takes what waits (up to a group), runs it, answers;
/// a write whose measure a lock wait spoilt goes into the next group.
fn serve(mut conn: PostgresReader, jobs: &Mutex<Receiver<Job>>, gate_wait: Duration) {
    let mut again: Vec<Job> = Vec::new();
    let mut pace = PACE;
    loop {
        let mut group = std::mem::take(&mut again);
        // A thread with writes in hand never waits for the queue: another
        // may hold it while it waits for work.
        let rx = match group.is_empty() {
            true => Some(jobs.lock().expect("dry-run queue lock")),
            false => jobs.try_lock().ok(),
        };
        if let Some(rx) = rx {
            if group.is_empty() {
                match rx.recv() {
                    Ok(job) => group.push(job),
                    Err(_) => return,
                }
            }
            while group.len() < GROUP_WRITES_MAX {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
        }
        let writes: Vec<&[Statement]> = group.iter().map(|j| j.stmts.as_slice()).collect();
        let found = conn.dry_run(&writes, gate_wait, pace);
        let runaway = |d: &DryRun| matches!(d, DryRun::OverBudget { .. });
        pace = match &found {
            Ok(found) if found.iter().any(runaway) => CAUTIOUS,
            _ => PACE,
        };
        for (i, mut job) in group.into_iter().enumerate() {
            let verdict = match &found {
                Err(e) => Err(unavailable(&e.to_string())),
                Ok(found) => match &found[i] {
                    DryRun::Fits => Ok(()),
                    DryRun::OverBudget { statement, budget } => {
                        Err(Refused::OverBudget(over_budget(*statement, *budget)))
                    }
                    DryRun::Inconclusive(why) if job.spoilt + 1 < DRY_RUN_ATTEMPTS => {
                        job.spoilt += 1;
                        job.why = why.clone();
                        again.push(job);
                        continue;
                    }
                    DryRun::Inconclusive(why) => Err(unavailable(&format!(
                        "{DRY_RUN_ATTEMPTS} dry runs in a row waited on locks ({why})"
                    ))),
                    DryRun::Later => {
                        again.push(job);
                        continue;
                    }
                },
            };
            (job.reply)((job.stmts, verdict));
        }
    }
}

fn unavailable(why: &str) -> Refused {
    Refused::Unavailable(format!(
        "the write could not be checked against the statement budget before the log: {why}; \
         it was not applied; retry"
    ))
}

/// The budget error of a write refused by its dry run.
fn over_budget(statement: usize, budget: u64) -> String {
    format!(
        "statement budget exceeded: statement {} of the write ran longer than {} ms in a dry \
         run (the time a budget of {budget} steps buys on PostgreSQL, at {STEPS_PER_MS} steps \
         per ms); the write was refused before the log, so no replica applied it; simplify it \
         or raise the budget with SET PAXSQL STATEMENT_BUDGET = <steps>",
        statement + 1,
        time_budget_ms(budget)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{STATEMENT_BUDGET_DEFAULT, STATEMENT_BUDGET_MAX, STATEMENT_BUDGET_MIN};

    #[test]
    fn the_budget_converts_to_time_at_a_stated_rate() {
        assert_eq!(time_budget_ms(STATEMENT_BUDGET_DEFAULT), 1000);
        assert_eq!(time_budget_ms(STATEMENT_BUDGET_MIN), TIME_BUDGET_MIN_MS);
        assert_eq!(time_budget_ms(2_000_000_000), 20_000);
        assert_eq!(apply_backstop_ms(STATEMENT_BUDGET_DEFAULT), 10_000);
        assert_eq!(apply_backstop_ms(STATEMENT_BUDGET_MIN), 10_000);
        assert_eq!(apply_backstop_ms(10_000_000_000), 1_000_000);
        assert!(apply_backstop_ms(STATEMENT_BUDGET_MAX) > time_budget_ms(STATEMENT_BUDGET_MAX));
        assert_eq!(
            PostgresAdmission::time_budget(STATEMENT_BUDGET_DEFAULT),
            Duration::from_secs(1)
        );
        assert_eq!(
            PostgresAdmission::time_budget(STATEMENT_BUDGET_MIN),
            Duration::from_millis(10)
        );
        assert_eq!(
            PostgresAdmission::apply_backstop(STATEMENT_BUDGET_MIN),
            Duration::from_secs(10)
        );
        assert_eq!(dry_run_lock_ms(1000), 500);
        assert_eq!(dry_run_lock_ms(10), 5);
    }

    #[test]
    fn the_refusal_is_a_budget_error() {
        let e = over_budget(0, STATEMENT_BUDGET_DEFAULT);
        assert!(e.starts_with("statement budget exceeded"), "{e}");
        assert!(e.contains("statement 1 ") && e.contains("1000 ms"), "{e}");
        assert!(e.contains("SET PAXSQL STATEMENT_BUDGET"), "{e}");
    }
}
