//! How SQLite's dynamic values meet PostgreSQL's static types.
//!
//! A result column gets one of five PostgreSQL types, chosen before any row is
//! read: from the column's declared type by SQLite's own affinity rules
//! (`INT` → `int8`; `CHAR`/`CLOB`/`TEXT` → `text`; `BLOB` → `bytea`;
//! `REAL`/`FLOA`/`DOUB` → `float8`; `BOOL` → `bool`; other numeric names →
//! `float8`; dates and times → `text`), or for an expression from its shape
//! (see `describe`), and `text` when nothing is known. Every value of the
//! column is then encoded as that type. A value that does not fit (text in an
//! `INTEGER` column) is sent as its own text in the text format and is an
//! error in the binary format, where it cannot be represented.

use bytes::{BufMut, BytesMut};
use paxsql_types::Value;
use pgwire::api::Type;

/// The PostgreSQL types paxsql sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PgType {
    Bool,
    Int8,
    Float8,
    Text,
    Bytea,
}

impl PgType {
    /// The wire type.
    pub fn pg(self) -> Type {
        match self {
            PgType::Bool => Type::BOOL,
            PgType::Int8 => Type::INT8,
            PgType::Float8 => Type::FLOAT8,
            PgType::Text => Type::TEXT,
            PgType::Bytea => Type::BYTEA,
        }
    }

    /// `pg_type.typlen`.
    pub fn size(self) -> i16 {
        match self {
            PgType::Bool => 1,
            PgType::Int8 | PgType::Float8 => 8,
            PgType::Text | PgType::Bytea => -1,
        }
    }

    /// The type for a declared SQLite column type; `None` for none declared.
    pub fn from_decltype(decl: &str) -> Option<PgType> {
        let d = decl.trim().to_ascii_uppercase();
        if d.is_empty() {
            return None;
        }
        // SQLite's affinity rules (https://sqlite.org/datatype3.html, 3.1), in order.
        Some(if d.contains("INT") {
            PgType::Int8
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
            PgType::Text
        } else if d.contains("BLOB") || d == "BYTEA" {
            PgType::Bytea
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            PgType::Float8
        } else if d.starts_with("BOOL") {
            PgType::Bool
        } else if d.starts_with("NUMERIC") || d.starts_with("DECIMAL") || d.starts_with("NUMBER") {
            PgType::Float8
        } else {
            // DATE, DATETIME, TIMESTAMP, TIME, JSON, UUID, ...: NUMERIC affinity
            // in SQLite, but their values are almost always text.
            PgType::Text
        })
    }
}

/// Appends one DataRow field (length and bytes; -1 for NULL).
pub(crate) fn encode_field(
    out: &mut BytesMut,
    value: &Value,
    ty: PgType,
    binary: bool,
) -> Result<(), String> {
    if matches!(value, Value::Null) {
        out.put_i32(-1);
        return Ok(());
    }
    let len_at = out.len();
    out.put_i32(0);
    if binary {
        encode_binary(out, value, ty)?;
    } else {
        encode_text(out, value, ty);
    }
    let len = (out.len() - len_at - 4) as i32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn encode_text(out: &mut BytesMut, value: &Value, ty: PgType) {
    let text = match (ty, value) {
        (PgType::Int8, v) => as_i64(v).map(|i| i.to_string()),
        (PgType::Float8, v) => as_f64(v).map(float_text),
        (PgType::Bool, v) => as_bool(v).map(|b| if b { "t" } else { "f" }.to_owned()),
        (PgType::Bytea, Value::Blob(b)) => Some(bytea_hex(b)),
        (PgType::Bytea, Value::Text(t)) => Some(bytea_hex(t.as_bytes())),
        _ => None,
    };
    out.put_slice(text.unwrap_or_else(|| sqlite_text(value)).as_bytes());
}

fn encode_binary(out: &mut BytesMut, value: &Value, ty: PgType) -> Result<(), String> {
    let misfit = || {
        format!(
            "a {} value cannot be sent as {} in the binary format",
            storage_class(value),
            ty.pg().name()
        )
    };
    match ty {
        PgType::Int8 => out.put_i64(as_i64(value).ok_or_else(misfit)?),
        PgType::Float8 => out.put_f64(as_f64(value).ok_or_else(misfit)?),
        PgType::Bool => out.put_u8(u8::from(as_bool(value).ok_or_else(misfit)?)),
        PgType::Bytea => match value {
            Value::Blob(b) => out.put_slice(b),
            other => out.put_slice(sqlite_text(other).as_bytes()),
        },
        PgType::Text => out.put_slice(sqlite_text(value).as_bytes()),
    }
    Ok(())
}

fn storage_class(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Integer(_) => "INTEGER",
        Value::Real(_) => "REAL",
        Value::Text(_) => "TEXT",
        Value::Blob(_) => "BLOB",
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
        Value::Text(t) => t.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Real(f) => Some(*f),
        Value::Text(t) => t.trim().parse().ok(),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Integer(i) => Some(*i != 0),
        Value::Real(f) => Some(*f != 0.0),
        Value::Text(t) => parse_bool(t),
        _ => None,
    }
}

fn parse_bool(t: &str) -> Option<bool> {
    match t.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A float as PostgreSQL prints `float8` (shortest exact form).
fn float_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e15).contains(&a) {
        // 1e+20, 1.5e-07 as PostgreSQL writes them.
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", e.abs());
    }
    format!("{f}")
}

/// A value as SQLite's `CAST(v AS TEXT)` shows it; blobs as `\x` hex.
fn sqlite_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{f:.1}")
        }
        Value::Real(f) => float_text(*f),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => bytea_hex(b),
    }
}

fn bytea_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("\\x");
    for byte in b {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// Decodes one parameter the client sent, by the type the statement declares
/// for it (the client's OID, or the one paxsql described).
pub(crate) fn decode_param(
    raw: Option<&[u8]>,
    oid: u32,
    binary: bool,
) -> Result<Value, (&'static str, String)> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    let ty = Type::from_oid(oid).unwrap_or(Type::UNKNOWN);
    if binary {
        decode_binary(raw, &ty)
    } else {
        let text = std::str::from_utf8(raw)
            .map_err(|_| ("22021", "parameter is not valid UTF-8".to_owned()))?;
        decode_text(text, &ty)
    }
}

fn decode_text(text: &str, ty: &Type) -> Result<Value, (&'static str, String)> {
    let invalid = |what: &str| {
        (
            "22P02",
            format!("invalid input syntax for type {what}: {text:?}"),
        )
    };
    Ok(match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => {
            Value::Integer(text.trim().parse().map_err(|_| invalid(ty.name()))?)
        }
        Type::FLOAT4 | Type::FLOAT8 => {
            Value::Real(parse_float(text).ok_or_else(|| invalid(ty.name()))?)
        }
        Type::NUMERIC => match text.trim().parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Real(parse_float(text).ok_or_else(|| invalid("numeric"))?),
        },
        Type::BOOL => Value::Integer(i64::from(
            parse_bool(text).ok_or_else(|| invalid("boolean"))?,
        )),
        Type::BYTEA => Value::Blob(parse_bytea(text).ok_or_else(|| invalid("bytea"))?),
        _ => Value::Text(text.to_owned()),
    })
}

fn parse_float(text: &str) -> Option<f64> {
    match text.trim().to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "infinity" | "inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

/// `\x0102` (hex format) or the escape format's plain bytes and `\\`/`\ooo`.
fn parse_bytea(text: &str) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix("\\x") {
        let hex: Vec<u8> = hex.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        if !hex.len().is_multiple_of(2) {
            return None;
        }
        return hex
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
            .collect();
    }
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = std::str::from_utf8(b.get(i + 1..i + 4)?).ok()?;
            out.push(u8::from_str_radix(oct, 8).ok()?);
            i += 4;
        }
    }
    Some(out)
}

fn decode_binary(raw: &[u8], ty: &Type) -> Result<Value, (&'static str, String)> {
    let bad = || {
        (
            "22P03",
            format!(
                "invalid binary {} parameter ({} bytes)",
                ty.name(),
                raw.len()
            ),
        )
    };
    let fixed = |n: usize| -> Result<&[u8], (&'static str, String)> {
        if raw.len() == n {
            Ok(raw)
        } else {
            Err(bad())
        }
    };
    Ok(match *ty {
        Type::BOOL => Value::Integer(i64::from(fixed(1)?[0] != 0)),
        Type::INT2 => Value::Integer(i16::from_be_bytes(arr(fixed(2)?)).into()),
        Type::INT4 => Value::Integer(i32::from_be_bytes(arr(fixed(4)?)).into()),
        Type::OID => Value::Integer(u32::from_be_bytes(arr(fixed(4)?)).into()),
        Type::INT8 => Value::Integer(i64::from_be_bytes(arr(fixed(8)?))),
        Type::FLOAT4 => Value::Real(f32::from_be_bytes(arr(fixed(4)?)).into()),
        Type::FLOAT8 => Value::Real(f64::from_be_bytes(arr(fixed(8)?))),
        Type::BYTEA => Value::Blob(raw.to_vec()),
        Type::UUID => {
            let b = fixed(16)?;
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Value::Text(format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ))
        }
        Type::JSONB => match raw.split_first() {
            Some((1, rest)) => Value::Text(utf8(rest).ok_or_else(bad)?),
            _ => return Err(bad()),
        },
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::JSON
        | Type::XML => Value::Text(utf8(raw).ok_or_else(bad)?),
        _ => {
            return Err((
                "0A000",
                format!(
                    "paxsql cannot decode a binary {} parameter; send it in text format or as text",
                    ty.name()
                ),
            ))
        }
    })
}

fn utf8(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Value, ty: PgType) -> String {
        let mut b = BytesMut::new();
        encode_field(&mut b, &v, ty, false).unwrap();
        String::from_utf8(b[4..].to_vec()).unwrap()
    }

    #[test]
    fn declared_types_follow_sqlite_affinity() {
        assert_eq!(PgType::from_decltype("INTEGER"), Some(PgType::Int8));
        assert_eq!(PgType::from_decltype("bigint"), Some(PgType::Int8));
        assert_eq!(PgType::from_decltype("varchar(20)"), Some(PgType::Text));
        assert_eq!(PgType::from_decltype("BLOB"), Some(PgType::Bytea));
        assert_eq!(
            PgType::from_decltype("double precision"),
            Some(PgType::Float8)
        );
        assert_eq!(PgType::from_decltype("BOOLEAN"), Some(PgType::Bool));
        assert_eq!(PgType::from_decltype("DECIMAL(10,2)"), Some(PgType::Float8));
        assert_eq!(PgType::from_decltype("DATETIME"), Some(PgType::Text));
        assert_eq!(PgType::from_decltype(""), None);
    }

    #[test]
    fn values_encode_as_their_column_type() {
        assert_eq!(text(Value::Integer(7), PgType::Int8), "7");
        assert_eq!(text(Value::Real(1.5), PgType::Float8), "1.5");
        assert_eq!(text(Value::Integer(2), PgType::Float8), "2");
        assert_eq!(text(Value::Real(1e20), PgType::Float8), "1e+20");
        assert_eq!(text(Value::Integer(1), PgType::Bool), "t");
        assert_eq!(text(Value::Blob(vec![1, 0xab]), PgType::Bytea), "\\x01ab");
        assert_eq!(text(Value::Real(2.0), PgType::Text), "2.0");
        // A misfit in text format is sent as its own text.
        assert_eq!(text(Value::Text("abc".into()), PgType::Int8), "abc");
        let mut b = BytesMut::new();
        assert!(encode_field(&mut b, &Value::Text("abc".into()), PgType::Int8, true).is_err());
        let mut b = BytesMut::new();
        encode_field(&mut b, &Value::Null, PgType::Int8, true).unwrap();
        assert_eq!(&b[..], &(-1i32).to_be_bytes());
        let mut b = BytesMut::new();
        encode_field(&mut b, &Value::Integer(5), PgType::Int8, true).unwrap();
        assert_eq!(&b[..], &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5]);
    }

    #[test]
    fn parameters_decode_by_their_type() {
        let int8 = Type::INT8.oid();
        assert_eq!(
            decode_param(Some(b"42"), int8, false).unwrap(),
            Value::Integer(42)
        );
        assert_eq!(decode_param(None, int8, false).unwrap(), Value::Null);
        assert_eq!(
            decode_param(Some(&7i64.to_be_bytes()), int8, true).unwrap(),
            Value::Integer(7)
        );
        assert_eq!(
            decode_param(Some(&3i32.to_be_bytes()), Type::INT4.oid(), true).unwrap(),
            Value::Integer(3)
        );
        assert_eq!(
            decode_param(Some(b"x"), int8, false).unwrap_err().0,
            "22P02"
        );
        assert_eq!(
            decode_param(Some(b"hi"), 0, false).unwrap(),
            Value::Text("hi".into())
        );
        assert_eq!(
            decode_param(Some(b"\\x0aff"), Type::BYTEA.oid(), false).unwrap(),
            Value::Blob(vec![10, 255])
        );
        assert_eq!(
            decode_param(Some(b"true"), Type::BOOL.oid(), false).unwrap(),
            Value::Integer(1)
        );
    }
}
