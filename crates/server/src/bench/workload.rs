//! What the clients send: the table, how it is loaded, and each operation's
//! statements.
//!
//! One **operation** is one request: `batch` statements of one kind
//! (insert, update or read). A YCSB mix picks the kind per operation, so a
//! request never mixes reads and writes and always takes the path its kind
//! takes (`/db/execute` or `/db/query?level=...`). Every target — the
//! cluster over HTTP and the SQLite baseline — is given exactly these
//! statements with these bound parameters; only the transport differs.
//!
//! # Keys on a split table (`--groups G`)
//!
//! With G data groups the bench cuts the key space into G equal ranges,
//! range g on data group g ([`Workload::split_keys`]), and the workload's
//! writes must land in all of them:
//!
//! - Read, update and YCSB workloads choose keys over the preloaded
//!   `0..keys`, uniformly or Zipfian, so they spread by themselves; the
//!   ranges are `keys / G` keys each.
//! - Inserts take fresh keys. Sequential keys would all fall into the last
//!   range, so each range is given a span of [`INSERT_RANGE_SPAN`] keys and
//!   requests go round the ranges: request j (counted over all client
//!   tasks) writes to range `j mod G`, at the next `batch` keys of that
//!   range's span. A request's rows stay in one range, so each insert
//!   request is one group's write. With G = 1 this is the plain sequence
//!   0, 1, 2, ...

use super::zipf::{KeyChooser, Zipfian};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The workloads `--workload` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// New keys, one row per statement.
    Insert,
    /// Overwrite the value of an existing key.
    Update,
    /// Read one row by key, at `--level`.
    Read,
    /// YCSB A: 50% reads, 50% updates.
    YcsbA,
    /// YCSB B: 95% reads, 5% updates.
    YcsbB,
    /// YCSB C: reads only.
    YcsbC,
}

impl WorkloadKind {
    /// The share of operations that are reads.
    fn read_fraction(self) -> f64 {
        match self {
            WorkloadKind::Insert | WorkloadKind::Update => 0.0,
            WorkloadKind::Read | WorkloadKind::YcsbC => 1.0,
            WorkloadKind::YcsbA => 0.5,
            WorkloadKind::YcsbB => 0.95,
        }
    }

    /// Whether any operation is a read.
    pub fn has_reads(self) -> bool {
        self.read_fraction() > 0.0
    }

    /// Whether the table is filled with `--keys` rows before the run.
    pub fn needs_preload(self) -> bool {
        self != WorkloadKind::Insert
    }
}

/// `--distribution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// YCSB's scrambled Zipfian, skew `--theta`.
    Zipfian,
}

/// Everything that decides which statements are sent.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadSpec {
    pub kind: WorkloadKind,
    pub table: String,
    pub keys: u64,
    pub row_size: usize,
    pub batch: usize,
    pub distribution: Distribution,
    pub theta: f64,
    pub seed: u64,
    /// Equal ranges the key space is cut into, one per data group (1: the
    /// table is not split).
    pub ranges: u64,
}

/// Keys of each range's span for inserts into a split table: far more
/// than a run inserts, so a range never runs into the next.
pub const INSERT_RANGE_SPAN: u64 = 1 << 40;

/// The kind of one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    Insert,
    Update,
    Read,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Insert => "insert",
            OpKind::Update => "update",
            OpKind::Read => "read",
        }
    }

    pub fn is_read(self) -> bool {
        self == OpKind::Read
    }
}

/// A bound parameter.
#[derive(Clone, Debug)]
pub enum Arg {
    Int(i64),
    Text(String),
}

/// One SQL statement with its positional (`?`) parameters.
#[derive(Clone, Debug)]
pub struct Stmt {
    pub sql: Arc<str>,
    pub args: Vec<Arg>,
}

impl Stmt {
    /// The rqlite JSON form: `[sql, arg, ...]`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = Vec::with_capacity(1 + self.args.len());
        v.push(serde_json::Value::from(&*self.sql));
        for a in &self.args {
            v.push(match a {
                Arg::Int(i) => serde_json::Value::from(*i),
                Arg::Text(s) => serde_json::Value::from(s.as_str()),
            });
        }
        serde_json::Value::Array(v)
    }
}

/// One request's worth of statements.
#[derive(Clone, Debug)]
pub struct Op {
    pub kind: OpKind,
    pub stmts: Vec<Stmt>,
}

/// The SQL texts, fixed for a run so both targets can cache their plans.
#[derive(Debug)]
struct Sql {
    insert: Arc<str>,
    update: Arc<str>,
    read: Arc<str>,
}

/// Rows per statement while loading the table.
const PRELOAD_ROWS_PER_STATEMENT: u64 = 10_000;

/// State shared by every client task of one run. A fresh one per target,
/// so the baseline inserts the same keys the cluster did.
#[derive(Debug)]
pub struct Workload {
    spec: WorkloadSpec,
    sql: Sql,
    chooser: KeyChooser,
    /// Random text that values are cut from (cheaper than drawing every byte).
    text: Arc<str>,
    /// The number of the next insert; one counter for all tasks, so keys
    /// never collide. Requests take `batch` numbers at a time; see
    /// [`Workload::insert_key`] for the key each number gets.
    next_insert: AtomicU64,
}

impl Workload {
    /// Builds the shared state; a Zipfian chooser computes its constant here.
    pub fn new(spec: WorkloadSpec) -> Arc<Workload> {
        let t = &spec.table;
        let sql = Sql {
            insert: format!("INSERT INTO {t} (id, v) VALUES (?, ?)").into(),
            update: format!("UPDATE {t} SET v = ? WHERE id = ?").into(),
            read: format!("SELECT id, v FROM {t} WHERE id = ?").into(),
        };
        let chooser = match spec.distribution {
            Distribution::Uniform => KeyChooser::Uniform {
                keys: spec.keys.max(1),
            },
            Distribution::Zipfian => {
                KeyChooser::Zipfian(Zipfian::new(spec.keys.max(1), spec.theta))
            }
        };
        let mut rng = SmallRng::seed_from_u64(spec.seed);
        let text_len = (64 * 1024).max(2 * spec.row_size);
        let text: String = (0..text_len)
            .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
            .collect();
        assert!(spec.ranges >= 1, "at least one range");
        let first_insert = if spec.kind.needs_preload() {
            spec.keys
        } else {
            0
        };
        Arc::new(Workload {
            spec,
            sql,
            chooser,
            text: text.into(),
            next_insert: AtomicU64::new(first_insert),
        })
    }

    /// The requests that create the table (dropping an old one of the same
    /// name) and, for workloads that read or update, fill it with `keys`
    /// rows of `row_size` bytes. Rows are generated by SQLite itself (a
    /// recursive CTE), so a load entry in the log is a few bytes of SQL.
    pub fn setup_requests(&self) -> Vec<Vec<Stmt>> {
        let t = &self.spec.table;
        let plain = |sql: String| Stmt {
            sql: sql.into(),
            args: vec![],
        };
        let mut requests = vec![vec![
            plain(format!("DROP TABLE IF EXISTS {t}")),
            plain(format!(
                "CREATE TABLE {t} (id INTEGER PRIMARY KEY, v TEXT NOT NULL)"
            )),
        ]];
        if !self.spec.kind.needs_preload() {
            return requests;
        }
        let load: Arc<str> = format!(
            "WITH RECURSIVE k(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?) \
             INSERT INTO {t} (id, v) SELECT i, printf('%0*d', ?, i) FROM k"
        )
        .into();
        let mut from = 0;
        while from < self.spec.keys {
            let to = (from + PRELOAD_ROWS_PER_STATEMENT).min(self.spec.keys);
            requests.push(vec![Stmt {
                sql: load.clone(),
                args: vec![
                    Arg::Int(from as i64),
                    Arg::Int(to as i64),
                    Arg::Int(self.spec.row_size as i64),
                ],
            }]);
            from = to;
        }
        requests
    }

    /// The G - 1 keys to split the table at so that it falls into
    /// `spec.ranges` equal ranges over the keys the workload touches (see
    /// the module docs); empty for one range.
    pub fn split_keys(&self) -> Vec<i64> {
        let g = self.spec.ranges;
        (1..g)
            .map(|i| match self.spec.kind {
                WorkloadKind::Insert => (i * INSERT_RANGE_SPAN) as i64,
                _ => (self.spec.keys * i / g) as i64,
            })
            .collect()
    }

    /// The key of insert number `n`: request `n / batch` goes to range
    /// `(n / batch) mod G`, at offset `(n / batch) / G * batch + n mod batch`
    /// in that range's span. With one range, `n` itself.
    fn insert_key(&self, n: u64) -> u64 {
        let (g, b) = (self.spec.ranges, self.spec.batch as u64);
        if g == 1 {
            return n;
        }
        let (request, row) = (n / b, n % b);
        (request % g) * INSERT_RANGE_SPAN + (request / g) * b + row
    }

    /// A generator for client task `task`; seeded from the run's seed and
    /// the task number, so a rerun sends the same sequence per task.
    pub fn generator(self: &Arc<Self>, task: usize) -> OpGen {
        OpGen {
            w: self.clone(),
            rng: SmallRng::seed_from_u64(
                self.spec.seed ^ (task as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
        }
    }
}

/// Draws operations for one client task.
#[derive(Debug)]
pub struct OpGen {
    w: Arc<Workload>,
    rng: SmallRng,
}

impl OpGen {
    /// The next operation: `batch` statements of one kind.
    pub fn next_op(&mut self) -> Op {
        let spec = &self.w.spec;
        let kind = match spec.kind {
            WorkloadKind::Insert => OpKind::Insert,
            WorkloadKind::Update => OpKind::Update,
            _ if self.rng.random_bool(spec.kind.read_fraction()) => OpKind::Read,
            _ => OpKind::Update,
        };
        // An insert request takes `batch` consecutive insert numbers, so its
        // rows land in one range (see `Workload::insert_key`).
        let first = match kind {
            OpKind::Insert => self
                .w
                .next_insert
                .fetch_add(spec.batch as u64, Ordering::Relaxed),
            _ => 0,
        };
        let stmts = (first..first + spec.batch as u64)
            .map(|n| self.statement(kind, n))
            .collect();
        Op { kind, stmts }
    }

    /// One statement of `kind`; `n` is the insert number (inserts only).
    fn statement(&mut self, kind: OpKind, n: u64) -> Stmt {
        let w = &*self.w;
        match kind {
            OpKind::Insert => {
                let key = w.insert_key(n);
                Stmt {
                    sql: w.sql.insert.clone(),
                    args: vec![Arg::Int(key as i64), Arg::Text(self.value())],
                }
            }
            OpKind::Update => {
                let key = w.chooser.next(&mut self.rng);
                Stmt {
                    sql: w.sql.update.clone(),
                    args: vec![Arg::Text(self.value()), Arg::Int(key as i64)],
                }
            }
            OpKind::Read => {
                let key = w.chooser.next(&mut self.rng);
                Stmt {
                    sql: w.sql.read.clone(),
                    args: vec![Arg::Int(key as i64)],
                }
            }
        }
    }

    /// `row_size` bytes of random lowercase text.
    fn value(&mut self) -> String {
        let n = self.w.spec.row_size;
        let start = self.rng.random_range(0..=self.w.text.len() - n);
        self.w.text[start..start + n].to_owned()
    }
}

/// Whether `name` can be put into SQL unquoted: `[A-Za-z_][A-Za-z0-9_]*`,
/// and not one of paxsql's or SQLite's own tables.
pub fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let lower = name.to_ascii_lowercase();
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !lower.starts_with("_paxsql")
        && !lower.starts_with("sqlite_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: WorkloadKind) -> WorkloadSpec {
        WorkloadSpec {
            kind,
            table: "t".into(),
            keys: 25_000,
            row_size: 10,
            batch: 3,
            distribution: Distribution::Uniform,
            theta: 0.99,
            seed: 1,
            ranges: 1,
        }
    }

    /// The keys of `ops` insert requests from one task.
    fn insert_keys(w: &Arc<Workload>, ops: usize) -> Vec<i64> {
        let mut g = w.generator(0);
        (0..ops)
            .flat_map(|_| g.next_op().stmts)
            .map(|s| match s.args[0] {
                Arg::Int(k) => k,
                ref other => panic!("unexpected key {other:?}"),
            })
            .collect()
    }

    #[test]
    fn inserts_on_a_split_table_go_round_the_ranges_a_request_at_a_time() {
        let w = Workload::new(WorkloadSpec {
            ranges: 3,
            batch: 2,
            ..spec(WorkloadKind::Insert)
        });
        let s = INSERT_RANGE_SPAN as i64;
        assert_eq!(w.split_keys(), vec![s, 2 * s]);
        assert_eq!(
            insert_keys(&w, 4),
            vec![0, 1, s, s + 1, 2 * s, 2 * s + 1, 2, 3],
            "request j to range j mod 3, each range's keys in sequence"
        );
    }

    #[test]
    fn a_preloaded_key_space_is_split_into_equal_ranges() {
        let w = Workload::new(WorkloadSpec {
            ranges: 4,
            ..spec(WorkloadKind::Update)
        });
        assert_eq!(w.split_keys(), vec![6_250, 12_500, 18_750]);
        let one = Workload::new(spec(WorkloadKind::Read));
        assert!(one.split_keys().is_empty());
    }

    #[test]
    fn inserts_take_fresh_keys_across_tasks() {
        let w = Workload::new(spec(WorkloadKind::Insert));
        let (mut a, mut b) = (w.generator(0), w.generator(1));
        let mut keys = Vec::new();
        for op in [a.next_op(), b.next_op(), a.next_op()] {
            assert_eq!(op.stmts.len(), 3);
            for s in op.stmts {
                match &s.args[..] {
                    [Arg::Int(k), Arg::Text(v)] => {
                        assert_eq!(v.len(), 10);
                        keys.push(*k);
                    }
                    other => panic!("unexpected args {other:?}"),
                }
            }
        }
        assert_eq!(keys, (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn preload_covers_every_key_once() {
        let w = Workload::new(spec(WorkloadKind::YcsbA));
        let reqs = w.setup_requests();
        assert_eq!(reqs.len(), 1 + 3, "create, then 10k + 10k + 5k rows");
        let ranges: Vec<(i64, i64)> = reqs[1..]
            .iter()
            .map(|r| match &r[0].args[..] {
                [Arg::Int(a), Arg::Int(b), Arg::Int(10)] => (*a, *b),
                other => panic!("unexpected args {other:?}"),
            })
            .collect();
        assert_eq!(
            ranges,
            vec![(0, 10_000), (10_000, 20_000), (20_000, 25_000)]
        );
    }

    #[test]
    fn a_ycsb_c_run_only_reads() {
        let w = Workload::new(spec(WorkloadKind::YcsbC));
        let mut g = w.generator(0);
        assert!((0..100).all(|_| g.next_op().kind == OpKind::Read));
    }

    #[test]
    fn table_names_are_checked() {
        assert!(valid_table_name("paxsql_bench"));
        assert!(!valid_table_name("1t"));
        assert!(!valid_table_name("t; DROP TABLE x"));
        assert!(!valid_table_name("_paxsql_requests"));
        assert!(!valid_table_name(""));
    }
}
