//! What the engine installs on every SQLite connection: the deterministic
//! `random()`, the authorizer that keeps user SQL away from internal tables
//! and transaction control, and the work meter that bounds a statement.

use paxsql_types::ApplyEnv;
use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// SQLite VM steps between two calls of the progress handler: the budget's
/// granularity. At about a nanosecond per step the handler's cost is lost in
/// the noise, and a statement overshoots its budget by at most this much.
pub(crate) const STEPS_PER_CHECK: u64 = 1000;

/// Why the meter stopped a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tripped {
    /// The statement did more work than its budget.
    Budget,
    /// The read's wall-clock deadline passed.
    Deadline,
}

/// What a statement may do before the meter stops it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Work {
    /// No bound (internal statements).
    Unbounded,
    /// At most this many VM steps: deterministic, for replicated statements.
    Steps(u64),
    /// Until this instant (the second value is the limit, for the message):
    /// wall clock, for reads only.
    Until(Instant, Duration),
}

/// Counts a connection's VM steps through SQLite's progress handler and
/// interrupts the running statement past its [`Work`] bound. Counting steps
/// is deterministic: the same statement on the same data takes the same
/// steps on every replica, whatever the machine's speed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Meter(Arc<MeterState>);

#[derive(Debug, Default)]
struct MeterState {
    /// Progress-handler calls since the statement started.
    checks: AtomicU64,
    /// Calls allowed; 0 means no step bound.
    checks_max: AtomicU64,
    /// Nanoseconds after [`base`] when the statement must stop; 0: none.
    deadline_ns: AtomicU64,
    /// 0 while running; 1 + [`Tripped`] once stopped.
    tripped: AtomicU8,
}

/// The instant deadlines are counted from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl Meter {
    /// Installs the meter's progress handler on `conn`.
    pub(crate) fn install(&self, conn: &mut Connection) -> rusqlite::Result<()> {
        let state = Arc::clone(&self.0);
        conn.progress_handler(STEPS_PER_CHECK as i32, Some(move || state.check_and_stop()))
    }

    /// Starts metering a statement.
    pub(crate) fn start(&self, work: Work) {
        let s = &self.0;
        s.checks.store(0, Ordering::Relaxed);
        s.tripped.store(0, Ordering::Relaxed);
        let (checks_max, deadline_ns) = match work {
            Work::Unbounded => (0, 0),
            Work::Steps(steps) => ((steps / STEPS_PER_CHECK).max(1), 0),
            Work::Until(at, _) => (
                0,
                (at.saturating_duration_since(base()).as_nanos() as u64).max(1),
            ),
        };
        s.checks_max.store(checks_max, Ordering::Relaxed);
        s.deadline_ns.store(deadline_ns, Ordering::Relaxed);
    }

    /// Stops metering: what runs next (internal statements) is unbounded.
    pub(crate) fn stop(&self) {
        self.start(Work::Unbounded);
    }

    /// Whether (and why) the meter stopped the statement since [`Self::start`].
    pub(crate) fn tripped(&self) -> Option<Tripped> {
        match self.0.tripped.load(Ordering::Relaxed) {
            1 => Some(Tripped::Budget),
            2 => Some(Tripped::Deadline),
            _ => None,
        }
    }
}

impl MeterState {
    /// The progress handler: true interrupts the statement.
    fn check_and_stop(&self) -> bool {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        let max = self.checks_max.load(Ordering::Relaxed);
        if max != 0 && checks > max {
            self.tripped.store(1, Ordering::Relaxed);
            return true;
        }
        let deadline = self.deadline_ns.load(Ordering::Relaxed);
        if deadline != 0 && base().elapsed().as_nanos() as u64 >= deadline {
            self.tripped.store(2, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// Replaces SQLite's `random()` and `randomblob()` with a sequence seeded
/// per write, so that they return the same values on every replica.
pub(crate) fn install_random(conn: &Connection, rng: &Arc<AtomicU64>) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8;
    let state = Arc::clone(rng);
    conn.create_scalar_function("random", 0, flags, move |_| Ok(next_random(&state) as i64))?;
    let state = Arc::clone(rng);
    conn.create_scalar_function("randomblob", 1, flags, move |ctx| {
        let n = ctx.get::<i64>(0)?.clamp(1, 1 << 30) as usize;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.extend_from_slice(&next_random(&state).to_le_bytes());
        }
        out.truncate(n);
        Ok(out)
    })
}

/// Seeds `random()` for one write.
pub(crate) fn seed(rng: &AtomicU64, env: ApplyEnv) {
    rng.store(env.seed, Ordering::Relaxed);
}

/// splitmix64: small, fast and good enough for SQL's random().
fn next_random(state: &AtomicU64) -> u64 {
    // The engine's thread is the only caller: load, step, store.
    let mut s = state.load(Ordering::Relaxed);
    let v = crate::splitmix64(&mut s);
    state.store(s, Ordering::Relaxed);
    v
}

/// Installs the authorizer, which judges statements prepared while `guard`
/// is set (user SQL) and lets internal statements through.
pub(crate) fn install_authorizer(
    conn: &mut Connection,
    guard: &Arc<AtomicBool>,
) -> rusqlite::Result<()> {
    let guard = Arc::clone(guard);
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        if !guard.load(Ordering::Relaxed) {
            return Authorization::Allow;
        }
        authorize_user(&ctx)
    }))
}

/// Pragmas that take an argument only to say what to report on.
const REPORTING_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "pragma_list",
    "function_list",
    "collation_list",
    "module_list",
    "database_list",
];

fn authorize_user(ctx: &AuthContext<'_>) -> Authorization {
    use AuthAction as A;
    let internal = |name: &str| name.starts_with("_paxsql_");
    match ctx.action {
        // A pragma with a value changes the connection or the file outside
        // the log (and would be lost on restart): only reporting ones pass.
        A::Pragma {
            pragma_name,
            pragma_value: Some(_),
        } if !REPORTING_PRAGMAS.contains(&pragma_name.to_ascii_lowercase().as_str()) => {
            Authorization::Deny
        }
        A::Transaction { .. } | A::Savepoint { .. } | A::Attach { .. } | A::Detach { .. } => {
            Authorization::Deny
        }
        // The table of ranges is public (the shard map); the key guards'
        // triggers read it inside user statements. So is the state of
        // two-phase commit, which the router reads beside a query.
        A::Read { table_name, .. }
            if [
                crate::ranges::RANGES_TABLE,
                crate::twopc::PREPARED_TABLE,
                crate::twopc::DECISIONS_TABLE,
            ]
            .contains(&table_name) =>
        {
            Authorization::Allow
        }
        A::Read { table_name, .. }
        | A::Insert { table_name }
        | A::Delete { table_name }
        | A::Update { table_name, .. }
        | A::CreateTable { table_name }
        | A::DropTable { table_name }
        | A::CreateIndex { table_name, .. }
        | A::DropIndex { table_name, .. }
        | A::CreateTrigger { table_name, .. }
        | A::DropTrigger { table_name, .. }
        | A::AlterTable { table_name, .. }
            if internal(table_name) =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}
