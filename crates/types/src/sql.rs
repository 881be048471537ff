use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A SQL value as it crosses the API and the log: SQLite's five storage
/// classes. Other engines map their types onto these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes; base64 in JSON, as rqlite does.
    Blob(Vec<u8>),
}

impl Value {
    /// The value as rqlite's JSON shows it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => (*i).into(),
            Value::Real(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(s) => s.clone().into(),
            Value::Blob(b) => base64::engine::general_purpose::STANDARD.encode(b).into(),
        }
    }

    /// A parameter value from JSON. Arrays and objects are rejected.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        Ok(match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Real(n.as_f64().ok_or("number out of range")?),
            },
            serde_json::Value::String(s) => Value::Text(s.clone()),
            other => return Err(format!("unsupported parameter value: {other}")),
        })
    }
}

/// Parameters bound to a statement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Params {
    /// No parameters.
    #[default]
    None,
    /// `?` / `?N` placeholders, in order.
    Positional(Vec<Value>),
    /// `:name`, `@name` or `$name` placeholders; names given without the sigil.
    Named(Vec<(String, Value)>),
}

/// One SQL statement with its bound parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// The SQL text: exactly one statement.
    pub sql: String,
    /// Values for its placeholders.
    pub params: Params,
}

impl Statement {
    /// A statement without parameters.
    pub fn new(sql: impl Into<String>) -> Self {
        Statement {
            sql: sql.into(),
            params: Params::None,
        }
    }
}

/// The outcome of one statement, in the shapes rqlite answers with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StmtResult {
    /// A statement that changed (or could have changed) rows.
    Exec {
        /// `last_insert_rowid()` after the statement.
        last_insert_id: i64,
        /// `changes()` after the statement.
        rows_affected: u64,
    },
    /// A statement that returned rows.
    Rows {
        /// Column names.
        columns: Vec<String>,
        /// Declared column types (lower case), `""` where none is known.
        types: Vec<String>,
        /// The rows.
        values: Vec<Vec<Value>>,
    },
    /// The statement failed; the text is the engine's message.
    Error(String),
}

/// How the message of a transaction that lost a conflict begins.
pub const SERIALIZATION_FAILURE: &str = "serialization failure";

impl StmtResult {
    /// A fingerprint of the result, equal on every replica and in every
    /// process for equal results: what an interactive transaction's commit
    /// checks against what the client was answered. For a statement that
    /// wrote rows, the row count only: the last inserted row id is left
    /// out, since pg-wire never shows it (and a later statement that reads
    /// it, `last_insert_rowid()` or `RETURNING`, has its own result
    /// checked), so inserts into one table by concurrent transactions do
    /// not conflict over the row ids SQLite picks.
    pub fn digest(&self) -> u64 {
        // FNV-1a over the JSON encoding: stable across processes and
        // versions of the standard library, unlike `DefaultHasher`.
        let bytes = match self {
            StmtResult::Exec { rows_affected, .. } => serde_json::to_vec(&StmtResult::Exec {
                last_insert_id: 0,
                rows_affected: *rows_affected,
            }),
            _ => serde_json::to_vec(self),
        }
        .unwrap_or_default();
        bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}
