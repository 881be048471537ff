//! `paxsql shell`: an interactive SQL shell over any node's HTTP API.
//!
//! ```text
//! $ paxsql shell --http 127.0.0.1:4001
//! 127.0.0.1:4001> SELECT id, name
//!            ...>   FROM users;
//! +----+-------+
//! | id | name  |
//! +----+-------+
//! |  1 | fiona |
//! +----+-------+
//! (1 row)
//! ```
//!
//! Statements end with `;` and may span lines (see [`split`] for how `;`
//! inside strings, comments and triggers is handled). Each statement goes
//! to the node on its own, as `POST /db/request?level=LEVEL`: the node
//! decides whether it reads or writes, so writes are replicated and reads
//! are served at the shell's level. Lines starting with `.` at the start of
//! a statement are the shell's own commands (`.help` lists them).
//!
//! # Interactive and scripted use
//!
//! With a terminal on stdin the shell edits lines (rustyline) and keeps a
//! history in `~/.paxsql_history` (`--history` chooses another file).
//! Ctrl-C drops the statement being typed; Ctrl-D or `.quit` leaves.
//!
//! Without one (`paxsql shell < script.sql`, or a pipe) it reads the script
//! with no prompts or banner, so that its output is exactly the results.
//! A statement missing its final `;` at the end of the script still runs.
//!
//! # Errors and exit status
//!
//! A statement the node refuses prints `Error: <the node's message>` on
//! stderr and the shell goes on with the next one, in both modes. A script
//! that had any failing statement or command still runs to its end, then
//! exits with status 1 and a last stderr line saying how many failed, so
//! that `paxsql shell < migrate.sql && deploy` stops on a failure. The
//! interactive shell exits 0.

mod client;
mod split;
mod table;

use anyhow::Context;
use client::{Client, Level};
use serde_json::Value;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;
use table::Cell;

/// Flags of `paxsql shell`.
#[derive(clap::Args, Debug)]
pub struct ShellArgs {
    /// The HTTP API of the node to talk to (HOST:PORT or http://HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:4001")]
    http: String,
    /// Read consistency level to start with (`.level` changes it).
    #[arg(long, value_enum, default_value = "linearizable")]
    level: Level,
    /// History file for interactive use [default: ~/.paxsql_history].
    #[arg(long)]
    history: Option<PathBuf>,
}

/// Runs the shell until `.quit`, Ctrl-D or the end of the script.
pub fn run(args: ShellArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.http)?;
    let mut session = Session::new(client, args.level);
    if std::io::stdin().is_terminal() {
        interactive(&mut session, args.history.or_else(default_history))
    } else {
        script(&mut session)
    }
}

/// What the loop does after a line.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Quit,
}

/// The shell's state between lines, and what it does with them.
#[derive(Debug)]
struct Session {
    client: Client,
    level: Level,
    timer: bool,
    /// The statement still being typed.
    pending: String,
    /// The node's engine, asked once for `.tables` and `.schema`.
    engine: Option<String>,
    /// Statements and commands that failed.
    failures: usize,
    /// Statements and commands run.
    runs: usize,
}

impl Session {
    fn new(client: Client, level: Level) -> Session {
        Session {
            client,
            level,
            timer: false,
            pending: String::new(),
            engine: None,
            failures: 0,
            runs: 0,
        }
    }

    /// Takes one input line; returns the complete statements and commands
    /// it finished, as they should go to the history.
    fn line(&mut self, line: &str) -> (Next, Vec<String>) {
        if self.pending.is_empty() && line.trim_start().starts_with('.') {
            let command = line.trim();
            let next = self.dot_command(command);
            return (next, vec![command.to_owned()]);
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        let (statements, rest) = split::complete_statements(&self.pending);
        self.pending = if split::is_blank(&rest) {
            String::new()
        } else {
            rest
        };
        for sql in &statements {
            self.statement(sql);
        }
        let history = statements.iter().map(|s| format!("{s};")).collect();
        (Next::Continue, history)
    }

    /// At the end of the input: runs a last statement that lacks its `;`.
    fn finish(&mut self) {
        let last = std::mem::take(&mut self.pending);
        if !split::is_blank(&last) {
            self.statement(last.trim());
        }
    }

    /// Drops the statement being typed (Ctrl-C).
    fn cancel(&mut self) {
        self.pending.clear();
    }

    fn is_continuing(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Runs one SQL statement and prints its result or error.
    fn statement(&mut self, sql: &str) {
        let started = Instant::now();
        let result = self.client.request(sql, self.level);
        let elapsed = started.elapsed();
        let outcome = result.and_then(|r| render_result(&r));
        self.report(outcome);
        if self.timer {
            println!("Time: {:.3} ms", elapsed.as_secs_f64() * 1000.0);
        }
    }

    /// Prints output on stdout or an error on stderr, and counts the run.
    fn report(&mut self, outcome: Result<String, String>) {
        self.runs += 1;
        match outcome {
            Ok(text) => {
                print!("{text}");
                let _ = std::io::stdout().flush();
            }
            Err(message) => {
                self.failures += 1;
                // What was printed before must come first on a shared terminal.
                let _ = std::io::stdout().flush();
                eprintln!("Error: {message}");
            }
        }
    }

    /// A `.command`; an unknown one or wrong arguments is an error like a
    /// failed statement.
    fn dot_command(&mut self, line: &str) -> Next {
        let line = line.trim_end_matches(';');
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or(".");
        let args: Vec<&str> = words.collect();
        let outcome = match (name, args.as_slice()) {
            (".quit" | ".exit", []) => return Next::Quit,
            (".help", []) => Ok(HELP.to_owned()),
            (".level", []) => Ok(format!("{}\n", self.level.as_str())),
            (".level", [level]) => match Level::parse(level) {
                Some(level) => {
                    self.level = level;
                    Ok(String::new())
                }
                None => Err(format!(
                    "unknown level {level:?}: use local, leader or linearizable"
                )),
            },
            (".timer", []) => Ok(format!("{}\n", if self.timer { "on" } else { "off" })),
            (".timer", ["on"]) => {
                self.timer = true;
                Ok(String::new())
            }
            (".timer", ["off"]) => {
                self.timer = false;
                Ok(String::new())
            }
            (".status", []) => self.client.get("/status").map(|s| render_status(&s)),
            (".nodes", []) => self.client.get("/nodes").map(|n| render_nodes(&n)),
            (".tables", []) => self.tables(),
            (".schema", []) => self.schema(None),
            (".schema", [table]) => self.schema(Some(table)),
            (
                ".quit" | ".exit" | ".help" | ".level" | ".timer" | ".status" | ".nodes"
                | ".tables" | ".schema",
                _,
            ) => Err(format!("wrong arguments for {name}; .help shows its usage")),
            _ => Err(format!("unknown command {name}; .help lists the commands")),
        };
        self.report(outcome);
        Next::Continue
    }

    /// `.tables`: the user's tables and views, by name.
    fn tables(&mut self) -> Result<String, String> {
        self.require_sqlite(".tables")?;
        let sql = "SELECT name FROM sqlite_schema \
                   WHERE type IN ('table', 'view') AND name NOT GLOB 'sqlite_*' \
                   AND name NOT GLOB '_paxsql_*' ORDER BY name";
        let result = self.client.query(sql, &[], self.level)?;
        column_lines(&result, "")
    }

    /// `.schema [TABLE]`: the statements that created the user's tables,
    /// views, indexes and triggers (those on TABLE only, if given), in the
    /// order they were created.
    fn schema(&mut self, table: Option<&str>) -> Result<String, String> {
        self.require_sqlite(".schema")?;
        let mut sql = String::from(
            "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL \
             AND name NOT GLOB 'sqlite_*' AND name NOT GLOB '_paxsql_*'",
        );
        let params: Vec<&str> = table.into_iter().collect();
        if table.is_some() {
            sql.push_str(" AND tbl_name = ? COLLATE NOCASE");
        }
        sql.push_str(" ORDER BY rowid");
        let result = self.client.query(&sql, &params, self.level)?;
        column_lines(&result, ";")
    }

    /// `.tables` and `.schema` read SQLite's catalogue.
    fn require_sqlite(&mut self, command: &str) -> Result<(), String> {
        if self.engine.is_none() {
            let status = self.client.get("/status")?;
            let engine = status["engine"].as_str().unwrap_or("sqlite").to_owned();
            self.engine = Some(engine);
        }
        match self.engine.as_deref() {
            Some("sqlite") | None => Ok(()),
            Some(other) => Err(format!(
                "{command} reads SQLite's catalogue, and this node runs the {other} engine; \
                 query information_schema instead"
            )),
        }
    }
}

const HELP: &str = "\
Statements end with ';' and may span lines. Each runs at the node on its own;
the node decides whether it reads (at the current level) or writes.

.level [local|leader|linearizable]  show or set the read consistency level
.status                             this node's id, engine and its groups' state
.nodes                              every node as this node sees it
.tables                             the tables and views
.schema [TABLE]                     the CREATE statements (of TABLE only)
.timer [on|off]                     show how long each statement took
.help                               this text
.quit                               leave (also .exit, Ctrl-D)
";

/// One statement's result object as text: a table, a count of rows
/// changed, or its error.
fn render_result(result: &Value) -> Result<String, String> {
    if let Some(error) = result.get("error") {
        return Err(error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned));
    }
    if let Some(columns) = result.get("columns").and_then(Value::as_array) {
        let header: Vec<String> = columns
            .iter()
            .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
            .collect();
        let rows: Vec<Vec<Cell>> = rows_of(result)
            .iter()
            .map(|row| row.as_array().map_or(&[][..], Vec::as_slice))
            .map(|row| row.iter().map(Cell::value).collect())
            .collect();
        return Ok(table::render(&header, &rows));
    }
    if let Some(n) = result.get("rows_affected").and_then(Value::as_u64) {
        let noun = if n == 1 { "row" } else { "rows" };
        return Ok(format!("{n} {noun} affected\n"));
    }
    Err(format!(
        "the node answered with an unknown result: {result}"
    ))
}

/// A result's rows; none when it has no `values` key (rqlite's shape).
fn rows_of(result: &Value) -> &[Value] {
    result
        .get("values")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The first column of every row, one per line, each followed by `suffix`.
fn column_lines(result: &Value, suffix: &str) -> Result<String, String> {
    if let Some(error) = result.get("error") {
        return Err(error.as_str().unwrap_or_default().to_owned());
    }
    let mut out = String::new();
    for row in rows_of(result) {
        if let Some(text) = row.get(0).and_then(Value::as_str) {
            out.push_str(text);
            out.push_str(suffix);
            out.push('\n');
        }
    }
    Ok(out)
}

/// `/status` as a line about the node and a table of its groups.
fn render_status(status: &Value) -> String {
    let mut out = format!(
        "node {}, peer address {}, engine {}, data dir {}\n",
        text(&status["node_id"]),
        text(&status["peer_addr"]),
        text(&status["engine"]),
        text(&status["data_dir"]),
    );
    let header = [
        "group", "role", "leader", "ballot", "decided", "applied", "lag", "accepted", "inflight",
    ]
    .map(String::from);
    let groups = status["groups"].as_array().map_or(&[][..], Vec::as_slice);
    let rows: Vec<Vec<Cell>> = groups
        .iter()
        .map(|g| {
            let decided = g["decided_index"].as_u64();
            let applied = g["applied_index"].as_u64();
            let lag = match (decided, applied) {
                (Some(d), Some(a)) => Cell::number(d.saturating_sub(a)),
                _ => Cell::text(""),
            };
            vec![
                Cell::value(&g["group"]),
                Cell::text(text(&g["role"])),
                Cell::value(&g["leader"]),
                Cell::value(&g["ballot"]),
                Cell::value(&g["decided_index"]),
                Cell::value(&g["applied_index"]),
                lag,
                Cell::value(&g["accepted_index"]),
                Cell::value(&g["inflight"]),
            ]
        })
        .collect();
    out.push_str(&table::render(&header, &rows));
    out
}

/// `/nodes` as a table.
fn render_nodes(nodes: &Value) -> String {
    let header = ["id", "peer address", "reachable", "leader"].map(String::from);
    let yes_no = |v: &Value| {
        Cell::text(if v.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        })
    };
    let rows: Vec<Vec<Cell>> = nodes
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|n| {
            vec![
                Cell::value(&n["id"]),
                Cell::text(text(&n["addr"])),
                yes_no(&n["reachable"]),
                yes_no(&n["leader"]),
            ]
        })
        .collect();
    table::render(&header, &rows)
}

/// A JSON value as plain text: strings without quotes, null as empty.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Reads a script from stdin; no prompts.
fn script(session: &mut Session) -> anyhow::Result<()> {
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading the script from stdin")?;
        if session.line(&line).0 == Next::Quit {
            break;
        }
    }
    session.finish();
    match session.failures {
        0 => Ok(()),
        n => anyhow::bail!("{n} of {} statements and commands failed", session.runs),
    }
}

/// Reads lines from the terminal with editing and history.
fn interactive(session: &mut Session, history: Option<PathBuf>) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .history_ignore_dups(true)?
        .max_history_size(10_000)?
        .build();
    let mut editor = rustyline::DefaultEditor::with_config(config)?;
    if let Some(path) = &history {
        // A missing file is a first run; anything else is not worth stopping for.
        let _ = editor.load_history(path);
    }
    banner(session);
    let prompt = format!("{}> ", session.client.addr());
    let continuation = format!("{:>width$}> ", "...", width = prompt.len() - 2);
    loop {
        let shown = if session.is_continuing() {
            &continuation
        } else {
            &prompt
        };
        match editor.readline(shown) {
            Ok(line) => {
                let (next, entries) = session.line(&line);
                for entry in entries {
                    let _ = editor.add_history_entry(entry);
                }
                if next == Next::Quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => session.cancel(),
            Err(ReadlineError::Eof) => {
                session.finish();
                break;
            }
            Err(e) => return Err(e).context("reading from the terminal"),
        }
    }
    if let Some(path) = &history {
        if let Err(e) = editor.save_history(path) {
            eprintln!("could not save the history to {}: {e}", path.display());
        }
    }
    Ok(())
}

/// One line on start: where the shell is connected, or why it may not be.
fn banner(session: &Session) {
    let addr = session.client.addr();
    match session.client.get("/status") {
        Ok(status) => {
            let leader = &status["groups"][0]["leader"];
            println!(
                "paxsql shell: node {} at {addr} (leader: node {}); reads are {}. .help for help.",
                text(&status["node_id"]),
                if leader.is_null() {
                    "none yet".to_owned()
                } else {
                    text(leader)
                },
                session.level.as_str(),
            );
        }
        Err(e) => println!("paxsql shell: {e}\n(statements will be tried anyway; .help for help)"),
    }
}

/// `~/.paxsql_history`, when there is a home directory.
fn default_history() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".paxsql_history"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_exec_result_counts_rows() {
        let r = json!({"last_insert_id": 1, "rows_affected": 1});
        assert_eq!(render_result(&r).unwrap(), "1 row affected\n");
        let r = json!({"last_insert_id": 0, "rows_affected": 0});
        assert_eq!(render_result(&r).unwrap(), "0 rows affected\n");
    }

    #[test]
    fn a_statement_error_is_the_nodes_message() {
        let r = json!({"error": "no such table: nope"});
        assert_eq!(render_result(&r).unwrap_err(), "no such table: nope");
    }

    #[test]
    fn rows_without_values_are_an_empty_table() {
        let r = json!({"columns": ["a"], "types": ["integer"]});
        assert_eq!(
            render_result(&r).unwrap(),
            "+---+\n| a |\n+---+\n(0 rows)\n"
        );
    }

    #[test]
    fn nodes_are_a_table() {
        let n = json!([{"addr": "127.0.0.1:4101", "id": 1, "leader": true, "reachable": true}]);
        assert_eq!(
            render_nodes(&n),
            "+----+----------------+-----------+--------+\n\
             | id | peer address   | reachable | leader |\n\
             +----+----------------+-----------+--------+\n\
             |  1 | 127.0.0.1:4101 | yes       | yes    |\n\
             +----+----------------+-----------+--------+\n\
             (1 row)\n"
        );
    }
}
