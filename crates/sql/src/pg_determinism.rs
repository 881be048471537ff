//! Keeping PostgreSQL replicas identical: what the PostgreSQL dialect
//! rewrites, refuses and classifies before a statement enters the log.
//!
//! The SQLite rules ([`crate::determinism`]) explain the why; this is the
//! same contract for PostgreSQL. Every replica runs the statement on its own
//! database, so nothing it evaluates may depend on which node, connection,
//! server process or moment runs it.
//!
//! # The clock
//!
//! | written by the client | in `SELECT`/`INSERT`/`UPDATE`/`DELETE`/`WITH`/`VALUES`/`MERGE`/`CALL` | in anything else (`CREATE TABLE ... DEFAULT`, `ALTER`, `CREATE VIEW`, ...) |
//! |---|---|---|
//! | `now()`, `CURRENT_TIMESTAMP[(p)]`, `transaction_timestamp()`, `statement_timestamp()`, `clock_timestamp()` | `('YYYY-MM-DD HH:MM:SS.mmm+00'::timestamptz)` | `(paxsql.now())` |
//! | `LOCALTIMESTAMP[(p)]` | `('...'::timestamp)` | `(paxsql.now()::timestamp)` |
//! | `CURRENT_DATE` | `('YYYY-MM-DD'::date)` | `(paxsql.now()::date)` |
//! | `CURRENT_TIME[(p)]` / `LOCALTIME[(p)]` | `('HH:MM:SS.mmm+00'::timetz)` / `::time` | `(paxsql.now()::timetz)` / `::time` |
//! | `'now'`, `'today'`, `'tomorrow'`, `'yesterday'` cast to a date/time type (`'now'::timestamptz`, `CAST('today' AS date)`, `timestamp 'now'`) | the instant or day as a literal | the same (PostgreSQL itself folds these when it stores a definition) |
//!
//! The literal is the proposer's clock ([`crate::determinism::Env::unix_ms`], UTC).
//! PostgreSQL's `now()` is the start of the transaction and cannot be set,
//! so a stored definition cannot keep calling it: it is rewritten to
//! `paxsql.now()`, a function every paxsql database has, which returns the
//! time carried by the log entry being applied (the engine sets it per
//! write, see `postgres.rs`) and the real clock outside of applying (in a
//! read). A column `DEFAULT now()` therefore fills in the same instant on
//! every replica. `clock_timestamp()` advances during a statement; here it
//! is one instant per write, like `now()`.
//!
//! A string that PostgreSQL would read as the clock (`'now'`, `'today 10:00'`,
//! ...) without a date/time cast next to it is refused: paxsql cannot tell
//! whether it becomes a timestamp (the clock of each replica) or stays text.
//! Cast it (`'now'::text` for the word, `now()` for the time).
//!
//! # Randomness
//!
//! `random()` (and `random_normal()`) stay as written: the engine seeds
//! PostgreSQL's generator with `setseed()` from the entry's seed before every
//! write, so each replica draws the same sequence, also in column DEFAULTs
//! and triggers. `gen_random_uuid()` and `uuid_generate_v4()` read the
//! operating system's random source, which no seed reaches: they are
//! rewritten to `paxsql.uuid()`, a version-4 UUID made from `random()`.
//!
//! # Refused
//!
//! - Functions whose value belongs to one server, session or transaction:
//!   `txid_current()`, `pg_current_xact_id()`, `pg_backend_pid()`,
//!   `current_database()` (each replica has its own database), `version()`,
//!   `inet_server_port()`, `current_user`, `timeofday()`, `set_config()`,
//!   file access (`pg_read_file()`, `lo_import()`, ...) and the like.
//! - Function bodies (`CREATE FUNCTION`, `CREATE PROCEDURE`, `DO`) that call
//!   the clock or a random UUID: paxsql does not rewrite inside bodies; call
//!   `paxsql.now()` / `paxsql.uuid()` there instead.
//! - Statements that change the session or leave the transaction
//!   ([`forbidden`]): `BEGIN`/`COMMIT`/`SAVEPOINT`/..., `SET`/`RESET`,
//!   `PREPARE`/`EXECUTE`, cursors, `LISTEN`, `COPY`, `VACUUM`, temporary and
//!   unlogged tables (lost when one replica's session or server restarts),
//!   sequences with `CACHE` above 1 (cached values are lost with the
//!   session), and objects that live outside the replica's database
//!   (databases, roles, tablespaces, `ALTER SYSTEM`).
//!
//! # Sequences and SERIAL
//!
//! `nextval()` is deterministic when every replica applies the same
//! statements in the same order from the same state, which the log gives.
//! What PostgreSQL does not give is transactional sequences: a `nextval()`
//! in a transaction that never committed (a replica that crashed in the
//! middle of an entry) is not undone. The engine therefore records every
//! sequence's position in the same transaction as the applied index and
//! puts the sequences back there when it opens (see `postgres.rs`).

use crate::determinism::{nesting_bound, Env, Kind, Nesting, NESTING_MAX};
use crate::pg_lex::{lex, significant, splice, word_upper, Tok, Token};
use std::borrow::Cow;
use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Statement, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The schema of paxsql's own tables in a PostgreSQL replica.
pub const INTERNAL_SCHEMA: &str = "paxsql_internal";

/// Calls that read the clock.
const CLOCK_CALLS: &[&str] = &[
    "now",
    "transaction_timestamp",
    "statement_timestamp",
    "clock_timestamp",
];

/// SQL-standard clock keywords (with an optional precision in parentheses).
const CLOCK_KEYWORDS: &[&str] = &[
    "current_timestamp",
    "localtimestamp",
    "current_date",
    "current_time",
    "localtime",
];

/// Calls that return random UUIDs from the operating system.
const UUID_CALLS: &[&str] = &["gen_random_uuid", "uuid_generate_v4"];

/// Functions and keywords refused in any replicated statement, with why.
fn replica_local_reason(name: &str) -> Option<&'static str> {
    Some(match name {
        "txid_current"
        | "txid_current_if_assigned"
        | "txid_current_snapshot"
        | "pg_current_xact_id"
        | "pg_current_xact_id_if_assigned"
        | "pg_current_snapshot" => {
            "transaction ids are numbered by each PostgreSQL server on its own and differ \
             between replicas"
        }
        "pg_backend_pid"
        | "inet_client_addr"
        | "inet_client_port"
        | "inet_server_addr"
        | "inet_server_port"
        | "pg_postmaster_start_time"
        | "pg_conf_load_time"
        | "pg_my_temp_schema"
        | "version" => {
            "it describes the server process or connection of one replica, and replicas differ"
        }
        "current_database" | "current_catalog" => {
            "every replica has a database of its own, with its own name"
        }
        "current_user" | "session_user" | "current_role" => {
            "it names the role a node connects as, which --postgres-url sets per node; store \
             the user name your application knows instead"
        }
        "timeofday" | "uuid_generate_v1" | "uuid_generate_v1mc" => {
            "it reads the clock or the network card of the node that runs it; use now() or \
             paxsql.uuid()"
        }
        "set_config" => {
            "it changes a setting of one node's connection, outside the replicated data"
        }
        "pg_read_file"
        | "pg_read_binary_file"
        | "pg_ls_dir"
        | "pg_stat_file"
        | "lo_import"
        | "lo_export"
        | "dblink"
        | "dblink_exec"
        | "dblink_connect" => "it reaches files or servers outside the replicated database",
        "pg_terminate_backend" | "pg_cancel_backend" | "pg_reload_conf" | "pg_rotate_logfile" => {
            "it acts on the PostgreSQL server of one replica"
        }
        _ => return None,
    })
}

/// Why a statement is refused, said to the client.
fn refuse(what: &str, why: &str) -> String {
    format!("{what} is not allowed in a replicated statement: {why}")
}

/// How many statements `sql` holds (0 for blank or comment-only text).
///
/// Semicolons inside strings, dollar quotes and comments do not count, nor
/// those inside a `BEGIN ATOMIC ... END` function body.
pub fn statement_count(sql: &str) -> usize {
    let tokens = lex(sql);
    let mut count = 0;
    let mut in_statement = false;
    let mut depth = 0usize;
    let mut prev_begin = false;
    for t in significant(&tokens) {
        let upper = word_upper(sql, t);
        if !in_statement {
            if t.tok == Tok::Punct(';') {
                continue;
            }
            in_statement = true;
            count += 1;
        }
        match upper.as_deref() {
            Some("ATOMIC") if prev_begin => depth += 1,
            Some("CASE") if depth > 0 => depth += 1,
            Some("END") if depth > 0 => depth -= 1,
            _ => {}
        }
        prev_begin = upper.as_deref() == Some("BEGIN");
        if t.tok == Tok::Punct(';') && depth == 0 {
            in_statement = false;
        }
    }
    count
}

/// Why this statement cannot be one replicated statement, if it cannot.
///
/// Decided from its words (never from strings or comments), so it also
/// works for statements sqlparser cannot parse.
pub fn forbidden(sql: &str) -> Option<String> {
    let tokens = lex(sql);
    let sig = significant(&tokens);
    let words: Vec<String> = sig
        .iter()
        .take_while(|t| t.tok != Tok::Punct(';'))
        .map(|t| word_upper(sql, t).unwrap_or_default())
        .collect();
    let first = words.iter().find(|w| !w.is_empty())?.as_str();
    let second = words.get(1).map(String::as_str).unwrap_or("");
    let has = |w: &str| words.iter().any(|x| x == w);
    let has_pair = |a: &str, b: &str| words.windows(2).any(|p| p[0] == a && p[1] == b);
    let reason = match first {
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE" => {
            "transaction control statements (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ...) are not \
             allowed: a transaction cannot stay open across replicated statements; send the \
             statements in one request with the `transaction` flag"
                .to_owned()
        }
        "PREPARE" | "EXECUTE" | "DEALLOCATE" => {
            "PREPARE, EXECUTE and DEALLOCATE are not allowed: a prepared statement lives in one \
             node's session; send the statement itself with parameters"
                .to_owned()
        }
        "SET" | "RESET" | "DISCARD" => {
            "SET, RESET and DISCARD are not allowed: they change one node's session, which is \
             not replicated and is lost when it reconnects; write the setting into each \
             statement (e.g. AT TIME ZONE, explicit casts) instead"
                .to_owned()
        }
        "DECLARE" | "FETCH" | "MOVE" | "CLOSE" => {
            "cursors are not allowed: a cursor lives in one node's session; use LIMIT and OFFSET \
             or keyset pagination"
                .to_owned()
        }
        "LISTEN" | "UNLISTEN" => {
            "LISTEN is not allowed: notifications go to sessions, and paxsql's sessions are \
             internal"
                .to_owned()
        }
        "COPY" => "COPY is not allowed: it reads or writes files on the PostgreSQL server or \
                   streams through one connection; use INSERT with parameters"
            .to_owned(),
        "VACUUM" | "CHECKPOINT" | "LOAD" => format!(
            "{first} is not allowed as a replicated statement: it acts on one server and cannot \
             run inside the transaction a statement is applied in"
        ),
        "CREATE" | "ALTER" | "DROP"
            if [
                "DATABASE",
                "ROLE",
                "USER",
                "GROUP",
                "TABLESPACE",
                "SUBSCRIPTION",
                "SYSTEM",
            ]
            .contains(&second) =>
        {
            format!(
                "{first} {second} is not allowed: it changes the PostgreSQL server, outside the \
                 replica's own database, and every replica would do it again"
            )
        }
        "CREATE" if has("TEMP") || has("TEMPORARY") || has("UNLOGGED") => {
            "temporary and unlogged tables are not allowed: PostgreSQL drops or empties them \
             when a replica's session or server restarts, and replicas would differ"
                .to_owned()
        }
        _ if has_pair("INTO", "TEMP")
            || has_pair("INTO", "TEMPORARY")
            || has_pair("INTO", "UNLOGGED")
            || has_pair("SET", "UNLOGGED") =>
        {
            "temporary and unlogged tables are not allowed: PostgreSQL drops or empties them \
             when a replica's session or server restarts, and replicas would differ"
                .to_owned()
        }
        "CREATE" | "ALTER" if has("CACHE") && cache_above_one(sql, &sig) => {
            "a sequence CACHE above 1 is not allowed: values cached by a session are lost \
             when it reconnects, and replicas would number rows differently; leave CACHE at 1"
                .to_owned()
        }
        _ => return None,
    };
    Some(reason)
}

/// True if a `CACHE n` with n > 1 appears.
fn cache_above_one(sql: &str, sig: &[&Token]) -> bool {
    sig.windows(2).any(|p| {
        word_upper(sql, p[0]).as_deref() == Some("CACHE")
            && p[1].tok == Tok::Number
            && p[1].text(sql).parse::<f64>().map_or(true, |n| n > 1.0)
    })
}

/// Why a statement mentions what user SQL may never touch, if it does:
/// paxsql's internal schema, anywhere in the text (strings included, so
/// `'paxsql_internal.requests'::regclass` and dynamic SQL are caught too).
pub fn reaches_internal(sql: &str) -> Option<String> {
    sql.to_ascii_lowercase().contains(INTERNAL_SCHEMA).then(|| {
        format!(
            "{INTERNAL_SCHEMA} is paxsql's own schema (applied index, request ids); user \
             statements cannot use it"
        )
    })
}

/// Classifies one statement: `Read` only for a query without side effects.
pub fn classify(sql: &str) -> Kind {
    if forbidden(sql).is_some() {
        return Kind::Write;
    }
    let Some(statement) = parse_first(sql) else {
        return Kind::Unknown;
    };
    let query = match &statement {
        Statement::Explain {
            statement, analyze, ..
        } if !analyze => statement.as_ref(),
        other => other,
    };
    match query {
        Statement::Query(_) if !has_side_effects(query) => Kind::Read,
        Statement::ShowVariable { .. } => Kind::Read,
        _ => Kind::Write,
    }
}

/// Functions that change state although called from a `SELECT`.
const WRITING_CALLS: &[&str] = &[
    "nextval",
    "setval",
    "set_config",
    "pg_advisory_lock",
    "pg_advisory_xact_lock",
    "lo_create",
    "lo_unlink",
    "lo_from_bytea",
    "pg_notify",
];

fn has_side_effects(query: &Statement) -> bool {
    struct SideEffects {
        statements: usize,
    }
    impl Visitor for SideEffects {
        type Break = ();
        fn pre_visit_statement(&mut self, _: &Statement) -> ControlFlow<()> {
            self.statements += 1;
            if self.statements > 1 {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = expr {
                let name = f.name.0.last().map(|p| p.to_string().to_ascii_lowercase());
                if name.is_some_and(|n| WRITING_CALLS.contains(&n.as_str())) {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    query.visit(&mut SideEffects { statements: 0 }).is_break()
}

/// The first statement, parsed with rqlite's placeholders made parseable
/// (`?` becomes `0`, `:name` becomes `$name`: same lengths, same positions).
/// Text nested deeper than [`NESTING_MAX`] is not parsed: sqlparser's tree
/// of it would overflow the stack when dropped.
fn parse_first(sql: &str) -> Option<Statement> {
    let tokens = lex(sql);
    let nesting = significant(&tokens).into_iter().map(|t| match t.tok {
        Tok::Punct('(' | '[') => Nesting::Open,
        Tok::Punct(')' | ']') => Nesting::Close,
        Tok::Punct(',' | ';') => Nesting::Separator,
        _ => Nesting::Other,
    });
    if nesting_bound(nesting) > NESTING_MAX {
        return None;
    }
    let mut edits: Vec<(std::ops::Range<usize>, String)> = tokens
        .iter()
        .filter_map(|t| match &t.tok {
            Tok::Question => Some((t.range.clone(), "0".to_owned())),
            Tok::Named(':' | '@', _) => Some((t.range.start..t.range.start + 1, "$".to_owned())),
            _ => None,
        })
        .collect();
    let text = splice(sql, &mut edits);
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(&text).ok()?;
    while parser.consume_token(&sqlparser::tokenizer::Token::SemiColon) {}
    let statement = parser.parse_statement().ok()?;
    match parser.peek_token().token {
        sqlparser::tokenizer::Token::SemiColon | sqlparser::tokenizer::Token::EOF => {
            Some(statement)
        }
        _ => None,
    }
}

/// Statements whose expressions run now, once: the clock becomes a literal.
const RUN_NOW: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES", "MERGE", "CALL", "TABLE", "EXPLAIN",
];

/// Date/time type names a `'now'` may be cast to.
const DATETIME_TYPES: &[&str] = &["TIMESTAMP", "TIMESTAMPTZ", "DATE", "TIME", "TIMETZ"];

/// Text types: `'now'::text` is the word, not the clock.
const TEXT_TYPES: &[&str] = &[
    "TEXT",
    "VARCHAR",
    "CHAR",
    "CHARACTER",
    "BPCHAR",
    "NAME",
    "CITEXT",
];

/// Rewrites the clock and random UUIDs so that every replica computes the
/// same values, or says why the statement cannot be made deterministic.
/// Text that needs nothing is returned unchanged (borrowed).
pub fn make_deterministic<'s>(sql: &'s str, env: &mut Env<'_>) -> Result<Cow<'s, str>, String> {
    let tokens = lex(sql);
    let sig = significant(&tokens);
    let first = sig
        .iter()
        .find(|t| t.tok != Tok::Punct(';'))
        .and_then(|t| word_upper(sql, t))
        .unwrap_or_default();
    let run_now = RUN_NOW.contains(&first.as_str());
    let body_statement = first == "DO"
        || (first == "CREATE"
            && sig.iter().take(6).any(|t| {
                matches!(
                    word_upper(sql, t).as_deref(),
                    Some("FUNCTION" | "PROCEDURE")
                )
            }));
    let clock = Clock::new(env.unix_ms)?;
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    // Where the last edit ends: a clock call inside the parentheses of
    // another (`now(current_date)`, `current_time(now())`) goes with the
    // outer call's replacement, so edits never overlap, and nested calls are
    // not scanned again for each level.
    let mut covered_until = 0;
    for (i, t) in sig.iter().enumerate() {
        if let Some((last, _)) = edits.last() {
            covered_until = last.end;
        }
        match &t.tok {
            Tok::Word => {
                let name = t.text(sql).to_ascii_lowercase();
                let qualifier = qualifier(sql, &sig, i);
                if qualifier.as_deref().is_some_and(|q| q != "pg_catalog") {
                    continue;
                }
                let call = sig.get(i + 1).is_some_and(|n| n.tok == Tok::Punct('('));
                let start = if qualifier.is_some() {
                    sig[i - 2].range.start
                } else {
                    t.range.start
                };
                if let Some(why) = replica_local_reason(&name) {
                    let keyword = matches!(
                        name.as_str(),
                        "current_user" | "session_user" | "current_role" | "current_catalog"
                    );
                    if call || keyword {
                        return Err(refuse(&format!("{name}()"), why));
                    }
                }
                if start < covered_until {
                    continue;
                }
                if CLOCK_CALLS.contains(&name.as_str()) && call {
                    let end = closing_paren(&sig, i + 1).ok_or_else(|| unbalanced(&name))?;
                    let text = clock.rewrite("current_timestamp", None, run_now);
                    edits.push((start..sig[end].range.end, text));
                } else if CLOCK_KEYWORDS.contains(&name.as_str()) {
                    let (end, precision) = if call {
                        let end = closing_paren(&sig, i + 1).ok_or_else(|| unbalanced(&name))?;
                        let inner: String = sig[i + 2..end].iter().map(|t| t.text(sql)).collect();
                        (sig[end].range.end, Some(inner))
                    } else {
                        (t.range.end, None)
                    };
                    let text = clock.rewrite(&name, precision.as_deref(), run_now);
                    edits.push((start..end, text));
                } else if UUID_CALLS.contains(&name.as_str()) && call {
                    let end = closing_paren(&sig, i + 1).ok_or_else(|| unbalanced(&name))?;
                    edits.push((start..sig[end].range.end, "paxsql.uuid()".to_owned()));
                }
            }
            Tok::Str(value) => {
                if let Some(edit) = clock_string(sql, &sig, i, value, &clock)? {
                    if t.range.start >= covered_until {
                        edits.push((t.range.clone(), edit));
                    }
                }
            }
            Tok::Dollar(body) if body_statement => check_body(body)?,
            _ => {}
        }
    }
    if body_statement {
        for t in &sig {
            if let Tok::Str(body) = &t.tok {
                check_body(body)?;
            }
        }
    }
    if edits.is_empty() {
        return Ok(Cow::Borrowed(sql));
    }
    Ok(Cow::Owned(splice(sql, &mut edits)))
}

fn unbalanced(name: &str) -> String {
    format!("{name}( has no closing parenthesis")
}

/// The schema a word at `i` is qualified with (`pg_catalog` in `pg_catalog.now`).
fn qualifier(sql: &str, sig: &[&Token], i: usize) -> Option<String> {
    if i >= 2 && sig[i - 1].tok == Tok::Punct('.') {
        return Some(match &sig[i - 2].tok {
            Tok::Quoted(q) => q.clone(),
            _ => sig[i - 2].text(sql).to_ascii_lowercase(),
        });
    }
    None
}

/// The index of the `)` matching the `(` at `open`.
fn closing_paren(sig: &[&Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in sig.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// A function body must not read the clock or random UUIDs: paxsql does not
/// rewrite inside bodies.
fn check_body(body: &str) -> Result<(), String> {
    let tokens = lex(body);
    let sig = significant(&tokens);
    for (i, t) in sig.iter().enumerate() {
        if t.tok != Tok::Word {
            continue;
        }
        let name = t.text(body).to_ascii_lowercase();
        if qualifier(body, &sig, i).is_some_and(|q| q != "pg_catalog") {
            continue;
        }
        let call = sig.get(i + 1).is_some_and(|n| n.tok == Tok::Punct('('));
        let clock = (CLOCK_CALLS.contains(&name.as_str()) && call)
            || CLOCK_KEYWORDS.contains(&name.as_str());
        let uuid = UUID_CALLS.contains(&name.as_str()) && call;
        if clock || uuid || (call && replica_local_reason(&name).is_some()) {
            return Err(format!(
                "this function body calls {name}, which differs between replicas, and paxsql \
                 does not rewrite inside function bodies; call paxsql.now() for the time of the \
                 write and paxsql.uuid() for a random UUID (both are the same on every replica)"
            ));
        }
    }
    Ok(())
}

/// The rewrite of a string literal that PostgreSQL would read as the clock.
fn clock_string(
    sql: &str,
    sig: &[&Token],
    i: usize,
    value: &str,
    clock: &Clock,
) -> Result<Option<String>, String> {
    if !reads_clock(value) {
        return Ok(None);
    }
    let word = |j: usize| sig.get(j).and_then(|t| word_upper(sql, t));
    // `timestamp 'now'`, `timestamp with time zone 'now'`, `date 'today'`.
    let before = if i >= 1 { word(i - 1) } else { None };
    let typed_before = before
        .as_deref()
        .is_some_and(|w| DATETIME_TYPES.contains(&w) || w == "ZONE");
    // `'now'::timestamptz` or `CAST('now' AS date)`.
    let after = if sig.get(i + 1).is_some_and(|t| t.tok == Tok::Punct(':'))
        && sig.get(i + 2).is_some_and(|t| t.tok == Tok::Punct(':'))
    {
        word(i + 3)
    } else if word(i + 1).as_deref() == Some("AS") {
        word(i + 2)
    } else {
        None
    };
    if after.as_deref().is_some_and(|w| TEXT_TYPES.contains(&w)) {
        return Ok(None);
    }
    let typed_after = after
        .as_deref()
        .is_some_and(|w| DATETIME_TYPES.contains(&w));
    if !(typed_before || typed_after) {
        return Err(format!(
            "the string '{value}' reads the clock of each replica when PostgreSQL turns it into \
             a date or time; write now() or CURRENT_DATE for the current time (paxsql fixes \
             it once for all replicas), or '{value}'::text if you mean the text"
        ));
    }
    match value.trim().to_ascii_lowercase().as_str() {
        "now" => Ok(Some(format!("'{}'", clock.timestamptz()))),
        "today" => Ok(Some(format!("'{}'", clock.day(0)))),
        "tomorrow" => Ok(Some(format!("'{}'", clock.day(1)))),
        "yesterday" => Ok(Some(format!("'{}'", clock.day(-1)))),
        _ => Err(format!(
            "the string '{value}' mixes a clock word with other values; paxsql can only fix \
             'now', 'today', 'tomorrow' and 'yesterday' on their own: compute the value in \
             the client or use now() + interval '...'"
        )),
    }
}

/// Words PostgreSQL's date/time input reads from the clock.
const CLOCK_WORDS: &[&str] = &["now", "today", "tomorrow", "yesterday"];

/// Other words that may appear in a date/time input string.
const DATETIME_WORDS: &[&str] = &[
    "am", "pm", "at", "utc", "gmt", "z", "t", "ad", "bc", "allballs", "epoch", "infinity",
];

/// True if PostgreSQL could read `s` as a date/time that depends on the clock.
pub(crate) fn reads_clock(s: &str) -> bool {
    if s.len() > 64 {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    words.iter().any(|w| CLOCK_WORDS.contains(w))
        && words
            .iter()
            .all(|w| CLOCK_WORDS.contains(w) || DATETIME_WORDS.contains(w))
        && lower
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " :.+-/,".contains(c))
}

/// The proposer's clock, as PostgreSQL literals.
struct Clock {
    unix_ms: i64,
}

impl Clock {
    fn new(unix_ms: i64) -> Result<Clock, String> {
        // Years 1..9999: what the literals below can print.
        if !(-62_135_596_800_000..=253_402_300_799_999).contains(&unix_ms) {
            return Err(format!(
                "this node's clock reads {unix_ms} ms since 1970, outside the years 1 to 9999; \
                 fix the node's clock"
            ));
        }
        Ok(Clock { unix_ms })
    }

    fn parts(&self, day_offset: i64) -> (String, String) {
        let days = self.unix_ms.div_euclid(86_400_000) + day_offset;
        let ms = self.unix_ms.rem_euclid(86_400_000);
        let (y, m, d) = crate::pg_values::civil_from_days(days);
        let date = format!("{y:04}-{m:02}-{d:02}");
        let time = format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        );
        (date, time)
    }

    fn timestamptz(&self) -> String {
        let (date, time) = self.parts(0);
        format!("{date} {time}+00")
    }

    fn day(&self, offset: i64) -> String {
        self.parts(offset).0
    }

    /// The replacement of a clock function: a literal when the statement
    /// runs now, `paxsql.now()` when it is stored and runs later.
    fn rewrite(&self, keyword: &str, precision: Option<&str>, run_now: bool) -> String {
        let (date, time) = self.parts(0);
        let p = precision.map(|p| format!("({p})")).unwrap_or_default();
        if run_now {
            match keyword {
                "localtimestamp" => format!("('{date} {time}'::timestamp{p})"),
                "current_date" => format!("('{date}'::date)"),
                "current_time" => format!("('{time}+00'::time{p} with time zone)"),
                "localtime" => format!("('{time}'::time{p})"),
                _ => format!("('{date} {time}+00'::timestamp{p} with time zone)"),
            }
        } else {
            match keyword {
                "localtimestamp" => format!("(paxsql.now()::timestamp{p})"),
                "current_date" => "(paxsql.now()::date)".to_owned(),
                "current_time" => format!("(paxsql.now()::time{p} with time zone)"),
                "localtime" => format!("(paxsql.now()::time{p})"),
                _ if p.is_empty() => "(paxsql.now())".to_owned(),
                _ => format!("(paxsql.now()::timestamp{p} with time zone)"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(sql: &str) -> Result<String, String> {
        let mut random = || 7u64;
        let mut env = Env {
            unix_ms: 1_700_000_000_123,
            random: &mut random,
        };
        make_deterministic(sql, &mut env).map(Cow::into_owned)
    }

    #[test]
    fn the_clock_becomes_a_literal_in_statements_that_run_now() {
        assert_eq!(
            det("INSERT INTO t VALUES (now(), CURRENT_DATE, pg_catalog.now())").unwrap(),
            "INSERT INTO t VALUES (('2023-11-14 22:13:20.123+00'::timestamp with time zone), \
             ('2023-11-14'::date), ('2023-11-14 22:13:20.123+00'::timestamp with time zone))"
        );
        assert_eq!(
            det("SELECT current_timestamp(0), localtime").unwrap(),
            "SELECT ('2023-11-14 22:13:20.123+00'::timestamp(0) with time zone), \
             ('22:13:20.123'::time)"
        );
        assert_eq!(
            det("UPDATE t SET at = clock_timestamp() WHERE x = ?").unwrap(),
            "UPDATE t SET at = ('2023-11-14 22:13:20.123+00'::timestamp with time zone) WHERE x = ?"
        );
    }

    #[test]
    fn stored_definitions_call_paxsql_now() {
        assert_eq!(
            det("CREATE TABLE t (at timestamptz DEFAULT now(), d date DEFAULT CURRENT_DATE, u uuid DEFAULT gen_random_uuid())").unwrap(),
            "CREATE TABLE t (at timestamptz DEFAULT (paxsql.now()), d date DEFAULT (paxsql.now()::date), u uuid DEFAULT paxsql.uuid())"
        );
    }

    #[test]
    fn strings_comments_and_other_schemas_are_left_alone() {
        for sql in [
            "SELECT 'now()', \"now\" FROM t -- now()",
            "SELECT myschema.now()",
            "SELECT paxsql.now()",
            "INSERT INTO notes VALUES ('see you tomorrow')",
            "SELECT 'now'::text",
        ] {
            assert_eq!(det(sql).unwrap(), sql);
        }
    }

    #[test]
    fn clock_strings_are_fixed_when_cast_and_refused_otherwise() {
        assert_eq!(
            det("SELECT 'now'::timestamptz, CAST('today' AS date), timestamp 'tomorrow'").unwrap(),
            "SELECT '2023-11-14 22:13:20.123+00'::timestamptz, CAST('2023-11-14' AS date), timestamp '2023-11-15'"
        );
        let e = det("INSERT INTO t (at) VALUES ('now')").unwrap_err();
        assert!(e.contains("'now'::text"), "{e}");
        assert!(det("SELECT 'today 10:00'::timestamp").is_err());
    }

    #[test]
    fn replica_local_functions_and_bodies_are_refused() {
        for sql in [
            "SELECT txid_current()",
            "INSERT INTO t VALUES (current_database())",
            "INSERT INTO t VALUES (current_user)",
            "SELECT pg_catalog.set_config('search_path', 'x', true)",
            "CREATE FUNCTION f() RETURNS timestamptz LANGUAGE sql AS $$ SELECT now() $$",
            "DO $$ BEGIN INSERT INTO t VALUES (gen_random_uuid()); END $$",
        ] {
            assert!(det(sql).is_err(), "{sql}");
        }
        det("CREATE FUNCTION f() RETURNS timestamptz LANGUAGE sql AS $$ SELECT paxsql.now() $$")
            .unwrap();
    }

    #[test]
    fn session_and_server_statements_are_forbidden() {
        for sql in [
            "BEGIN",
            "  commit",
            "SET search_path = x",
            "COPY t FROM '/etc/passwd'",
            "CREATE TEMP TABLE x (a int)",
            "CREATE UNLOGGED TABLE x (a int)",
            "SELECT 1 INTO TEMP x",
            "CREATE DATABASE x",
            "DROP ROLE x",
            "CREATE SEQUENCE s CACHE 10",
            "VACUUM",
            "PREPARE TRANSACTION 'x'",
        ] {
            assert!(forbidden(sql).is_some(), "{sql}");
        }
        for sql in [
            "CREATE TABLE t (a int)",
            "CREATE SEQUENCE s CACHE 1",
            "SELECT 1",
        ] {
            assert!(forbidden(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn a_clock_call_inside_another_goes_with_the_outer_replacement() {
        // Found by tests/fuzz_determinism.rs: the inner call's edit overlapped
        // the outer call's and splicing them panicked.
        assert_eq!(
            det("SELECT now(current_timestamp)").unwrap(),
            "SELECT ('2023-11-14 22:13:20.123+00'::timestamp with time zone)"
        );
        assert_eq!(
            det("SELECT gen_random_uuid(now())").unwrap(),
            "SELECT paxsql.uuid()"
        );
        // A precision is copied (without spaces); PostgreSQL refuses one that
        // is not a number, alike on every replica.
        assert_eq!(
            det("DELETE FROM t WHERE LOCALTIMESTAMP(DATE 'YESTERDAY')").unwrap(),
            "DELETE FROM t WHERE ('2023-11-14 22:13:20.123'::timestamp(DATE'YESTERDAY'))"
        );
        assert_eq!(
            det("SELECT current_time(now())").unwrap(),
            "SELECT ('22:13:20.123+00'::time(now()) with time zone)"
        );
        // Nested calls are scanned once, not once per level: 100 000 levels
        // of now( took a minute, and 10 000 of current_time( took seconds,
        // copying the inner text again for each level.
        let n = 100_000;
        let nested = format!("SELECT {}1{}", "now(".repeat(n), ")".repeat(n));
        assert_eq!(
            det(&nested).unwrap(),
            "SELECT ('2023-11-14 22:13:20.123+00'::timestamp with time zone)"
        );
        let nested = format!("SELECT {}1{}", "current_time(".repeat(n), ")".repeat(n));
        let out = det(&nested).unwrap();
        assert!(
            out.starts_with("SELECT ('22:13:20.123+00'::time(current_time(current_time("),
            "{}",
            &out[..100]
        );
        assert!(out.len() < nested.len() + 100, "{}", out.len());
    }

    #[test]
    fn statements_nested_too_deeply_are_not_parsed() {
        // sqlparser drops its tree by recursion: the tree of this chain
        // overflowed a 2 MiB stack (found with the SQLite dialect).
        let deep = format!("SELECT 1{}", " + 1".repeat(100_000));
        assert_eq!(classify(&deep), Kind::Unknown);
        assert_eq!(det(&deep).unwrap(), deep);
        let shallow = format!("SELECT 1{}", " + 1".repeat(1000));
        assert_eq!(classify(&shallow), Kind::Read);
    }

    #[test]
    fn classify_and_count() {
        assert_eq!(classify("SELECT * FROM t WHERE a = ?"), Kind::Read);
        assert_eq!(classify("SELECT nextval('s')"), Kind::Write);
        assert_eq!(
            classify("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
            Kind::Write
        );
        assert_eq!(classify("INSERT INTO t VALUES (:a)"), Kind::Write);
        assert_eq!(statement_count("SELECT 1; SELECT ';'"), 2);
        assert_eq!(statement_count("SELECT $$;$$ -- ;"), 1);
        assert_eq!(statement_count(" ; "), 0);
        assert_eq!(
            statement_count(
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END"
            ),
            1
        );
    }

    #[test]
    fn internal_schema_is_unreachable_by_name() {
        assert!(reaches_internal("DELETE FROM PAXSQL_INTERNAL.requests").is_some());
        assert!(reaches_internal("SELECT 'paxsql_internal.meta'::regclass").is_some());
        assert!(reaches_internal("SELECT 1").is_none());
    }
}
