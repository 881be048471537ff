//! Just enough of PostgreSQL's catalog for psql's everyday use and for what
//! drivers ask at connect time, answered from SQLite's schema.
//!
//! SQLite has no `pg_catalog`, and psql's catalog queries (`::regtype`,
//! `OPERATOR(pg_catalog.~)`, `pg_get_expr`, ...) are not SQLite SQL. So the
//! queries psql 15 sends are recognised by their shape and answered here:
//!
//! | psql | query | answer |
//! |---|---|---|
//! | `\dt`, `\dv`, `\di`, `\d` (and `+`, and with a pattern) | the relation list from `pg_class` | SQLite's tables, views and indexes in schema `public` |
//! | `\d name` | the lookup of `name` by regex | matching tables and views |
//! | | the table summary (`relchecks, relkind, ...`) | kind, whether it has indexes |
//! | | the columns (`pg_attribute`) | `PRAGMA table_info`: declared type, `NOT NULL`, default |
//! | | the indexes (`pg_index`) | `PRAGMA index_list`/`index_info`, and the `INTEGER PRIMARY KEY` |
//! | `\d+ view` | `pg_get_viewdef` | the `CREATE VIEW` text |
//! | | policies, statistics, publications, inheritance, triggers, rules, foreign keys | no rows |
//!
//! Also `SELECT version()`, `current_database()`, `current_schema()`,
//! `current_user`, `session_user`, `pg_backend_pid()`. Any other query that
//! names a `pg_catalog` table or `information_schema` gets `0A000`, never a
//! made-up answer. Object ids are 16384 + the row id in `sqlite_schema`.
//! Internal tables (`sqlite_*`, `_paxsql_*`) are never listed.

use crate::backend::Column;
use crate::errors::{self, error, Fail};
use crate::sqltext::{lex, Tok};
use crate::types::PgType;
use crate::Db;
use paxsql_types::{Params, ReadLevel, Statement, StmtResult, Value};

/// Object ids start here, as PostgreSQL's user objects do.
const OID_BASE: i64 = 16384;

/// A catalog query paxsql recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Catalog {
    /// `SELECT version()` and friends: (column name, which function).
    Function(String, Func),
    /// psql's relation list: the kinds asked for, name and schema patterns,
    /// and the output columns' aliases in order.
    List {
        kinds: Vec<char>,
        name: Option<String>,
        schema: Option<String>,
        aliases: Vec<String>,
    },
    /// `\d name`: find relations by pattern.
    Lookup {
        name: Option<String>,
        schema: Option<String>,
    },
    /// `\d name`: the relation's summary.
    TableInfo(i64),
    /// `\d name`: the columns, and which of `\d+`'s extra columns psql
    /// asked for (storage, compression, statistics target, description).
    Columns { oid: i64, extra: [bool; 4] },
    /// `\d name`: the indexes.
    Indexes(i64),
    /// `\d+ view`: the definition.
    ViewDef(i64),
    /// pgbench's question whether a table (found in the search path) is
    /// partitioned: one row `(1, NULL, 0)` if it exists, none if not.
    Partitions(String),
    /// A footer query with nothing to report (policies, publications, ...).
    Empty,
    /// A catalog query paxsql does not emulate.
    Unknown,
}

/// The functions `SELECT f()` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Version,
    Database,
    Schema,
    User,
    BackendPid,
}

/// A computed answer.
#[derive(Debug)]
pub(crate) struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

/// Words that mark a query as a catalog query.
const CATALOG_WORDS: &[&str] = &[
    "pg_catalog",
    "information_schema",
    "pg_class",
    "pg_namespace",
    "pg_attribute",
    "pg_type",
    "pg_proc",
    "pg_database",
    "pg_settings",
    "pg_roles",
    "pg_user",
    "pg_index",
    "pg_constraint",
    "pg_tables",
    "pg_views",
    "pg_stat_activity",
    "pg_am",
    "pg_inherits",
    "pg_description",
    "pg_extension",
];

/// Footer queries of `\d` that paxsql answers with no rows.
const EMPTY_FOOTERS: &[&str] = &[
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_inherits",
    "pg_trigger",
    "pg_rewrite",
    "pg_constraint r",
    "pg_constraint c",
];

/// Whether `sql` asks the catalog, and what.
pub(crate) fn recognize(sql: &str) -> Option<Catalog> {
    if let Some(f) = function_call(sql) {
        return Some(f);
    }
    let words: Vec<String> = lex(sql)
        .iter()
        .filter_map(|t| match t.tok {
            Tok::Word(w) => Some(w.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    if !words.iter().any(|w| CATALOG_WORDS.contains(&w.as_str())) {
        return None;
    }
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(psql_query(&flat).unwrap_or(Catalog::Unknown))
}

/// `SELECT version()` and the like: one call, no FROM.
fn function_call(sql: &str) -> Option<Catalog> {
    let t = lex(sql);
    let word = |i: usize| match t.get(i).map(|t| t.tok) {
        Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
        _ => None,
    };
    if word(0)?.as_str() != "select" {
        return None;
    }
    let mut i = 1;
    if word(1).as_deref() == Some("pg_catalog") && t.get(2).map(|t| t.tok) == Some(Tok::Punct('.'))
    {
        i = 3;
    }
    let name = word(i)?;
    let with_parens = t.get(i + 1).map(|t| t.tok) == Some(Tok::Punct('('))
        && t.get(i + 2).map(|t| t.tok) == Some(Tok::Punct(')'));
    let end = if with_parens { i + 3 } else { i + 1 };
    let func = match (name.as_str(), with_parens) {
        ("version", true) => Func::Version,
        ("current_database", true) => Func::Database,
        ("current_schema", _) => Func::Schema,
        ("current_user" | "session_user" | "user", false) => Func::User,
        ("pg_backend_pid", true) => Func::BackendPid,
        _ => return None,
    };
    // An optional alias, nothing else.
    let column = match (word(end).as_deref(), t.len() - end) {
        (_, 0) => name,
        (Some("as"), 2) => alias(sql, &t[end + 1])?,
        (_, 1) => alias(sql, &t[end])?,
        _ => return None,
    };
    Some(Catalog::Function(column, func))
}

fn alias(sql: &str, t: &crate::sqltext::Token<'_>) -> Option<String> {
    match t.tok {
        Tok::Word(w) => Some(w.to_ascii_lowercase()),
        Tok::Ident(q) => Some(q[1..q.len() - 1].to_owned()),
        _ => {
            let _ = sql;
            None
        }
    }
}

/// The queries psql 15 sends, recognised on whitespace-normalised text.
fn psql_query(q: &str) -> Option<Catalog> {
    let has = |s: &str| q.contains(s);
    if has("FROM pg_catalog.pg_class c") && has("as \"Name\"") && has("c.relkind IN (") {
        let list = between(q, "c.relkind IN (", ")")?;
        let kinds = list
            .split(',')
            .filter_map(|k| k.trim().trim_matches('\'').chars().next())
            .collect();
        let aliases = q
            .match_indices("as \"")
            .filter_map(|(i, m)| {
                let rest = &q[i + m.len()..];
                rest.find('"').map(|e| rest[..e].to_owned())
            })
            .collect();
        return Some(Catalog::List {
            kinds,
            name: regex_for(q, "c.relname"),
            schema: regex_for(q, "n.nspname"),
            aliases,
        });
    }
    if q.starts_with("SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c") {
        return Some(Catalog::Lookup {
            name: regex_for(q, "c.relname"),
            schema: regex_for(q, "n.nspname"),
        });
    }
    if q.starts_with("SELECT c.relchecks, c.relkind") {
        return Some(Catalog::TableInfo(oid_after(q, "c.oid = '")?));
    }
    if has("FROM pg_catalog.pg_attribute a")
        && has("a.attrelid = '")
        && q.starts_with("SELECT a.attname")
    {
        return Some(Catalog::Columns {
            oid: oid_after(q, "a.attrelid = '")?,
            extra: [
                has("a.attstorage"),
                has("a.attcompression"),
                has("attstattarget"),
                has("pg_catalog.col_description("),
            ],
        });
    }
    if has("pg_catalog.pg_index i") && has("pg_catalog.pg_get_indexdef") && has("c.oid = '") {
        return Some(Catalog::Indexes(oid_after(q, "c.oid = '")?));
    }
    if q.starts_with("SELECT pg_catalog.pg_get_viewdef(") {
        return Some(Catalog::ViewDef(oid_after(q, "pg_get_viewdef('")?));
    }
    if has("pg_catalog.pg_partitioned_table") && has("c.relname = '") {
        let name = between(q, "c.relname = '", "'")?;
        return Some(Catalog::Partitions(name.to_owned()));
    }
    if EMPTY_FOOTERS.iter().any(|f| has(f)) {
        return Some(Catalog::Empty);
    }
    None
}

fn between<'a>(q: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = q.find(start)? + start.len();
    let j = q[i..].find(end)? + i;
    Some(&q[i..j])
}

fn oid_after(q: &str, marker: &str) -> Option<i64> {
    let i = q.find(marker)? + marker.len();
    let digits: String = q[i..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The regex literal in `COLUMN OPERATOR(pg_catalog.~) '...'`.
fn regex_for(q: &str, column: &str) -> Option<String> {
    let marker = format!("{column} OPERATOR(pg_catalog.~) '");
    let i = q.find(&marker)? + marker.len();
    let mut out = String::new();
    let mut chars = q[i..].chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            if chars.peek() == Some(&'\'') {
                chars.next();
                out.push('\'');
                continue;
            }
            break;
        }
        out.push(c);
    }
    Some(out)
}

/// Matches psql's pattern regexes: `^(...)$` around literals, `.`, `.*`,
/// `\x` escapes, `[...]` classes and `|` alternatives.
pub(crate) fn regex_match(re: &str, s: &str) -> bool {
    let body = re.strip_prefix('^').unwrap_or(re);
    let body = body.strip_suffix('$').unwrap_or(body);
    let body = body
        .strip_prefix('(')
        .and_then(|b| b.strip_suffix(')'))
        .unwrap_or(body);
    split_alternatives(body)
        .iter()
        .any(|alt| match_here(&parse_atoms(alt), s.as_bytes()))
}

fn split_alternatives(body: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = body.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let last = out.last_mut().expect("non-empty");
                last.push(c);
                last.extend(chars.next());
            }
            '[' => {
                in_class = true;
                out.last_mut().expect("non-empty").push(c);
            }
            ']' => {
                in_class = false;
                out.last_mut().expect("non-empty").push(c);
            }
            '|' if !in_class => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

#[derive(Debug)]
enum Atom {
    Byte(u8),
    Any,
    Class(Vec<u8>),
}

fn parse_atoms(re: &str) -> Vec<(Atom, bool)> {
    let b = re.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let atom = match b[i] {
            b'\\' if i + 1 < b.len() => {
                i += 1;
                Atom::Byte(b[i])
            }
            b'.' => Atom::Any,
            b'[' => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b']')
                    .map_or(b.len(), |e| i + e);
                let class = b[i + 1..end].to_vec();
                i = end;
                Atom::Class(class)
            }
            c => Atom::Byte(c),
        };
        i += 1;
        let star = b.get(i) == Some(&b'*');
        if star {
            i += 1;
        }
        out.push((atom, star));
    }
    out
}

fn match_here(atoms: &[(Atom, bool)], s: &[u8]) -> bool {
    let Some(((atom, star), rest)) = atoms.split_first() else {
        return s.is_empty();
    };
    let one = |c: u8| match atom {
        Atom::Byte(b) => *b == c,
        Atom::Any => true,
        Atom::Class(set) => set.contains(&c),
    };
    if *star {
        let mut k = 0;
        loop {
            if match_here(rest, &s[k..]) {
                return true;
            }
            if k < s.len() && one(s[k]) {
                k += 1;
            } else {
                return false;
            }
        }
    }
    !s.is_empty() && one(s[0]) && match_here(rest, &s[1..])
}

/// One object of SQLite's schema.
#[derive(Debug, Clone)]
struct Object {
    oid: i64,
    kind: char,
    name: String,
    table: String,
    sql: Option<String>,
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn pg_bool(b: bool) -> Value {
    text(if b { "t" } else { "f" })
}

fn text_columns(names: &[&str]) -> Vec<Column> {
    names
        .iter()
        .map(|n| Column {
            name: (*n).to_owned(),
            ty: PgType::Text,
        })
        .collect()
}

async fn read<D: Db>(db: &D, level: ReadLevel, stmt: Statement) -> Result<Vec<Vec<Value>>, Fail> {
    let resp = db
        .read(vec![stmt], level, None)
        .await
        .map_err(|e| errors::request(&e))?;
    match resp.results.into_iter().next() {
        Some(StmtResult::Rows { values, .. }) => Ok(values),
        Some(StmtResult::Error(m)) => Err(errors::engine(&m)),
        _ => Ok(Vec::new()),
    }
}

async fn schema<D: Db>(db: &D, level: ReadLevel) -> Result<Vec<Object>, Fail> {
    let rows = read(
        db,
        level,
        Statement::new(
            "SELECT rowid, type, name, tbl_name, sql FROM sqlite_schema \
             WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
               AND name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' \
               AND type IN ('table', 'view', 'index') ORDER BY name",
        ),
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let s = |i: usize| match r.get(i) {
                Some(Value::Text(t)) => Some(t.clone()),
                _ => None,
            };
            let oid = match r.first() {
                Some(Value::Integer(i)) => OID_BASE + i,
                _ => return None,
            };
            let kind = match s(1)?.as_str() {
                "table" => 'r',
                "view" => 'v',
                _ => 'i',
            };
            Some(Object {
                oid,
                kind,
                name: s(2)?,
                table: s(3)?,
                sql: s(4),
            })
        })
        .collect())
}

async fn object<D: Db>(db: &D, level: ReadLevel, oid: i64) -> Result<Object, Fail> {
    schema(db, level)
        .await?
        .into_iter()
        .find(|o| o.oid == oid)
        .ok_or_else(|| error("42P01", format!("no relation with oid {oid}")))
}

/// Answers a catalog query.
pub(crate) async fn answer<D: Db>(
    c: &Catalog,
    db: &D,
    level: ReadLevel,
    user: &str,
) -> Result<Table, Fail> {
    match c {
        Catalog::Function(column, f) => {
            let (ty, value) = match f {
                Func::Version => (PgType::Text, text(crate::version_text())),
                Func::Database => (PgType::Text, text("paxsql")),
                Func::Schema => (PgType::Text, text("public")),
                Func::User => (PgType::Text, text(user)),
                Func::BackendPid => (PgType::Int8, Value::Integer(i64::from(std::process::id()))),
            };
            Ok(Table {
                columns: vec![Column {
                    name: column.clone(),
                    ty,
                }],
                rows: vec![vec![value]],
            })
        }
        Catalog::List {
            kinds,
            name,
            schema: ns,
            aliases,
        } => {
            let objects = schema(db, level).await?;
            let public_ok = ns.as_deref().is_none_or(|re| regex_match(re, "public"));
            let rows = objects
                .iter()
                .filter(|o| public_ok && kinds.contains(&o.kind))
                .filter(|o| name.as_deref().is_none_or(|re| regex_match(re, &o.name)))
                .map(|o| {
                    aliases
                        .iter()
                        .map(|a| match a.as_str() {
                            "Schema" => text("public"),
                            "Name" => text(o.name.clone()),
                            "Type" => text(match o.kind {
                                'r' => "table",
                                'v' => "view",
                                _ => "index",
                            }),
                            "Owner" => text(user),
                            "Table" => text(o.table.clone()),
                            "Persistence" => text("permanent"),
                            "Access method" if o.kind == 'r' => text("heap"),
                            "Access method" if o.kind == 'i' => text("btree"),
                            _ => Value::Null,
                        })
                        .collect()
                })
                .collect();
            let names: Vec<&str> = aliases.iter().map(String::as_str).collect();
            Ok(Table {
                columns: text_columns(&names),
                rows,
            })
        }
        Catalog::Lookup { name, schema: ns } => {
            let objects = schema(db, level).await?;
            let public_ok = ns.as_deref().is_none_or(|re| regex_match(re, "public"));
            let rows = objects
                .iter()
                .filter(|o| public_ok && o.kind != 'i')
                .filter(|o| name.as_deref().is_none_or(|re| regex_match(re, &o.name)))
                .map(|o| {
                    vec![
                        text(o.oid.to_string()),
                        text("public"),
                        text(o.name.clone()),
                    ]
                })
                .collect();
            Ok(Table {
                columns: text_columns(&["oid", "nspname", "relname"]),
                rows,
            })
        }
        Catalog::TableInfo(oid) => {
            let objects = schema(db, level).await?;
            let o = objects
                .iter()
                .find(|o| o.oid == *oid)
                .ok_or_else(|| error("42P01", format!("no relation with oid {oid}")))?;
            let has_index = o.kind == 'r' && !index_rows(db, level, &o.name).await?.is_empty();
            let row = vec![
                text("0"),
                text(o.kind.to_string()),
                pg_bool(has_index),
                pg_bool(false),
                pg_bool(false),
                pg_bool(false),
                pg_bool(false),
                pg_bool(false),
                pg_bool(false),
                text(""),
                text("0"),
                text(""),
                text("p"),
                text("d"),
                if o.kind == 'r' {
                    text("heap")
                } else {
                    Value::Null
                },
            ];
            Ok(Table {
                columns: text_columns(&[
                    "relchecks",
                    "relkind",
                    "relhasindex",
                    "relhasrules",
                    "relhastriggers",
                    "relrowsecurity",
                    "relforcerowsecurity",
                    "relhasoids",
                    "relispartition",
                    "reloptions",
                    "reltablespace",
                    "reloftype",
                    "relpersistence",
                    "relreplident",
                    "amname",
                ]),
                rows: vec![row],
            })
        }
        Catalog::Columns { oid, extra } => {
            let o = object(db, level, *oid).await?;
            let rows = table_info(db, level, &o.name).await?;
            let mut names = vec![
                "attname",
                "format_type",
                "default",
                "attnotnull",
                "attcollation",
                "attidentity",
                "attgenerated",
            ];
            let extra_names = [
                "attstorage",
                "attcompression",
                "attstattarget",
                "col_description",
            ];
            names.extend(
                extra_names
                    .iter()
                    .zip(extra)
                    .filter(|(_, on)| **on)
                    .map(|(n, _)| *n),
            );
            let rows = rows
                .into_iter()
                .map(|c| {
                    let mut r = vec![
                        text(c.name),
                        text(c.decl.to_ascii_lowercase()),
                        c.default.map_or(Value::Null, text),
                        pg_bool(c.not_null),
                        Value::Null,
                        text(""),
                        text(""),
                    ];
                    let plain = matches!(
                        PgType::from_decltype(&c.decl),
                        Some(PgType::Int8 | PgType::Float8 | PgType::Bool)
                    );
                    let extra_values = [
                        text(if plain { "p" } else { "x" }),
                        text(""),
                        Value::Null,
                        Value::Null,
                    ];
                    r.extend(
                        extra_values
                            .into_iter()
                            .zip(extra)
                            .filter(|(_, on)| **on)
                            .map(|(v, _)| v),
                    );
                    r
                })
                .collect();
            Ok(Table {
                columns: text_columns(&names),
                rows,
            })
        }
        Catalog::Indexes(oid) => {
            let o = object(db, level, *oid).await?;
            let rows = index_rows(db, level, &o.name).await?;
            Ok(Table {
                columns: text_columns(&[
                    "relname",
                    "indisprimary",
                    "indisunique",
                    "indisclustered",
                    "indisvalid",
                    "pg_get_indexdef",
                    "pg_get_constraintdef",
                    "contype",
                    "condeferrable",
                    "condeferred",
                    "indisreplident",
                    "reltablespace",
                ]),
                rows,
            })
        }
        Catalog::ViewDef(oid) => {
            let o = object(db, level, *oid).await?;
            let def = o.sql.unwrap_or_default();
            // The query after `AS`, as pg_get_viewdef shows it.
            let upper = def.to_ascii_uppercase();
            let body = upper
                .find(" AS ")
                .map_or(def.as_str(), |i| def[i + 4..].trim());
            Ok(Table {
                columns: text_columns(&["pg_get_viewdef"]),
                rows: vec![vec![text(format!(" {body};"))]],
            })
        }
        Catalog::Partitions(table) => {
            let exists = schema(db, level)
                .await?
                .iter()
                .any(|o| o.kind == 'r' && o.name.eq_ignore_ascii_case(table));
            Ok(Table {
                columns: vec![
                    Column {
                        name: "n".into(),
                        ty: PgType::Int8,
                    },
                    Column {
                        name: "partstrat".into(),
                        ty: PgType::Text,
                    },
                    Column {
                        name: "count".into(),
                        ty: PgType::Int8,
                    },
                ],
                rows: match exists {
                    true => vec![vec![Value::Integer(1), Value::Null, Value::Integer(0)]],
                    false => Vec::new(),
                },
            })
        }
        Catalog::Empty => Ok(Table {
            columns: text_columns(&["?column?"]),
            rows: Vec::new(),
        }),
        Catalog::Unknown => Err(errors::error_hint(
            "0A000",
            "paxsql does not emulate this pg_catalog/information_schema query",
            "paxsql answers psql's \\dt and \\d; SQLite's own schema is in sqlite_schema \
             and PRAGMA table_info(name)",
        )),
    }
}

struct ColumnInfo {
    name: String,
    decl: String,
    not_null: bool,
    default: Option<String>,
    pk: i64,
}

async fn table_info<D: Db>(db: &D, level: ReadLevel, table: &str) -> Result<Vec<ColumnInfo>, Fail> {
    let rows = read(
        db,
        level,
        Statement {
            sql: "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1) ORDER BY cid"
                .into(),
            params: Params::Positional(vec![text(table)]),
        },
    )
    .await?;
    let pks = rows
        .iter()
        .filter(|r| matches!(r.get(4), Some(Value::Integer(p)) if *p > 0))
        .count();
    Ok(rows
        .into_iter()
        .map(|r| {
            let s = |i: usize| match r.get(i) {
                Some(Value::Text(t)) => Some(t.clone()),
                _ => None,
            };
            let int = |i: usize| match r.get(i) {
                Some(Value::Integer(n)) => *n,
                _ => 0,
            };
            let decl = s(1).unwrap_or_default();
            // An INTEGER PRIMARY KEY is the rowid: never NULL.
            let rowid = pks == 1 && int(4) > 0 && decl.eq_ignore_ascii_case("INTEGER");
            ColumnInfo {
                name: s(0).unwrap_or_default(),
                not_null: int(2) != 0 || rowid,
                default: s(3),
                pk: int(4),
                decl,
            }
        })
        .collect())
}

/// Rows of psql's index footer for a table.
async fn index_rows<D: Db>(db: &D, level: ReadLevel, table: &str) -> Result<Vec<Vec<Value>>, Fail> {
    let indexes = read(
        db,
        level,
        Statement {
            sql: "SELECT il.name, il.\"unique\", il.origin, group_concat(ii.name, ', ') \
                  FROM pragma_index_list(?1) il JOIN pragma_index_info(il.name) ii \
                  GROUP BY il.name ORDER BY il.origin = 'pk' DESC, il.name"
                .into(),
            params: Params::Positional(vec![text(table)]),
        },
    )
    .await?;
    let mut rows = Vec::new();
    let row = |name: String, primary: bool, unique: bool, cols: &str, contype: Option<&str>| {
        let kind = if unique { "UNIQUE INDEX" } else { "INDEX" };
        let condef = match contype {
            Some("p") => text(format!("PRIMARY KEY ({cols})")),
            Some("u") => text(format!("UNIQUE ({cols})")),
            _ => Value::Null,
        };
        vec![
            text(name.clone()),
            pg_bool(primary),
            pg_bool(unique),
            pg_bool(false),
            pg_bool(true),
            text(format!(
                "CREATE {kind} {name} ON public.{table} USING btree ({cols})"
            )),
            condef,
            contype.map_or(Value::Null, text),
            pg_bool(false),
            pg_bool(false),
            pg_bool(false),
            text("0"),
        ]
    };
    // INTEGER PRIMARY KEY is the rowid and has no index of its own.
    let columns = table_info(db, level, table).await?;
    let pk: Vec<&ColumnInfo> = columns.iter().filter(|c| c.pk > 0).collect();
    let has_pk_index = indexes
        .iter()
        .any(|r| matches!(r.get(2), Some(Value::Text(o)) if o == "pk"));
    if pk.len() == 1 && !has_pk_index && pk[0].decl.eq_ignore_ascii_case("INTEGER") {
        rows.push(row(
            format!("{table}_pkey"),
            true,
            true,
            &pk[0].name,
            Some("p"),
        ));
    }
    for r in indexes {
        let s = |i: usize| match r.get(i) {
            Some(Value::Text(t)) => t.clone(),
            _ => String::new(),
        };
        let unique = matches!(r.get(1), Some(Value::Integer(1)));
        let origin = s(2);
        let (name, contype) = match origin.as_str() {
            "pk" => (format!("{table}_pkey"), Some("p")),
            "u" => (s(0), Some("u")),
            _ => (s(0), None),
        };
        rows.push(row(name, origin == "pk", unique, &s(3), contype));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_patterns_match() {
        assert!(regex_match("^(users)$", "users"));
        assert!(!regex_match("^(users)$", "users2"));
        assert!(regex_match("^(user.*)$", "users2"));
        assert!(regex_match("^(u.ers)$", "users"));
        assert!(regex_match("^(a|b)$", "b"));
        assert!(regex_match("^(my\\_t)$", "my_t"));
        assert!(regex_match("^([ab]x)$", "bx"));
    }

    #[test]
    fn psql_queries_are_recognised() {
        let dt = "SELECT n.nspname as \"Schema\",\n  c.relname as \"Name\",\n  CASE c.relkind WHEN 'r' THEN 'table' END as \"Type\",\n  pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\"\nFROM pg_catalog.pg_class c\n     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\nWHERE c.relkind IN ('r','p','')\n  AND c.relname OPERATOR(pg_catalog.~) '^(us.*)$' COLLATE pg_catalog.default\nORDER BY 1,2;";
        assert_eq!(
            recognize(dt),
            Some(Catalog::List {
                kinds: vec!['r', 'p'],
                name: Some("^(us.*)$".into()),
                schema: None,
                aliases: vec![
                    "Schema".into(),
                    "Name".into(),
                    "Type".into(),
                    "Owner".into()
                ],
            })
        );
        let pgbench = "select o.n, p.partstrat, pg_catalog.count(i.inhparent) from pg_catalog.pg_class as c join pg_catalog.pg_namespace as n on (n.oid = c.relnamespace) cross join lateral (select pg_catalog.array_position(pg_catalog.current_schemas(true), n.nspname)) as o(n) left join pg_catalog.pg_partitioned_table as p on (p.partrelid = c.oid) left join pg_catalog.pg_inherits as i on (c.oid = i.inhparent) where c.relname = 'pgbench_accounts' and o.n is not null group by 1, 2 order by 1 asc limit 1";
        assert_eq!(
            recognize(pgbench),
            Some(Catalog::Partitions("pgbench_accounts".into()))
        );
        let lookup = "SELECT c.oid,\n  n.nspname,\n  c.relname\nFROM pg_catalog.pg_class c\n     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\nWHERE c.relname OPERATOR(pg_catalog.~) '^(users)$' COLLATE pg_catalog.default\n  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 2, 3;";
        assert_eq!(
            recognize(lookup),
            Some(Catalog::Lookup {
                name: Some("^(users)$".into()),
                schema: None
            })
        );
        assert_eq!(
            recognize("SELECT version()"),
            Some(Catalog::Function("version".into(), Func::Version))
        );
        assert_eq!(
            recognize("select current_user as me"),
            Some(Catalog::Function("me".into(), Func::User))
        );
        assert_eq!(
            recognize("SELECT * FROM pg_catalog.pg_proc"),
            Some(Catalog::Unknown)
        );
        assert_eq!(recognize("SELECT * FROM pgbench_accounts"), None);
        assert_eq!(recognize("SELECT version"), None);
    }
}
