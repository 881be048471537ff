//! One connection's state: its read level, its run-time parameters
//! (`SET`/`SHOW`), and its explicit transaction, if one is open.

use crate::errors::{error, Fail};
use crate::sqltext::{lex, Tok};
use paxsql_types::ReadLevel;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The name of paxsql's own parameter.
pub(crate) const READ_LEVEL: &str = "paxsql.read_level";

/// Writes an explicit transaction may buffer at most.
pub(crate) const TX_STATEMENTS_MAX: usize = 10_000;

/// Parameters PostgreSQL reports to the client (`ParameterStatus`) whenever
/// they change.
pub(crate) const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "integer_datetimes",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
];

/// An explicit transaction's state.
#[derive(Debug, Default)]
pub(crate) enum Tx {
    /// No explicit transaction: every statement commits on its own.
    #[default]
    Idle,
    /// Between `BEGIN` and `COMMIT`.
    Open(crate::txn::OpenTx),
    /// A statement failed inside the transaction: everything until
    /// `COMMIT`/`ROLLBACK` is refused, and either one discards the writes.
    Failed,
}

/// One connection's state.
#[derive(Debug)]
pub(crate) struct Session {
    /// The level reads run at.
    pub level: ReadLevel,
    /// How long a read may run (`statement_timeout`); `None` (0): the
    /// node's default read timeout, as paxsql never runs a read unbounded.
    pub read_timeout: Option<std::time::Duration>,
    /// Run-time parameters by lower-cased name: (name as first written, value).
    settings: BTreeMap<String, (String, String)>,
    pub tx: Tx,
}

/// The session as stored in the connection's extensions.
#[derive(Debug)]
pub(crate) struct SessionCell(pub Mutex<Session>);

impl Session {
    /// A session with the defaults, the server's own parameters and then
    /// the client's startup parameters applied.
    pub fn new(
        server: &[(String, String)],
        startup: &BTreeMap<String, String>,
    ) -> Result<Session, Fail> {
        let mut s = Session {
            level: ReadLevel::Linearizable,
            read_timeout: None,
            settings: BTreeMap::new(),
            tx: Tx::Idle,
        };
        for (k, v) in server {
            s.put(k, v.clone());
        }
        for (k, v) in defaults() {
            if s.get(k).is_none() {
                s.put(k, (*v).to_owned());
            }
        }
        s.put(READ_LEVEL, "linearizable".into());
        for (k, v) in startup {
            match k.as_str() {
                "user" => s.put("session_authorization", v.clone()),
                "database" | "replication" => {}
                "options" => {
                    for (name, value) in parse_options(v)? {
                        s.set(&name, &value)?;
                    }
                }
                _ => {
                    s.set(k, v)?;
                }
            }
        }
        Ok(s)
    }

    fn put(&mut self, name: &str, value: String) {
        let key = name.to_ascii_lowercase();
        let display = self
            .settings
            .get(&key)
            .map_or_else(|| name.to_owned(), |(d, _)| d.clone());
        self.settings.insert(key, (display, value));
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.settings
            .get(&name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }

    /// Every parameter: (name, value).
    pub fn all(&self) -> impl Iterator<Item = (&str, &str)> {
        self.settings
            .values()
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Sets a parameter, checking the values paxsql cares about. Returns the
    /// name as PostgreSQL reports it if the change must be reported.
    pub fn set(&mut self, name: &str, value: &str) -> Result<Option<String>, Fail> {
        let key = name.to_ascii_lowercase();
        let value = match key.as_str() {
            READ_LEVEL => {
                let level = ReadLevel::parse(value).ok_or_else(|| {
                    error(
                        "22023",
                        format!(
                            "invalid value for parameter \"{READ_LEVEL}\": \"{value}\" \
                             (use local, leader or linearizable)"
                        ),
                    )
                })?;
                self.level = level;
                level.as_str().to_owned()
            }
            "statement_timeout" => {
                let ms = parse_timeout_ms(value).ok_or_else(|| {
                    error(
                        "22023",
                        format!(
                            "invalid value for parameter \"statement_timeout\": \"{value}\" \
                             (milliseconds, or a number with ms, s, min, h or d)"
                        ),
                    )
                })?;
                self.read_timeout = (ms > 0).then(|| std::time::Duration::from_millis(ms));
                ms.to_string()
            }
            "client_encoding" => {
                let v = value.to_ascii_uppercase().replace('-', "");
                if v == "SQL_ASCII" {
                    // "No conversion": UTF-8 bytes pass through as they are.
                    return Ok(self.store(name, "SQL_ASCII".to_owned()));
                }
                if v != "UTF8" && v != "UNICODE" {
                    return Err(error(
                        "22023",
                        format!("paxsql only speaks UTF8 (or SQL_ASCII), not client_encoding \"{value}\""),
                    ));
                }
                "UTF8".to_owned()
            }
            "standard_conforming_strings" => {
                if !matches!(value.to_ascii_lowercase().as_str(), "on" | "true" | "1") {
                    return Err(error(
                        "22023",
                        "paxsql only supports standard_conforming_strings = on",
                    ));
                }
                "on".to_owned()
            }
            "extra_float_digits" => {
                let n: i32 = value.trim().parse().map_err(|_| {
                    error(
                        "22023",
                        format!("invalid value for parameter \"extra_float_digits\": \"{value}\""),
                    )
                })?;
                if !(-15..=3).contains(&n) {
                    return Err(error(
                        "22023",
                        format!("{n} is outside the valid range for parameter \"extra_float_digits\" (-15 .. 3)"),
                    ));
                }
                n.to_string()
            }
            _ => value.to_owned(),
        };
        Ok(self.store(name, value))
    }

    /// Stores a checked value; returns the name to report, if reported.
    fn store(&mut self, name: &str, value: String) -> Option<String> {
        self.put(name, value);
        REPORTED
            .iter()
            .find(|r| r.eq_ignore_ascii_case(name))
            .map(|r| (*r).to_owned())
    }

    /// Back to the default (`RESET`).
    pub fn reset(&mut self, name: &str) -> Result<Option<String>, Fail> {
        let default = if name.eq_ignore_ascii_case(READ_LEVEL) {
            "linearizable".to_owned()
        } else {
            defaults()
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map_or_else(String::new, |(_, v)| (*v).to_owned())
        };
        self.set(name, &default)
    }

    /// Whether a statement may run, given the transaction state.
    pub fn check_not_failed(&self) -> Result<(), Fail> {
        if matches!(self.tx, Tx::Failed) {
            return Err(error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        Ok(())
    }

    /// After an error: an open transaction can no longer commit.
    pub fn fail(&mut self) {
        if !matches!(self.tx, Tx::Idle) {
            self.tx = Tx::Failed;
        }
    }
}

fn defaults() -> &'static [(&'static str, &'static str)] {
    &[
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("TimeZone", "UTC"),
        ("extra_float_digits", "1"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("search_path", "\"$user\", public"),
        ("transaction_isolation", "read committed"),
        ("default_transaction_isolation", "read committed"),
        ("default_transaction_read_only", "off"),
        ("max_identifier_length", "63"),
        ("statement_timeout", "0"),
        ("lock_timeout", "0"),
        ("idle_in_transaction_session_timeout", "0"),
        ("bytea_output", "hex"),
    ]
}

/// A PostgreSQL time setting in milliseconds: `1500`, `'1500ms'`, `2s`,
/// `1min`, `1h`, `1d`.
fn parse_timeout_ms(value: &str) -> Option<u64> {
    let v = value.trim().trim_matches('\'').trim().to_ascii_lowercase();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let n: u64 = number.parse().ok()?;
    let per = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(per)
}

/// `-c name=value` and `--name=value` from the startup `options`.
pub(crate) fn parse_options(options: &str) -> Result<Vec<(String, String)>, Fail> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let assignment = if w == "-c" {
            it.next().unwrap_or_default()
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_owned()
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_owned()
        } else {
            return Err(error(
                "22023",
                format!("unsupported startup option {w:?}: use -c name=value"),
            ));
        };
        let (k, v) = assignment.split_once('=').ok_or_else(|| {
            error(
                "22023",
                format!("startup option {assignment:?} is not name=value"),
            )
        })?;
        out.push((k.replace('-', "_").trim().to_owned(), v.to_owned()));
    }
    Ok(out)
}

/// A parsed `SET`, `RESET` or `SHOW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Setting {
    Set {
        name: String,
        value: String,
    },
    /// `SET TRANSACTION ...`, `SET SESSION CHARACTERISTICS ...`: accepted, no effect.
    Ignored,
    Reset(String),
    ResetAll,
    Show(String),
    ShowAll,
}

/// Parses `SET [SESSION|LOCAL] name {=|TO} value[, ...]`, `SET TIME ZONE v`,
/// `SET NAMES v`, `SET SCHEMA v`, `RESET name|ALL`, `SHOW name|ALL`.
pub(crate) fn parse_setting(sql: &str) -> Result<Setting, Fail> {
    let tokens = lex(sql);
    let word = |i: usize| -> Option<String> {
        match tokens.get(i)?.tok {
            Tok::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        }
    };
    let bad = || error("42601", format!("cannot parse {sql:?}"));
    let first = word(0).ok_or_else(bad)?;
    let mut i = 1;
    // A dotted or quoted parameter name starting at token i; returns (name, next).
    let name_at = |mut i: usize| -> Option<(String, usize)> {
        let mut name = String::new();
        loop {
            match tokens.get(i)?.tok {
                Tok::Word(w) => name.push_str(w),
                Tok::Ident(q) => name.push_str(&q[1..q.len() - 1]),
                _ => return None,
            }
            i += 1;
            if tokens.get(i).map(|t| t.tok) == Some(Tok::Punct('.')) {
                name.push('.');
                i += 1;
            } else {
                return Some((name, i));
            }
        }
    };
    match first.as_str() {
        "SHOW" => {
            if word(1).as_deref() == Some("ALL") && tokens.len() == 2 {
                return Ok(Setting::ShowAll);
            }
            // SHOW TIME ZONE / SHOW TRANSACTION ISOLATION LEVEL
            if word(1).as_deref() == Some("TIME") && word(2).as_deref() == Some("ZONE") {
                return Ok(Setting::Show("TimeZone".into()));
            }
            if word(1).as_deref() == Some("TRANSACTION") {
                return Ok(Setting::Show("transaction_isolation".into()));
            }
            let (name, next) = name_at(1).ok_or_else(bad)?;
            if next != tokens.len() {
                return Err(bad());
            }
            Ok(Setting::Show(name))
        }
        "RESET" => {
            if word(1).as_deref() == Some("ALL") {
                return Ok(Setting::ResetAll);
            }
            let (name, _) = name_at(1).ok_or_else(bad)?;
            Ok(Setting::Reset(name))
        }
        "SET" => {
            if matches!(word(1).as_deref(), Some("SESSION" | "LOCAL")) {
                i = 2;
            }
            match word(i).as_deref() {
                Some("TRANSACTION" | "CHARACTERISTICS" | "AUTHORIZATION" | "ROLE") => {
                    return Ok(Setting::Ignored)
                }
                Some("TIME") if word(i + 1).as_deref() == Some("ZONE") => {
                    let value = values(sql, &tokens[i + 2..]).ok_or_else(bad)?;
                    return Ok(Setting::Set {
                        name: "TimeZone".into(),
                        value,
                    });
                }
                Some("NAMES") => {
                    let value = values(sql, &tokens[i + 1..]).ok_or_else(bad)?;
                    return Ok(Setting::Set {
                        name: "client_encoding".into(),
                        value,
                    });
                }
                Some("SCHEMA") => {
                    let value = values(sql, &tokens[i + 1..]).ok_or_else(bad)?;
                    return Ok(Setting::Set {
                        name: "search_path".into(),
                        value,
                    });
                }
                Some("SESSION") if word(i + 1).as_deref() == Some("CHARACTERISTICS") => {
                    return Ok(Setting::Ignored)
                }
                _ => {}
            }
            let (name, next) = name_at(i).ok_or_else(bad)?;
            let sep_ok = match tokens.get(next).map(|t| t.tok) {
                Some(Tok::Punct('=')) => true,
                Some(Tok::Word(w)) => w.eq_ignore_ascii_case("TO"),
                _ => false,
            };
            if !sep_ok {
                return Err(bad());
            }
            let value = values(sql, &tokens[next + 1..]).ok_or_else(bad)?;
            Ok(Setting::Set { name, value })
        }
        _ => Err(bad()),
    }
}

/// A SET value list: words, numbers and strings, joined with ", ";
/// `DEFAULT` is the empty string.
fn values(sql: &str, tokens: &[crate::sqltext::Token<'_>]) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for t in tokens {
        let raw = &sql[t.start..t.end];
        match t.tok {
            Tok::Punct(',') => out.push(std::mem::take(&mut cur)),
            Tok::Str => cur.push_str(&unquote(raw)),
            Tok::Ident(q) => cur.push_str(&q[1..q.len() - 1]),
            Tok::Word(w) if w.eq_ignore_ascii_case("DEFAULT") && tokens.len() == 1 => {
                return Some(String::new())
            }
            Tok::Word(_) | Tok::Num | Tok::Punct('-' | '+' | '.' | ':' | '/') => cur.push_str(raw),
            _ => return None,
        }
    }
    out.push(cur);
    if out.iter().all(String::is_empty) && tokens.is_empty() {
        return None;
    }
    Some(out.join(", "))
}

/// The content of a `'...'` literal (also `E'...'`, minus escapes other than `''`).
fn unquote(raw: &str) -> String {
    let body = raw.trim_start_matches(['E', 'e']);
    let body = body.strip_prefix('\'').unwrap_or(body);
    let body = body.strip_suffix('\'').unwrap_or(body);
    body.replace("''", "'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_reset_parse() {
        assert_eq!(
            parse_setting("SET paxsql.read_level = 'local'").unwrap(),
            Setting::Set {
                name: "paxsql.read_level".into(),
                value: "local".into()
            }
        );
        assert_eq!(
            parse_setting("set extra_float_digits to 3").unwrap(),
            Setting::Set {
                name: "extra_float_digits".into(),
                value: "3".into()
            }
        );
        assert_eq!(
            parse_setting("SET SESSION DateStyle = ISO, MDY").unwrap(),
            Setting::Set {
                name: "DateStyle".into(),
                value: "ISO, MDY".into()
            }
        );
        assert_eq!(
            parse_setting("SET TIME ZONE 'UTC'").unwrap(),
            Setting::Set {
                name: "TimeZone".into(),
                value: "UTC".into()
            }
        );
        assert_eq!(
            parse_setting("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").unwrap(),
            Setting::Ignored
        );
        assert_eq!(
            parse_setting("SHOW paxsql.read_level").unwrap(),
            Setting::Show("paxsql.read_level".into())
        );
        assert_eq!(parse_setting("SHOW ALL").unwrap(), Setting::ShowAll);
        assert_eq!(
            parse_setting("RESET application_name").unwrap(),
            Setting::Reset("application_name".into())
        );
        assert!(parse_setting("SET x").is_err());
    }

    #[test]
    fn startup_options_set_the_read_level() {
        let mut startup = BTreeMap::new();
        startup.insert(
            "options".into(),
            "-c paxsql.read_level=local --DateStyle=ISO".into(),
        );
        startup.insert("application_name".into(), "psql".into());
        let s = Session::new(&[], &startup).unwrap();
        assert_eq!(s.level, ReadLevel::Local);
        assert_eq!(s.get("datestyle"), Some("ISO"));
        assert_eq!(s.get("application_name"), Some("psql"));
        startup.insert("options".into(), "-c paxsql.read_level=sometimes".into());
        assert_eq!(Session::new(&[], &startup).unwrap_err().code, "22023");
    }

    #[test]
    fn values_are_checked() {
        let mut s = Session::new(&[], &BTreeMap::new()).unwrap();
        assert_eq!(s.level, ReadLevel::Linearizable);
        assert!(s.set("client_encoding", "LATIN1").is_err());
        assert_eq!(
            s.set("client_encoding", "utf-8").unwrap().as_deref(),
            Some("client_encoding")
        );
        assert!(s.set("extra_float_digits", "9").is_err());
        s.set("paxsql.read_level", "leader").unwrap();
        assert_eq!(s.level, ReadLevel::Leader);
        s.reset("paxsql.read_level").unwrap();
        assert_eq!(s.level, ReadLevel::Linearizable);
        assert_eq!(s.get("PAXSQL.READ_LEVEL"), Some("linearizable"));
    }
}
