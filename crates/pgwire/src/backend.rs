//! The query handlers: every statement, from either protocol, goes through
//! [`Core::run`] (or [`Core::run_writes`] for a simple query's consecutive
//! writes), which routes it to the log, a read, the session or the catalog.

use crate::catalog::{self, Catalog};
use crate::describe::{self, Plan};
use crate::errors::{self, error, error_hint, pg, Fail};
use crate::session::{parse_setting, Session, SessionCell, Setting, Tx, READ_LEVEL};
use crate::sqltext::{self, leading_words, Placeholders};
use crate::txn::OpenTx;
use crate::types::{decode_param, encode_field, PgType};
use crate::Db;
use async_trait::async_trait;
use bytes::BytesMut;
use futures::sink::{Sink, SinkExt};
use paxsql_sql::determinism::{self, Kind};
use paxsql_types::{Params, ReadLevel, Statement, StmtResult, Value};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, Type, DEFAULT_NAME};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::{
    DataRow, FieldDescription, NoData, ParameterDescription, RowDescription,
};
use pgwire::messages::extendedquery::{Bind, BindComplete, Describe};
use pgwire::messages::response::{
    CommandComplete, EmptyQueryResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

/// Statements whose descriptions are remembered (all sessions together).
const DESCRIBE_CACHE_MAX: usize = 1024;

/// A result column: its name and the type its values are sent as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub name: String,
    pub ty: PgType,
}

/// What a statement returns and takes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Described {
    pub columns: Vec<Column>,
    /// The type of each `$N` (index N-1), as paxsql infers it.
    pub params: Vec<PgType>,
}

/// What one statement is, decided from its leading keywords.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Begin,
    Commit,
    Rollback,
    Setting(Setting),
    /// `DEALLOCATE [PREPARE] name|ALL`.
    Deallocate(Option<String>),
    /// Accepted, does nothing, answers with this tag.
    Noop(&'static str),
    /// Refused with this reason.
    Unsupported(String),
    Catalog(Catalog),
    Read,
    Write,
}

impl Action {
    pub fn of(sql: &str) -> Action {
        let w = leading_words(sql, 3);
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["BEGIN", ..] | ["START", "TRANSACTION", ..] => Action::Begin,
            ["COMMIT" | "END", "PREPARED", ..]
            | ["ROLLBACK", "PREPARED", ..]
            | ["PREPARE", "TRANSACTION", ..] => {
                Action::Unsupported("two-phase commit is not supported".into())
            }
            ["COMMIT" | "END", ..] => Action::Commit,
            ["ROLLBACK", "TO", ..]
            | ["ROLLBACK", _, "TO", ..]
            | ["SAVEPOINT", ..]
            | ["RELEASE", ..] => Action::Unsupported(
                "savepoints are not supported: paxsql buffers a transaction's writes and \
                     commits them as one log entry"
                    .into(),
            ),
            ["ROLLBACK" | "ABORT", ..] => Action::Rollback,
            ["SET" | "RESET" | "SHOW", ..] => match parse_setting(sql) {
                Ok(s) => Action::Setting(s),
                Err(e) => Action::Unsupported(e.message),
            },
            ["DEALLOCATE", ..] => {
                let mut words = leading_words(sql, 3);
                words.retain(|w| w != "DEALLOCATE" && w != "PREPARE");
                let name = words
                    .first()
                    .filter(|w| *w != "ALL")
                    .map(|w| w.to_ascii_lowercase());
                let quoted = sqltext::lex(sql).iter().find_map(|t| match t.tok {
                    sqltext::Tok::Ident(q) => Some(q[1..q.len() - 1].to_owned()),
                    _ => None,
                });
                Action::Deallocate(quoted.or(name))
            }
            ["DISCARD", ..] => Action::Noop("DISCARD ALL"),
            ["CHECKPOINT", ..] => Action::Noop("CHECKPOINT"),
            ["LISTEN" | "UNLISTEN" | "NOTIFY", ..] => {
                Action::Unsupported("LISTEN/NOTIFY is not supported".into())
            }
            ["COPY", ..] => Action::Unsupported("COPY is not supported; use INSERT".into()),
            ["PREPARE", ..] | ["EXECUTE", ..] => Action::Unsupported(
                "SQL-level PREPARE/EXECUTE is not supported; use the extended query protocol \
                 (your driver's prepared statements)"
                    .into(),
            ),
            _ => {
                if let Some(c) = catalog::recognize(sql) {
                    return Action::Catalog(c);
                }
                match determinism::classify(sql) {
                    Kind::Read => Action::Read,
                    Kind::Write | Kind::Unknown => Action::Write,
                }
            }
        }
    }
}

/// A statement as the extended protocol stores it (the result of Parse).
#[derive(Debug)]
pub struct Prepared {
    sql: String,
    action: Action,
    placeholders: Placeholders,
    /// `$N` count, or the count of types the client declared if larger.
    nparams: usize,
    described: Described,
}

/// One statement's result, before it is encoded for a protocol.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Rows, and the tag to complete them with (the row count is appended).
    Rows {
        columns: Arc<Vec<Column>>,
        rows: Vec<Vec<Value>>,
        tag: String,
    },
    /// A complete command tag.
    Tag(String),
    /// A transaction began.
    Begin,
    /// A transaction ended with this tag (`COMMIT` or `ROLLBACK`).
    End(&'static str),
    /// Parameters whose new values the client must be told, and the tag.
    Set(Vec<(String, String)>, &'static str),
}

/// What every handler shares: the database and the description cache.
#[derive(Debug)]
pub(crate) struct Core<D> {
    pub db: D,
    /// The parameters sent at startup, also the session defaults.
    pub server_params: Vec<(String, String)>,
    cache: Mutex<HashMap<String, Arc<Described>>>,
}

impl<D: Db> Core<D> {
    pub fn new(db: D, server_params: Vec<(String, String)>) -> Self {
        Core {
            db,
            server_params,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The connection's session, created from its startup parameters.
    pub fn session<C: ClientInfo + ?Sized>(&self, client: &C) -> Result<Arc<SessionCell>, Fail> {
        if let Some(s) = client.session_extensions().get::<SessionCell>() {
            return Ok(s);
        }
        let startup: BTreeMap<String, String> = client
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let s = Session::new(&self.server_params, &startup)?;
        Ok(client
            .session_extensions()
            .get_or_insert_with(|| SessionCell(Mutex::new(s))))
    }

    pub(crate) fn forget_descriptions(&self) {
        self.cache.lock().expect("describe cache").clear();
    }

    /// Parse: what the statement is, returns and takes.
    pub async fn prepare(
        &self,
        sql: &str,
        client_types: &[Option<Type>],
    ) -> Result<Prepared, Fail> {
        if determinism::statement_count(sql) > 1 {
            return Err(error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let sql = sql.trim().trim_end_matches(';').trim_end().to_owned();
        let action = Action::of(&sql);
        let placeholders = sqltext::placeholders(&sql);
        let nparams = placeholders.count().max(client_types.len());
        let described = match &action {
            Action::Read | Action::Write => {
                let cached = self
                    .cache
                    .lock()
                    .expect("describe cache")
                    .get(&sql)
                    .cloned();
                match cached {
                    Some(d) => (*d).clone(),
                    None => {
                        let d = self.describe(&sql, &action, &placeholders).await?;
                        let mut cache = self.cache.lock().expect("describe cache");
                        if cache.len() >= DESCRIBE_CACHE_MAX {
                            cache.clear();
                        }
                        cache.insert(sql.clone(), Arc::new(d.clone()));
                        d
                    }
                }
            }
            Action::Setting(Setting::Show(name)) => Described {
                columns: vec![Column {
                    name: name.to_ascii_lowercase(),
                    ty: PgType::Text,
                }],
                params: vec![],
            },
            Action::Setting(Setting::ShowAll) => Described {
                columns: show_all_columns(),
                params: vec![],
            },
            Action::Catalog(c) => {
                let table = catalog::answer(c, &self.db, ReadLevel::Local, "paxsql").await?;
                Described {
                    columns: table.columns,
                    params: vec![],
                }
            }
            _ => Described::default(),
        };
        Ok(Prepared {
            sql,
            action,
            placeholders,
            nparams,
            described,
        })
    }

    /// Describes a read or write by reading this node's schema (see `describe`).
    async fn describe(
        &self,
        sql: &str,
        action: &Action,
        placeholders: &Placeholders,
    ) -> Result<Described, Fail> {
        let plan = describe::plan(sql);
        let mut stmts = Vec::new();
        let main = match plan.describe_sql(sql) {
            Some(d) => Some(d),
            // PRAGMA, EXPLAIN: only running them tells their columns, and reads are harmless.
            None if matches!(action, Action::Read) => Some(sql.to_owned()),
            None => None,
        };
        if let Some(m) = &main {
            stmts.push(probe_statement(m));
        }
        let want_probe = plan.columns_need_probe() || !plan.param_rules.is_empty();
        let probe_at = match (&plan.probe, want_probe) {
            (Some(p), true) => {
                stmts.push(probe_statement(p));
                Some(stmts.len() - 1)
            }
            _ => None,
        };
        let mut results = Vec::new();
        if !stmts.is_empty() {
            results = self.read_schema(stmts, main.is_some()).await?;
        }
        let probe_types: Vec<Option<PgType>> = match probe_at.and_then(|i| results.get(i)) {
            Some(StmtResult::Rows { types, .. }) => {
                types.iter().map(|t| PgType::from_decltype(t)).collect()
            }
            _ => Vec::new(),
        };
        let columns = match (main.is_some(), results.first()) {
            (true, Some(StmtResult::Rows { columns, types, .. })) => {
                build_columns(&plan, columns, types, &probe_types)
            }
            (true, Some(StmtResult::Error(m))) => return Err(errors::engine(m)),
            _ => Vec::new(),
        };
        let params = (1..=placeholders.count() as u32)
            .map(|n| {
                plan.param_rules
                    .get(&n)
                    .and_then(|r| r.resolve(&probe_types))
                    .unwrap_or(PgType::Text)
            })
            .collect();
        Ok(Described { columns, params })
    }

    /// Reads schema-only statements here; if the statement that matters
    /// fails, once more at `linearizable` (this replica may lag behind a
    /// `CREATE TABLE` made through another node).
    async fn read_schema(
        &self,
        stmts: Vec<Statement>,
        first_matters: bool,
    ) -> Result<Vec<StmtResult>, Fail> {
        let local = self.db.read(stmts.clone(), ReadLevel::Local, None).await;
        let failed = match &local {
            Ok(r) => first_matters && matches!(r.results.first(), Some(StmtResult::Error(_))),
            Err(_) => true,
        };
        let resp = if failed {
            self.db.read(stmts, ReadLevel::Linearizable, None).await
        } else {
            local
        };
        resp.map(|r| r.results).map_err(|e| errors::request(&e))
    }

    /// Runs one statement for a session.
    pub async fn run(
        &self,
        cell: &SessionCell,
        sql: &str,
        action: &Action,
        params: Params,
        described: Option<&Described>,
    ) -> Result<Outcome, Fail> {
        let result = self.run_inner(cell, sql, action, params, described).await;
        if result.is_err() {
            lock(cell).fail();
        }
        result
    }

    async fn run_inner(
        &self,
        cell: &SessionCell,
        sql: &str,
        action: &Action,
        params: Params,
        described: Option<&Described>,
    ) -> Result<Outcome, Fail> {
        if !matches!(action, Action::Commit | Action::Rollback) {
            lock(cell).check_not_failed()?;
        }
        match action {
            Action::Begin => {
                let mut s = lock(cell);
                if matches!(s.tx, Tx::Idle) {
                    s.tx = Tx::Open(OpenTx::new());
                }
                Ok(Outcome::Begin)
            }
            Action::Rollback => {
                lock(cell).tx = Tx::Idle;
                Ok(Outcome::End("ROLLBACK"))
            }
            Action::Commit => self.commit(cell).await,
            Action::Setting(s) => setting(cell, s),
            Action::Deallocate(_) => Ok(Outcome::Tag("DEALLOCATE".into())),
            Action::Noop(tag) => Ok(Outcome::Tag((*tag).into())),
            Action::Unsupported(why) => Err(error("0A000", why.clone())),
            Action::Catalog(c) => {
                let level = lock(cell).level;
                let user = lock(cell)
                    .get("session_authorization")
                    .unwrap_or("paxsql")
                    .to_owned();
                let t = catalog::answer(c, &self.db, level, &user).await?;
                Ok(Outcome::Rows {
                    columns: Arc::new(t.columns),
                    rows: t.rows,
                    tag: "SELECT".into(),
                })
            }
            Action::Read | Action::Write if matches!(lock(cell).tx, Tx::Open(_)) => {
                let write = matches!(action, Action::Write);
                self.run_in_transaction(cell, sql, params, write, described)
                    .await
            }
            Action::Read => self.read(cell, sql, params, described).await,
            Action::Write => {
                let stmt = Statement {
                    sql: sql.to_owned(),
                    params,
                };
                let mut out = self.run_writes(vec![stmt], described).await;
                out.pop()
                    .unwrap_or_else(|| Err(error("XX000", "no result")))
            }
        }
    }

    async fn read(
        &self,
        cell: &SessionCell,
        sql: &str,
        params: Params,
        described: Option<&Described>,
    ) -> Result<Outcome, Fail> {
        let (level, timeout) = {
            let s = lock(cell);
            (s.level, s.read_timeout)
        };
        let plan = match described {
            Some(_) => None,
            None => Some(describe::plan(sql)),
        };
        let mut stmts = vec![Statement {
            sql: sql.to_owned(),
            params,
        }];
        let probe = plan
            .as_ref()
            .filter(|p| p.columns_need_probe())
            .and_then(|p| p.probe.clone());
        if let Some(p) = &probe {
            stmts.push(probe_statement(p));
        }
        let resp = self
            .db
            .read(stmts, level, timeout)
            .await
            .map_err(|e| errors::request(&e))?;
        let mut results = resp.results.into_iter();
        let main = results
            .next()
            .ok_or_else(|| error("XX000", "the node returned no result"))?;
        let probe_types: Vec<Option<PgType>> = match results.next() {
            Some(StmtResult::Rows { types, .. }) => {
                types.iter().map(|t| PgType::from_decltype(t)).collect()
            }
            _ => Vec::new(),
        };
        match main {
            StmtResult::Rows {
                columns,
                types,
                values,
            } => {
                let cols = match (described, &plan) {
                    (Some(d), _) => {
                        if let Err(e) = check_shape(d, &columns, &types) {
                            self.cache.lock().expect("describe cache").remove(sql);
                            return Err(e);
                        }
                        d.columns.clone()
                    }
                    (None, Some(plan)) => build_columns(plan, &columns, &types, &probe_types),
                    (None, None) => Vec::new(),
                };
                Ok(Outcome::Rows {
                    columns: Arc::new(cols),
                    rows: values,
                    tag: "SELECT".into(),
                })
            }
            StmtResult::Exec { rows_affected, .. } => {
                Ok(Outcome::Tag(complete_tag(sql, rows_affected)))
            }
            StmtResult::Error(m) => Err(errors::engine(&m)),
        }
    }

    /// Runs writes through the log: one statement, or a simple query's
    /// consecutive writes as one transaction. Results stop at the first error.
    pub async fn run_writes(
        &self,
        stmts: Vec<Statement>,
        described: Option<&Described>,
    ) -> Vec<Result<Outcome, Fail>> {
        let transaction = stmts.len() > 1;
        let sqls: Vec<String> = stmts.iter().map(|s| s.sql.clone()).collect();
        let ddl = sqls.iter().any(|s| is_ddl(s));
        let resp = match self.db.write(stmts, transaction).await {
            Ok(r) => r,
            Err(e) => return vec![Err(errors::request(&e))],
        };
        if ddl {
            self.forget_descriptions();
        }
        let mut out = Vec::with_capacity(resp.results.len());
        for (sql, r) in sqls.iter().zip(resp.results) {
            let o = result_outcome(sql, r, described, false);
            let failed = o.is_err();
            out.push(o);
            if failed {
                break;
            }
        }
        out
    }
}

/// What the client is answered for one statement's result: rows are
/// tagged `SELECT` for a read, by the statement's verb for a write
/// (`RETURNING`).
pub(crate) fn result_outcome(
    sql: &str,
    r: StmtResult,
    described: Option<&Described>,
    read: bool,
) -> Result<Outcome, Fail> {
    match r {
        StmtResult::Exec { rows_affected, .. } => {
            Ok(Outcome::Tag(complete_tag(sql, rows_affected)))
        }
        StmtResult::Rows {
            columns,
            types,
            values,
        } => {
            let cols = match described {
                Some(d) if d.columns.len() == columns.len() => d.columns.clone(),
                _ => build_columns(&describe::plan(sql), &columns, &types, &[]),
            };
            let tag = match read {
                true => "SELECT".to_owned(),
                false => command_tag(sql).0,
            };
            Ok(Outcome::Rows {
                columns: Arc::new(cols),
                rows: values,
                tag,
            })
        }
        StmtResult::Error(m) => Err(errors::engine(&m)),
    }
}

/// Checks that an execution returns what Describe promised.
fn check_shape(d: &Described, names: &[String], decls: &[String]) -> Result<(), Fail> {
    let changed = d.columns.len() != names.len()
        || d.columns
            .iter()
            .zip(decls)
            .any(|(c, decl)| PgType::from_decltype(decl).is_some_and(|t| t != c.ty));
    if changed {
        return Err(error_hint(
            "0A000",
            "cached plan must not change result type",
            "the table changed since the statement was prepared; prepare it again",
        ));
    }
    Ok(())
}

fn setting(cell: &SessionCell, s: &Setting) -> Result<Outcome, Fail> {
    let mut session = lock(cell);
    let report = |session: &Session, name: Option<String>| -> Vec<(String, String)> {
        name.map(|n| {
            let v = session.get(&n).unwrap_or_default().to_owned();
            (n, v)
        })
        .into_iter()
        .collect()
    };
    match s {
        Setting::Set { name, value } => {
            let reported = session.set(name, value)?;
            Ok(Outcome::Set(report(&session, reported), "SET"))
        }
        Setting::Ignored => Ok(Outcome::Tag("SET".into())),
        Setting::Reset(name) => {
            let reported = session.reset(name)?;
            Ok(Outcome::Set(report(&session, reported), "RESET"))
        }
        Setting::ResetAll => {
            let names: Vec<String> = session.all().map(|(n, _)| n.to_owned()).collect();
            let mut reports = Vec::new();
            for n in names {
                if n.eq_ignore_ascii_case("session_authorization")
                    || n.eq_ignore_ascii_case("server_version")
                    || n.eq_ignore_ascii_case("server_encoding")
                {
                    continue;
                }
                let r = session.reset(&n)?;
                reports.extend(report(&session, r));
            }
            Ok(Outcome::Set(reports, "RESET"))
        }
        Setting::Show(name) => {
            let value = session.get(name).ok_or_else(|| {
                error(
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                )
            })?;
            Ok(Outcome::Rows {
                columns: Arc::new(vec![Column {
                    name: name.to_ascii_lowercase(),
                    ty: PgType::Text,
                }]),
                rows: vec![vec![Value::Text(value.to_owned())]],
                tag: "SHOW".into(),
            })
        }
        Setting::ShowAll => {
            let rows = session
                .all()
                .map(|(n, v)| {
                    vec![
                        Value::Text(n.to_owned()),
                        Value::Text(v.to_owned()),
                        Value::Text(if n == READ_LEVEL {
                            "read level of this session: local, leader or linearizable".into()
                        } else {
                            String::new()
                        }),
                    ]
                })
                .collect();
            Ok(Outcome::Rows {
                columns: Arc::new(show_all_columns()),
                rows,
                tag: "SHOW".into(),
            })
        }
    }
}

/// A statement's command tag without the row count, and whether PostgreSQL
/// appends one.
pub(crate) fn command_tag(sql: &str) -> (String, bool) {
    let words = leading_words(sql, 5);
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let verb = |v: &str| -> (String, bool) {
        match v {
            "INSERT" | "REPLACE" => ("INSERT 0".into(), true),
            "UPDATE" => ("UPDATE".into(), true),
            "DELETE" => ("DELETE".into(), true),
            _ => ("SELECT".into(), true),
        }
    };
    match w.as_slice() {
        [] => ("".into(), false),
        ["INSERT" | "REPLACE" | "UPDATE" | "DELETE", ..] => verb(w[0]),
        ["SELECT" | "VALUES", ..] => ("SELECT".into(), true),
        ["WITH", ..] => {
            let found = sqltext::lex(sql).iter().find_map(|t| match t.tok {
                sqltext::Tok::Word(x)
                    if ["INSERT", "REPLACE", "UPDATE", "DELETE"]
                        .iter()
                        .any(|v| x.eq_ignore_ascii_case(v)) =>
                {
                    Some(x.to_ascii_uppercase())
                }
                _ => None,
            });
            verb(found.as_deref().unwrap_or("SELECT"))
        }
        ["CREATE" | "DROP" | "ALTER", rest @ ..] => {
            let object = rest
                .iter()
                .find(|x| {
                    matches!(
                        **x,
                        "TABLE" | "INDEX" | "VIEW" | "TRIGGER" | "SCHEMA" | "SEQUENCE"
                    )
                })
                .copied()
                .unwrap_or("TABLE");
            (format!("{} {object}", w[0]), false)
        }
        [first, ..] => ((*first).to_owned(), false),
    }
}

/// The complete tag of a statement that changed `n` rows.
pub(crate) fn complete_tag(sql: &str, n: u64) -> String {
    match command_tag(sql) {
        (t, true) => format!("{t} {n}"),
        (t, false) => t,
    }
}

/// Builds the result columns from the engine's names and declared types.
pub(crate) fn build_columns(
    plan: &Plan,
    names: &[String],
    decls: &[String],
    probe: &[Option<PgType>],
) -> Vec<Column> {
    let pg_names = plan.names.as_ref().filter(|n| n.len() == names.len());
    let rules = plan
        .column_rules
        .as_ref()
        .filter(|r| r.len() == names.len());
    names
        .iter()
        .enumerate()
        .map(|(i, engine_name)| {
            let name = pg_names
                .and_then(|n| n[i].clone())
                .unwrap_or_else(|| engine_name.clone());
            let ty = decls
                .get(i)
                .and_then(|d| PgType::from_decltype(d))
                .or_else(|| rules.and_then(|r| r[i].resolve(probe)))
                .unwrap_or(PgType::Text);
            Column { name, ty }
        })
        .collect()
}

fn probe_statement(sql: &str) -> Statement {
    // Every `$N` bound to 0: describing runs nothing, and `LIMIT $1` must be
    // an integer even when no row is read.
    let p = sqltext::placeholders(sql);
    let params = if p.numbered.is_empty() {
        Params::None
    } else {
        Params::Named(
            p.numbered
                .iter()
                .map(|n| (format!("${n}"), Value::Integer(0)))
                .collect(),
        )
    };
    Statement {
        sql: sql.to_owned(),
        params,
    }
}

fn show_all_columns() -> Vec<Column> {
    ["name", "setting", "description"]
        .iter()
        .map(|n| Column {
            name: (*n).into(),
            ty: PgType::Text,
        })
        .collect()
}

pub(crate) fn lock(cell: &SessionCell) -> std::sync::MutexGuard<'_, Session> {
    cell.0.lock().expect("session lock")
}

pub(crate) fn is_ddl(sql: &str) -> bool {
    matches!(
        leading_words(sql, 1).first().map(String::as_str),
        Some("CREATE" | "DROP" | "ALTER")
    )
}

/// Whether column or parameter `i` uses the binary format.
fn is_binary(format: &Format, i: usize) -> bool {
    match format {
        Format::UnifiedText => false,
        Format::UnifiedBinary => true,
        Format::Individual(codes) => codes.get(i) == Some(&1),
    }
}

fn field_infos(columns: &[Column], format: &Format) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = if is_binary(format, i) {
                FieldFormat::Binary
            } else {
                FieldFormat::Text
            };
            FieldInfo::new(c.name.clone(), None, None, c.ty.pg(), f).with_type_size(c.ty.size())
        })
        .collect()
}

fn row_description(columns: &[Column], format: &Format) -> RowDescription {
    RowDescription::new(
        field_infos(columns, format)
            .iter()
            .map(FieldDescription::from)
            .collect(),
    )
}

/// Encodes rows; fails (before anything is sent) on a value that the binary
/// format cannot carry.
fn encode_rows(
    columns: &[Column],
    rows: &[Vec<Value>],
    format: &Format,
) -> Result<Vec<DataRow>, Fail> {
    let mut out = Vec::with_capacity(rows.len());
    for (n, row) in rows.iter().enumerate() {
        if row.len() != columns.len() {
            return Err(error("XX000", "row width does not match its description"));
        }
        let mut buf = BytesMut::with_capacity(16 * row.len());
        for (i, (v, c)) in row.iter().zip(columns).enumerate() {
            encode_field(&mut buf, v, c.ty, is_binary(format, i)).map_err(|why| {
                error_hint(
                    "22P03",
                    format!("column \"{}\", row {}: {why}", c.name, n + 1),
                    "SQLite stores any value in any column; CAST the column in the query, \
                     or request the text format",
                )
            })?;
        }
        out.push(DataRow::new(buf, row.len() as i16));
    }
    Ok(out)
}

fn tx_status(cell: &SessionCell) -> TransactionStatus {
    match lock(cell).tx {
        Tx::Idle => TransactionStatus::Idle,
        Tx::Open(_) => TransactionStatus::Transaction,
        Tx::Failed => TransactionStatus::Error,
    }
}

/// The tag a Rows outcome completes with.
fn rows_tag(tag: &str, n: usize) -> String {
    if tag == "SHOW" {
        tag.to_owned()
    } else {
        format!("{tag} {n}")
    }
}

/// The handlers pgwire calls for one listener.
#[derive(Debug)]
pub struct Handler<D> {
    pub(crate) core: Arc<Core<D>>,
    parser: Arc<StmtParser<D>>,
}

impl<D: Db> Handler<D> {
    pub(crate) fn new(core: Arc<Core<D>>) -> Self {
        Handler {
            parser: Arc::new(StmtParser {
                core: Arc::clone(&core),
            }),
            core,
        }
    }

    /// Runs a simple query's statements, sending each one's answer; stops at
    /// the first error, as PostgreSQL does.
    async fn simple<C>(&self, client: &mut C, text: &str) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let cell = match self.core.session(client) {
            Ok(c) => c,
            Err(e) => return send_error(client, e).await,
        };
        let stmts = sqltext::split(text);
        if stmts.is_empty() {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
            return Ok(());
        }
        let mut i = 0;
        while i < stmts.len() {
            if let Some(&n) = sqltext::placeholders(stmts[i]).numbered.first() {
                lock(&cell).fail();
                return send_error(
                    client,
                    error("42P02", format!("there is no parameter ${n}")),
                )
                .await;
            }
            let action = Action::of(stmts[i]);
            let idle = matches!(lock(&cell).tx, Tx::Idle);
            if matches!(action, Action::Write) && idle {
                // Consecutive writes commit together, like PostgreSQL's
                // implicit transaction around a multi-statement query.
                let mut j = i + 1;
                while j < stmts.len()
                    && sqltext::placeholders(stmts[j]).numbered.is_empty()
                    && matches!(Action::of(stmts[j]), Action::Write)
                {
                    j += 1;
                }
                let group = stmts[i..j].iter().map(|s| Statement::new(*s)).collect();
                for outcome in self.core.run_writes(group, None).await {
                    match outcome {
                        Ok(o) => send_outcome(client, o).await?,
                        Err(e) => return send_error(client, e).await,
                    }
                }
                i = j;
                continue;
            }
            match self
                .core
                .run(&cell, stmts[i], &action, Params::None, None)
                .await
            {
                Ok(o) => send_outcome(client, o).await?,
                Err(e) => return send_error(client, e).await,
            }
            if let Action::Deallocate(name) = &action {
                deallocate(client.portal_store(), name.as_deref());
            }
            i += 1;
        }
        Ok(())
    }
}

fn deallocate<P: PortalStore + ?Sized>(store: &P, name: Option<&str>) {
    if let Some(n) = name {
        store.rm_statement(n);
    }
}

async fn send_error<C>(client: &mut C, e: Fail) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    client
        .feed(PgWireBackendMessage::ErrorResponse((*e).into()))
        .await?;
    Ok(())
}

/// Sends one statement's answer in the simple protocol (text format).
async fn send_outcome<C>(client: &mut C, outcome: Outcome) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let complete = |tag: String| PgWireBackendMessage::CommandComplete(CommandComplete::new(tag));
    match outcome {
        Outcome::Rows { columns, rows, tag } => {
            let text = Format::UnifiedText;
            client
                .feed(PgWireBackendMessage::RowDescription(row_description(
                    &columns, &text,
                )))
                .await?;
            let n = rows.len();
            match encode_rows(&columns, &rows, &text) {
                Ok(data) => {
                    for row in data {
                        client.feed(PgWireBackendMessage::DataRow(row)).await?;
                    }
                    client.feed(complete(rows_tag(&tag, n))).await?;
                }
                Err(e) => send_error(client, e).await?,
            }
        }
        Outcome::Tag(t) => client.feed(complete(t)).await?,
        Outcome::Begin => client.feed(complete("BEGIN".into())).await?,
        Outcome::End(t) => client.feed(complete(t.into())).await?,
        Outcome::Set(reports, tag) => {
            client.feed(complete(tag.into())).await?;
            for (k, v) in reports {
                client
                    .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                        k, v,
                    )))
                    .await?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl<D: Db> SimpleQueryHandler for Handler<D> {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let result = self.simple(client, &query.query).await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        result?;
        let status = self
            .core
            .session(client)
            .map_or(TransactionStatus::Idle, |c| tx_status(&c));
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `on_query` is overridden and never calls this.
        Err(pg(error("XX000", "simple query path not in use")))
    }
}

/// Parse for the extended protocol: [`Core::prepare`].
#[derive(Debug)]
pub struct StmtParser<D> {
    core: Arc<Core<D>>,
}

#[async_trait]
impl<D: Db> QueryParser for StmtParser<D> {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.core
            .prepare(sql, types)
            .await
            .map(|p| Some(Arc::new(p)))
            .map_err(pg)
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt.described.params.iter().map(|t| t.pg()).collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(field_infos(
            &stmt.described.columns,
            column_format.unwrap_or(&Format::UnifiedText),
        ))
    }
}

fn check_format_count(what: &str, codes: usize, n: usize) -> Result<(), Fail> {
    if codes > 1 && codes != n {
        return Err(error(
            "08P01",
            format!("bind message has {codes} {what} formats but {n} {what}s"),
        ));
    }
    Ok(())
}

fn decode_params(portal: &Portal<Arc<Prepared>>) -> Result<Params, Fail> {
    let prepared = &portal.statement.statement;
    let mut values = Vec::with_capacity(portal.parameters.len());
    for (i, raw) in portal.parameters.iter().enumerate() {
        let oid = portal
            .statement
            .parameter_types
            .get(i)
            .cloned()
            .flatten()
            .map(|t| t.oid())
            .or_else(|| prepared.described.params.get(i).map(|t| t.pg().oid()))
            .unwrap_or_else(|| Type::TEXT.oid());
        let v = decode_param(raw.as_deref(), oid, is_binary(&portal.parameter_format, i))
            .map_err(|(code, msg)| error(code, format!("parameter ${}: {msg}", i + 1)))?;
        values.push(v);
    }
    let numbered = &prepared.placeholders.numbered;
    Ok(if !numbered.is_empty() {
        Params::Named(
            numbered
                .iter()
                .map(|&n| (format!("${n}"), values[n as usize - 1].clone()))
                .collect(),
        )
    } else if values.is_empty() {
        Params::None
    } else {
        Params::Positional(values)
    })
}

fn to_response(
    outcome: Outcome,
    format: &Format,
) -> Result<(Response, Vec<(String, String)>), Fail> {
    Ok(match outcome {
        Outcome::Rows { columns, tag, .. } if columns.is_empty() => {
            (Response::Execution(Tag::new(&tag)), vec![])
        }
        Outcome::Rows { columns, rows, tag } => {
            let data = encode_rows(&columns, &rows, format)?;
            let fields = Arc::new(field_infos(&columns, format));
            let mut qr =
                QueryResponse::new(fields, futures::stream::iter(data.into_iter().map(Ok)));
            qr.set_command_tag(&tag);
            (Response::Query(qr), vec![])
        }
        Outcome::Tag(t) => (Response::Execution(Tag::new(&t)), vec![]),
        Outcome::Begin => (Response::TransactionStart(Tag::new("BEGIN")), vec![]),
        Outcome::End(t) => (Response::TransactionEnd(Tag::new(t)), vec![]),
        Outcome::Set(reports, tag) => (Response::Execution(Tag::new(tag)), reports),
    })
}

#[async_trait]
impl<D: Db> ExtendedQueryHandler for Handler<D> {
    type Statement = Arc<Prepared>;
    type QueryParser = StmtParser<D>;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        let shown_name = message.statement_name.as_deref().unwrap_or("");
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(stmt)) => {
                let prepared = &stmt.statement;
                let checks = (|| {
                    if message.parameters.len() != prepared.nparams {
                        return Err(error(
                            "08P01",
                            format!(
                                "bind message supplies {} parameters, but prepared statement \
                                 \"{shown_name}\" requires {}",
                                message.parameters.len(),
                                prepared.nparams
                            ),
                        ));
                    }
                    check_format_count(
                        "parameter",
                        message.parameter_format_codes.len(),
                        prepared.nparams,
                    )?;
                    check_format_count(
                        "result column",
                        message.result_column_format_codes.len(),
                        prepared.described.columns.len(),
                    )
                })();
                if let Err(e) = checks {
                    if let Ok(cell) = self.core.session(client) {
                        lock(&cell).fail();
                    }
                    return Err(pg(e));
                }
                let portal = Portal::try_new(&message, stmt)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                if !message.parameters.is_empty() {
                    return Err(pg(error(
                        "08P01",
                        format!(
                            "bind message supplies {} parameters, but prepared statement \
                             \"{shown_name}\" requires 0",
                            message.parameters.len()
                        ),
                    )));
                }
                client.portal_store().put_empty_portal(portal_name);
            }
            None => return Err(PgWireError::StatementNotFound(shown_name.to_owned())),
        }
        client
            .send(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let shown = message.name.as_deref().unwrap_or("");
        let (params, description) = match message.target_type {
            b'S' => match client.portal_store().get_statement(name) {
                Some(Entry::Value(stmt)) => {
                    let p = &stmt.statement;
                    let params: Vec<u32> = (0..p.nparams)
                        .map(|i| {
                            stmt.parameter_types
                                .get(i)
                                .cloned()
                                .flatten()
                                .or_else(|| p.described.params.get(i).map(|t| t.pg()))
                                .unwrap_or(Type::TEXT)
                                .oid()
                        })
                        .collect();
                    let columns = &p.described.columns;
                    let desc = (!columns.is_empty())
                        .then(|| row_description(columns, &Format::UnifiedText));
                    (Some(params), desc)
                }
                Some(Entry::Empty) => (Some(vec![]), None),
                None => return Err(PgWireError::StatementNotFound(shown.to_owned())),
            },
            b'P' => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => {
                    let columns = &portal.statement.statement.described.columns;
                    let desc = (!columns.is_empty())
                        .then(|| row_description(columns, &portal.result_column_format));
                    (None, desc)
                }
                Some(Entry::Empty) => (None, None),
                None => return Err(PgWireError::PortalNotFound(shown.to_owned())),
            },
            other => return Err(PgWireError::InvalidTargetType(other)),
        };
        if let Some(p) = params {
            client
                .feed(PgWireBackendMessage::ParameterDescription(
                    ParameterDescription::new(p),
                ))
                .await?;
        }
        match description {
            Some(d) => client.feed(PgWireBackendMessage::RowDescription(d)).await?,
            None => {
                client
                    .feed(PgWireBackendMessage::NoData(NoData::new()))
                    .await?
            }
        }
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let cell = self.core.session(client).map_err(pg)?;
        let params = match decode_params(portal) {
            Ok(p) => p,
            Err(e) => {
                lock(&cell).fail();
                return Err(pg(e));
            }
        };
        let outcome = self
            .core
            .run(
                &cell,
                &prepared.sql,
                &prepared.action,
                params,
                Some(&prepared.described),
            )
            .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                if matches!(prepared.action, Action::Commit) {
                    // A failed COMMIT has ended the transaction.
                    client.set_transaction_status(TransactionStatus::Idle);
                }
                return Err(pg(e));
            }
        };
        if let Action::Deallocate(name) = &prepared.action {
            deallocate(client.portal_store(), name.as_deref());
        }
        let (response, reports) = match to_response(outcome, &portal.result_column_format) {
            Ok(r) => r,
            Err(e) => {
                lock(&cell).fail();
                return Err(pg(e));
            }
        };
        for (k, v) in reports {
            client
                .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                    k, v,
                )))
                .await?;
        }
        Ok(response)
    }
}
