//! Pushdown: the part of a gathered query each range's SELECT can do
//! itself, so that fewer rows are copied.
//!
//! A query that reads several groups runs over copies of its tables' rows
//! in an in-memory SQLite ([`crate::gather`]). Copying every row of every
//! range is always right, and costs the whole table. For a query that reads
//! one table and nothing else, [`pushdown`] finds what each range's SELECT
//! may add without changing the answer:
//!
//! 1. **The WHERE condition.** Everything after WHERE (aggregates, GROUP BY,
//!    HAVING, DISTINCT, window functions, ORDER BY, LIMIT) sees only the
//!    rows it admits, so a row a group leaves out could never have counted.
//!    The gathered database still applies the WHERE itself.
//! 2. **`ORDER BY ... LIMIT n [OFFSET m]`**, as `ORDER BY ... LIMIT n + m`,
//!    when nothing between WHERE and ORDER BY merges or drops rows (no
//!    aggregate, GROUP BY, HAVING, DISTINCT, window function) and one term
//!    of the ORDER BY is the table's integer primary key. The key makes the
//!    order total, so the first n + m rows overall are among the first
//!    n + m of their range. Without it, the rows tied at the limit could be
//!    other rows than one database would return.
//!
//! What is pushed is the query's own text, cut at its clause boundaries and
//! checked to parse back to the same tree, so SQLite reads it on a group as
//! in the gathered database. It must also mean the same there, which rules
//! out, as no pushdown:
//!
//! - joins, several FROM items, table-valued functions, CTEs, compound
//!   queries and subqueries anywhere: the range's SELECT reads one table;
//! - any word of the pushed text that is also a name the query gives a
//!   result column (`SELECT v AS w ... WHERE w > 1`, `ORDER BY w`), and
//!   ORDER BY terms naming no column (`ORDER BY 2` is a result column):
//!   the range's SELECT has other result columns;
//! - functions outside SQLite's deterministic scalar functions (aggregates,
//!   window functions, `random()`, date and time functions, functions an
//!   application defines): evaluated on the group and again in the
//!   gathered database, they could disagree or mean something else;
//! - parameters other than integers, text, blobs and NULL, which are
//!   written into the pushed text as literals (a real could round when its
//!   decimal text is read back), and parameters in ORDER BY.
//!
//! Anything not understood is no pushdown: the ranges are copied whole.

mod text;

use std::ops::ControlFlow;

use paxsql_types::{Statement, Value};
use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, LimitClause,
    ObjectNamePart, OrderByKind, Query, Select, SelectFlavor, SelectItem, SetExpr,
    Statement as Ast, TableFactor, Value as AstValue, Visit, Visitor,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::keys::params::Bindings;
use crate::keys::{parse_one, subqueries};
use text::{Clause, Text};

/// What each range's SELECT of a gathered single-table query may add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushdown {
    /// The table the query reads, lower-case.
    pub table: String,
    /// The name the query gives the table (`FROM t AS a`), which the pushed
    /// text may use as a qualifier.
    pub alias: Option<String>,
    /// The query's WHERE condition as written, its parameters replaced by
    /// the literals of their values.
    pub filter: Option<String>,
    /// `ORDER BY <the query's terms> LIMIT <limit + offset>`.
    pub order_limit: Option<String>,
}

/// SQLite's built-in scalar functions whose result depends on their
/// arguments only. `min` and `max` with two or more arguments are scalar
/// too; with one they are aggregates.
const SCALAR_FUNCTIONS: &[&str] = &[
    "abs",
    "char",
    "coalesce",
    "concat",
    "concat_ws",
    "format",
    "glob",
    "hex",
    "if",
    "ifnull",
    "iif",
    "instr",
    "length",
    "like",
    "likelihood",
    "likely",
    "lower",
    "ltrim",
    "nullif",
    "octet_length",
    "printf",
    "quote",
    "replace",
    "round",
    "rtrim",
    "sign",
    "soundex",
    "substr",
    "substring",
    "trim",
    "typeof",
    "unhex",
    "unicode",
    "unistr",
    "unistr_quote",
    "unlikely",
    "upper",
    "zeroblob",
    // Math functions.
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "ceil",
    "ceiling",
    "cos",
    "cosh",
    "degrees",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "radians",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
    // JSON functions.
    "json",
    "jsonb",
    "json_array",
    "jsonb_array",
    "json_array_length",
    "json_error_position",
    "json_extract",
    "jsonb_extract",
    "json_insert",
    "jsonb_insert",
    "json_object",
    "jsonb_object",
    "json_patch",
    "jsonb_patch",
    "json_pretty",
    "json_quote",
    "json_remove",
    "jsonb_remove",
    "json_replace",
    "jsonb_replace",
    "json_set",
    "jsonb_set",
    "json_type",
    "json_valid",
];

/// Words that make a pushed text mean something else on a group: the
/// current time, and operators calling functions SQLite does not define
/// itself.
const UNSAFE_WORDS: &[Keyword] = &[
    Keyword::CURRENT_DATE,
    Keyword::CURRENT_TIME,
    Keyword::CURRENT_TIMESTAMP,
    Keyword::MATCH,
    Keyword::REGEXP,
];

/// The clauses that may follow a WHERE, and an ORDER BY.
const AFTER_WHERE: &[Keyword] = &[
    Keyword::GROUP,
    Keyword::HAVING,
    Keyword::WINDOW,
    Keyword::ORDER,
    Keyword::LIMIT,
];
const AFTER_ORDER_BY: &[Keyword] = &[Keyword::LIMIT];

/// What of `stmt` each range's SELECT may do itself; `None` when nothing
/// can be pushed down safely. `pk(table)` gives a table's integer primary
/// key column (`table` lower-case), `None` if it has none.
///
/// The router must use it only when the query's one table is a table (not
/// a view) and is the only relation it gathers.
pub fn pushdown(stmt: &Statement, pk: &dyn Fn(&str) -> Option<String>) -> Option<Pushdown> {
    let ast = parse_one(&stmt.sql)?;
    let Ast::Query(query) = &ast else {
        return None;
    };
    let select = plain_select(query)?;
    let (table, alias) = one_table(select)?;
    if subqueries(query.as_ref()) != 1 {
        return None;
    }
    let scope = Scope {
        qualifier: alias.clone().unwrap_or_else(|| table.clone()),
        result_names: result_names(select),
        bindings: Bindings::new(&ast, &stmt.params),
        text: Text::new(&stmt.sql)?,
    };
    let filter = match &select.selection {
        Some(condition) => Some(scope.filter(condition)?),
        None => None,
    };
    let order_limit = pk(&table).and_then(|pk| scope.order_limit(query, select, &pk));
    if filter.is_none() && order_limit.is_none() {
        return None;
    }
    Some(Pushdown {
        table,
        alias,
        filter,
        order_limit,
    })
}

impl Pushdown {
    /// The SELECT of one range's rows: `columns` (quoted) of the table,
    /// under the range's key condition (`None`: every key) and the pushed
    /// filter, in the pushed order and limit.
    pub fn range_select(&self, columns: &[String], key_condition: Option<&str>) -> String {
        let mut sql = format!("SELECT {} FROM {}", columns.join(", "), quote(&self.table));
        if let Some(alias) = &self.alias {
            sql.push_str(&format!(" AS {}", quote(alias)));
        }
        // A newline ends any `--` comment the query's text ends with.
        let conditions: Vec<String> = key_condition
            .map(|k| format!("({k})"))
            .into_iter()
            .chain(self.filter.as_ref().map(|f| format!("({f}\n)")))
            .collect();
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if let Some(order_limit) = &self.order_limit {
            sql.push(' ');
            sql.push_str(order_limit);
        }
        sql
    }
}

/// The query's one SELECT, if it is nothing but `SELECT ... FROM ...
/// [WHERE] [GROUP BY] [HAVING] [WINDOW] [ORDER BY] [LIMIT]`.
fn plain_select(query: &Query) -> Option<&Select> {
    let plain_query = query.with.is_none()
        && query.fetch.is_none()
        && query.locks.is_empty()
        && query.for_clause.is_none()
        && query.settings.is_none()
        && query.format_clause.is_none()
        && query.pipe_operators.is_empty();
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let plain_select = select.optimizer_hints.is_empty()
        && select.select_modifiers.is_none()
        && select.top.is_none()
        && select.exclude.is_none()
        && select.into.is_none()
        && select.lateral_views.is_empty()
        && select.prewhere.is_none()
        && select.connect_by.is_empty()
        && select.cluster_by.is_empty()
        && select.distribute_by.is_empty()
        && select.sort_by.is_empty()
        && select.qualify.is_none()
        && select.value_table_mode.is_none()
        && matches!(select.flavor, SelectFlavor::Standard);
    (plain_query && plain_select).then_some(select.as_ref())
}

/// The one table of `FROM t [AS a]` (lower-case, without schema) and its
/// alias; `None` for anything else.
fn one_table(select: &Select) -> Option<(String, Option<String>)> {
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() {
        return None;
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        ..
    } = &from.relation
    else {
        return None;
    };
    let [ObjectNamePart::Identifier(table)] = name.0.as_slice() else {
        return None;
    };
    if !with_hints.is_empty() || !partitions.is_empty() {
        return None;
    }
    let alias = match alias {
        None => None,
        Some(a) if a.columns.is_empty() && a.at.is_none() => Some(a.name.value.clone()),
        Some(_) => return None,
    };
    Some((table.value.to_ascii_lowercase(), alias))
}

/// The names the query gives its result columns (`AS name`), lower-case.
fn result_names(select: &Select) -> Vec<String> {
    let mut names = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::ExprWithAlias { alias, .. } => names.push(alias.value.to_lowercase()),
            SelectItem::ExprWithAliases { aliases, .. } => {
                names.extend(aliases.iter().map(|a| a.value.to_lowercase()))
            }
            _ => {}
        }
    }
    names
}

/// What a pushed text is judged against.
struct Scope<'a> {
    /// The name columns may be qualified with: the alias, else the table.
    qualifier: String,
    result_names: Vec<String>,
    bindings: Bindings<'a>,
    text: Text<'a>,
}

impl Scope<'_> {
    /// The WHERE condition to push, parameters written in.
    fn filter(&self, condition: &Expr) -> Option<String> {
        let clause = self.text.clause(&[Keyword::WHERE], AFTER_WHERE)?;
        let parsed = Parser::new(&SQLiteDialect {})
            .try_with_sql(self.text.source(&clause))
            .and_then(|mut p| {
                let e = p.parse_expr()?;
                p.expect_token(&Token::EOF)?;
                Ok(e)
            })
            .ok()?;
        if parsed != *condition || !self.means_the_same(condition, &clause) {
            return None;
        }
        let text = self
            .text
            .with_literals(&clause, condition, &self.bindings)?;
        Some(text.trim().to_owned())
    }

    /// `ORDER BY ... LIMIT n + m` to push, if the order is total and no
    /// row between WHERE and ORDER BY is merged or dropped.
    fn order_limit(&self, query: &Query, select: &Select, pk: &str) -> Option<String> {
        let order_by = query.order_by.as_ref()?;
        let OrderByKind::Expressions(terms) = &order_by.kind else {
            return None;
        };
        let rows = self.limit_and_offset(query.limit_clause.as_ref()?)?;
        let ungrouped = select.distinct.is_none()
            && matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
            && select.having.is_none()
            && select.named_window.is_empty();
        let plain_columns = select.projection.iter().all(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                scalar_only(e)
            }
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
            _ => false,
        });
        let plain_terms = order_by.interpolate.is_none()
            && terms.iter().all(|t| {
                t.with_fill.is_none() && names_a_column(&t.expr) && self.columns_only(&t.expr)
            });
        let total = terms.iter().any(|t| self.is_column(&t.expr, pk));
        if !(ungrouped && plain_columns && plain_terms && total) {
            return None;
        }
        let clause = self
            .text
            .clause(&[Keyword::ORDER, Keyword::BY], AFTER_ORDER_BY)?;
        let source = self.text.source(&clause);
        let parsed = Parser::new(&SQLiteDialect {})
            .try_with_sql(source)
            .and_then(|mut p| {
                let terms = p.parse_comma_separated(Parser::parse_order_by_expr)?;
                p.expect_token(&Token::EOF)?;
                Ok(terms)
            })
            .ok()?;
        let no_parameters = !self
            .text
            .tokens(&clause)
            .any(|t| matches!(t, Token::Placeholder(_)));
        if parsed != *terms || !no_parameters || !self.means_the_same(terms, &clause) {
            return None;
        }
        Some(format!("ORDER BY {}\nLIMIT {rows}", source.trim()))
    }

    /// LIMIT plus OFFSET, both integers given literally or bound.
    fn limit_and_offset(&self, clause: &LimitClause) -> Option<i64> {
        let (limit, offset) = match clause {
            LimitClause::LimitOffset {
                limit: Some(limit),
                offset,
                limit_by,
            } if limit_by.is_empty() => {
                let offset = match offset {
                    Some(o) => self.count(&o.value)?,
                    None => 0,
                };
                (self.count(limit)?, offset)
            }
            LimitClause::OffsetCommaLimit { offset, limit } => {
                (self.count(limit)?, self.count(offset)?)
            }
            LimitClause::LimitOffset { .. } => return None,
        };
        limit.checked_add(offset)
    }

    /// A non-negative integer written as digits or bound to a placeholder.
    fn count(&self, expr: &Expr) -> Option<i64> {
        let Expr::Value(v) = expr else {
            return None;
        };
        let n = match &v.value {
            AstValue::Number(digits, false) if digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse::<i64>().ok()?
            }
            AstValue::Placeholder(text) => match self.bindings.value(text, v.span)? {
                Value::Integer(i) => *i,
                _ => return None,
            },
            _ => return None,
        };
        (n >= 0).then_some(n)
    }

    /// Whether `tree`, written as `clause`, means on a range's SELECT what
    /// it means in the query: deterministic scalar functions only, column
    /// qualifiers naming the table, and no word of it naming a result
    /// column or being one of [`UNSAFE_WORDS`].
    fn means_the_same(&self, tree: &impl Visit, clause: &Clause) -> bool {
        let words_ok = self.text.tokens(clause).all(|t| match t {
            Token::Word(w) => {
                let unsafe_word = w.quote_style.is_none() && UNSAFE_WORDS.contains(&w.keyword);
                !unsafe_word && !self.result_names.contains(&w.value.to_lowercase())
            }
            _ => true,
        });
        words_ok && scalar_only(tree) && self.columns_only(tree)
    }

    /// Whether every qualified column in `tree` is `<qualifier>.<column>`.
    fn columns_only(&self, tree: &impl Visit) -> bool {
        struct Check<'q>(&'q str);
        impl Visitor for Check<'_> {
            type Break = ();
            fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
                match expr {
                    Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                        [q, _] if q.value.eq_ignore_ascii_case(self.0) => ControlFlow::Continue(()),
                        _ => ControlFlow::Break(()),
                    },
                    _ => ControlFlow::Continue(()),
                }
            }
        }
        tree.visit(&mut Check(&self.qualifier)).is_continue()
    }

    /// Whether `expr` is the column `column`, possibly qualified.
    fn is_column(&self, expr: &Expr, column: &str) -> bool {
        match expr {
            Expr::Identifier(c) => c.value.eq_ignore_ascii_case(column),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, c] => {
                    q.value.eq_ignore_ascii_case(&self.qualifier)
                        && c.value.eq_ignore_ascii_case(column)
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// Whether `tree` calls only [`SCALAR_FUNCTIONS`], plainly (no DISTINCT,
/// FILTER, OVER, ...), and holds no subquery.
fn scalar_only(tree: &impl Visit) -> bool {
    struct Check;
    impl Visitor for Check {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Function(f) if !is_scalar(f) => ControlFlow::Break(()),
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    tree.visit(&mut Check).is_continue()
}

fn is_scalar(f: &Function) -> bool {
    let [ObjectNamePart::Identifier(name)] = f.name.0.as_slice() else {
        return false;
    };
    let FunctionArguments::List(list) = &f.args else {
        return false;
    };
    let plain = !f.uses_odbc_syntax
        && matches!(f.parameters, FunctionArguments::None)
        && f.within_group.is_empty()
        && f.filter.is_none()
        && f.null_treatment.is_none()
        && f.over.is_none()
        && list.duplicate_treatment.is_none()
        && list.clauses.is_empty()
        && list
            .args
            .iter()
            .all(|a| matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Expr(_))));
    let name = name.value.to_ascii_lowercase();
    let scalar = SCALAR_FUNCTIONS.contains(&name.as_str())
        || (matches!(name.as_str(), "min" | "max") && list.args.len() >= 2);
    plain && scalar
}

/// Whether `expr` reads some column: a term that reads none is a constant,
/// and an integer constant in ORDER BY means a result column.
fn names_a_column(expr: &Expr) -> bool {
    struct Find;
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Identifier(_) | Expr::CompoundIdentifier(_) => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    expr.visit(&mut Find).is_break()
}

/// Quotes an identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests;
