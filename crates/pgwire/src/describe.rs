//! What a statement returns and takes, known before it runs.
//!
//! PostgreSQL clients ask for a statement's result columns and parameter
//! types before executing it (`Describe`), and the `RowDescription` must match
//! what `Execute` later encodes. paxsql finds them in two steps:
//!
//! 1. **Statically** ([`plan`]), from sqlparser's syntax tree: PostgreSQL-style
//!    names for unnamed expressions (`count(*)` is `count`, `1 + 1` is
//!    `?column?`), a type rule for each expression column (`count()` is
//!    `int8`, `avg()` is `float8`, `a = b` is `bool`, `max(x)` is whatever `x`
//!    is, ...) and for each `$N` (the column it is compared with, inserted
//!    into or assigned to; `LIMIT $1` is `int8`; `CAST($1 AS REAL)` is
//!    `float8`).
//! 2. **From the schema**, by one read of this node's replica that runs
//!    nothing: the statement's own columns come from
//!    `SELECT * FROM (stmt) LIMIT 0` (SQLite reports each column's declared
//!    type, through subqueries and views), and the columns the rules refer to
//!    from a *probe* `SELECT col, ... FROM <the statement's tables> LIMIT 0`.
//!
//! The same plan is used when a simple query's rows come back, so both
//! protocols give a statement the same names and types. A parameter whose type
//! cannot be found is `text`; a column whose type cannot be found is `text`.

use crate::types::PgType;
use sqlparser::ast::{
    BinaryOperator, CastKind, Expr, FromTable, FunctionArg, FunctionArgExpr, FunctionArguments,
    LimitClause, Query, Select, SelectItem, SetExpr, Statement, TableObject, UnaryOperator, Value,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use std::collections::BTreeMap;

/// How to find a type once the probe's declared types are known.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rule {
    /// Known without the schema.
    Known(PgType),
    /// A NULL literal: takes any type.
    Null,
    /// Nothing can be said.
    Unknown,
    /// The declared type of the probe's column `i`.
    Ref(usize),
    /// SQLite arithmetic: integer if both sides are, real if either is.
    Arith(Box<Rule>, Box<Rule>),
    /// The common type of all, if they agree (`coalesce`, `CASE`, `max`).
    Same(Vec<Rule>),
}

impl Rule {
    /// The type, given the declared types of the probe's columns.
    pub fn resolve(&self, probe: &[Option<PgType>]) -> Option<PgType> {
        match self {
            Rule::Known(t) => Some(*t),
            Rule::Null | Rule::Unknown => None,
            Rule::Ref(i) => probe.get(*i).copied().flatten(),
            Rule::Arith(a, b) => {
                let (a, b) = (a.resolve(probe)?, b.resolve(probe)?);
                match (a, b) {
                    (PgType::Int8 | PgType::Bool, PgType::Int8 | PgType::Bool) => {
                        Some(PgType::Int8)
                    }
                    (PgType::Float8, PgType::Int8 | PgType::Float8 | PgType::Bool)
                    | (PgType::Int8 | PgType::Bool, PgType::Float8) => Some(PgType::Float8),
                    _ => None,
                }
            }
            Rule::Same(rules) => {
                let mut found = None;
                for r in rules {
                    if *r == Rule::Null {
                        continue;
                    }
                    let t = r.resolve(probe)?;
                    if found.is_some_and(|f| f != t) {
                        return None;
                    }
                    found = Some(t);
                }
                found
            }
        }
    }

    fn uses_probe(&self) -> bool {
        match self {
            Rule::Ref(_) => true,
            Rule::Arith(a, b) => a.uses_probe() || b.uses_probe(),
            Rule::Same(v) => v.iter().any(Rule::uses_probe),
            _ => false,
        }
    }
}

/// The kind of statement, as far as describing it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A query: its columns are those of `SELECT * FROM (stmt) LIMIT 0`.
    Query,
    /// A write with `RETURNING`: its columns are those of [`Plan::returning`].
    Returning,
    /// Anything else: no rows (writes, DDL) or rows only running it can tell
    /// (`PRAGMA`, `EXPLAIN`).
    Other,
}

/// What static analysis found out about one statement.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub shape: Shape,
    /// Per result column: a PostgreSQL-style name for an unnamed expression
    /// (`None`: keep the engine's name). `None` when the column list is not
    /// known statically (`*`).
    pub names: Option<Vec<Option<String>>>,
    /// Per result column: how to find its type when SQLite declares none.
    pub column_rules: Option<Vec<Rule>>,
    /// Per `$N`: how to find its type.
    pub param_rules: BTreeMap<u32, Rule>,
    /// The probe whose declared types resolve [`Rule::Ref`]s.
    pub probe: Option<String>,
    /// For a write with `RETURNING`: a query over the written table that
    /// returns the same columns.
    pub returning: Option<String>,
}

impl Plan {
    fn opaque() -> Plan {
        Plan {
            shape: Shape::Other,
            names: None,
            column_rules: None,
            param_rules: BTreeMap::new(),
            probe: None,
            returning: None,
        }
    }

    /// Whether result column types need the probe.
    pub fn columns_need_probe(&self) -> bool {
        self.probe.is_some()
            && self
                .column_rules
                .as_ref()
                .is_some_and(|r| r.iter().any(Rule::uses_probe))
    }

    /// The statement that describes the result columns without running
    /// anything, if there is one.
    pub fn describe_sql(&self, sql: &str) -> Option<String> {
        match self.shape {
            // The newlines keep a trailing `--` comment from eating the `)`.
            Shape::Query => Some(format!("SELECT * FROM (\n{sql}\n) LIMIT 0")),
            Shape::Returning => self.returning.clone(),
            Shape::Other => None,
        }
    }
}

/// Analyses one statement. Never fails: SQL that sqlparser cannot parse gets
/// an opaque plan (engine names, `text` for unknown types).
pub(crate) fn plan(sql: &str) -> Plan {
    // A tree deep enough to overflow the stack when dropped is never built.
    if paxsql_sql::determinism::nests_too_deeply(sql) {
        return Plan::opaque();
    }
    let Ok(mut stmts) = Parser::parse_sql(&SQLiteDialect {}, sql) else {
        return Plan::opaque();
    };
    if stmts.len() != 1 {
        return Plan::opaque();
    }
    let mut b = Builder::default();
    let mut plan = Plan::opaque();
    match stmts.remove(0) {
        Statement::Query(q) => {
            plan.shape = Shape::Query;
            b.query(&q, &mut plan);
        }
        Statement::Insert(ins) => {
            let TableObject::TableName(table) = &ins.table else {
                return plan;
            };
            let cols: Vec<String> = ins.columns.iter().map(ToString::to_string).collect();
            for c in &cols {
                b.refs.push(c.clone());
            }
            let target = if cols.is_empty() {
                "*".to_owned()
            } else {
                cols.join(", ")
            };
            b.from = Some(format!("FROM {table}"));
            b.star = cols.is_empty();
            b.star_target = target;
            if let Some(src) = &ins.source {
                if let SetExpr::Values(values) = src.body.as_ref() {
                    for row in &values.rows {
                        for (j, e) in row.content.iter().enumerate() {
                            if let Some(n) = placeholder(e) {
                                b.set_param(n, Rule::Ref(j));
                            } else {
                                b.params(e);
                            }
                        }
                    }
                }
            }
            b.returning(ins.returning.as_deref(), &table.to_string(), &mut plan);
        }
        Statement::Update(up) => {
            let mut from = up.table.to_string();
            if let Some(
                sqlparser::ast::UpdateTableFromKind::AfterSet(more)
                | sqlparser::ast::UpdateTableFromKind::BeforeSet(more),
            ) = &up.from
            {
                for t in more {
                    from.push_str(", ");
                    from.push_str(&t.to_string());
                }
            }
            b.from = Some(format!("FROM {from}"));
            for a in &up.assignments {
                if let sqlparser::ast::AssignmentTarget::ColumnName(col) = &a.target {
                    let i = b.add_ref(col.to_string());
                    if let Some(n) = placeholder(&a.value) {
                        b.set_param(n, Rule::Ref(i));
                    }
                }
                b.params(&a.value);
            }
            if let Some(w) = &up.selection {
                b.params(w);
            }
            if let Some(l) = &up.limit {
                b.limit_param(l);
            }
            b.returning(up.returning.as_deref(), &up.table.to_string(), &mut plan);
        }
        Statement::Delete(del) => {
            let tables = match &del.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            let from: Vec<String> = tables.iter().map(ToString::to_string).collect();
            if !from.is_empty() {
                b.from = Some(format!("FROM {}", from.join(", ")));
            }
            if let Some(w) = &del.selection {
                b.params(w);
            }
            if let Some(l) = &del.limit {
                b.limit_param(l);
            }
            b.returning(del.returning.as_deref(), &from.join(", "), &mut plan);
        }
        _ => return plan,
    }
    plan.param_rules = std::mem::take(&mut b.param_rules);
    plan.probe = b.probe();
    plan
}

#[derive(Default)]
struct Builder {
    /// Expressions (column references) whose declared types the probe reports.
    refs: Vec<String>,
    /// `FROM ...` (with a `WITH` prefix if any) the probe runs over.
    from: Option<String>,
    with: Option<String>,
    /// An INSERT without a column list: the probe is `SELECT *`.
    star: bool,
    star_target: String,
    param_rules: BTreeMap<u32, Rule>,
}

impl Builder {
    fn add_ref(&mut self, text: String) -> usize {
        if let Some(i) = self.refs.iter().position(|r| *r == text) {
            return i;
        }
        self.refs.push(text);
        self.refs.len() - 1
    }

    fn probe(&self) -> Option<String> {
        let from = self.from.as_ref()?;
        let cols = if self.star {
            self.star_target.clone()
        } else if self.refs.is_empty() {
            return None;
        } else {
            self.refs.join(", ")
        };
        let with = self
            .with
            .as_deref()
            .map(|w| format!("{w} "))
            .unwrap_or_default();
        Some(format!("{with}SELECT {cols} {from} LIMIT 0"))
    }

    fn set_param(&mut self, n: u32, rule: Rule) {
        // The first context that says something wins.
        let slot = self.param_rules.entry(n).or_insert(Rule::Unknown);
        if *slot == Rule::Unknown {
            *slot = rule;
        }
    }

    fn query(&mut self, q: &Query, plan: &mut Plan) {
        self.with = q.with.as_ref().map(ToString::to_string);
        if let Some(select) = leftmost_select(&q.body) {
            self.select(select, plan);
        }
        // Parameters in the other branches of a UNION.
        if let SetExpr::SetOperation { right, .. } = q.body.as_ref() {
            if let Some(s) = leftmost_select(right) {
                self.select_params(s);
            }
        }
        if let Some(LimitClause::LimitOffset { limit, offset, .. }) = &q.limit_clause {
            if let Some(l) = limit {
                self.limit_param(l);
            }
            if let Some(o) = offset {
                self.limit_param(&o.value);
            }
        }
        if let Some(LimitClause::OffsetCommaLimit { offset, limit }) = &q.limit_clause {
            self.limit_param(offset);
            self.limit_param(limit);
        }
    }

    fn select(&mut self, s: &Select, plan: &mut Plan) {
        if !s.from.is_empty() {
            let from: Vec<String> = s.from.iter().map(ToString::to_string).collect();
            self.from = Some(format!("FROM {}", from.join(", ")));
        }
        let mut names = Vec::with_capacity(s.projection.len());
        let mut rules = Vec::with_capacity(s.projection.len());
        let mut opaque = false;
        for item in &s.projection {
            match item {
                SelectItem::UnnamedExpr(e) => {
                    names.push(pg_name(e));
                    rules.push(self.column_rule(e));
                }
                SelectItem::ExprWithAlias { expr, .. } => {
                    names.push(None);
                    rules.push(self.column_rule(expr));
                }
                _ => opaque = true,
            }
        }
        if !opaque {
            plan.names = Some(names);
            plan.column_rules = Some(rules);
        }
        self.select_params(s);
    }

    fn select_params(&mut self, s: &Select) {
        for item in &s.projection {
            if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                self.params(e);
            }
        }
        if let Some(w) = &s.selection {
            self.params(w);
        }
        if let Some(h) = &s.having {
            self.params(h);
        }
    }

    /// A projection item's rule. A bare column needs no rule: SQLite
    /// declares its type.
    fn column_rule(&mut self, e: &Expr) -> Rule {
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => Rule::Unknown,
            _ => self.infer(e),
        }
    }

    fn returning(&mut self, items: Option<&[SelectItem]>, table: &str, plan: &mut Plan) {
        let Some(items) = items else { return };
        if table.is_empty() {
            return;
        }
        let list: Vec<String> = items.iter().map(ToString::to_string).collect();
        let sql = format!("SELECT {} FROM {table}", list.join(", "));
        let inner = self::plan(&sql);
        plan.shape = Shape::Returning;
        plan.names = inner.names;
        plan.column_rules = None;
        plan.returning = Some(format!("{sql} LIMIT 0"));
        // Expression columns of RETURNING get their types from the probe of
        // the synthetic query, which runs as the describe statement itself;
        // keep it simple: declared types only, `text` otherwise.
    }

    fn limit_param(&mut self, e: &Expr) {
        if let Some(n) = placeholder(e) {
            self.set_param(n, Rule::Known(PgType::Int8));
        } else {
            self.params(e);
        }
    }

    /// Finds the parameters of an expression and the context that types them.
    fn params(&mut self, e: &Expr) {
        match e {
            Expr::BinaryOp { left, op, right } => {
                let textual = matches!(op, BinaryOperator::StringConcat);
                for (p, other) in [(left, right), (right, left)] {
                    if let Some(n) = placeholder(p) {
                        let rule = if textual {
                            Rule::Known(PgType::Text)
                        } else {
                            self.infer(other)
                        };
                        self.set_param(n, rule);
                    }
                }
                self.params(left);
                self.params(right);
            }
            Expr::InList { expr, list, .. } => {
                let rule = self.infer(expr);
                for item in list {
                    if let Some(n) = placeholder(item) {
                        self.set_param(n, rule.clone());
                    }
                    self.params(item);
                }
                if let (Some(n), Some(first)) = (placeholder(expr), list.first()) {
                    let r = self.infer(first);
                    self.set_param(n, r);
                }
                self.params(expr);
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                let rule = self.infer(expr);
                for bound in [low, high] {
                    if let Some(n) = placeholder(bound) {
                        self.set_param(n, rule.clone());
                    }
                    self.params(bound);
                }
                self.params(expr);
            }
            Expr::Like { expr, pattern, .. }
            | Expr::ILike { expr, pattern, .. }
            | Expr::SimilarTo { expr, pattern, .. } => {
                for p in [expr, pattern] {
                    if let Some(n) = placeholder(p) {
                        self.set_param(n, Rule::Known(PgType::Text));
                    }
                    self.params(p);
                }
            }
            Expr::Cast {
                expr, data_type, ..
            } => {
                if let Some(n) = placeholder(expr) {
                    let t = PgType::from_decltype(&data_type.to_string()).unwrap_or(PgType::Bytea);
                    self.set_param(n, Rule::Known(t));
                }
                self.params(expr);
            }
            Expr::Nested(inner)
            | Expr::UnaryOp { expr: inner, .. }
            | Expr::IsNull(inner)
            | Expr::IsNotNull(inner)
            | Expr::IsTrue(inner)
            | Expr::IsFalse(inner)
            | Expr::IsNotTrue(inner)
            | Expr::IsNotFalse(inner) => self.params(inner),
            Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
                for (p, other) in [(a, b), (b, a)] {
                    if let Some(n) = placeholder(p) {
                        let r = self.infer(other);
                        self.set_param(n, r);
                    }
                }
                self.params(a);
                self.params(b);
            }
            Expr::Function(f) => {
                for arg in function_args(f) {
                    self.params(arg);
                }
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                if let Some(o) = operand {
                    self.params(o);
                }
                for c in conditions {
                    self.params(&c.condition);
                    self.params(&c.result);
                }
                if let Some(e) = else_result {
                    self.params(e);
                }
            }
            _ => {}
        }
    }

    /// The type rule of an expression.
    fn infer(&mut self, e: &Expr) -> Rule {
        match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                if self.from.is_none() {
                    return Rule::Unknown;
                }
                Rule::Ref(self.add_ref(e.to_string()))
            }
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => {
                    if n.contains(['.', 'e', 'E']) {
                        Rule::Known(PgType::Float8)
                    } else {
                        Rule::Known(PgType::Int8)
                    }
                }
                Value::SingleQuotedString(_) | Value::DoubleQuotedString(_) => {
                    Rule::Known(PgType::Text)
                }
                Value::HexStringLiteral(_) => Rule::Known(PgType::Bytea),
                Value::Boolean(_) => Rule::Known(PgType::Bool),
                Value::Null => Rule::Null,
                _ => Rule::Unknown,
            },
            Expr::Nested(inner) => self.infer(inner),
            Expr::UnaryOp { op, expr } => match op {
                UnaryOperator::Not => Rule::Known(PgType::Bool),
                UnaryOperator::Minus | UnaryOperator::Plus => self.infer(expr),
                _ => Rule::Known(PgType::Int8),
            },
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::Plus
                | BinaryOperator::Minus
                | BinaryOperator::Multiply
                | BinaryOperator::Divide
                | BinaryOperator::Modulo => {
                    let (l, r) = (self.infer(left), self.infer(right));
                    Rule::Arith(Box::new(l), Box::new(r))
                }
                BinaryOperator::StringConcat => Rule::Known(PgType::Text),
                BinaryOperator::BitwiseAnd
                | BinaryOperator::BitwiseOr
                | BinaryOperator::PGBitwiseShiftLeft
                | BinaryOperator::PGBitwiseShiftRight => Rule::Known(PgType::Int8),
                BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq
                | BinaryOperator::And
                | BinaryOperator::Or
                | BinaryOperator::Spaceship => Rule::Known(PgType::Bool),
                _ => Rule::Unknown,
            },
            Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::IsDistinctFrom(..)
            | Expr::IsNotDistinctFrom(..)
            | Expr::InList { .. }
            | Expr::InSubquery { .. }
            | Expr::Between { .. }
            | Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::SimilarTo { .. }
            | Expr::Exists { .. } => Rule::Known(PgType::Bool),
            Expr::Cast {
                kind: CastKind::Cast | CastKind::DoubleColon,
                data_type,
                ..
            } => PgType::from_decltype(&data_type.to_string()).map_or(Rule::Unknown, Rule::Known),
            Expr::Case {
                conditions,
                else_result,
                ..
            } => {
                let mut rules: Vec<Rule> =
                    conditions.iter().map(|c| self.infer(&c.result)).collect();
                rules.push(match else_result {
                    Some(e) => self.infer(e),
                    None => Rule::Null,
                });
                Rule::Same(rules)
            }
            Expr::Function(f) => self.function(f),
            _ => Rule::Unknown,
        }
    }

    fn function(&mut self, f: &sqlparser::ast::Function) -> Rule {
        let name = f
            .name
            .0
            .last()
            .map(|p| p.to_string().to_ascii_lowercase())
            .unwrap_or_default();
        let args: Vec<&Expr> = function_args(f).collect();
        let known = |t| Rule::Known(t);
        match name.as_str() {
            "count" | "length" | "octet_length" | "instr" | "unicode" | "changes"
            | "last_insert_rowid" | "random" | "row_number" | "rank" | "dense_rank" | "ntile"
            | "unixepoch" | "sign" => known(PgType::Int8),
            "avg" | "total" | "julianday" | "percent_rank" | "cume_dist" | "pi" | "sqrt"
            | "exp" | "ln" | "log" | "log10" | "log2" | "pow" | "power" | "sin" | "cos" | "tan"
            | "asin" | "acos" | "atan" | "atan2" | "degrees" | "radians" | "ceil" | "ceiling"
            | "floor" | "trunc" | "round" => known(PgType::Float8),
            "lower" | "upper" | "trim" | "ltrim" | "rtrim" | "substr" | "substring" | "replace"
            | "typeof" | "quote" | "hex" | "printf" | "format" | "group_concat" | "string_agg"
            | "date" | "time" | "datetime" | "strftime" | "timediff" | "sqlite_version"
            | "char" | "concat" | "concat_ws" | "json" | "json_object" | "json_array"
            | "json_group_array" | "json_group_object" | "json_quote" | "json_type" | "soundex" => {
                known(PgType::Text)
            }
            "randomblob" | "zeroblob" | "unhex" | "jsonb" => known(PgType::Bytea),
            "max" | "min" | "coalesce" | "ifnull" | "nullif" | "sum" | "abs" | "likely"
            | "unlikely" | "likelihood" => {
                let args: Vec<&Expr> = match name.as_str() {
                    "nullif" | "likelihood" => args.into_iter().take(1).collect(),
                    _ => args,
                };
                Rule::Same(args.into_iter().map(|a| self.infer(a)).collect())
            }
            "iif" | "if" => Rule::Same(args.iter().skip(1).map(|a| self.infer(a)).collect()),
            _ => Rule::Unknown,
        }
    }
}

fn leftmost_select(body: &SetExpr) -> Option<&Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::Query(q) => leftmost_select(&q.body),
        SetExpr::SetOperation { left, .. } => leftmost_select(left),
        _ => None,
    }
}

fn function_args(f: &sqlparser::ast::Function) -> impl Iterator<Item = &Expr> {
    let list = match &f.args {
        FunctionArguments::List(l) => l.args.as_slice(),
        _ => &[],
    };
    list.iter().filter_map(|a| match a {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
        | FunctionArg::Named {
            arg: FunctionArgExpr::Expr(e),
            ..
        }
        | FunctionArg::ExprNamed {
            arg: FunctionArgExpr::Expr(e),
            ..
        } => Some(e),
        _ => None,
    })
}

/// `$N` as a number.
fn placeholder(e: &Expr) -> Option<u32> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => p.strip_prefix('$')?.parse().ok(),
            _ => None,
        },
        Expr::Nested(inner) => placeholder(inner),
        _ => None,
    }
}

/// PostgreSQL's name for an unnamed result column (`FigureColname`); `None`
/// keeps SQLite's (a plain column's own name).
fn pg_name(e: &Expr) -> Option<String> {
    Some(match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => return None,
        Expr::Function(f) => f
            .name
            .0
            .last()
            .map(|p| match p {
                sqlparser::ast::ObjectNamePart::Identifier(i) => i.value.to_ascii_lowercase(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "?column?".into()),
        Expr::Nested(inner) => return pg_name(inner).or_else(|| ident_name(inner)),
        Expr::Cast { expr, .. } => {
            return pg_name(expr).or_else(|| ident_name(expr));
        }
        Expr::Case { .. } => "case".into(),
        Expr::Exists { .. } => "exists".into(),
        _ => "?column?".into(),
    })
}

fn ident_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(rule: &Rule, probe: &[Option<PgType>]) -> Option<PgType> {
        rule.resolve(probe)
    }

    #[test]
    fn expression_columns_get_pg_names_and_rules() {
        let p =
            plan("SELECT id, count(*), max(bal), bal + 1.5, name AS n, 1 = 1 FROM t WHERE id = $1");
        assert_eq!(p.shape, Shape::Query);
        assert_eq!(
            p.names.clone().unwrap(),
            vec![
                None,
                Some("count".into()),
                Some("max".into()),
                Some("?column?".into()),
                None,
                Some("?column?".into())
            ]
        );
        let rules = p.column_rules.clone().unwrap();
        assert_eq!(rules[1], Rule::Known(PgType::Int8));
        assert_eq!(rules[5], Rule::Known(PgType::Bool));
        let probe = p.probe.clone().unwrap();
        assert_eq!(probe, "SELECT bal, id FROM t LIMIT 0");
        // bal is INTEGER, id is INTEGER.
        let types = [Some(PgType::Int8), Some(PgType::Int8)];
        assert_eq!(resolve(&rules[2], &types), Some(PgType::Int8));
        assert_eq!(resolve(&rules[3], &types), Some(PgType::Float8));
        assert_eq!(resolve(&p.param_rules[&1], &types), Some(PgType::Int8));
        assert!(p.columns_need_probe());
    }

    #[test]
    fn parameters_take_the_type_of_their_column() {
        let p = plan("INSERT INTO t (a, b) VALUES ($1, $2)");
        assert_eq!(p.probe.as_deref(), Some("SELECT a, b FROM t LIMIT 0"));
        assert_eq!(p.param_rules[&2], Rule::Ref(1));
        let p = plan("INSERT INTO t VALUES ($1, 'x', $2)");
        assert_eq!(p.probe.as_deref(), Some("SELECT * FROM t LIMIT 0"));
        assert_eq!(p.param_rules[&2], Rule::Ref(2));
        let p = plan("UPDATE acc SET bal = bal + $1 WHERE id = $2");
        assert_eq!(p.probe.as_deref(), Some("SELECT bal, id FROM acc LIMIT 0"));
        let types = [Some(PgType::Float8), Some(PgType::Int8)];
        assert_eq!(resolve(&p.param_rules[&1], &types), Some(PgType::Float8));
        assert_eq!(resolve(&p.param_rules[&2], &types), Some(PgType::Int8));
        let p = plan("SELECT * FROM t WHERE a IN ($1, $2) LIMIT $3");
        assert_eq!(p.param_rules[&3], Rule::Known(PgType::Int8));
        assert_eq!(p.param_rules[&1], Rule::Ref(0));
        assert!(p.names.is_none());
        let p = plan("SELECT CAST($1 AS REAL)");
        assert_eq!(p.param_rules[&1], Rule::Known(PgType::Float8));
        let p = plan("DELETE FROM t WHERE name LIKE $1");
        assert_eq!(p.param_rules[&1], Rule::Known(PgType::Text));
    }

    #[test]
    fn selects_without_from_and_unparseable_sql() {
        let p = plan("SELECT 1, 'a', 2.5, NULL");
        let r = p.column_rules.unwrap();
        assert_eq!(r[0], Rule::Known(PgType::Int8));
        assert_eq!(r[1], Rule::Known(PgType::Text));
        assert_eq!(r[2], Rule::Known(PgType::Float8));
        assert!(p.probe.is_none());
        let p = plan("PRAGMA table_info(t)");
        assert_eq!(p.shape, Shape::Other);
        assert!(p.names.is_none());
    }

    #[test]
    fn returning_is_described_by_a_query_on_the_table() {
        let p = plan("INSERT INTO t (name) VALUES ($1) RETURNING id, name");
        assert_eq!(p.shape, Shape::Returning);
        assert_eq!(
            p.describe_sql("").as_deref(),
            Some("SELECT id, name FROM t LIMIT 0")
        );
    }

    #[test]
    fn a_statement_nested_too_deeply_gets_an_opaque_plan_not_a_stack_overflow() {
        // Run on a small stack, as a connection task's would be.
        let deep = format!("SELECT {}1", "1 + ".repeat(100_000));
        let p = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || plan(&deep))
            .unwrap()
            .join()
            .unwrap();
        assert!(p.names.is_none());
    }
}
