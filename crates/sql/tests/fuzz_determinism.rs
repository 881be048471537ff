//! Fuzzing the rules that run on every statement before it is replicated:
//! [`Dialect::classify`], [`Dialect::forbidden`], [`Dialect::statement_count`]
//! and [`Dialect::make_deterministic`], for SQLite and PostgreSQL.
//!
//! They run on the proposer for every write a client sends, on text the
//! client chose: a panic there takes down the node's group thread (or the
//! HTTP task), and a stack overflow the whole process. So no input may
//! panic, and none may overflow a 2 MiB stack (what the group threads and
//! tokio's workers get).
//!
//! Inputs: statements from `testdata/sqllogictest` and the string literals
//! of this crate's tests and determinism sources (the seed corpus), statements
//! generated from a small grammar full of clocks and random calls, each
//! mutated at random (unbalanced quotes and parentheses, comment openers,
//! dollar quotes, unicode, truncation, splicing two statements). Deep
//! nesting and very long input have a test of their own, run in a child
//! process so that an overflow is reported rather than killing the run.
//!
//! Besides not panicking, the rewrite must itself be deterministic: the same
//! clock and random source give the same text.
//!
//! Seeded: `PAXSQL_FUZZ_SEED` (default fixed, so CI runs are reproducible)
//! and `PAXSQL_FUZZ_CASES` (default 5000). Case `i` uses seed `SEED + i`, and
//! a failure prints the command that replays that one case.

use paxsql_sql::determinism::Env;
use paxsql_sql::{splitmix64, Dialect};
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

const DEFAULT_SEED: u64 = 0x5EED_F022_D37E_2A11;
const DEFAULT_CASES: u64 = 5000;
/// What the threads that run these functions in a node get.
const STACK_BYTES: usize = 2 * 1024 * 1024;

// ---------------------------------------------------------------- randomness

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------- seed corpus

/// Statements of the sqllogictest files: the lines after `statement` or
/// `query` up to a blank line or `----`.
fn sqllogictest_statements(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "test"))
    {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let mut current: Option<String> = None;
        for line in text.lines() {
            match &mut current {
                None if line.starts_with("statement") || line.starts_with("query") => {
                    current = Some(String::new());
                }
                None => {}
                Some(stmt) if line.trim().is_empty() || line.starts_with("----") => {
                    out.push(std::mem::take(stmt));
                    current = None;
                }
                Some(stmt) => {
                    if !stmt.is_empty() {
                        stmt.push('\n');
                    }
                    stmt.push_str(line);
                }
            }
        }
        out.extend(current.filter(|s| !s.is_empty()));
    }
    out
}

/// The string literals of a Rust source that look like SQL.
fn rust_string_literals(source: &str) -> Vec<String> {
    let b = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // `'"'` is a char, not the start of a string.
        if b[i] == b'\'' && b.get(i + 1) == Some(&b'"') && b.get(i + 2) == Some(&b'\'') {
            i += 3;
            continue;
        }
        if b[i] == b'r' && matches!(b.get(i + 1), Some(b'#' | b'"')) {
            let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
            if b.get(i + 1 + hashes) == Some(&b'"') {
                let start = i + 2 + hashes;
                let close = format!("\"{}", "#".repeat(hashes));
                if let Some(n) = source[start..].find(&close) {
                    out.push(source[start..start + n].to_owned());
                    i = start + n + close.len();
                    continue;
                }
            }
        }
        if b[i] == b'"' {
            let mut s = String::new();
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' && j + 1 < b.len() {
                    match b[j + 1] {
                        b'n' => s.push('\n'),
                        b't' => s.push('\t'),
                        b'0' => s.push('\0'),
                        b'\n' => {
                            // A line continuation: the next line's indent is dropped.
                            j += 2;
                            while j < b.len() && b[j].is_ascii_whitespace() {
                                j += 1;
                            }
                            continue;
                        }
                        other => s.push(char::from(other)),
                    }
                    j += 2;
                    continue;
                }
                let ch = source[j..].chars().next().unwrap_or('\0');
                s.push(ch);
                j += ch.len_utf8();
            }
            out.push(s);
            i = j + 1;
            continue;
        }
        i += source[i..].chars().next().map_or(1, char::len_utf8);
    }
    const SQL_WORDS: &[&str] = &[
        "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "WITH", "VALUES", "PRAGMA", "ALTER",
        "DROP", "BEGIN", "EXPLAIN", "REPLACE", "NOW", "RANDOM", "DO ", "SET ", "COPY",
    ];
    out.into_iter()
        .filter(|s| {
            let upper = s.to_ascii_uppercase();
            s.len() >= 4 && SQL_WORDS.iter().any(|w| upper.contains(w))
        })
        .collect()
}

/// The `.rs` files under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn seed_corpus() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut corpus = BTreeSet::new();
    corpus.extend(sqllogictest_statements(
        &root.join("../../testdata/sqllogictest"),
    ));
    for source in rust_files(&root.join("src"))
        .into_iter()
        .chain(rust_files(&root.join("tests")))
    {
        if let Ok(text) = std::fs::read_to_string(source) {
            corpus.extend(rust_string_literals(&text));
        }
    }
    corpus.extend(HANDWRITTEN.iter().map(|s| s.to_string()));
    corpus.into_iter().collect()
}

/// Statements that each exercise one rule.
const HANDWRITTEN: &[&str] = &[
    "INSERT INTO t VALUES (random(), randomblob(16), CURRENT_TIMESTAMP)",
    "SELECT datetime('now', 'localtime'), strftime('%s'), date(), time('now', '+1 day')",
    "UPDATE t SET k = randomblob(16) WHERE a IN (SELECT random() FROM u ORDER BY random())",
    "CREATE TABLE t (a DEFAULT (random()), b TEXT DEFAULT CURRENT_TIMESTAMP, c AS (datetime('now')))",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET c = CASE WHEN 1 THEN random() END; END",
    "WITH x AS (SELECT random() AS r) INSERT INTO t SELECT r, 'now', datetime(\"now\") FROM x",
    "SELECT timediff('now', '2000-01-01'), julianday(), unixepoch('now', 'utc')",
    "PRAGMA table_info(t); PRAGMA journal_mode = wal; PRAGMA optimize",
    "SELECT now(), CURRENT_TIMESTAMP(3), LOCALTIME(0), 'now'::timestamptz, date 'today'",
    "INSERT INTO t VALUES (gen_random_uuid(), now(current_timestamp), clock_timestamp())",
    "CREATE FUNCTION f() RETURNS timestamptz AS $$ SELECT now() $$ LANGUAGE sql",
    "DO $x$ BEGIN PERFORM pg_sleep(0); END $x$",
    "SELECT E'\\'now\\'', $$'now'$$, 'today 10:00'::timestamp, CAST('tomorrow' AS date)",
    "CREATE SEQUENCE s CACHE 20; CREATE TEMP TABLE x (a int); SELECT pg_catalog.now()",
    "SELECT ?, ?1, :name, @v, $1, $name FROM t WHERE a = ? AND b = :b",
    "SELECT 0x10, 1e999, -9223372036854775808, 99999999999999999999999999",
    "BEGIN; COMMIT; ATTACH 'x' AS y; VACUUM INTO 'f'; SAVEPOINT a",
    "SELECT load_extension('x'), total_changes(), sqlite_offset(a) FROM t",
];

// ---------------------------------------------------------------- generation

const FUNCTIONS: &[&str] = &[
    "random",
    "randomblob",
    "datetime",
    "date",
    "time",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
    "now",
    "current_timestamp",
    "current_time",
    "localtimestamp",
    "gen_random_uuid",
    "uuid_generate_v4",
    "clock_timestamp",
    "load_extension",
    "total_changes",
    "sqlite_offset",
    "changes",
    "abs",
    "coalesce",
    "max",
    "count",
    "json_extract",
    "substr",
    "printf",
    "txid_current",
    "version",
    "set_config",
    "pg_catalog.now",
    "paxsql.now",
    "\"random\"",
];

const ATOMS: &[&str] = &[
    "1",
    "0",
    "-1",
    "0x10",
    "1e999",
    "1.5e-7",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999999999999",
    "NULL",
    "a",
    "t.b",
    "\"c\"",
    "`d`",
    "[e]",
    "'now'",
    "'NOW'",
    "' now '",
    "\"now\"",
    "'localtime'",
    "'utc'",
    "'today'",
    "'tomorrow 10:00'",
    "'+1 day'",
    "'%s'",
    "x'AB'",
    "X''",
    "?",
    "?7",
    ":name",
    "@v",
    "$1",
    "$name",
    "CURRENT_TIMESTAMP",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "LOCALTIMESTAMP",
    "LOCALTIME(3)",
    "'now'::timestamptz",
    "'now'::text",
    "timestamp 'now'",
    "timestamp with time zone 'now'",
    "date 'yesterday'",
    "E'\\''",
    "$$now()$$",
    "$f$ random() $f$",
    "'名前'",
    "\"列\"",
    "'🦀'",
    "''",
    "TRUE",
    "ARRAY[1, 2]",
    "'{\"a\": 1}'::jsonb",
];

const OPERATORS: &[&str] = &[
    "+", "-", "*", "/", "%", "||", "=", "==", "!=", "<>", "<", "<=", ">", ">=", "AND", "OR", "IS",
    "IS NOT", "LIKE", "GLOB", "&", "|", "<<", ">>", "->", "->>", "::", "COLLATE",
];

const TYPES: &[&str] = &[
    "INTEGER",
    "TEXT",
    "REAL",
    "BLOB",
    "timestamptz",
    "timestamp",
    "date",
    "time",
    "text",
    "varchar(3)",
    "numeric(10, 2)",
];

fn expr(rng: &mut Rng, depth: u32) -> String {
    if depth == 0 || rng.chance(25) {
        return rng.pick(ATOMS).to_string();
    }
    let d = depth - 1;
    match rng.below(12) {
        0 => format!("({})", expr(rng, d)),
        1 | 2 => format!("{} {} {}", expr(rng, d), rng.pick(OPERATORS), expr(rng, d)),
        3..=5 => {
            let name = rng.pick(FUNCTIONS);
            let args: Vec<String> = (0..rng.below(4)).map(|_| expr(rng, d)).collect();
            let distinct = if rng.chance(5) { "DISTINCT " } else { "" };
            let over = if rng.chance(5) { " OVER ()" } else { "" };
            let filter = if rng.chance(3) {
                format!(" FILTER (WHERE {})", expr(rng, d))
            } else {
                String::new()
            };
            format!("{name}({distinct}{}){filter}{over}", args.join(", "))
        }
        6 => format!(
            "CASE WHEN {} THEN {} ELSE {} END",
            expr(rng, d),
            expr(rng, d),
            expr(rng, d)
        ),
        7 => format!("(SELECT {}{})", expr(rng, d), from(rng)),
        8 => {
            if rng.chance(50) {
                format!("CAST({} AS {})", expr(rng, d), rng.pick(TYPES))
            } else {
                format!("{}::{}", expr(rng, d), rng.pick(TYPES))
            }
        }
        9 => format!("{}{}", rng.pick(&["-", "NOT ", "~", "+"]), expr(rng, d)),
        10 => format!("{} IN ({}, {})", expr(rng, d), expr(rng, d), expr(rng, d)),
        _ => format!("EXISTS (SELECT 1{} WHERE {})", from(rng), expr(rng, d)),
    }
}

fn from(rng: &mut Rng) -> &'static str {
    rng.pick::<&str>(&["", "", " FROM t", " FROM u, t", " FROM t AS x JOIN u ON 1"])
}

fn statement(rng: &mut Rng) -> String {
    let depth = rng.below(5) as u32;
    let stmt = match rng.below(20) {
        0..=3 => {
            let cols: Vec<String> = (0..1 + rng.below(3)).map(|_| expr(rng, depth)).collect();
            let mut s = format!("SELECT {}{}", cols.join(", "), from(rng));
            if rng.chance(30) {
                s += &format!(" WHERE {}", expr(rng, depth));
            }
            if rng.chance(20) {
                s += &format!(" ORDER BY {}", expr(rng, depth));
            }
            if rng.chance(15) {
                s += &format!(" LIMIT {}", expr(rng, depth));
            }
            s
        }
        4..=6 => {
            let rows: Vec<String> = (0..1 + rng.below(3))
                .map(|_| format!("({}, {})", expr(rng, depth), expr(rng, depth)))
                .collect();
            let mut s = format!("INSERT INTO t (a, b) VALUES {}", rows.join(", "));
            if rng.chance(20) {
                s += &format!(" ON CONFLICT DO UPDATE SET a = {}", expr(rng, depth));
            }
            if rng.chance(15) {
                s += &format!(" RETURNING {}", expr(rng, depth));
            }
            s
        }
        7 => format!(
            "INSERT INTO t SELECT {}, {}{}",
            expr(rng, depth),
            expr(rng, depth),
            from(rng)
        ),
        8 => format!(
            "UPDATE t SET a = {} WHERE {}",
            expr(rng, depth),
            expr(rng, depth)
        ),
        9 => format!("DELETE FROM t WHERE {}", expr(rng, depth)),
        10 => format!(
            "CREATE TABLE t (a INTEGER DEFAULT ({}), b TEXT DEFAULT CURRENT_TIMESTAMP, c CHECK ({}))",
            expr(rng, depth),
            expr(rng, depth)
        ),
        11 => format!("CREATE TABLE t2 AS SELECT {}", expr(rng, depth)),
        12 => format!(
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = {}; SELECT CASE WHEN 1 THEN 2 END; END",
            expr(rng, depth)
        ),
        13 => format!("CREATE VIEW v AS SELECT {}", expr(rng, depth)),
        14 => format!(
            "WITH c AS (SELECT {} AS x) SELECT x FROM c",
            expr(rng, depth)
        ),
        15 => rng
            .pick(&[
                "PRAGMA table_info(t)",
                "PRAGMA journal_mode = wal",
                "PRAGMA main.user_version",
                "PRAGMA optimize",
                "PRAGMA",
                "PRAGMA (",
                "PRAGMA x.y.z(1)",
            ])
            .to_string(),
        16 => format!("EXPLAIN QUERY PLAN SELECT {}", expr(rng, depth)),
        17 => rng
            .pick(&[
                "BEGIN",
                "COMMIT",
                "END",
                "ROLLBACK TO a",
                "ATTACH 'f' AS g",
                "VACUUM",
                "SET x = 1",
                "COPY t FROM '/etc/passwd'",
                "CREATE TEMP TABLE x (a int)",
                "CREATE SEQUENCE s CACHE 99999999999999999999",
                "CREATE SEQUENCE s CACHE 1e999",
                "ALTER SYSTEM SET x = 1",
                "START TRANSACTION",
            ])
            .to_string(),
        18 => format!(
            "DO $$ BEGIN PERFORM {}; END $$",
            expr(rng, depth)
        ),
        _ => format!(
            "CREATE FUNCTION f() RETURNS int AS '{}' LANGUAGE sql",
            expr(rng, depth).replace('\'', "''")
        ),
    };
    let mut stmt = stmt;
    if rng.chance(10) {
        stmt = format!(
            "{}{stmt}",
            rng.pick(&["-- c\n", "/* c */ ", "/* /* */ */", ";", " \n\t"])
        );
    }
    if rng.chance(10) {
        stmt = format!("{stmt}; {}", statement(rng));
    }
    stmt
}

// ---------------------------------------------------------------- mutation

/// Fragments that break tokenizers and parsers.
const FRAGMENTS: &[&str] = &[
    "(",
    ")",
    "((",
    "))",
    "'",
    "''",
    "\"",
    "`",
    "[",
    "]",
    "$$",
    "$a$",
    "$1",
    "--",
    "/*",
    "*/",
    ";",
    "::",
    "E'",
    "e'\\",
    "\\",
    "\0",
    "x'",
    "X'A",
    "?",
    "?0",
    "?99999999999999999999",
    ":",
    ":a",
    "@",
    "$",
    "#",
    "\n",
    "\r",
    "\t",
    " ",
    ",",
    ".",
    "..",
    "=",
    "*",
    "é",
    "𝔘",
    "\u{202E}",
    "\u{FEFF}",
    "\u{0301}",
    "\u{FFFD}",
    "🦀",
    "ß",
    "İ",
    "now",
    "'now'",
    "random(",
    "randomblob(",
    "datetime(",
    "strftime(",
    " END ",
    " BEGIN ",
    " CASE ",
    "SELECT ",
    " FROM ",
    " WHERE ",
    "CURRENT_TIMESTAMP",
    "current_date(",
    "::timestamptz",
    " AS date)",
    "CAST(",
    "WITH ",
    "INSERT INTO t VALUES(",
    "CREATE TRIGGER ",
    "localtime",
    "'utc'",
    "1e",
    "0x",
    "-",
    "+",
];

fn char_boundaries(s: &str) -> Vec<usize> {
    s.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(s.len()))
        .collect()
}

fn random_char(rng: &mut Rng) -> char {
    loop {
        let candidate = match rng.below(4) {
            0 => rng.below(0x80) as u32,
            1 => rng.below(0x800) as u32,
            2 => rng.below(0x1_0000) as u32,
            _ => rng.below(0x11_0000) as u32,
        };
        if let Some(c) = char::from_u32(candidate) {
            return c;
        }
    }
}

fn mutate(rng: &mut Rng, mut s: String, corpus: &[String]) -> String {
    for _ in 0..1 + rng.below(4) {
        let cuts = char_boundaries(&s);
        let at = *rng.pick(&cuts);
        let other = *rng.pick(&cuts);
        let (lo, hi) = (at.min(other), at.max(other));
        s = match rng.below(10) {
            0 | 1 => format!("{}{}{}", &s[..at], rng.pick(FRAGMENTS), &s[at..]),
            2 => format!("{}{}", &s[..lo], &s[hi..]),
            3 => format!("{}{}{}", &s[..hi], &s[lo..hi], &s[hi..]),
            4 => s[..at].to_owned(),
            5 => {
                let donor = rng.pick(corpus);
                let cut = *rng.pick(&char_boundaries(donor));
                format!("{}{}", &s[..at], &donor[cut..])
            }
            6 => format!("{}{}{}", &s[..at], random_char(rng), &s[at..]),
            7 => {
                let times = 1 + rng.below(200);
                format!(
                    "{}{}{}",
                    &s[..at],
                    rng.pick(FRAGMENTS).repeat(times),
                    &s[at..]
                )
            }
            8 => {
                if rng.chance(50) {
                    s.to_uppercase()
                } else {
                    s.to_lowercase()
                }
            }
            _ => {
                let bytes: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                format!(
                    "{}{}{}",
                    &s[..at],
                    String::from_utf8_lossy(&bytes),
                    &s[at..]
                )
            }
        };
    }
    s
}

// ---------------------------------------------------------------- checking

/// Clocks at the edges of what the rewriters print, and an ordinary one.
const CLOCKS: &[i64] = &[
    1_700_000_000_123,
    0,
    -1,
    i64::MIN,
    i64::MAX,
    -62_167_219_200_000,
    -62_167_219_200_001,
    -62_135_596_800_000,
    -62_135_596_800_001,
    253_402_300_799_999,
    253_402_300_800_000,
];

/// Runs all four functions of `dialect` on `sql`; the rewrite twice with the
/// same clock and random source, which must give the same answer.
fn exercise(dialect: Dialect, sql: &str, unix_ms: i64, random_seed: u64) -> Result<(), String> {
    let _ = dialect.classify(sql);
    let _ = dialect.forbidden(sql);
    let _ = dialect.statement_count(sql);
    let rewrite = || {
        let mut state = random_seed;
        let mut random = move || splitmix64(&mut state);
        let mut env = Env {
            unix_ms,
            random: &mut random,
        };
        dialect
            .make_deterministic(sql, &mut env)
            .map(|s| s.into_owned())
    };
    let first = rewrite();
    let second = rewrite();
    if first != second {
        return Err(format!(
            "{dialect:?}: the rewrite is not deterministic: {first:?} then {second:?}"
        ));
    }
    Ok(())
}

/// The message and place of the last panic on this thread, caught by the hook below.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Keeps panics quiet (they are counted and reported) and remembers the last.
fn install_quiet_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string payload)".to_owned());
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("{message} at {place}"));
    }));
}

/// One failing case.
struct Failure {
    case_seed: u64,
    dialect: Dialect,
    sql: String,
    what: String,
}

fn run_case(case_seed: u64, corpus: &[String], failures: &mut Vec<Failure>) {
    let mut rng = Rng(case_seed);
    let base = if rng.chance(50) {
        rng.pick(corpus).clone()
    } else {
        statement(&mut rng)
    };
    let sql = if rng.chance(75) {
        mutate(&mut rng, base, corpus)
    } else {
        base
    };
    let unix_ms = if rng.chance(80) {
        CLOCKS[0]
    } else {
        *rng.pick(CLOCKS)
    };
    let random_seed = rng.next();
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            exercise(dialect, &sql, unix_ms, random_seed)
        }));
        let what = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(wrong)) => wrong,
            Err(_) => {
                let panic = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
                format!("panicked: {}", panic.unwrap_or_default())
            }
        };
        failures.push(Failure {
            case_seed,
            dialect,
            sql: sql.clone(),
            what,
        });
    }
}

fn replay_command(test: &str, case_seed: u64) -> String {
    format!(
        "PAXSQL_FUZZ_SEED={case_seed} PAXSQL_FUZZ_CASES=1 cargo test -p paxsql-sql \
         --test fuzz_determinism {test} -- --nocapture"
    )
}

/// Runs `f` on a thread with a node's stack size and waits for it.
fn on_node_sized_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(f)
        .expect("spawning a thread")
        .join()
        .expect("the fuzz thread catches its panics")
}

#[test]
fn no_statement_panics_the_classifier_or_the_rewriter() {
    let seed = env_u64("PAXSQL_FUZZ_SEED", DEFAULT_SEED);
    let cases = env_u64("PAXSQL_FUZZ_CASES", DEFAULT_CASES);
    let corpus = seed_corpus();
    assert!(
        corpus.len() > 1000,
        "the seed corpus should hold the sqllogictest statements; found {}",
        corpus.len()
    );
    eprintln!(
        "fuzz_determinism: seed {seed}, {cases} cases, corpus of {} statements; replay: \
         PAXSQL_FUZZ_SEED={seed} PAXSQL_FUZZ_CASES={cases} cargo test -p paxsql-sql \
         --test fuzz_determinism no_statement_panics -- --nocapture",
        corpus.len()
    );
    install_quiet_panic_hook();
    let started = Instant::now();
    let failures = on_node_sized_stack(move || {
        let mut failures = Vec::new();
        for i in 0..cases {
            run_case(seed.wrapping_add(i), &corpus, &mut failures);
        }
        failures
    });
    let _ = std::panic::take_hook();
    eprintln!(
        "fuzz_determinism: {cases} cases ({} calls) in {:.2}s, {} failures",
        cases * 2 * 5,
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for f in failures.iter().take(20) {
        eprintln!(
            "  {:?} {}\n    input: {:?}\n    replay: {}",
            f.dialect,
            f.what,
            f.sql,
            replay_command("no_statement_panics", f.case_seed)
        );
    }
    assert!(
        failures.is_empty(),
        "{} failing cases (above)",
        failures.len()
    );
}

// ---------------------------------------------------------------- deep input

/// Inputs nested or repeated `n` times.
fn deep_inputs(n: usize) -> Vec<(String, String)> {
    let open_close = |name: &str, open: &str, inner: &str, close: &str| {
        (
            format!("{name} x{n}"),
            format!("SELECT {}{inner}{}", open.repeat(n), close.repeat(n)),
        )
    };
    vec![
        open_close("parentheses", "(", "1", ")"),
        open_close("calls", "abs(", "random()", ")"),
        open_close("date calls", "datetime(", "'now'", ")"),
        open_close("clock calls", "now(", "CURRENT_TIMESTAMP", ")"),
        open_close("keyword calls", "current_time(", "'now'::date", ")"),
        open_close("subqueries", "(SELECT ", "1", ")"),
        open_close("unclosed parentheses", "(", "1", ""),
        open_close("unary minus", "- ", "1", ""),
        open_close("NOT", "NOT ", "1", ""),
        open_close("CASE", "CASE WHEN 1 THEN ", "2", " END"),
        open_close("arrays", "ARRAY[", "1", "]"),
        open_close("casts", "CAST(", "1", " AS int)"),
        (
            format!("additions x{n}"),
            format!("SELECT 1{}", " + 1".repeat(n)),
        ),
        (
            format!("string concatenation x{n}"),
            format!("SELECT 'a'{}", " || 'now'".repeat(n)),
        ),
        (
            format!("postgres casts x{n}"),
            format!("SELECT 1{}", "::text".repeat(n)),
        ),
        (
            format!("ANDs x{n}"),
            format!("SELECT * FROM t WHERE a{}", " AND a".repeat(n)),
        ),
        (
            format!("unions x{n}"),
            format!("SELECT 1{}", " UNION SELECT random()".repeat(n)),
        ),
        (
            format!("ctes x{n}"),
            format!(
                "WITH {} SELECT 1",
                (0..n)
                    .map(|i| format!("c{i} AS (SELECT 1)"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            format!("joins x{n}"),
            format!("SELECT * FROM t{}", " JOIN t ON 1".repeat(n)),
        ),
        (
            format!("values rows x{n}"),
            format!("INSERT INTO t VALUES {}", vec!["(random())"; n].join(", ")),
        ),
        (
            format!("nested comments x{n}"),
            format!("SELECT 1 {}{}", "/*".repeat(n), "*/".repeat(n)),
        ),
        (
            format!("trigger blocks x{n}"),
            format!(
                "CREATE TRIGGER t AFTER INSERT ON t {} SELECT 1; {}",
                "BEGIN ".repeat(n),
                "END ".repeat(n)
            ),
        ),
        (format!("semicolons x{n}"), ";".repeat(n)),
        (format!("quotes x{n}"), "'".repeat(n)),
    ]
}

/// The deep inputs run here, in a child process started by the test below
/// (an overflow aborts the process; the parent reports which input did it).
#[test]
fn deep_input_child() {
    if std::env::var_os("PAXSQL_FUZZ_DEEP_CHILD").is_none() {
        return;
    }
    // 1600 and 2400 put most shapes just under NESTING_MAX tokens: parsed.
    let sizes = [10, 100, 1_000, 1_600, 2_400, 10_000, 50_000];
    for n in sizes {
        for (name, sql) in deep_inputs(n) {
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                eprintln!("deep case: {dialect:?} {name}");
                let started = Instant::now();
                let sql_for_thread = sql.clone();
                let outcome = on_node_sized_stack(move || {
                    catch_unwind(AssertUnwindSafe(|| {
                        exercise(dialect, &sql_for_thread, CLOCKS[0], 1)
                    }))
                });
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(wrong)) => panic!("{name}: {wrong}"),
                    Err(_) => panic!("{dialect:?} {name}: panicked"),
                }
                let secs = started.elapsed().as_secs_f64();
                eprintln!("deep case took {secs:.3}s");
                assert!(secs < 10.0, "{dialect:?} {name}: took {secs:.1}s");
            }
        }
    }
    eprintln!("deep case: all done");
}

#[test]
fn deeply_nested_and_long_input_neither_panics_nor_overflows_the_stack() {
    let started = Instant::now();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "deep_input_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PAXSQL_FUZZ_DEEP_CHILD", "1")
        .output()
        .expect("running the child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last_case = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("deep case:"))
        .unwrap_or("deep case: (none started)");
    eprintln!(
        "deep input: {:.2}s, last {last_case}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success() && last_case.ends_with("all done"),
        "the child failed ({}) at {last_case}; its output:\n{}",
        output.status,
        stderr
            .lines()
            .filter(|l| !l.starts_with("deep case:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
