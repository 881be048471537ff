//! The keys a condition (a WHERE clause) restricts a table's rows to.
//!
//! Only comparisons of the key with an integer constant are understood;
//! anything else is "not understood" (`None`), which under `AND` leaves the
//! other side's keys and under `OR` (or `NOT`) widens to every key. The
//! result is therefore always a superset of the rows the condition admits.

use paxsql_types::Value;
use sqlparser::ast::{BinaryOperator, Expr, Ident, UnaryOperator, Value as AstValue};

use super::interval::Keys;
use super::params::Bindings;

/// Names under which a table's key can be written.
const ROWID_NAMES: &[&str] = &["rowid", "_rowid_", "oid"];

/// What a condition on one table is evaluated against.
#[derive(Debug)]
pub(crate) struct Table<'a> {
    /// Names a column may be qualified with: the table's name and alias.
    pub(crate) qualifiers: Vec<String>,
    /// The integer primary key column, if the table has one.
    pub(crate) pk: Option<String>,
    /// The statement's parameters.
    pub(crate) bindings: &'a Bindings<'a>,
}

impl Table<'_> {
    /// The keys `condition` admits; `None` (no WHERE) admits every key.
    pub(crate) fn keys(&self, condition: Option<&Expr>) -> Keys {
        condition
            .and_then(|c| self.restrict(c))
            .unwrap_or(Keys::All)
    }

    /// The keys `expr` admits, `None` when it is not understood.
    fn restrict(&self, expr: &Expr) -> Option<Keys> {
        match expr {
            Expr::Nested(inner) => self.restrict(inner),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And => match (self.restrict(left), self.restrict(right)) {
                    (Some(a), Some(b)) => Some(a.intersect(b)),
                    (a, b) => a.or(b),
                },
                BinaryOperator::Or => Some(self.restrict(left)?.union(self.restrict(right)?)),
                _ => self.comparison(left, op, right),
            },
            Expr::InList {
                expr,
                list,
                negated: false,
            } if self.is_key(expr) => list.iter().try_fold(Keys::none(), |keys, item| {
                Some(keys.union(Keys::point(self.integer(item)?)))
            }),
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } if self.is_key(expr) => Some(Keys::between(self.integer(low)?, self.integer(high)?)),
            _ => None,
        }
    }

    /// `key <op> constant` or `constant <op> key`.
    fn comparison(&self, left: &Expr, op: &BinaryOperator, right: &Expr) -> Option<Keys> {
        use BinaryOperator as Op;
        let (op, value) = if self.is_key(left) {
            (op.clone(), right)
        } else if self.is_key(right) {
            let flipped = match op {
                Op::Gt => Op::Lt,
                Op::GtEq => Op::LtEq,
                Op::Lt => Op::Gt,
                Op::LtEq => Op::GtEq,
                other => other.clone(),
            };
            (flipped, left)
        } else {
            return None;
        };
        let x = self.integer(value)?;
        Some(match op {
            Op::Eq => Keys::point(x),
            Op::Gt => x
                .checked_add(1)
                .map_or(Keys::none(), |lo| Keys::between(lo, i64::MAX)),
            Op::GtEq => Keys::between(x, i64::MAX),
            Op::Lt => x
                .checked_sub(1)
                .map_or(Keys::none(), |hi| Keys::between(i64::MIN, hi)),
            Op::LtEq => Keys::between(i64::MIN, x),
            _ => return None,
        })
    }

    /// Whether `expr` names the key column (possibly qualified).
    fn is_key(&self, expr: &Expr) -> bool {
        match expr {
            Expr::Nested(inner) => self.is_key(inner),
            Expr::Identifier(column) => self.is_key_name(column),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [.., table, column] => {
                    self.is_key_name(column)
                        && self
                            .qualifiers
                            .iter()
                            .any(|q| q.eq_ignore_ascii_case(&table.value))
                }
                _ => false,
            },
            _ => false,
        }
    }

    fn is_key_name(&self, column: &Ident) -> bool {
        self.is_key_column(&column.value)
    }

    /// Whether the column called `name` is the key.
    pub(crate) fn is_key_column(&self, name: &str) -> bool {
        self.pk
            .as_deref()
            .is_some_and(|pk| pk.eq_ignore_ascii_case(name))
            || ROWID_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name))
    }

    /// The integer `expr` stands for: a literal (with sign) or a bound
    /// parameter; `None` for anything else, including text and NULL.
    pub(crate) fn integer(&self, expr: &Expr) -> Option<i64> {
        match expr {
            Expr::Nested(inner) => self.integer(inner),
            Expr::UnaryOp {
                op: UnaryOperator::Plus,
                expr,
            } => self.integer(expr),
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => self.integer(expr)?.checked_neg(),
            Expr::Value(v) => match &v.value {
                AstValue::Number(text, _) => match text.parse::<i64>() {
                    Ok(i) => Some(i),
                    Err(_) => integral(text.parse::<f64>().ok()?),
                },
                AstValue::Placeholder(text) => match self.bindings.value(text, v.span)? {
                    Value::Integer(i) => Some(*i),
                    Value::Real(f) => integral(*f),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }
}

/// The integer a float equals exactly, if any within `i64`.
fn integral(f: f64) -> Option<i64> {
    // 2^63 is exact as f64; every integral f64 below it fits an i64.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(&f))
        .then_some(f as i64)
}
