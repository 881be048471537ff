//! PostgreSQL values in and out of paxsql's five [`Value`] kinds.
//!
//! # Results
//!
//! The engine reads results in PostgreSQL's binary format (what
//! tokio-postgres asks for) and maps each column type to the value a JSON
//! client can use without losing anything:
//!
//! | PostgreSQL | paxsql value |
//! |---|---|
//! | `int2`, `int4`, `int8`, `oid` | integer |
//! | `bool` | integer 1 / 0 (as SQLite returns them) |
//! | `float4`, `float8` | real (`NaN` and infinities as text) |
//! | `numeric` | integer when whole and within 64 bits, real when a double holds it exactly, text (all its digits) otherwise |
//! | `text`, `varchar`, `char`, `name`, `json`, `jsonb`, `xml`, enums, `uuid`, `inet`, `cidr`, `macaddr`, `bit` | text |
//! | `bytea` | blob (base64 in JSON) |
//! | `date`, `time`, `timetz`, `timestamp`, `timestamptz`, `interval` | text, exactly as PostgreSQL prints it with `DateStyle=ISO`, `TimeZone=UTC`, `IntervalStyle=postgres` |
//! | arrays of any of these | text, in PostgreSQL's array syntax (`{1,2,NULL}`) |
//! | anything else (ranges, composites, geometric types, ...) | the statement fails and says to cast the column to text |
//!
//! The `types` of a result are PostgreSQL's type names (`int4`, `text`,
//! `timestamptz`, `int4[]`).
//!
//! # Parameters
//!
//! The HTTP API binds JSON values to `?`, `?N`, `$N` (positional) or `:name`,
//! `@name`, `$name` (named). The engine inlines each value into the
//! statement as a quoted literal of unknown type (`'42'`, `'fiona'`, `NULL`,
//! `'\x00ff'::bytea`) and sends the statement without parameters. PostgreSQL
//! then gives each value the type its context asks for — the same inference
//! it does for an untyped `$1` — so a JSON number fits an `int`, `numeric`
//! or `text` column, `true` (1) fits a `bool`, and a string fits a
//! `timestamptz`. Where the context does not say (`SELECT ?`), the value is
//! text: write `?::int`. Binding through the extended protocol instead would
//! force a Rust type per parameter before the server has inferred the
//! column's, and inlining keeps the statement that every replica runs a
//! pure function of what the log holds.
//!
//! A text value PostgreSQL would read as the clock (`'now'`, `'today'`) is
//! inlined as `'now'::text`: it stays the word and cannot become a
//! different timestamp on each replica.

use paxsql_types::{Params, Value};
use std::borrow::Cow;
use tokio_postgres::types::{Kind, Type};

use crate::pg_lex::{lex, Tok};

/// The name reported in a result's `types`.
pub(crate) fn type_name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(elem) => format!("{}[]", elem.name()),
        _ => ty.name().to_owned(),
    }
}

/// A result cell as a paxsql value.
pub(crate) fn decode(ty: &Type, raw: Option<&[u8]>, column: &str) -> Result<Value, String> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    let value = match *ty {
        Type::BOOL => Value::Integer(i64::from(bytes::<1>(raw)?[0] != 0)),
        Type::INT2 => Value::Integer(i64::from(i16::from_be_bytes(bytes(raw)?))),
        Type::INT4 => Value::Integer(i64::from(i32::from_be_bytes(bytes(raw)?))),
        Type::INT8 => Value::Integer(i64::from_be_bytes(bytes(raw)?)),
        Type::OID => Value::Integer(i64::from(u32::from_be_bytes(bytes(raw)?))),
        Type::FLOAT4 => real(f64::from(f32::from_be_bytes(bytes(raw)?))),
        Type::FLOAT8 => real(f64::from_be_bytes(bytes(raw)?)),
        Type::NUMERIC => numeric_value(&numeric_text(raw)?),
        Type::BYTEA => Value::Blob(raw.to_vec()),
        Type::VOID => Value::Null,
        _ => match text(ty, raw)? {
            Some(t) => Value::Text(t),
            None => {
                return Err(format!(
                    "column {column} has type {}, which paxsql cannot return yet; cast it to \
                     text ({column}::text)",
                    ty.name()
                ))
            }
        },
    };
    Ok(value)
}

fn real(f: f64) -> Value {
    if f.is_finite() {
        Value::Real(f)
    } else {
        Value::Text(float_text(f, 15))
    }
}

fn bytes<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("a value of {} bytes where {N} were expected", raw.len()))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.0.len() < N {
            return Err("a value ended early".to_owned());
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        bytes(head)
    }
    fn i16(&mut self) -> Result<i16, String> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, String> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.take().map(i64::from_be_bytes)
    }
    fn slice(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("a value ended early".to_owned());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
}

/// PostgreSQL's text output of a value, or `None` for a type paxsql does not know.
fn text(ty: &Type, raw: &[u8]) -> Result<Option<String>, String> {
    let utf8 = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let t = match *ty {
        Type::BOOL => (if raw.first() == Some(&1) { "t" } else { "f" }).to_owned(),
        Type::INT2 => i16::from_be_bytes(bytes(raw)?).to_string(),
        Type::INT4 => i32::from_be_bytes(bytes(raw)?).to_string(),
        Type::INT8 => i64::from_be_bytes(bytes(raw)?).to_string(),
        Type::OID => u32::from_be_bytes(bytes(raw)?).to_string(),
        Type::FLOAT4 => float_text(f64::from(f32::from_be_bytes(bytes(raw)?)), 6),
        Type::FLOAT8 => float_text(f64::from_be_bytes(bytes(raw)?), 15),
        Type::NUMERIC => numeric_text(raw)?,
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::JSON
        | Type::XML
        | Type::CHAR => utf8(raw),
        Type::JSONB => utf8(raw.get(1..).unwrap_or_default()),
        Type::BYTEA => {
            let mut s = String::with_capacity(2 + 2 * raw.len());
            s.push_str("\\x");
            for b in raw {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
        Type::UUID => {
            let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if h.len() != 32 {
                return Err("a uuid of the wrong length".to_owned());
            }
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }
        Type::DATE => date_text(i32::from_be_bytes(bytes(raw)?)),
        Type::TIME => time_text(i64::from_be_bytes(bytes(raw)?)),
        Type::TIMETZ => {
            let mut r = Reader(raw);
            let micros = r.i64()?;
            let west = r.i32()?;
            format!("{}{}", time_text(micros), zone_text(-west))
        }
        Type::TIMESTAMP => timestamp_text(i64::from_be_bytes(bytes(raw)?), false),
        Type::TIMESTAMPTZ => timestamp_text(i64::from_be_bytes(bytes(raw)?), true),
        Type::INTERVAL => {
            let mut r = Reader(raw);
            let micros = r.i64()?;
            let days = r.i32()?;
            let months = r.i32()?;
            interval_text(micros, days, months)
        }
        Type::INET | Type::CIDR => inet_text(raw, *ty == Type::CIDR)?,
        Type::MACADDR => raw
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
        Type::BIT | Type::VARBIT => {
            let mut r = Reader(raw);
            let len = usize::try_from(r.i32()?).unwrap_or(0);
            (0..len)
                .map(|i| {
                    let byte = r.0.get(i / 8).copied().unwrap_or(0);
                    if byte & (0x80 >> (i % 8)) != 0 {
                        '1'
                    } else {
                        '0'
                    }
                })
                .collect()
        }
        _ => match ty.kind() {
            Kind::Enum(_) => utf8(raw),
            Kind::Domain(base) => return text(base, raw),
            Kind::Array(elem) => match array_text(elem, raw)? {
                Some(t) => t,
                None => return Ok(None),
            },
            // citext and other extension types that send their text.
            _ if ty.name() == "citext" => utf8(raw),
            _ => return Ok(None),
        },
    };
    Ok(Some(t))
}

/// An array in PostgreSQL's text syntax: `{1,2}`, `{{a,b},{c,NULL}}`, `[0:1]={x,y}`.
fn array_text(elem: &Type, raw: &[u8]) -> Result<Option<String>, String> {
    let mut r = Reader(raw);
    let ndim = usize::try_from(r.i32()?).map_err(|_| "a negative array dimension count")?;
    let _has_null = r.i32()?;
    let _elem_oid = r.i32()?;
    if ndim == 0 {
        return Ok(Some("{}".to_owned()));
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut bounds = String::new();
    for _ in 0..ndim {
        let len = usize::try_from(r.i32()?).map_err(|_| "a negative array length")?;
        let lower = r.i32()?;
        dims.push(len);
        if lower != 1 {
            bounds.push_str(&format!("[{lower}:{}]", i64::from(lower) + len as i64 - 1));
        }
    }
    let total: usize = dims.iter().product();
    let mut items = Vec::with_capacity(total);
    for _ in 0..total {
        let len = r.i32()?;
        if len < 0 {
            items.push("NULL".to_owned());
            continue;
        }
        let cell = r.slice(len as usize)?;
        let Some(t) = text(elem, cell)? else {
            return Ok(None);
        };
        items.push(quote_array_item(&t));
    }
    let mut out = String::new();
    if !bounds.is_empty() {
        out.push_str(&bounds);
        out.push('=');
    }
    let mut next = 0;
    nest(&dims, &items, &mut next, &mut out);
    Ok(Some(out))
}

fn nest(dims: &[usize], items: &[String], next: &mut usize, out: &mut String) {
    out.push('{');
    for i in 0..dims[0] {
        if i > 0 {
            out.push(',');
        }
        if dims.len() == 1 {
            out.push_str(&items[*next]);
            *next += 1;
        } else {
            nest(&dims[1..], items, next, out);
        }
    }
    out.push('}');
}

fn quote_array_item(t: &str) -> String {
    let needs = t.is_empty()
        || t.eq_ignore_ascii_case("null")
        || t.chars()
            .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
    if !needs {
        return t.to_owned();
    }
    let mut s = String::with_capacity(t.len() + 2);
    s.push('"');
    for c in t.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// A float as PostgreSQL prints it (shortest exact digits; exponent form
/// below 1e-4 and from 1e`exp_max` on).
fn float_text(f: f64, exp_max: i32) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..exp_max).contains(&exp) {
        format!("{f}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// A `numeric` in PostgreSQL's text form, from its binary form.
fn numeric_text(raw: &[u8]) -> Result<String, String> {
    let mut r = Reader(raw);
    let ndigits = usize::try_from(r.i16()?).map_err(|_| "a negative digit count")?;
    let weight = i32::from(r.i16()?);
    let sign = r.i16()? as u16;
    let dscale = usize::try_from(r.i16()?).map_err(|_| "a negative scale")?;
    match sign {
        0xC000 => return Ok("NaN".to_owned()),
        0xD000 => return Ok("Infinity".to_owned()),
        0xF000 => return Ok("-Infinity".to_owned()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(ndigits);
    for _ in 0..ndigits {
        digits.push(r.i16()?);
    }
    let digit = |i: i32| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                out.push_str(&digit(0).to_string());
            } else {
                out.push_str(&format!("{:04}", digit(i)));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        out.push_str(&frac);
    }
    Ok(out)
}

/// A numeric as the most useful exact value: integer, real, or its text.
fn numeric_value(text: &str) -> Value {
    if !text.contains('.') {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Integer(i);
        }
    }
    if let Ok(f) = text.parse::<f64>() {
        let canonical = text.trim_end_matches('0').trim_end_matches('.');
        let canonical = if canonical.is_empty() || canonical == "-" {
            "0"
        } else {
            canonical
        };
        if f.is_finite() && format!("{f}") == canonical {
            return Value::Real(f);
        }
    }
    Value::Text(text.to_owned())
}

/// Days since 2000-01-01 between the Unix epoch and PostgreSQL's.
const PG_EPOCH_DAYS: i64 = 10_957;

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
///
/// Howard Hinnant's `civil_from_days`, as in [`crate::determinism`].
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// A date with its era, as PostgreSQL prints it: `0044-03-15 BC` for -43.
fn ymd_text(days_since_unix: i64) -> (String, bool) {
    let (y, m, d) = civil_from_days(days_since_unix);
    if y <= 0 {
        (format!("{:04}-{m:02}-{d:02}", 1 - y), true)
    } else {
        (format!("{y:04}-{m:02}-{d:02}"), false)
    }
}

fn date_text(pg_days: i32) -> String {
    match pg_days {
        i32::MAX => "infinity".to_owned(),
        i32::MIN => "-infinity".to_owned(),
        d => {
            let (date, bc) = ymd_text(i64::from(d) + PG_EPOCH_DAYS);
            if bc {
                format!("{date} BC")
            } else {
                date
            }
        }
    }
}

/// `HH:MM:SS` with the fraction's trailing zeros cut, as PostgreSQL does.
fn time_text(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    push_fraction(&mut s, frac);
    s
}

fn push_fraction(s: &mut String, frac_micros: i64) {
    if frac_micros != 0 {
        let f = format!(".{frac_micros:06}");
        s.push_str(f.trim_end_matches('0'));
    }
}

/// `+00`, `+05:30`, `-08` (east of UTC is positive).
fn zone_text(east_secs: i32) -> String {
    let sign = if east_secs < 0 { '-' } else { '+' };
    let a = east_secs.unsigned_abs();
    let mut s = format!("{sign}{:02}", a / 3600);
    if !a.is_multiple_of(3600) {
        s.push_str(&format!(":{:02}", a / 60 % 60));
        if !a.is_multiple_of(60) {
            s.push_str(&format!(":{:02}", a % 60));
        }
    }
    s
}

fn timestamp_text(micros: i64, tz: bool) -> String {
    match micros {
        i64::MAX => return "infinity".to_owned(),
        i64::MIN => return "-infinity".to_owned(),
        _ => {}
    }
    let days = micros.div_euclid(86_400_000_000);
    let of_day = micros.rem_euclid(86_400_000_000);
    let (date, bc) = ymd_text(days + PG_EPOCH_DAYS);
    let mut s = format!("{date} {}", time_text(of_day));
    if tz {
        s.push_str("+00");
    }
    if bc {
        s.push_str(" BC");
    }
    s
}

/// An interval in PostgreSQL's default `postgres` style: `1 year 2 mons 3 days 04:05:06.5`.
fn interval_text(micros: i64, days: i32, months: i32) -> String {
    let mut out = String::new();
    let mut is_before = false;
    let mut is_zero = true;
    let mut part = |value: i64, unit: &str, out: &mut String| {
        if value == 0 {
            return;
        }
        if !is_zero {
            out.push(' ');
        }
        if is_before && value > 0 {
            out.push('+');
        }
        out.push_str(&format!(
            "{value} {unit}{}",
            if value != 1 { "s" } else { "" }
        ));
        is_before = value < 0;
        is_zero = false;
    };
    part(i64::from(months / 12), "year", &mut out);
    part(i64::from(months % 12), "mon", &mut out);
    part(i64::from(days), "day", &mut out);
    if is_zero || micros != 0 {
        let minus = micros < 0;
        let a = micros.unsigned_abs();
        let secs = a / 1_000_000;
        if !is_zero {
            out.push(' ');
        }
        if minus {
            out.push('-');
        } else if is_before {
            out.push('+');
        }
        out.push_str(&format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        ));
        push_fraction(&mut out, (a % 1_000_000) as i64);
    }
    out
}

fn inet_text(raw: &[u8], cidr: bool) -> Result<String, String> {
    let mut r = Reader(raw);
    let [family, bits, _is_cidr, n] = r.take::<4>()?;
    let addr = r.slice(usize::from(n))?;
    let (text, max) = match (family, addr.len()) {
        (2, 4) => (
            std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string(),
            32,
        ),
        (3, 16) => {
            let a: [u8; 16] = bytes(addr)?;
            (std::net::Ipv6Addr::from(a).to_string(), 128)
        }
        _ => return Err("an inet value of an unknown family".to_owned()),
    };
    Ok(if cidr || bits != max {
        format!("{text}/{bits}")
    } else {
        text
    })
}

// ---------------------------------------------------------------------------
// Parameters

/// The statement with its parameters inlined as literals (see the module docs).
pub(crate) fn inline_params<'s>(sql: &'s str, params: &Params) -> Result<Cow<'s, str>, String> {
    match params {
        Params::None => Ok(Cow::Borrowed(sql)),
        Params::Positional(values) => inline_positional(sql, values).map(Cow::Owned),
        Params::Named(pairs) => inline_named(sql, pairs).map(Cow::Owned),
    }
}

fn inline_positional(sql: &str, values: &[Value]) -> Result<String, String> {
    let tokens = lex(sql);
    let mut edits = Vec::new();
    let mut highest = 0usize;
    let mut it = tokens.iter().peekable();
    while let Some(t) = it.next() {
        let index = match t.tok {
            Tok::Question => {
                // `?3` names its index; a bare `?` takes the next one (SQLite's rule).
                match it.peek() {
                    Some(n) if n.tok == Tok::Number && n.range.start == t.range.end => {
                        let n = it.next().expect("peeked");
                        let index: usize = n
                            .text(sql)
                            .parse()
                            .map_err(|_| format!("{} is not a parameter number", n.text(sql)))?;
                        edits.push((t.range.start..n.range.end, index));
                        highest = highest.max(index);
                        continue;
                    }
                    _ => highest + 1,
                }
            }
            Tok::Positional(index) => index,
            _ => continue,
        };
        if index == 0 {
            return Err("parameters are numbered from 1".to_owned());
        }
        highest = highest.max(index);
        edits.push((t.range.clone(), index));
    }
    if highest != values.len() {
        return Err(format!(
            "wrong number of parameters: {} given, the statement has {highest}",
            values.len()
        ));
    }
    let mut edits: Vec<_> = edits
        .into_iter()
        .map(|(range, index)| (range, literal(&values[index - 1])))
        .collect();
    Ok(crate::pg_lex::splice(sql, &mut edits))
}

fn inline_named(sql: &str, pairs: &[(String, Value)]) -> Result<String, String> {
    let mut used = vec![false; pairs.len()];
    let mut edits = Vec::new();
    for t in lex(sql) {
        if let Tok::Named(_, name) = &t.tok {
            if let Some((i, (_, v))) = pairs
                .iter()
                .enumerate()
                .find(|(_, (n, _))| n.trim_start_matches([':', '@', '$']) == name)
            {
                used[i] = true;
                edits.push((t.range.clone(), literal(v)));
            }
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(format!(
            "the statement has no parameter named {}",
            pairs[i].0
        ));
    }
    Ok(crate::pg_lex::splice(sql, &mut edits))
}

/// A value as a PostgreSQL literal of unknown type (bytea typed).
pub(crate) fn literal(v: &Value) -> String {
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
    match v {
        Value::Null => "NULL".to_owned(),
        Value::Integer(i) => format!("'{i}'"),
        Value::Real(f) if f.is_nan() => "'NaN'".to_owned(),
        Value::Real(f) if f.is_infinite() => (if *f > 0.0 {
            "'Infinity'"
        } else {
            "'-Infinity'"
        })
        .to_owned(),
        Value::Real(f) => format!("'{f:?}'"),
        Value::Text(s) if crate::pg_determinism::reads_clock(s) => format!("{}::text", quoted(s)),
        Value::Text(s) => quoted(s),
        Value::Blob(b) => {
            let mut s = String::with_capacity(12 + 2 * b.len());
            s.push_str("'\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s.push_str("'::bytea");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_parameters_become_literals() {
        let p = Params::Positional(vec![
            Value::Integer(-1),
            Value::Text("it's".into()),
            Value::Null,
            Value::Blob(vec![0, 255]),
        ]);
        assert_eq!(
            inline_params("SELECT 1-?, ?, '?', ? -- ?\n, ?", &p).unwrap(),
            "SELECT 1-'-1', 'it''s', '?', NULL -- ?\n, '\\x00ff'::bytea"
        );
        let p = Params::Positional(vec![Value::Integer(5), Value::Real(2.5)]);
        assert_eq!(
            inline_params("SELECT $2, $1, ?1::int", &p).unwrap(),
            "SELECT '2.5', '5', '5'::int"
        );
        let e = inline_params("SELECT ?, ?", &Params::Positional(vec![Value::Null])).unwrap_err();
        assert!(e.contains("wrong number of parameters"), "{e}");
    }

    #[test]
    fn named_parameters_and_casts() {
        let p = Params::Named(vec![
            ("a".into(), Value::Integer(1)),
            (":b".into(), Value::Text("now".into())),
        ]);
        assert_eq!(
            inline_params("SELECT :a::int, @b, x::text", &p).unwrap(),
            "SELECT '1'::int, 'now'::text, x::text"
        );
        let e = inline_params("SELECT :a", &Params::Named(vec![("z".into(), Value::Null)]))
            .unwrap_err();
        assert!(e.contains("no parameter named z"), "{e}");
    }

    #[test]
    fn text_forms_match_postgres() {
        assert_eq!(timestamp_text(0, true), "2000-01-01 00:00:00+00");
        assert_eq!(timestamp_text(1_500_000, false), "2000-01-01 00:00:01.5");
        assert_eq!(date_text(-730_120), "0001-12-31 BC");
        assert_eq!(interval_text(0, 0, 0), "00:00:00");
        assert_eq!(
            interval_text(14_706_500_000, 3, 14),
            "1 year 2 mons 3 days 04:05:06.5"
        );
        assert_eq!(interval_text(-3_600_000_000, 1, 0), "1 day -01:00:00");
        assert_eq!(interval_text(0, -1, -12), "-1 years -1 days");
        assert_eq!(float_text(1e20, 15), "1e+20");
        assert_eq!(float_text(0.00001, 15), "1e-05");
        assert_eq!(float_text(123.5, 15), "123.5");
        assert_eq!(quote_array_item("a b"), "\"a b\"");
        assert_eq!(zone_text(19_800), "+05:30");
    }

    #[test]
    fn numerics_keep_every_digit() {
        assert_eq!(numeric_value("42"), Value::Integer(42));
        assert_eq!(numeric_value("2.50"), Value::Real(2.5));
        assert_eq!(
            numeric_value("0.33333333333333333333"),
            Value::Text("0.33333333333333333333".into())
        );
        assert_eq!(
            numeric_value("99999999999999999999"),
            Value::Text("99999999999999999999".into())
        );
        // 1234.5678 with scale 6: weight 0, digits [1234, 5678].
        let raw = [0, 2, 0, 0, 0, 0, 0, 6, 0x04, 0xD2, 0x16, 0x2E];
        assert_eq!(numeric_text(&raw).unwrap(), "1234.567800");
    }
}
