//! Keeping replicas identical: fix non-deterministic SQL before it is replicated.
//!
//! # Why
//!
//! Every replica applies the same statements in the same order. If a statement
//! reads the wall clock or a random number generator, each replica computes a
//! different value and the copies of the database silently diverge; nothing in
//! consensus can repair that afterwards. So the proposer (the node that received
//! the client's write) runs [`make_deterministic`] once, before the statement
//! enters the log: the values are fixed there, from one clock reading and one
//! random source ([`Env`]), and every replica applies the same literal text.
//!
//! # What is rewritten (SQLite dialect)
//!
//! | written by the client | replicated as |
//! |---|---|
//! | `CURRENT_TIMESTAMP` | `'YYYY-MM-DD HH:MM:SS'` (UTC, from [`Env::unix_ms`]) |
//! | `CURRENT_DATE` / `CURRENT_TIME` | `'YYYY-MM-DD'` / `'HH:MM:SS'` |
//! | `'now'` as the time value of `datetime`, `date`, `time`, `julianday`, `unixepoch`, `strftime`, `timediff` | `'YYYY-MM-DD HH:MM:SS.SSS'` |
//! | `datetime()`, `strftime('%s')` ... (no time value means "now") | the same call with that literal added |
//! | `random()` | `(<i64>)` from [`Env::random`] |
//! | `randomblob(N)`, `N` an integer literal in 1..=1 MiB | `X'<2N hex digits>'` from [`Env::random`] |
//!
//! The time functions are deterministic once the time value is a literal, and
//! SQLite itself holds `'now'` fixed for the whole statement, so replacing the
//! clock reading with a literal changes nothing but the source of the value.
//!
//! `random()` and `randomblob()` are folded only where SQLite calls them
//! **once** for the statement: in the rows of `INSERT ... VALUES`, and in a
//! `SELECT` without `FROM` that is not itself inside something evaluated per
//! row (a top-level query, a CTE, `INSERT ... SELECT random()`, a scalar
//! subquery in `VALUES`). Where they run once per row (`UPDATE t SET k =
//! randomblob(16)`, anything in `UPDATE`/`DELETE`, `INSERT ... SELECT random()
//! FROM u`, `ORDER BY random()`, `RETURNING`, `ON CONFLICT DO UPDATE`), one
//! literal would give every row the same value (every user the same API key),
//! so they are left as written and the apply-time safety net below makes them
//! deterministic per row. When unsure, a call is treated as per row.
//!
//! Only the text of the rewritten calls changes: the new statement is the
//! original text with those byte ranges spliced (positions from sqlparser's
//! spans, checked against the token stream). Everything else, comments
//! included, stays byte for byte. Re-printing the AST with sqlparser's
//! `Display` would be shorter but is not faithful for SQLite: sqlparser 0.63
//! prints the integer `0x10` as the blob `X'10'`. A statement that needs no
//! rewrite is returned as the original `&str` ([`Cow::Borrowed`]).
//!
//! # What is rejected ([`Rejected`]), and why
//!
//! - `load_extension()`: loads native code into whichever process runs it.
//! - `total_changes()` and `sqlite_offset()`: they read state of one process or
//!   one database file (a connection's counter since it was opened, a byte
//!   offset in the file) that differs between replicas after a restart or a
//!   snapshot restore, and no literal can stand in for them.
//! - the `'localtime'` and `'utc'` modifiers: they depend on the time zone of
//!   the node that runs them.
//! - `randomblob(N)` with `N` not an integer literal in 1..=1 MiB where it would
//!   be folded; a double-quoted `"now"` (a column if one exists, the clock
//!   otherwise).
//! - a statement that sqlparser cannot parse but whose tokens show `random(`,
//!   `randomblob(`, `CURRENT_TIMESTAMP`/`_DATE`/`_TIME`, or `'now'` next to a
//!   date function: paxsql cannot rewrite what it cannot parse. A statement
//!   nested or chained deeper than [`NESTING_MAX`] is not parsed at all (see
//!   `nesting_bound`) and is checked the same way.
//!
//! Allowed: `changes()` and `last_insert_rowid()`, and `sqlite_version()` and
//! `sqlite_source_id()` (every node runs the same binary). The first two read
//! what the connection's previous statement left, which is the same on every
//! replica when that statement is in the same log entry (send related
//! statements in one request). Across entries they are only as deterministic
//! as the apply side makes them: a replica that restarted or restored a
//! snapshot has a fresh connection, so the engine should reset them at the
//! start of each entry.
//!
//! [`forbidden`] names statements that cannot be one replicated statement at
//! all (transaction control, `ATTACH`/`DETACH`, `VACUUM`); [`statement_count`]
//! lets the caller reject strings with more than one statement, since
//! [`classify`] and [`make_deterministic`] look at the first statement only.
//!
//! # Left to the apply-time safety net
//!
//! Stored definitions are not folded: column `DEFAULT`s (`DEFAULT
//! CURRENT_TIMESTAMP`, `DEFAULT (random())`), `CREATE TRIGGER` bodies, `CREATE
//! VIEW` queries, index and `CHECK` expressions, `ALTER TABLE ... ADD COLUMN`.
//! A literal there would change the table's meaning (every future row would get
//! the creation time). They run later, when some replicated statement fires
//! them, and at that point the engine makes them deterministic: every log entry
//! carries the proposer's `unix_ms` and a seed, and the engine overrides
//! SQLite's clock and `random()`/`randomblob()` with them while it applies the
//! entry. The same net covers per-row `random()` (above), time values that are
//! `'now'` only at run time (`datetime(col)` where `col` holds `'now'`), and
//! statements sqlparser cannot parse. `CREATE TABLE ... AS SELECT` runs its
//! query once, now, so that query is rewritten like any other.

use std::borrow::Cow;
use std::fmt;
use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectNamePart, OrderBy,
    Query, Select, Statement, Value, Visit, Visitor,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

/// What the proposer fixes once for a write.
pub struct Env<'a> {
    /// Milliseconds since 1970-01-01T00:00:00Z, read once for the write.
    pub unix_ms: i64,
    /// The source of random values (a seeded generator in tests and the simulator).
    pub random: &'a mut dyn FnMut() -> u64,
}

impl fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("unix_ms", &self.unix_ms)
            .finish_non_exhaustive()
    }
}

/// How a statement is to be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A query without side effects: may be served by one replica.
    Read,
    /// Anything else: must go through the log.
    Write,
    /// sqlparser could not parse it; the caller decides (through the log is safe).
    Unknown,
}

/// Why a statement cannot be made deterministic. Each message says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// `load_extension()` in any statement.
    #[error(
        "load_extension() is not allowed: it would load native code into whichever \
         node runs the statement, and replicas must not depend on code loaded at run time"
    )]
    LoadExtension,
    /// A function whose value is local to one node and that no literal can replace.
    #[error("{function}() is not allowed in a replicated statement: {why}")]
    ReplicaLocal {
        /// The function as written.
        function: String,
        /// Why its value differs between replicas, and what to do instead.
        why: &'static str,
    },
    /// The `'localtime'` or `'utc'` modifier of a date function.
    #[error(
        "the '{modifier}' modifier of {function}() depends on the time zone of the node \
         that runs it, and nodes may differ; store UTC and convert in the client, or use \
         an explicit offset modifier such as '+02:00'"
    )]
    TimeZone {
        /// The date function as written.
        function: String,
        /// The modifier as written.
        modifier: String,
    },
    /// A double-quoted `"now"` given to a date function.
    #[error(
        "{function}(\"now\") is ambiguous: a double-quoted \"now\" names a column if one \
         exists and means the current time otherwise; write 'now' in single quotes for \
         the current time"
    )]
    QuotedNow {
        /// The date function as written.
        function: String,
    },
    /// `randomblob(N)` that cannot be folded into a literal.
    #[error(
        "randomblob({arg}) cannot be fixed before replication: paxsql replaces \
         randomblob(N) with N random bytes and needs N to be an integer literal from 1 to \
         {max}; write the length as a number, e.g. randomblob(16)",
        max = RANDOMBLOB_MAX_BYTES
    )]
    RandomBlobLength {
        /// The length argument as written.
        arg: String,
    },
    /// A statement sqlparser cannot parse that uses a non-deterministic function.
    #[error(
        "this statement uses {what}, a non-deterministic function, in syntax paxsql cannot \
         parse, so it cannot fix the value before replication; compute the value in the \
         client and send it as a literal or parameter, or use simpler syntax"
    )]
    Unparseable {
        /// The function or literal found in the tokens.
        what: String,
    },
    /// A statement nested too deeply to parse that uses a non-deterministic function.
    #[error(
        "this statement uses {what}, a non-deterministic function, in an expression nested or \
         chained deeper than paxsql parses (about {max} tokens along one path), so it cannot \
         fix the value before replication; split the expression or the statement, or \
         compute the value in the client and send it as a literal or parameter",
        max = NESTING_MAX
    )]
    TooDeep {
        /// The function or literal found in the tokens.
        what: String,
    },
    /// The proposer's clock is outside what SQLite's date functions handle.
    #[error(
        "this node's clock reads {unix_ms} ms since 1970, outside the years 0000 to 9999 \
         that SQLite's date functions handle; fix the node's clock"
    )]
    ClockOutOfRange {
        /// The clock reading.
        unix_ms: i64,
    },
    /// paxsql could not locate a call it meant to rewrite in the text (a bug).
    #[error(
        "paxsql could not rewrite {what} in this statement (a bug in paxsql; please report \
         it with the statement); compute the value in the client and send it as a literal"
    )]
    Internal {
        /// The call that could not be located.
        what: String,
    },
}

/// The largest `randomblob(N)` folded into a literal (its text is 2N + 3 bytes in the log).
pub const RANDOMBLOB_MAX_BYTES: i64 = 1 << 20;

/// The largest `nesting_bound` of a statement that is given to sqlparser.
///
/// sqlparser guards its own recursion while parsing and visiting, but the
/// tree it returns is dropped (and printed) by plain recursion: a chain like
/// `1 + 1 + ... + 1` of 20 000 to 50 000 operators overflows a 2 MiB stack,
/// the stack of a node's group thread (measured with sqlparser 0.63; 2 500,
/// what this bound lets through, leaves a wide margin). SQLite itself refuses expressions deeper
/// than 1000, so no statement it runs comes near this bound.
pub const NESTING_MAX: usize = 5_000;

/// Date and time functions that read the clock when their time value is `'now'` or missing.
const DATE_FUNCTIONS: &[&str] = &[
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
];

/// Functions rejected in every statement, with the reason.
fn replica_local_reason(name: &str) -> Option<&'static str> {
    match name {
        "total_changes" => Some(
            "it counts the rows changed since the node's connection was opened, which differs \
             between replicas after a restart or a snapshot restore; use changes() right \
             after the statement, in the same request",
        ),
        "sqlite_offset" => Some(
            "it returns a byte offset in the node's database file, and the files of replicas \
             are not byte-identical (after a snapshot restore, for example); use rowid instead",
        ),
        _ => None,
    }
}

/// Classifies one statement using sqlparser (SQLiteDialect).
///
/// `Read` only for a plain query (SELECT, VALUES, WITH ... SELECT, EXPLAIN of a
/// query) without side effects, and for `PRAGMA`s that only report (`PRAGMA
/// name`, `PRAGMA table_info(t)` and the other inspection pragmas; recognised
/// from tokens, as sqlparser cannot parse `PRAGMA table_info(t)`). A pragma
/// that sets (`PRAGMA name = v`, and `PRAGMA name(v)` for any other pragma) or
/// acts (`PRAGMA optimize`, `wal_checkpoint`, ...) is `Write`. Of several
/// statements, only the first is classified (see [`statement_count`]).
pub fn classify(sql: &str) -> Kind {
    let Ok(tokens) = tokenize(sql) else {
        return Kind::Unknown;
    };
    if first_word(&tokens).as_deref() == Some("PRAGMA") {
        return classify_pragma(&tokens);
    }
    match parse_first(sql, &tokens) {
        Some(statement) => classify_statement(&statement),
        None => Kind::Unknown,
    }
}

/// Rewrites non-deterministic SQL to literals, or rejects it (see the module docs).
///
/// Returns the original text, byte for byte, when nothing needed rewriting,
/// including statements sqlparser cannot parse that show no non-deterministic
/// function. Of several statements, only the first is rewritten; the caller
/// rejects strings with more than one (see [`statement_count`]).
pub fn make_deterministic<'s>(sql: &'s str, env: &mut Env<'_>) -> Result<Cow<'s, str>, Rejected> {
    let tokens = match tokenize(sql) {
        Ok(tokens) => tokens,
        Err(err) => {
            tracing::debug!(%err, "statement does not tokenize; checking its text only");
            check_untokenizable(sql)?;
            return Ok(Cow::Borrowed(sql));
        }
    };
    let depth = nesting_bound(significant(&tokens).map(|t| Nesting::of(&t.token)));
    if depth > NESTING_MAX {
        tracing::debug!(
            depth,
            "statement nests too deeply to parse; checking its tokens only"
        );
        check_unparseable(&tokens).map_err(|rejected| match rejected {
            Rejected::Unparseable { what } => Rejected::TooDeep { what },
            other => other,
        })?;
        return Ok(Cow::Borrowed(sql));
    }
    let Some(statement) = parse_first(sql, &tokens) else {
        check_unparseable(&tokens)?;
        return Ok(Cow::Borrowed(sql));
    };
    let mut planner = Planner::new(env);
    if let ControlFlow::Break(rejected) = statement.visit(&mut planner) {
        return Err(rejected);
    }
    if planner.edits.is_empty() {
        return Ok(Cow::Borrowed(sql));
    }
    splice(sql, &tokens, &planner.edits).map(Cow::Owned)
}

/// Why this statement cannot be sent as one replicated statement, if it cannot.
///
/// Recognised by its first keyword token, so leading comments and whitespace
/// do not hide it.
pub fn forbidden(sql: &str) -> Option<String> {
    let tokens = tokenize(sql).ok()?;
    let reason = match first_word(&tokens)?.as_str() {
        "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" => {
            "transaction control statements (BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE) \
             are not allowed: a transaction cannot stay open across replicated statements; \
             send the statements in one request with the `transaction` flag"
        }
        "ATTACH" | "DETACH" => {
            "ATTACH and DETACH are not allowed: an attached database is a file on one node, \
             outside the replicated database, so replicas would diverge; keep all tables in \
             the replicated database"
        }
        "VACUUM" => {
            "VACUUM is not allowed as a replicated statement: it rewrites each node's database \
             file (VACUUM INTO writes a file on every node) and cannot run inside the \
             transaction a statement is applied in; compact nodes individually instead"
        }
        _ => return None,
    };
    Some(reason.to_owned())
}

/// How many statements `sql` holds: 0 for empty or comment-only text.
///
/// Counted from tokens (semicolons outside a `CREATE TRIGGER ... BEGIN ...
/// END` body), so it also works for statements sqlparser cannot parse. Text
/// that does not even tokenize (an unterminated string) counts as one if it
/// is not blank: SQLite will reject it alike on every replica.
pub fn statement_count(sql: &str) -> usize {
    let Ok(tokens) = tokenize(sql) else {
        return usize::from(!sql.trim().is_empty());
    };
    let mut count = 0;
    let mut current: Option<StatementScan> = None;
    for token in significant(&tokens) {
        let scan = match (&mut current, &token.token) {
            (None, Token::SemiColon) => continue,
            (None, _) => {
                count += 1;
                current.insert(StatementScan::default())
            }
            (Some(scan), _) => scan,
        };
        if scan.step(&token.token) {
            current = None;
        }
    }
    count
}

/// Where [`statement_count`] is inside one statement.
#[derive(Debug, Default)]
struct StatementScan {
    /// The first words, upper-cased, until we know whether this is a trigger.
    leading_words: Vec<String>,
    is_trigger: bool,
    /// Open `BEGIN` / `CASE` blocks of a trigger, closed by `END`.
    depth: u32,
}

impl StatementScan {
    /// Consumes one significant token; true when it ends the statement.
    fn step(&mut self, token: &Token) -> bool {
        if let Token::Word(word) = token {
            let upper = word.value.to_ascii_uppercase();
            if word.quote_style.is_none() && self.leading_words.len() < 3 {
                self.leading_words.push(upper.clone());
                self.is_trigger = self.leading_words[0] == "CREATE"
                    && self.leading_words[1..].iter().any(|w| w == "TRIGGER");
            }
            if self.is_trigger && word.quote_style.is_none() {
                match upper.as_str() {
                    "BEGIN" | "CASE" => self.depth += 1,
                    "END" => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            return false;
        }
        matches!(token, Token::SemiColon) && self.depth == 0
    }
}

// ---------------------------------------------------------------------------
// Classification

fn classify_statement(statement: &Statement) -> Kind {
    let query = match statement {
        Statement::Explain { statement, .. } => statement.as_ref(),
        other => other,
    };
    if matches!(query, Statement::Query(_)) && !has_side_effects(query) {
        Kind::Read
    } else {
        Kind::Write
    }
}

/// True if a query writes: DML nested in it (`WITH ... INSERT`) or `load_extension()`.
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
            match expr {
                Expr::Function(f) if simple_name(f).is_some_and(|(n, _)| n == "load_extension") => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    query.visit(&mut SideEffects { statements: 0 }).is_break()
}

/// Pragmas that take an argument in parentheses and only report.
const PRAGMAS_READ_WITH_ARG: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
];

/// Pragmas that act (write to the database or the file) even without an argument.
const PRAGMAS_ACTING_WITHOUT_ARG: &[&str] = &[
    "optimize",
    "incremental_vacuum",
    "wal_checkpoint",
    "shrink_memory",
];

fn classify_pragma(tokens: &[TokenWithSpan]) -> Kind {
    let mut name = None;
    for token in significant(tokens).skip(1) {
        match &token.token {
            Token::Word(word) => name = Some(word.value.to_ascii_lowercase()),
            Token::Period => {}
            Token::Eq => return Kind::Write,
            Token::LParen => {
                return match name {
                    Some(n) if PRAGMAS_READ_WITH_ARG.contains(&n.as_str()) => Kind::Read,
                    Some(_) => Kind::Write,
                    None => Kind::Unknown,
                };
            }
            Token::SemiColon => break,
            _ => return Kind::Unknown,
        }
    }
    match name {
        Some(n) if PRAGMAS_ACTING_WITHOUT_ARG.contains(&n.as_str()) => Kind::Write,
        Some(_) => Kind::Read,
        None => Kind::Unknown,
    }
}

// ---------------------------------------------------------------------------
// Parsing and tokens

fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, sqlparser::tokenizer::TokenizerError> {
    Tokenizer::new(&SQLiteDialect {}, sql).tokenize_with_location()
}

/// Tokens other than whitespace and comments.
fn significant(tokens: &[TokenWithSpan]) -> impl Iterator<Item = &TokenWithSpan> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
}

/// The first unquoted word, upper-cased, skipping comments and empty statements.
fn first_word(tokens: &[TokenWithSpan]) -> Option<String> {
    match &significant(tokens)
        .find(|t| !matches!(t.token, Token::SemiColon))?
        .token
    {
        Token::Word(word) if word.quote_style.is_none() => Some(word.value.to_ascii_uppercase()),
        _ => None,
    }
}

/// The first statement, if sqlparser parses it and it ends at `;` or the end.
///
/// `Parser::parse_sql` is not used: it stops silently at a stray `END` after a
/// statement (`SELECT 1 END` parses as `SELECT 1`), and it fails on the whole
/// string if any later statement fails. `tokens` are `sql`'s: text nested
/// deeper than [`NESTING_MAX`] is not parsed.
fn parse_first(sql: &str, tokens: &[TokenWithSpan]) -> Option<Statement> {
    if nesting_bound(significant(tokens).map(|t| Nesting::of(&t.token))) > NESTING_MAX {
        return None;
    }
    let dialect = SQLiteDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).ok()?;
    while parser.consume_token(&Token::SemiColon) {}
    let statement = parser.parse_statement().ok()?;
    match parser.peek_token().token {
        Token::SemiColon | Token::EOF => Some(statement),
        _ => None,
    }
}

/// Whether sqlparser's tree of `sql` could nest deeper than [`NESTING_MAX`]
/// (see `nesting_bound`): such text must not be given to sqlparser, as
/// dropping the tree could overflow the stack. Text that does not tokenize
/// is not too deep: sqlparser stops before building a tree.
pub fn nests_too_deeply(sql: &str) -> bool {
    tokenize(sql).is_ok_and(|tokens| {
        nesting_bound(significant(&tokens).map(|t| Nesting::of(&t.token))) > NESTING_MAX
    })
}

/// What a token does to the nesting that [`nesting_bound`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nesting {
    /// `(` or `[`.
    Open,
    /// `)` or `]`.
    Close,
    /// `,` or `;`: ends one item of a list.
    Separator,
    /// Anything else.
    Other,
}

impl Nesting {
    fn of(token: &Token) -> Nesting {
        match token {
            Token::LParen | Token::LBracket => Nesting::Open,
            Token::RParen | Token::RBracket => Nesting::Close,
            Token::Comma | Token::SemiColon => Nesting::Separator,
            _ => Nesting::Other,
        }
    }
}

/// An upper bound, in tokens, on how deep a parser's tree of the text can be:
/// the most tokens on any path from the top into nested parentheses, where a
/// path counts every token of each list item it passes through (tokens after
/// a nested group count too: `(a) + b + c` nests `a` under two additions),
/// plus one per parenthesis.
///
/// Counted without recursion, so it is safe on any input. Each level of an
/// expression chain takes at least one token, so the tree is at most a small
/// constant times deeper than this (nodes such as a query around its select
/// come without tokens of their own).
pub(crate) fn nesting_bound(tokens: impl Iterator<Item = Nesting>) -> usize {
    /// One open parenthesis (or the top level).
    #[derive(Default)]
    struct Level {
        /// Tokens of the current item.
        tokens: usize,
        /// The deepest group nested in the current item.
        deepest_group: usize,
        /// The deepest of the items already closed at this level.
        deepest_item: usize,
    }
    impl Level {
        fn close_item(&mut self) {
            self.deepest_item = self.deepest_item.max(self.tokens + self.deepest_group);
            self.tokens = 0;
            self.deepest_group = 0;
        }
        fn close(mut self) -> usize {
            self.close_item();
            self.deepest_item + 1
        }
    }
    // Invariant: never empty; the first level is the top.
    let mut levels = vec![Level::default()];
    for token in tokens {
        match token {
            Nesting::Open => levels.push(Level::default()),
            Nesting::Close if levels.len() > 1 => {
                let depth = levels.pop().map_or(0, Level::close);
                let parent = levels.last_mut().expect("the top level stays");
                parent.deepest_group = parent.deepest_group.max(depth);
            }
            Nesting::Close | Nesting::Other => {
                levels.last_mut().expect("the top level stays").tokens += 1;
            }
            Nesting::Separator => levels.last_mut().expect("the top level stays").close_item(),
        }
    }
    // Parentheses left open close at the end of the text.
    while levels.len() > 1 {
        let depth = levels.pop().map_or(0, Level::close);
        let parent = levels.last_mut().expect("the top level stays");
        parent.deepest_group = parent.deepest_group.max(depth);
    }
    levels.pop().map_or(0, Level::close)
}

/// An unqualified function name, lower-cased, with where it starts in the text.
fn simple_name(function: &Function) -> Option<(String, Location)> {
    match function.name.0.as_slice() {
        [ObjectNamePart::Identifier(ident)] => {
            Some((ident.value.to_ascii_lowercase(), ident.span.start))
        }
        _ => None,
    }
}

/// The plain expression arguments of a call; `None` for `f` without parentheses.
fn plain_args(function: &Function) -> Option<Vec<&Expr>> {
    match &function.args {
        FunctionArguments::List(list) => Some(
            list.args
                .iter()
                .filter_map(|arg| match arg {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                    _ => None,
                })
                .collect(),
        ),
        FunctionArguments::None | FunctionArguments::Subquery(_) => None,
    }
}

/// The expression without redundant parentheses: `(('now'))` is `'now'`.
fn unnested(mut expr: &Expr) -> &Expr {
    while let Expr::Nested(inner) = expr {
        expr = inner;
    }
    expr
}

/// `Some((text, span))` if the expression is a single-quoted string literal.
fn string_literal(expr: &Expr) -> Option<(&str, Span)> {
    match unnested(expr) {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some((s, v.span)),
            _ => None,
        },
        _ => None,
    }
}

/// True if the expression is `"now"` (double-quoted, any case).
fn is_double_quoted_now(expr: &Expr) -> bool {
    match unnested(expr) {
        Expr::Identifier(ident) => {
            ident.quote_style == Some('"') && ident.value.eq_ignore_ascii_case("now")
        }
        Expr::Value(v) => {
            matches!(&v.value, Value::DoubleQuotedString(s) if s.eq_ignore_ascii_case("now"))
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Statements sqlparser cannot parse

/// Rejects an unparseable statement whose tokens show a non-deterministic function.
///
/// Stored definitions (`CREATE ...`, `ALTER ...`) are exempt from the clock and
/// random checks, as when they parse: the apply-time safety net covers them.
fn check_unparseable(tokens: &[TokenWithSpan]) -> Result<(), Rejected> {
    let sig: Vec<&Token> = significant(tokens).map(|t| &t.token).collect();
    let definition = matches!(first_word(tokens).as_deref(), Some("CREATE" | "ALTER"));
    let call_at = |i: usize| matches!(sig.get(i + 1), Some(Token::LParen));
    let date_function_at = |i: usize| match sig[i] {
        Token::Word(w) => {
            call_at(i) && DATE_FUNCTIONS.contains(&w.value.to_ascii_lowercase().as_str())
        }
        _ => false,
    };
    let uses_date_function = (0..sig.len()).any(date_function_at);
    for (i, token) in sig.iter().enumerate() {
        match token {
            Token::Word(word) => {
                let name = word.value.to_ascii_lowercase();
                if name == "load_extension" && call_at(i) {
                    return Err(Rejected::LoadExtension);
                }
                if let Some(why) = replica_local_reason(&name).filter(|_| call_at(i)) {
                    return Err(Rejected::ReplicaLocal {
                        function: word.value.clone(),
                        why,
                    });
                }
                if definition {
                    continue;
                }
                let clock_or_random = match name.as_str() {
                    "random" | "randomblob" => call_at(i),
                    "current_timestamp" | "current_date" | "current_time" => {
                        word.quote_style.is_none()
                    }
                    _ => date_function_at(i) && matches!(sig.get(i + 2), Some(Token::RParen)),
                };
                if clock_or_random {
                    return Err(Rejected::Unparseable {
                        what: format!("{}{}", word.value, if call_at(i) { "()" } else { "" }),
                    });
                }
            }
            Token::SingleQuotedString(s) if uses_date_function => {
                let s = s.trim();
                if s.eq_ignore_ascii_case("localtime") || s.eq_ignore_ascii_case("utc") {
                    return Err(Rejected::TimeZone {
                        function: "a date function".to_owned(),
                        modifier: s.to_owned(),
                    });
                }
                if !definition && s.eq_ignore_ascii_case("now") {
                    return Err(Rejected::Unparseable {
                        what: format!("'{s}'"),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// For text the tokenizer rejects: a plain scan for the same names.
fn check_untokenizable(sql: &str) -> Result<(), Rejected> {
    let lower = sql.to_ascii_lowercase();
    if lower.contains("load_extension") {
        return Err(Rejected::LoadExtension);
    }
    for what in [
        "random",
        "current_timestamp",
        "current_date",
        "current_time",
        "'now'",
    ] {
        if lower.contains(what) {
            return Err(Rejected::Unparseable {
                what: what.to_owned(),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Planning the rewrite

/// How often SQLite evaluates the expressions under a node of the AST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    /// At most once per statement: random values may be folded.
    Once,
    /// Once per row: only the clock may be folded (SQLite fixes it per statement).
    PerRow,
    /// A stored definition, evaluated later: nothing is folded.
    Definition,
}

/// One change to the text, located by where a token starts.
#[derive(Debug)]
enum Edit {
    /// Replace the call whose name token starts at `name`, through its `)` if it has one.
    Call {
        name: Location,
        parens: bool,
        text: String,
    },
    /// Replace the string literal token starting at `at`.
    Literal { at: Location, text: String },
    /// Insert `text` before the `)` of the call whose name starts at `name`.
    AppendArg { name: Location, text: String },
}

/// Walks the AST, rejecting or recording [`Edit`]s.
struct Planner<'e, 'r> {
    env: &'e mut Env<'r>,
    /// Invariant: one entry per statement, query, select and ORDER BY being visited.
    contexts: Vec<Context>,
    /// Queries run once although their statement is per row or a definition
    /// (`INSERT ... <source>`, `CREATE TABLE ... AS <query>`); compared by address.
    once_queries: Vec<*const Query>,
    edits: Vec<Edit>,
}

impl<'e, 'r> Planner<'e, 'r> {
    fn new(env: &'e mut Env<'r>) -> Self {
        Planner {
            env,
            contexts: Vec::new(),
            once_queries: Vec::new(),
            edits: Vec::new(),
        }
    }

    fn context(&self) -> Context {
        self.contexts.last().copied().unwrap_or(Context::Once)
    }

    fn pop(&mut self) -> ControlFlow<Rejected> {
        let popped = self.contexts.pop();
        assert!(popped.is_some(), "context stack underflow");
        ControlFlow::Continue(())
    }

    fn timestamp(&self) -> Result<Civil, Rejected> {
        Civil::from_unix_ms(self.env.unix_ms).ok_or(Rejected::ClockOutOfRange {
            unix_ms: self.env.unix_ms,
        })
    }

    fn call(&mut self, function: &Function) -> Result<(), Rejected> {
        let Some((name, at)) = simple_name(function) else {
            return Ok(());
        };
        if name == "load_extension" {
            return Err(Rejected::LoadExtension);
        }
        if let Some(why) = replica_local_reason(&name) {
            return Err(Rejected::ReplicaLocal {
                function: display_name(function),
                why,
            });
        }
        let context = self.context();
        let args = plain_args(function);
        if DATE_FUNCTIONS.contains(&name.as_str()) {
            if let Some(args) = &args {
                return self.date_call(function, &name, at, args, context);
            }
        }
        let plain_call = function.over.is_none() && function.filter.is_none();
        if context == Context::Definition || !plain_call {
            return Ok(());
        }
        match (name.as_str(), args.as_deref()) {
            ("current_timestamp" | "current_date" | "current_time", None | Some([])) => {
                let ts = self.timestamp()?;
                let text = match name.as_str() {
                    "current_timestamp" => format!("'{} {}'", ts.date(), ts.time()),
                    "current_date" => format!("'{}'", ts.date()),
                    _ => format!("'{}'", ts.time()),
                };
                self.edits.push(Edit::Call {
                    name: at,
                    parens: args.is_some(),
                    text,
                });
            }
            ("random", Some([])) if context == Context::Once => {
                // Reinterpreting the bits covers i64's full range, like SQLite's random().
                let value = (self.env.random)() as i64;
                self.edits.push(Edit::Call {
                    name: at,
                    parens: true,
                    text: format!("({value})"),
                });
            }
            ("randomblob", Some([length])) if context == Context::Once => {
                let bytes = randomblob_length(length)?;
                let text = self.random_blob_literal(bytes);
                self.edits.push(Edit::Call {
                    name: at,
                    parens: true,
                    text,
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// `datetime('now', ...)` and friends: reject time zones, fix `'now'`.
    fn date_call(
        &mut self,
        function: &Function,
        name: &str,
        at: Location,
        args: &[&Expr],
        context: Context,
    ) -> Result<(), Rejected> {
        // strftime(format, time, modifiers...); timediff(time, time); others (time, modifiers...).
        let n = args.len();
        let (times, modifiers, missing_time) = match name {
            "strftime" => (1.min(n)..2.min(n), 2.min(n)..n, n == 1),
            "timediff" => (0..n, n..n, false),
            _ => (0..1.min(n), 1.min(n)..n, n == 0),
        };
        for modifier in &args[modifiers] {
            if let Some((m, _)) = string_literal(modifier) {
                let trimmed = m.trim();
                if trimmed.eq_ignore_ascii_case("localtime") || trimmed.eq_ignore_ascii_case("utc")
                {
                    return Err(Rejected::TimeZone {
                        function: display_name(function),
                        modifier: m.to_owned(),
                    });
                }
            }
        }
        if context == Context::Definition {
            return Ok(());
        }
        let now_literal = |planner: &Self| -> Result<String, Rejected> {
            let ts = planner.timestamp()?;
            Ok(format!("'{} {}.{:03}'", ts.date(), ts.time(), ts.milli))
        };
        if missing_time {
            // No time value means "now"; strftime needs its format first.
            let text = now_literal(self)?;
            let text = if args.is_empty() {
                text
            } else {
                format!(", {text}")
            };
            self.edits.push(Edit::AppendArg { name: at, text });
            return Ok(());
        }
        for time in &args[times] {
            if is_double_quoted_now(time) {
                return Err(Rejected::QuotedNow {
                    function: display_name(function),
                });
            }
            if let Some((value, span)) = string_literal(time) {
                if value.eq_ignore_ascii_case("now") {
                    let text = now_literal(self)?;
                    self.edits.push(Edit::Literal {
                        at: span.start,
                        text,
                    });
                }
            }
        }
        Ok(())
    }

    /// `X'..'` with `bytes` bytes, eight from each value of the random source.
    fn random_blob_literal(&mut self, bytes: usize) -> String {
        let mut text = String::with_capacity(2 * bytes + 3);
        text.push_str("X'");
        let mut remaining = bytes;
        while remaining > 0 {
            let chunk = (self.env.random)().to_le_bytes();
            for byte in &chunk[..remaining.min(8)] {
                text.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
                text.push(char::from(HEX_DIGITS[usize::from(byte & 0xF)]));
            }
            remaining = remaining.saturating_sub(8);
        }
        text.push('\'');
        text
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// The function's name as the client wrote it, for messages.
fn display_name(function: &Function) -> String {
    function.name.to_string()
}

/// The length of a foldable `randomblob(N)`.
fn randomblob_length(arg: &Expr) -> Result<usize, Rejected> {
    let rejected = || Rejected::RandomBlobLength {
        arg: arg.to_string(),
    };
    let Expr::Value(v) = unnested(arg) else {
        return Err(rejected());
    };
    let Value::Number(digits, _) = &v.value else {
        return Err(rejected());
    };
    match digits.parse::<i64>() {
        Ok(n) if (1..=RANDOMBLOB_MAX_BYTES).contains(&n) => {
            usize::try_from(n).map_err(|_| rejected())
        }
        _ => Err(rejected()),
    }
}

impl Visitor for Planner<'_, '_> {
    type Break = Rejected;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<Rejected> {
        let context = if self.context() == Context::Definition {
            Context::Definition
        } else {
            match statement {
                Statement::CreateTable(create) => {
                    if let Some(query) = &create.query {
                        self.once_queries.push(&**query);
                    }
                    Context::Definition
                }
                Statement::CreateView(_)
                | Statement::CreateTrigger(_)
                | Statement::CreateIndex(_)
                | Statement::CreateVirtualTable { .. }
                | Statement::AlterTable(_) => Context::Definition,
                Statement::Insert(insert) => {
                    if let Some(source) = &insert.source {
                        self.once_queries.push(&**source);
                    }
                    Context::PerRow
                }
                Statement::Query(_) | Statement::Explain { .. } => Context::Once,
                _ => Context::PerRow,
            }
        };
        self.contexts.push(context);
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, _: &Statement) -> ControlFlow<Rejected> {
        self.pop()
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Rejected> {
        let once = self.once_queries.iter().any(|q| std::ptr::eq(*q, query));
        let context = if once { Context::Once } else { self.context() };
        self.contexts.push(context);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<Rejected> {
        self.pop()
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Rejected> {
        let context = match self.context() {
            Context::Once if !select.from.is_empty() => Context::PerRow,
            other => other,
        };
        self.contexts.push(context);
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, _: &Select) -> ControlFlow<Rejected> {
        self.pop()
    }

    fn pre_visit_order_by(&mut self, _: &OrderBy) -> ControlFlow<Rejected> {
        // `ORDER BY random()` is evaluated per row even where the select is not.
        let context = match self.context() {
            Context::Once => Context::PerRow,
            other => other,
        };
        self.contexts.push(context);
        ControlFlow::Continue(())
    }

    fn post_visit_order_by(&mut self, _: &OrderBy) -> ControlFlow<Rejected> {
        self.pop()
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Rejected> {
        if let Expr::Function(function) = expr {
            if let Err(rejected) = self.call(function) {
                return ControlFlow::Break(rejected);
            }
        }
        ControlFlow::Continue(())
    }
}

// ---------------------------------------------------------------------------
// Applying the rewrite to the text

/// Characters between two checkpoints of [`LineIndex`].
const CHECKPOINT_CHARS: usize = 64;

/// Byte offsets of token locations (1-based line and column, columns in chars).
///
/// A location is found from a checkpoint every [`CHECKPOINT_CHARS`]
/// characters, not by walking its line from the start: a long one-line
/// `INSERT ... VALUES` with a `random()` in each of 100 000 rows would
/// otherwise take minutes (every edit walking the line again).
struct LineIndex<'s> {
    sql: &'s str,
    /// The index (in chars) of the first character of each line.
    line_starts: Vec<usize>,
    /// The byte offset of every [`CHECKPOINT_CHARS`]-th character.
    checkpoints: Vec<usize>,
    /// How many characters `sql` has.
    chars: usize,
}

impl<'s> LineIndex<'s> {
    fn new(sql: &'s str) -> Self {
        let mut line_starts = vec![0];
        let mut checkpoints = Vec::with_capacity(sql.len() / CHECKPOINT_CHARS + 1);
        let mut chars = 0;
        for (byte, c) in sql.char_indices() {
            if chars % CHECKPOINT_CHARS == 0 {
                checkpoints.push(byte);
            }
            chars += 1;
            if c == '\n' {
                line_starts.push(chars);
            }
        }
        LineIndex {
            sql,
            line_starts,
            checkpoints,
            chars,
        }
    }

    fn offset(&self, at: Location) -> Option<usize> {
        let line_start = *self
            .line_starts
            .get(usize::try_from(at.line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
        let target = line_start.checked_add(column)?;
        if target >= self.chars {
            return (target == self.chars).then_some(self.sql.len());
        }
        let base = *self.checkpoints.get(target / CHECKPOINT_CHARS)?;
        let (within, _) = self.sql[base..]
            .char_indices()
            .nth(target % CHECKPOINT_CHARS)?;
        Some(base + within)
    }
}

/// Applies the edits to the original text; everything between them is kept as is.
fn splice(sql: &str, tokens: &[TokenWithSpan], edits: &[Edit]) -> Result<String, Rejected> {
    let lines = LineIndex::new(sql);
    let mut ranges = edits
        .iter()
        .map(|edit| {
            byte_range(&lines, tokens, edit).ok_or_else(|| {
                let at = edit.location();
                Rejected::Internal {
                    what: format!("the call at line {}, column {}", at.line, at.column),
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    ranges.sort_by_key(|(start, end, _)| (*start, *end));
    let mut out = String::with_capacity(sql.len() + 64);
    let mut copied = 0;
    for (start, end, text) in ranges {
        if start < copied {
            return Err(Rejected::Internal {
                what: format!("two overlapping calls at byte {start}"),
            });
        }
        out.push_str(&sql[copied..start]);
        out.push_str(text);
        copied = end;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// The byte range an edit replaces, and its new text.
///
/// Positions come from sqlparser's spans; each is checked against the token
/// found there, so a span that does not point at what we expect is an error,
/// never a rewrite of the wrong bytes.
fn byte_range<'a>(
    lines: &LineIndex<'_>,
    tokens: &[TokenWithSpan],
    edit: &'a Edit,
) -> Option<(usize, usize, &'a str)> {
    match edit {
        Edit::Call { name, parens, text } => {
            let i = token_at(tokens, *name, |t| matches!(t, Token::Word(_)))?;
            let end = if *parens {
                closing_paren(tokens, i)?.span.end
            } else {
                tokens[i].span.end
            };
            Some((lines.offset(*name)?, lines.offset(end)?, text))
        }
        Edit::Literal { at, text } => {
            let i = token_at(tokens, *at, |t| matches!(t, Token::SingleQuotedString(_)))?;
            Some((lines.offset(*at)?, lines.offset(tokens[i].span.end)?, text))
        }
        Edit::AppendArg { name, text } => {
            let i = token_at(tokens, *name, |t| matches!(t, Token::Word(_)))?;
            let at = lines.offset(closing_paren(tokens, i)?.span.start)?;
            Some((at, at, text))
        }
    }
}

impl Edit {
    fn location(&self) -> Location {
        match self {
            Edit::Call { name, .. } | Edit::AppendArg { name, .. } => *name,
            Edit::Literal { at, .. } => *at,
        }
    }
}

/// The index of the token starting exactly at `at`, if it is of the expected kind.
fn token_at(
    tokens: &[TokenWithSpan],
    at: Location,
    kind: impl Fn(&Token) -> bool,
) -> Option<usize> {
    let i = tokens.binary_search_by_key(&at, |t| t.span.start).ok()?;
    kind(&tokens[i].token).then_some(i)
}

/// The `)` matching the `(` that follows the name token at index `name`.
fn closing_paren(tokens: &[TokenWithSpan], name: usize) -> Option<&TokenWithSpan> {
    let mut rest = tokens
        .iter()
        .skip(name + 1)
        .filter(|t| !matches!(t.token, Token::Whitespace(_)));
    if rest.next()?.token != Token::LParen {
        return None;
    }
    let mut depth = 1usize;
    for token in rest {
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(token);
                }
            }
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------
// The clock as SQLite prints it

/// A UTC instant broken into calendar fields (proleptic Gregorian, like SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    milli: u32,
}

impl Civil {
    /// 0000-01-01 00:00:00.000 UTC, the earliest instant SQLite's date functions handle.
    const MIN_UNIX_MS: i64 = -62_167_219_200_000;
    /// 9999-12-31 23:59:59.999 UTC, the latest.
    const MAX_UNIX_MS: i64 = 253_402_300_799_999;

    /// `None` outside the years 0000 to 9999.
    fn from_unix_ms(unix_ms: i64) -> Option<Civil> {
        if !(Self::MIN_UNIX_MS..=Self::MAX_UNIX_MS).contains(&unix_ms) {
            return None;
        }
        let days = unix_ms.div_euclid(86_400_000);
        let ms_of_day = unix_ms.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        // The casts are exact: ms_of_day < 86_400_000.
        let ms_of_day = ms_of_day as u32;
        Some(Civil {
            year,
            month,
            day,
            hour: ms_of_day / 3_600_000,
            minute: ms_of_day / 60_000 % 60,
            second: ms_of_day / 1000 % 60,
            milli: ms_of_day % 1000,
        })
    }

    fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    fn time(&self) -> String {
        format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }
}

/// (year, month, day) of a day count since 1970-01-01.
///
/// Howard Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>):
/// count in 400-year eras of 146 097 days, with years starting on March 1 so
/// that the leap day is the last day of the year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // [1, 31]
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // The casts are exact: month is in [1, 12] and day in [1, 31].
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::types::Value as SqlValue;
    use rusqlite::Connection;

    /// 2023-11-14 22:13:20.123 UTC.
    const UNIX_MS: i64 = 1_700_000_000_123;
    const NOW: &str = "2023-11-14 22:13:20.123";

    /// Rewrites with the clock at `UNIX_MS` and the random values 1, 2, 3, ...
    fn rewrite(sql: &str) -> Result<String, Rejected> {
        rewrite_with(sql, UNIX_MS, &[])
    }

    /// Rewrites with `values` as the random values, then 1, 2, 3, ...
    fn rewrite_with(sql: &str, unix_ms: i64, values: &[u64]) -> Result<String, Rejected> {
        let mut queue = values.to_vec();
        queue.reverse();
        let mut counter = 0;
        let mut random = || {
            queue.pop().unwrap_or_else(|| {
                counter += 1;
                counter
            })
        };
        let mut env = Env {
            unix_ms,
            random: &mut random,
        };
        make_deterministic(sql, &mut env).map(Cow::into_owned)
    }

    /// Asserts that `sql` comes back as the very same `&str`.
    fn assert_untouched(sql: &str) {
        let mut random = || -> u64 { panic!("no random value may be drawn for {sql}") };
        let mut env = Env {
            unix_ms: UNIX_MS,
            random: &mut random,
        };
        match make_deterministic(sql, &mut env) {
            Ok(Cow::Borrowed(out)) => assert!(std::ptr::eq(out, sql), "{sql}"),
            other => panic!("{sql} should pass unchanged, got {other:?}"),
        }
    }

    fn db() -> Connection {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE t(a PRIMARY KEY, b, c);
             CREATE TABLE u(x);
             INSERT INTO u VALUES (1), (2), (3);",
        )
        .unwrap();
        db
    }

    fn one(db: &Connection, sql: &str) -> SqlValue {
        db.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    fn rows(db: &Connection, sql: &str) -> Vec<Vec<SqlValue>> {
        let mut stmt = db.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |row| (0..n).map(|i| row.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn text(s: &str) -> SqlValue {
        SqlValue::Text(s.to_owned())
    }

    fn reject_message(sql: &str) -> String {
        match rewrite(sql) {
            Err(rejected) => rejected.to_string(),
            Ok(out) => panic!("{sql} should be rejected, got {out}"),
        }
    }

    // --- random() and randomblob() ---------------------------------------

    #[test]
    fn random_becomes_an_integer_literal_that_sqlite_stores() {
        let out = rewrite("INSERT INTO t(a) VALUES (random())").unwrap();
        assert_eq!(out, "INSERT INTO t(a) VALUES ((1))");
        let db = db();
        db.execute(&out, []).unwrap();
        assert_eq!(one(&db, "SELECT a FROM t"), SqlValue::Integer(1));
    }

    #[test]
    fn random_covers_the_full_i64_range() {
        let out = rewrite_with(
            "INSERT INTO t(a, b, c) VALUES (random(), random(), random())",
            UNIX_MS,
            &[u64::MAX, 1 << 63, i64::MAX as u64],
        )
        .unwrap();
        assert_eq!(
            out,
            "INSERT INTO t(a, b, c) VALUES ((-1), (-9223372036854775808), (9223372036854775807))"
        );
        let db = db();
        db.execute(&out, []).unwrap();
        assert_eq!(
            rows(&db, "SELECT a, b, c, typeof(b) FROM t"),
            vec![vec![
                SqlValue::Integer(-1),
                SqlValue::Integer(i64::MIN),
                SqlValue::Integer(i64::MAX),
                text("integer"),
            ]]
        );
    }

    #[test]
    fn subtracting_a_negative_random_does_not_become_a_comment() {
        let out = rewrite_with("SELECT 5-random()", UNIX_MS, &[u64::MAX]).unwrap();
        assert_eq!(out, "SELECT 5-(-1)");
        assert_eq!(one(&db(), &out), SqlValue::Integer(6));
    }

    #[test]
    fn randomblob_becomes_a_blob_literal_of_n_bytes() {
        let out = rewrite_with(
            "INSERT INTO t(a, b) VALUES (1, randomblob(10))",
            UNIX_MS,
            &[0x0807_0605_0403_0201, 0xffff_ffff_ffff_0a09],
        )
        .unwrap();
        assert_eq!(
            out,
            "INSERT INTO t(a, b) VALUES (1, X'0102030405060708090A')"
        );
        let db = db();
        db.execute(&out, []).unwrap();
        assert_eq!(
            one(&db, "SELECT b FROM t"),
            SqlValue::Blob((1..=10).collect())
        );
    }

    #[test]
    fn randomblob_of_one_mib_is_folded_and_more_is_rejected() {
        let out = rewrite("SELECT length(randomblob(1048576))").unwrap();
        assert_eq!(out.len(), "SELECT length(X'')".len() + 2 * 1_048_576);
        assert_eq!(one(&db(), &out), SqlValue::Integer(1_048_576));
        let message = reject_message("SELECT randomblob(1048577)");
        assert!(message.contains("randomblob(1048577)"), "{message}");
        assert!(message.contains("from 1 to 1048576"), "{message}");
    }

    #[test]
    fn randomblob_needs_an_integer_literal_length() {
        for sql in [
            "INSERT INTO t(a) VALUES (randomblob(?))",
            "INSERT INTO t(a) VALUES (randomblob(4 * 4))",
            "INSERT INTO t(a) VALUES (randomblob(0))",
            "INSERT INTO t(a) VALUES (randomblob(-3))",
            "INSERT INTO t(a) VALUES (randomblob(1.5))",
            "INSERT INTO t(a) VALUES (randomblob('16'))",
        ] {
            let err = rewrite(sql).unwrap_err();
            assert!(
                matches!(err, Rejected::RandomBlobLength { .. }),
                "{sql}: {err:?}"
            );
            assert!(err.to_string().contains("e.g. randomblob(16)"), "{err}");
        }
    }

    #[test]
    fn random_evaluated_per_row_is_left_to_the_apply_time_seed() {
        // One literal would give every row the same value.
        for sql in [
            "UPDATE t SET a = random()",
            "UPDATE t SET b = hex(randomblob(16)) WHERE a > 0",
            "UPDATE t SET b = randomblob(c)",
            "INSERT INTO t(a) SELECT random() FROM u",
            "INSERT INTO t(a) SELECT x FROM u ORDER BY random() LIMIT 1",
            "INSERT INTO t(a) VALUES (1) RETURNING a, random()",
            "INSERT INTO t(a) VALUES (1) ON CONFLICT(a) DO UPDATE SET b = random()",
            "DELETE FROM t WHERE a < random()",
            "SELECT random() FROM u",
            "UPDATE t SET a = (SELECT random())",
        ] {
            assert_untouched(sql);
        }
        // The clock is fixed per statement by SQLite, so it is still folded there.
        let out = rewrite("UPDATE t SET a = random(), b = CURRENT_DATE").unwrap();
        assert_eq!(out, "UPDATE t SET a = random(), b = '2023-11-14'");
    }

    // --- the clock -----------------------------------------------------------

    #[test]
    fn current_timestamp_date_and_time_become_utc_literals() {
        let out = rewrite(
            "INSERT INTO t(a, b, c) VALUES (CURRENT_TIMESTAMP, current_date, Current_Time)",
        )
        .unwrap();
        assert_eq!(
            out,
            "INSERT INTO t(a, b, c) VALUES ('2023-11-14 22:13:20', '2023-11-14', '22:13:20')"
        );
        let db = db();
        db.execute(&out, []).unwrap();
        // The same values SQLite computes from the instant.
        assert_eq!(
            rows(
                &db,
                "SELECT a = datetime('2023-11-14 22:13:20.123'), b, c FROM t"
            ),
            vec![vec![
                SqlValue::Integer(1),
                text("2023-11-14"),
                text("22:13:20")
            ]]
        );
    }

    #[test]
    fn current_timestamp_with_parentheses_is_folded_too() {
        let out = rewrite("SELECT CURRENT_TIMESTAMP ( )").unwrap();
        assert_eq!(out, "SELECT '2023-11-14 22:13:20'");
    }

    #[test]
    fn quoted_current_timestamp_is_a_column_or_string_not_the_clock() {
        assert_untouched("SELECT \"current_timestamp\" FROM t");
    }

    #[test]
    fn now_becomes_a_literal_in_every_date_function() {
        let sql = "SELECT datetime('now'), DATE('NOW'), time('Now', '+1 hour'), \
                   julianday('now'), unixepoch('now'), unixepoch('now', 'subsec'), \
                   strftime('%Y %j %s', 'now'), timediff('now', '2023-11-13 22:13:20.123')";
        let out = rewrite(sql).unwrap();
        assert_eq!(
            out,
            sql.replace("'now'", &format!("'{NOW}'"))
                .replace("'NOW'", &format!("'{NOW}'"))
                .replace("'Now'", &format!("'{NOW}'"))
        );
        let row = rows(&db(), &out).remove(0);
        assert_eq!(
            row,
            vec![
                text("2023-11-14 22:13:20"),
                text("2023-11-14"),
                text("23:13:20"),
                SqlValue::Real(2_460_263.425_927_349_4),
                SqlValue::Integer(1_700_000_000),
                SqlValue::Real(1_700_000_000.123),
                text("2023 318 1700000000"),
                text("+0000-00-01 00:00:00.000"),
            ]
        );
    }

    #[test]
    fn date_functions_without_a_time_value_get_the_literal() {
        let out =
            rewrite("SELECT datetime(), unixepoch( ), strftime('%Y-%m-%d %H:%M:%f')").unwrap();
        assert_eq!(
            out,
            format!("SELECT datetime('{NOW}'), unixepoch( '{NOW}'), strftime('%Y-%m-%d %H:%M:%f', '{NOW}')")
        );
        assert_eq!(
            rows(&db(), &out),
            vec![vec![
                text("2023-11-14 22:13:20"),
                SqlValue::Integer(1_700_000_000),
                text(NOW)
            ]]
        );
    }

    #[test]
    fn date_functions_without_now_are_left_alone() {
        for sql in [
            "SELECT datetime('2020-01-01', '+1 day'), date(b), strftime('%s', a) FROM t",
            "SELECT strftime('%Y', '2020-01-01')",
            "SELECT datetime(1700000000, 'unixepoch')",
            "SELECT time('12:00', 'now')",
            "INSERT INTO t(a) VALUES ('now')",
        ] {
            assert_untouched(sql);
        }
    }

    #[test]
    fn the_now_literal_is_the_same_instant_to_the_millisecond() {
        let db = db();
        for ms in [
            UNIX_MS,
            0,
            -1,
            951_782_400_999,
            -2_208_988_800_000,
            4_102_444_799_999,
        ] {
            let out = rewrite_with("SELECT julianday('now')", ms, &[]).unwrap();
            let ts = out
                .trim_start_matches("SELECT julianday(")
                .trim_end_matches(')');
            let back = one(
                &db,
                &format!(
                    "SELECT CAST(round((julianday({ts}) - 2440587.5) * 86400000.0) AS INTEGER)"
                ),
            );
            assert_eq!(back, SqlValue::Integer(ms), "{ts}");
        }
    }

    #[test]
    fn civil_dates_agree_with_sqlite_from_year_0_to_9999() {
        let db = db();
        let mut stmt = db.prepare("SELECT datetime(?1, 'unixepoch')").unwrap();
        let mut check = |secs: i64| {
            let civil = Civil::from_unix_ms(secs * 1000).unwrap();
            let sqlite: String = stmt.query_row([secs], |row| row.get(0)).unwrap();
            assert_eq!(
                format!("{} {}", civil.date(), civil.time()),
                sqlite,
                "{secs}"
            );
        };
        let (min, max) = (Civil::MIN_UNIX_MS / 1000, Civil::MAX_UNIX_MS / 1000);
        // Every ~1.3 days over ten millennia, offset so hours and minutes vary too.
        let mut secs = min;
        while secs <= max {
            check(secs);
            secs += 113_777;
        }
        // Leap days and century boundaries.
        for secs in [
            min,
            max,
            -1,
            0,
            951_782_400,
            951_868_799,
            -2_203_891_200,
            4_107_456_000,
        ] {
            check(secs);
        }
    }

    #[test]
    fn a_clock_outside_sqlites_years_is_rejected_only_when_used() {
        for ms in [
            Civil::MIN_UNIX_MS - 1,
            Civil::MAX_UNIX_MS + 1,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(
                rewrite_with("SELECT CURRENT_DATE", ms, &[]),
                Err(Rejected::ClockOutOfRange { unix_ms: ms })
            );
            assert_eq!(
                rewrite_with("SELECT random()", ms, &[]).unwrap(),
                "SELECT (1)"
            );
        }
        assert_eq!(
            rewrite_with("SELECT CURRENT_TIMESTAMP", Civil::MIN_UNIX_MS, &[]).unwrap(),
            "SELECT '0000-01-01 00:00:00'"
        );
        assert_eq!(
            rewrite_with("SELECT datetime('now')", Civil::MAX_UNIX_MS, &[]).unwrap(),
            "SELECT datetime('9999-12-31 23:59:59.999')"
        );
    }

    // --- where rewrites happen -------------------------------------------------

    #[test]
    fn case_does_not_matter() {
        let out = rewrite("select Random(), RANDOM(), datetime('NOW'), CURRENT_timestamp").unwrap();
        assert_eq!(
            out,
            format!("select (1), (2), datetime('{NOW}'), '2023-11-14 22:13:20'")
        );
    }

    #[test]
    fn quoted_names_and_comments_inside_calls_are_handled() {
        let sql =
            "SELECT \"random\"(), random /* why */ ( ), datetime ( -- now\n 'now' ), date(('now'))";
        db().prepare(sql).unwrap();
        let out = rewrite(sql).unwrap();
        assert_eq!(
            out,
            format!("SELECT (1), (2), datetime ( -- now\n '{NOW}' ), date(('{NOW}'))")
        );
        assert_eq!(
            rows(&db(), &out),
            vec![vec![
                SqlValue::Integer(1),
                SqlValue::Integer(2),
                text("2023-11-14 22:13:20"),
                text("2023-11-14")
            ]]
        );
    }

    #[test]
    fn nested_calls_are_rewritten_inside_out() {
        let out = rewrite(
            "INSERT INTO t(a, b, c) VALUES (abs(random()) % 10, hex(randomblob(2)), \
             datetime(CURRENT_TIMESTAMP, '+1 day'))",
        )
        .unwrap();
        assert_eq!(
            out,
            "INSERT INTO t(a, b, c) VALUES (abs((1)) % 10, hex(X'0200'), \
             datetime('2023-11-14 22:13:20', '+1 day'))"
        );
        let db = db();
        db.execute(&out, []).unwrap();
        assert_eq!(
            rows(&db, "SELECT a, b, c FROM t"),
            vec![vec![
                SqlValue::Integer(1),
                text("0200"),
                text("2023-11-15 22:13:20")
            ]]
        );
    }

    #[test]
    fn subqueries_and_ctes_are_rewritten() {
        let db = db();
        let cases = [
            (
                "WITH x AS (SELECT random() AS r, datetime('now') AS ts) \
                 INSERT INTO t(a, b) SELECT r, ts FROM x",
                vec![vec![SqlValue::Integer(1), text("2023-11-14 22:13:20")]],
            ),
            (
                "INSERT INTO t(a, b) VALUES ((SELECT random()), (SELECT max(x) FROM u WHERE x < unixepoch('now')))",
                vec![vec![SqlValue::Integer(1), SqlValue::Integer(3)]],
            ),
            (
                "INSERT INTO t(a, b) SELECT random(), CURRENT_DATE",
                vec![vec![SqlValue::Integer(1), text("2023-11-14")]],
            ),
            (
                "INSERT INTO t(a, b) SELECT x, d FROM u, (SELECT date('now', '-1 day') AS d) WHERE x = 2",
                vec![vec![SqlValue::Integer(2), text("2023-11-13")]],
            ),
        ];
        for (sql, expected) in cases {
            let out = rewrite(sql).unwrap();
            assert!(!out.contains("random()") && !out.contains("'now'"), "{out}");
            db.execute_batch(&format!("DELETE FROM t; {out}")).unwrap();
            assert_eq!(rows(&db, "SELECT a, b FROM t"), expected, "{out}");
        }
    }

    #[test]
    fn every_dml_shape_still_runs_in_sqlite_after_the_rewrite() {
        let db = db();
        let statements = [
            "INSERT INTO t(a, b) VALUES (1, CURRENT_TIMESTAMP), (2, random())",
            "INSERT OR REPLACE INTO t(a, b) VALUES (1, datetime('now', '+1 hour'))",
            "REPLACE INTO t(a, b) VALUES (2, randomblob(3))",
            "INSERT INTO t(a, b) VALUES (3, date('now')) ON CONFLICT(a) DO UPDATE SET c = 0",
            "INSERT INTO t(a, b) VALUES (3, 0) ON CONFLICT(a) DO UPDATE SET c = CURRENT_TIME",
            "INSERT OR IGNORE INTO t(a, b) SELECT x + 10, julianday('now') FROM u",
            "UPDATE t SET c = unixepoch() WHERE a = 1",
            "UPDATE OR IGNORE t SET c = strftime('%Y', 'now') WHERE a = 2",
            "DELETE FROM t WHERE a > 10 AND b < julianday('now', '+1 day') RETURNING a",
            "WITH RECURSIVE n(i) AS (SELECT 20 UNION ALL SELECT i + 1 FROM n WHERE i < 21) \
             INSERT INTO t(a, b) SELECT i, CURRENT_DATE FROM n",
            "CREATE TABLE snapshot AS SELECT a, datetime('now') AS taken, random() AS r FROM t",
        ];
        for sql in statements {
            let out = rewrite(sql).unwrap();
            assert_ne!(out, sql);
            let mut stmt = db.prepare(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
            let mut results = stmt.raw_query();
            while results
                .next()
                .unwrap_or_else(|e| panic!("{out}: {e}"))
                .is_some()
            {}
        }
        assert_eq!(
            rows(&db, "SELECT a, b, c FROM t ORDER BY a"),
            vec![
                vec![
                    SqlValue::Integer(1),
                    text("2023-11-14 23:13:20"),
                    SqlValue::Integer(1_700_000_000)
                ],
                vec![
                    SqlValue::Integer(2),
                    SqlValue::Blob(vec![1, 0, 0]),
                    text("2023")
                ],
                vec![SqlValue::Integer(3), text("2023-11-14"), text("22:13:20")],
                vec![SqlValue::Integer(20), text("2023-11-14"), SqlValue::Null],
                vec![SqlValue::Integer(21), text("2023-11-14"), SqlValue::Null],
            ]
        );
        assert_eq!(
            rows(&db, "SELECT DISTINCT taken FROM snapshot"),
            vec![vec![text("2023-11-14 22:13:20")]]
        );
    }

    #[test]
    fn many_rewrites_in_one_long_statement_take_linear_time() {
        // Found by tests/fuzz_determinism.rs: every edit walked its line from
        // the start, so 100 000 rows of `(random())` on one line took minutes.
        let rows = 100_000;
        let row = |i: usize| {
            if i % 7 == 6 {
                "\n('é🦀', random())"
            } else {
                "('é🦀', random())"
            }
        };
        let sql = format!(
            "INSERT INTO t VALUES {}",
            (0..rows).map(row).collect::<Vec<_>>().join(", ")
        );
        let started = std::time::Instant::now();
        let out = rewrite(&sql).unwrap();
        let secs = started.elapsed().as_secs_f64();
        let expected = (0..rows)
            .map(|i| row(i).replace("random()", &format!("({})", i + 1)))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(out, format!("INSERT INTO t VALUES {expected}"));
        assert!(secs < 30.0, "{rows} rewrites took {secs:.1}s");
    }

    #[test]
    fn only_the_rewritten_calls_change_in_the_text() {
        // sqlparser's Display would print 0x10 as X'10', a blob in SQLite.
        let sql = "/* keep */ INSERT INTO t(a, b, c)\r\n  VALUES (0x10, 'héllo — ✓',\n\tCURRENT_DATE) -- tail";
        let out = rewrite(sql).unwrap();
        assert_eq!(out, sql.replace("CURRENT_DATE", "'2023-11-14'"));
        let db = db();
        db.execute(&out, []).unwrap();
        assert_eq!(
            rows(&db, "SELECT a, typeof(a), b, c FROM t"),
            vec![vec![
                SqlValue::Integer(16),
                text("integer"),
                text("héllo — ✓"),
                text("2023-11-14")
            ]]
        );
    }

    #[test]
    fn the_same_env_gives_the_same_text() {
        let sql = "INSERT INTO t(a, b, c) VALUES (random(), randomblob(12), datetime('now'))";
        let seeded = |seed: u64| {
            let mut state = seed;
            let mut random = move || {
                // splitmix64
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            };
            let mut env = Env {
                unix_ms: UNIX_MS,
                random: &mut random,
            };
            make_deterministic(sql, &mut env).unwrap().into_owned()
        };
        assert_eq!(seeded(7), seeded(7));
        assert_ne!(seeded(7), seeded(8));
    }

    #[test]
    fn statements_without_nondeterminism_come_back_as_the_same_str() {
        for sql in [
            "SELECT 1",
            "  insert into t(a)   values (1) -- comment",
            "UPDATE t SET b = datetime(c, '+1 day') WHERE a = 0x10",
            "SELECT changes(), last_insert_rowid(), sqlite_version(), sqlite_source_id()",
            "INSERT INTO t(a) VALUES (last_insert_rowid())",
            "DROP TABLE IF EXISTS t",
            "",
            "-- only a comment",
        ] {
            assert_untouched(sql);
        }
    }

    #[test]
    fn stored_definitions_are_not_folded() {
        for sql in [
            "CREATE TABLE e(id INTEGER PRIMARY KEY, at TEXT DEFAULT CURRENT_TIMESTAMP, \
             r INT DEFAULT (random()), k BLOB DEFAULT (randomblob(16)), d TEXT DEFAULT (datetime('now')))",
            "CREATE TABLE e(a, CHECK (a < datetime('now')))",
            "ALTER TABLE t ADD COLUMN d TEXT DEFAULT (date('now'))",
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN \
             UPDATE t SET b = datetime('now'), c = random() WHERE a = NEW.a; END",
            "CREATE VIEW v AS SELECT a, CURRENT_TIMESTAMP AS at, randomblob(c) FROM t",
            "CREATE INDEX i ON t(a) WHERE b > 0",
        ] {
            assert_untouched(sql);
        }
        // Their values come from the apply-time clock and seed; the DDL still runs.
        db().execute_batch(
            "CREATE TABLE e(id INTEGER PRIMARY KEY, at TEXT DEFAULT CURRENT_TIMESTAMP, r INT DEFAULT (random()));
             CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET b = datetime('now') WHERE a = NEW.a; END;",
        )
        .unwrap();
    }

    #[test]
    fn only_the_first_statement_is_rewritten() {
        let out = rewrite("SELECT random(); SELECT random()").unwrap();
        assert_eq!(out, "SELECT (1); SELECT random()");
    }

    // --- rejections ---------------------------------------------------------

    #[test]
    fn load_extension_is_rejected_everywhere() {
        for sql in [
            "SELECT load_extension('/tmp/x.so')",
            "INSERT INTO t(a) VALUES (LOAD_EXTENSION('x', 'init'))",
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT load_extension('x'); END",
            "SELECT load_extension('x') FROM t INDEXED BY i",
        ] {
            assert_eq!(rewrite(sql), Err(Rejected::LoadExtension), "{sql}");
        }
        assert!(Rejected::LoadExtension.to_string().contains("native code"));
    }

    #[test]
    fn replica_local_functions_are_rejected_with_the_reason() {
        let message = reject_message("INSERT INTO t(a) VALUES (total_changes())");
        assert!(
            message.starts_with("total_changes() is not allowed"),
            "{message}"
        );
        assert!(message.contains("use changes()"), "{message}");
        let message = reject_message("UPDATE t SET b = sqlite_offset(a)");
        assert!(message.contains("use rowid instead"), "{message}");
    }

    #[test]
    fn time_zone_modifiers_are_rejected() {
        for sql in [
            "INSERT INTO t(a) VALUES (datetime('now', 'localtime'))",
            "UPDATE t SET b = strftime('%H', a, 'LocalTime')",
            "SELECT time(a, 'utc') FROM t",
            "CREATE TABLE e(a DEFAULT (datetime('now', 'localtime')))",
        ] {
            let err = rewrite(sql).unwrap_err();
            assert!(matches!(err, Rejected::TimeZone { .. }), "{sql}: {err:?}");
        }
        let message = reject_message("SELECT date('now', 'localtime')");
        assert!(message.contains("time zone"), "{message}");
        assert!(message.contains("'+02:00'"), "{message}");
    }

    #[test]
    fn double_quoted_now_is_rejected_as_ambiguous() {
        let message = reject_message("INSERT INTO t(a) VALUES (datetime(\"now\"))");
        assert!(message.contains("'now' in single quotes"), "{message}");
    }

    // --- statements sqlparser cannot parse ----------------------------------

    #[test]
    fn unparseable_statements_pass_through_unchanged() {
        for sql in [
            "PRAGMA table_info(t)",
            "PRAGMA journal_mode=WAL",
            "REINDEX",
            "DETACH x",
            "SELECT * FROM t INDEXED BY i WHERE b = 'yesterday'",
            "SELECT a FROM t WHERE a ISNULL",
            "SELECT 1 END",
            "INSERT INTO t(a) VALUES ('now') ON CONFLICT(a) WHERE a > 0 DO NOTHING",
            // A stored definition: the apply-time seed covers it, as when it parses.
            "CREATE TRIGGER IF NOT EXISTS tr AFTER INSERT ON t BEGIN \
             UPDATE t SET b = random(), c = datetime('now') WHERE a = NEW.a; END",
            "SELECT 'unterminated",
        ] {
            assert_eq!(
                parse_first(sql, &tokenize(sql).unwrap_or_default()),
                None,
                "{sql} parses now; pick another example"
            );
            assert_untouched(sql);
        }
    }

    #[test]
    fn unparseable_statements_with_nondeterminism_are_rejected() {
        for (sql, what) in [
            (
                "INSERT INTO t(a) SELECT random() FROM u INDEXED BY i",
                "random()",
            ),
            (
                "UPDATE t INDEXED BY i SET b = randomblob(4)",
                "randomblob()",
            ),
            (
                "UPDATE t INDEXED BY i SET b = current_timestamp",
                "current_timestamp",
            ),
            (
                "DELETE FROM t INDEXED BY i WHERE b < datetime('NOW')",
                "'NOW'",
            ),
            (
                "DELETE FROM t INDEXED BY i WHERE b < datetime()",
                "datetime()",
            ),
            ("SELECT 'unterminated random()", "random"),
        ] {
            match rewrite(sql) {
                Err(Rejected::Unparseable { what: found }) => assert_eq!(found, what, "{sql}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
        let message = reject_message("UPDATE t INDEXED BY i SET b = random()");
        assert!(message.contains("syntax paxsql cannot parse"), "{message}");
        assert_eq!(
            rewrite("UPDATE t INDEXED BY i SET b = datetime(a, 'localtime')").unwrap_err(),
            Rejected::TimeZone {
                function: "a date function".to_owned(),
                modifier: "localtime".to_owned()
            }
        );
    }

    // --- classify --------------------------------------------------------------

    #[test]
    fn statements_nested_too_deeply_are_checked_by_their_tokens_only() {
        // Found by tests/fuzz_determinism.rs: sqlparser parsed a chain of
        // 100 000 additions, and dropping its tree overflowed the stack.
        let chain = " + 1".repeat(100_000);
        let deep = format!("SELECT 1{chain}");
        assert!(nests_too_deeply(&deep));
        assert_eq!(classify(&deep), Kind::Unknown);
        assert_untouched(&deep);
        let with_random = format!("INSERT INTO t VALUES (random(){chain})");
        match rewrite(&with_random) {
            Err(Rejected::TooDeep { what }) => assert_eq!(what, "random()"),
            other => panic!("{other:?}"),
        }
        let message = Rejected::TooDeep {
            what: "random()".into(),
        }
        .to_string();
        assert!(message.contains("split the expression"), "{message}");
        let shallow = format!("SELECT 1{}", " + 1".repeat(1000));
        assert!(!nests_too_deeply(&shallow));
        assert_eq!(classify(&shallow), Kind::Read);
        assert_eq!(
            rewrite(&format!("SELECT random(){}", " + 1".repeat(1000))).unwrap(),
            format!("SELECT (1){}", " + 1".repeat(1000))
        );
    }

    #[test]
    fn nesting_bound_counts_every_token_on_the_deepest_path() {
        let bound = |sql: &str| {
            let tokens = tokenize(sql).unwrap();
            nesting_bound(significant(&tokens).map(|t| Nesting::of(&t.token)))
        };
        assert_eq!(bound(""), 1);
        assert_eq!(bound("SELECT 1"), 3);
        // Tokens after a group count for it: `(1)` is under two additions.
        assert_eq!(bound("SELECT (1) + 1 + 1"), 8);
        assert_eq!(bound("SELECT a, (b), c"), 3);
        assert_eq!(bound("SELECT 1; SELECT 2"), 3);
        // Unbalanced parentheses close at the end; a stray `)` is a token.
        assert_eq!(bound("SELECT ((1"), 5);
        assert_eq!(bound("SELECT 1)"), 4);
        assert_eq!(
            bound(&format!("SELECT {}1{}", "(".repeat(40), ")".repeat(40))),
            43
        );
    }

    #[test]
    fn classify_reads_writes_and_unknowns() {
        let cases = [
            ("SELECT a FROM t", Kind::Read),
            (
                "  -- leading comment\n select random(), datetime('now')",
                Kind::Read,
            ),
            ("VALUES (1), (2)", Kind::Read),
            ("WITH x AS (SELECT 1) SELECT * FROM x", Kind::Read),
            ("EXPLAIN SELECT * FROM t", Kind::Read),
            ("EXPLAIN QUERY PLAN SELECT * FROM t WHERE a = 1", Kind::Read),
            ("SELECT 1; DELETE FROM t", Kind::Read),
            ("PRAGMA table_info(t)", Kind::Read),
            ("PRAGMA main.index_list('t')", Kind::Read),
            ("pragma foreign_keys", Kind::Read),
            ("PRAGMA user_version;", Kind::Read),
            ("INSERT INTO t(a) VALUES (1)", Kind::Write),
            (
                "WITH x AS (SELECT 1 AS v) INSERT INTO t(a) SELECT v FROM x",
                Kind::Write,
            ),
            ("UPDATE t SET a = 1", Kind::Write),
            ("DELETE FROM t", Kind::Write),
            ("CREATE TABLE e(a)", Kind::Write),
            ("DROP TABLE t", Kind::Write),
            ("EXPLAIN INSERT INTO t(a) VALUES (1)", Kind::Write),
            ("SELECT load_extension('x')", Kind::Write),
            ("BEGIN", Kind::Write),
            ("PRAGMA journal_mode = WAL", Kind::Write),
            ("PRAGMA user_version = 3", Kind::Write),
            ("PRAGMA user_version(3)", Kind::Write),
            ("PRAGMA optimize", Kind::Write),
            ("REINDEX", Kind::Unknown),
            ("SELECT * FROM t INDEXED BY i", Kind::Unknown),
            ("SELEKT 1", Kind::Unknown),
            ("", Kind::Unknown),
            ("-- nothing", Kind::Unknown),
        ];
        for (sql, kind) in cases {
            assert_eq!(classify(sql), kind, "{sql}");
        }
    }

    #[test]
    fn classify_read_agrees_with_sqlite_readonly() {
        let db = db();
        db.execute_batch("CREATE INDEX i ON t(a)").unwrap();
        for sql in [
            "SELECT a FROM t",
            "VALUES (1)",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "EXPLAIN QUERY PLAN SELECT * FROM t",
            "PRAGMA table_info(t)",
            "PRAGMA foreign_keys",
            "INSERT INTO t(a) VALUES (1)",
            "WITH x AS (SELECT 1 AS v) INSERT INTO t(a) SELECT v FROM x",
            "UPDATE t SET a = 1",
            "CREATE TABLE e(a)",
            "PRAGMA user_version = 3",
            "PRAGMA user_version(3)",
        ] {
            let readonly = db.prepare(sql).unwrap().readonly();
            assert_eq!(classify(sql) == Kind::Read, readonly, "{sql}");
        }
    }

    // --- forbidden and statement_count ------------------------------------

    #[test]
    fn forbidden_names_transaction_control_attach_and_vacuum() {
        for sql in [
            "BEGIN",
            "begin immediate transaction",
            "COMMIT",
            "END TRANSACTION",
            "ROLLBACK TO SAVEPOINT a",
            "SAVEPOINT a",
            "RELEASE a",
            "/* c */ -- c\n\t Begin;",
            ";; COMMIT",
        ] {
            let reason = forbidden(sql).unwrap_or_else(|| panic!("{sql}"));
            assert!(reason.contains("`transaction` flag"), "{sql}: {reason}");
        }
        for sql in [
            "ATTACH 'x.db' AS x",
            "ATTACH DATABASE 'x.db' AS x",
            "DETACH x",
        ] {
            let reason = forbidden(sql).unwrap_or_else(|| panic!("{sql}"));
            assert!(reason.contains("ATTACH and DETACH"), "{sql}: {reason}");
        }
        for sql in ["VACUUM", "vacuum INTO '/tmp/x.db'"] {
            assert!(forbidden(sql).unwrap().contains("VACUUM"), "{sql}");
        }
        for sql in [
            "SELECT 'BEGIN'",
            "-- BEGIN\nSELECT 1",
            "\"begin\"",
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
            "INSERT INTO t(a) VALUES ('COMMIT')",
            "",
        ] {
            assert_eq!(forbidden(sql), None, "{sql}");
        }
    }

    #[test]
    fn statement_count_counts_what_sqlite_would_run() {
        let cases = [
            ("", 0),
            ("   ", 0),
            ("-- only a comment\n/* and another */", 0),
            (";; ;", 0),
            ("SELECT 1", 1),
            ("SELECT 1;", 1),
            ("; SELECT 1 ;;", 1),
            ("SELECT ';'", 1),
            ("SELECT 1 -- ; not a statement", 1),
            ("SELECT 1; SELECT 2", 2),
            ("SELECT 1; DROP TABLE t;", 2),
            ("PRAGMA table_info(x); PRAGMA table_info(y)", 2),
            (
                "CREATE TRIGGER tr AFTER INSERT ON t BEGIN \
                 UPDATE t SET b = CASE WHEN a > 0 THEN 1 ELSE 2 END; DELETE FROM u; END; SELECT 1",
                2,
            ),
            (
                "CREATE TEMP TRIGGER IF NOT EXISTS tr AFTER INSERT ON t BEGIN SELECT 1; END",
                1,
            ),
            ("SELECT 'unterminated; SELECT 2", 1),
        ];
        for (sql, count) in cases {
            assert_eq!(statement_count(sql), count, "{sql}");
        }
    }

    #[test]
    fn statement_count_agrees_with_sqlite() {
        let db = db();
        for sql in [
            "SELECT 1; SELECT 2;",
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET b = 1; DELETE FROM u; END; SELECT 1",
            "SELECT 1 /* ; */ ; -- ;\n SELECT 'a;b'",
        ] {
            // SQLite's own split, through the tail of each prepared statement.
            use rusqlite::fallible_iterator::FallibleIterator;
            let mut batch = rusqlite::Batch::new(&db, sql);
            let mut sqlite = 0;
            while batch.next().unwrap().is_some() {
                sqlite += 1;
            }
            assert_eq!(statement_count(sql), sqlite, "{sql}");
        }
    }
}
