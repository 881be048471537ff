//! What a statement touches: the router's view of one SQL statement.
//!
//! [`shape`] parses a statement with sqlparser's SQLite dialect and says
//! whether it changes the schema, writes one table, reads some tables, or
//! is something else, and which keys of the table's integer primary key
//! (its rowid) it may touch. The router uses the keys to send a statement
//! only to the groups whose ranges they overlap.
//!
//! The one rule: [`Keys`] are always a superset of the rows the statement
//! can touch. What is not understood widens to [`Keys::All`], text that does
//! not parse is [`Shape::Other`] ("run everywhere"). A wrong narrow answer
//! would silently miss rows; a wide one only costs fan-out.
//!
//! The key is the column `pk(table)` names, or `rowid`, `_rowid_`, `oid`
//! (a table with a real column of one of those names shadows the rowid; the
//! router's `pk` should then not be trusted for it). Identifiers compare
//! case-insensitively; table names come back lower-case without schema.

mod condition;
mod interval;
pub(crate) mod params;
mod schema;
mod tables;

use std::ops::ControlFlow;

use paxsql_types::Statement;
use sqlparser::ast::{
    Delete, FromTable, Insert, Query, SetExpr, Statement as Ast, TableFactor, TableObject, Update,
    Visit, Visitor,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

pub use interval::{KeyInterval, Keys};

use condition::Table;
use params::Bindings;

/// What the router needs to know of one SQL statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// CREATE/DROP/ALTER of a table, index, view or trigger (runs on every
    /// data group).
    Schema(SchemaChange),
    /// INSERT / REPLACE / UPDATE / DELETE of one table.
    Write {
        /// The table written, lower-case.
        table: String,
        /// The keys the statement may touch. For UPDATE and DELETE these are
        /// the keys its WHERE selects: an UPDATE that sets the key column
        /// moves rows to keys not listed here (the router handles moves).
        /// A write with any subquery or WITH is [`Keys::All`].
        keys: Keys,
        /// For INSERT and REPLACE: whether the statement gives the keys.
        insert: Option<InsertShape>,
    },
    /// A query (SELECT, WITH ... SELECT, VALUES).
    Read {
        /// Every table or view name it references (lower-cased,
        /// deduplicated, excluding CTE names and table-valued functions).
        tables: Vec<String>,
        /// When it reads exactly one table, with no join, CTE or subquery
        /// reading tables: the keys its WHERE restricts that table to.
        /// Otherwise [`Keys::All`]. If that name is a view, the keys mean
        /// nothing (only `rowid` could have matched): the router must check.
        keys: Keys,
    },
    /// Anything else (PRAGMA, EXPLAIN, ANALYZE, VACUUM, ...), text holding
    /// other than one statement, and text sqlparser cannot parse.
    Other,
}

/// A change to the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaChange {
    /// CREATE TABLE (or CREATE VIRTUAL TABLE, whose `pk` is `None`).
    CreateTable {
        /// The table, lower-case.
        table: String,
        /// The INTEGER PRIMARY KEY column (lower-case) if the table has a
        /// rowid alias: a column declared exactly `INTEGER PRIMARY KEY`, or
        /// a table-level `PRIMARY KEY(col)` on one column of declared type
        /// `INTEGER`, in a table that is not `WITHOUT ROWID`.
        pk: Option<String>,
    },
    /// DROP TABLE.
    DropTable {
        /// The table, lower-case.
        table: String,
    },
    /// ALTER TABLE. Columns may have been renamed (the key column too): the
    /// router should read the table's key column again afterwards.
    AlterTable {
        /// The table, lower-case.
        table: String,
        /// The new name of a `RENAME TO`, lower-case.
        renamed_to: Option<String>,
    },
    /// CREATE or DROP of an index, view or trigger.
    Other,
}

/// Whether an INSERT gives the keys of its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertShape {
    /// The statement names the key column, so gives the key for every row
    /// (a NULL or non-constant key makes the keys [`Keys::All`]).
    Keyed,
    /// The key column is absent: SQLite would choose the key.
    Keyless {
        /// The rows inserted.
        rows: KeylessRows,
    },
    /// No column list (`INSERT INTO t VALUES (...)`): the key is the value
    /// at the key column's position in the table, which only the schema
    /// knows. The keys are [`Keys::All`]; the router must look further.
    ColumnsOmitted {
        /// The rows inserted.
        rows: KeylessRows,
    },
}

/// The rows of an INSERT that does not name its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeylessRows {
    /// `INSERT ... VALUES` with this many rows.
    Values(usize),
    /// `INSERT ... SELECT` or `DEFAULT VALUES`.
    Other,
}

/// Text whose tree could nest deeper than this (see [`nesting_bound`]) is
/// not parsed: dropping or walking sqlparser's tree of it recurses once per
/// level and could overflow the stack.
const NESTING_MAX: usize = 2_000;

/// The shape of `stmt`. `pk(table)` gives a table's integer primary key
/// column name (`table` lower-case), `None` if it has none or is unknown.
///
/// Never fails today: text that does not parse is [`Shape::Other`]. The
/// `Result` leaves room for statements the router must refuse.
pub fn shape(stmt: &Statement, pk: &dyn Fn(&str) -> Option<String>) -> Result<Shape, String> {
    let Some(ast) = parse_one(&stmt.sql) else {
        return Ok(Shape::Other);
    };
    let bindings = Bindings::new(&ast, &stmt.params);
    let analysis = Analysis { pk, bindings };
    Ok(match &ast {
        Ast::Query(query) => analysis.query(query),
        Ast::Insert(insert) => analysis.insert(insert),
        Ast::Update(update) => analysis.update(update),
        Ast::Delete(delete) => analysis.delete(delete),
        other => schema::change(other).map_or(Shape::Other, Shape::Schema),
    })
}

struct Analysis<'a> {
    pk: &'a dyn Fn(&str) -> Option<String>,
    bindings: Bindings<'a>,
}

impl Analysis<'_> {
    fn table<'t>(&'t self, table: &str, alias: Option<String>) -> Table<'t> {
        Table {
            qualifiers: std::iter::once(table.to_owned()).chain(alias).collect(),
            pk: (self.pk)(table),
            bindings: &self.bindings,
        }
    }

    fn query(&self, query: &Query) -> Shape {
        match query.body.as_ref() {
            // `WITH ... INSERT/UPDATE/DELETE`: the CTEs may read anything.
            SetExpr::Insert(write) | SetExpr::Update(write) | SetExpr::Delete(write) => {
                match self.write(write) {
                    Shape::Write { table, insert, .. } => Shape::Write {
                        table,
                        keys: Keys::All,
                        insert,
                    },
                    other => other,
                }
            }
            _ => {
                let found = tables::find(query);
                let keys = match tables::single_table(query) {
                    Some((name, alias)) if found.factors == 1 && found.tables.len() == 1 => {
                        let SetExpr::Select(select) = query.body.as_ref() else {
                            unreachable!("single_table only accepts a SELECT")
                        };
                        let table = tables::table_name(name);
                        self.table(&table, alias).keys(select.selection.as_ref())
                    }
                    _ => Keys::All,
                };
                Shape::Read {
                    tables: found.tables,
                    keys,
                }
            }
        }
    }

    fn write(&self, write: &Ast) -> Shape {
        match write {
            Ast::Insert(insert) => self.insert(insert),
            Ast::Update(update) => self.update(update),
            Ast::Delete(delete) => self.delete(delete),
            _ => Shape::Other,
        }
    }

    fn insert(&self, insert: &Insert) -> Shape {
        let TableObject::TableName(name) = &insert.table else {
            return Shape::Other;
        };
        let table = tables::table_name(name);
        let alias = insert.table_alias.as_ref().map(|a| a.alias.value.clone());
        let target = self.table(&table, alias);
        let values = insert
            .source
            .as_deref()
            .and_then(|q| match q.body.as_ref() {
                SetExpr::Values(v) if q.with.is_none() => Some(&v.rows),
                _ => None,
            });
        let rows = match values {
            Some(rows) => KeylessRows::Values(rows.len()),
            None => KeylessRows::Other,
        };
        let key_column = insert.columns.iter().position(|c| {
            let column = c.0.last().and_then(|p| p.as_ident());
            column.is_some_and(|c| target.is_key_column(&c.value))
        });
        let (shape, keys) = match (insert.columns.is_empty(), key_column) {
            (true, _) => (InsertShape::ColumnsOmitted { rows }, Keys::All),
            (false, None) => (InsertShape::Keyless { rows }, Keys::All),
            (false, Some(at)) => {
                let keys = values.map_or(Keys::All, |rows| {
                    rows.iter()
                        .try_fold(Keys::none(), |keys, row| {
                            Some(keys.union(Keys::point(target.integer(row.content.get(at)?)?)))
                        })
                        .unwrap_or(Keys::All)
                });
                (InsertShape::Keyed, keys)
            }
        };
        // The VALUES list is the one query an INSERT may hold without
        // reading other tables.
        let reads = subqueries(insert) > usize::from(insert.source.is_some());
        Shape::Write {
            table,
            keys: if reads { Keys::All } else { keys },
            insert: Some(shape),
        }
    }

    fn update(&self, update: &Update) -> Shape {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = &update.table.relation
        else {
            return Shape::Other;
        };
        let table = tables::table_name(name);
        let alias = alias.as_ref().map(|a| a.name.value.clone());
        let plain = update.table.joins.is_empty() && update.from.is_none();
        let keys = if plain && subqueries(update) == 0 {
            self.table(&table, alias).keys(update.selection.as_ref())
        } else {
            Keys::All
        };
        Shape::Write {
            table,
            keys,
            insert: None,
        }
    }

    fn delete(&self, delete: &Delete) -> Shape {
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
        let [from] = from.as_slice() else {
            return Shape::Other;
        };
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = &from.relation
        else {
            return Shape::Other;
        };
        if !delete.tables.is_empty() || delete.using.is_some() || !from.joins.is_empty() {
            return Shape::Other;
        }
        let table = tables::table_name(name);
        let alias = alias.as_ref().map(|a| a.name.value.clone());
        let keys = if subqueries(delete) == 0 {
            self.table(&table, alias).keys(delete.selection.as_ref())
        } else {
            Keys::All
        };
        Shape::Write {
            table,
            keys,
            insert: None,
        }
    }
}

/// How many queries `tree` holds (subqueries, VALUES lists, CTE bodies).
pub(crate) fn subqueries(tree: &impl Visit) -> usize {
    struct Count(usize);
    impl Visitor for Count {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.0 += 1;
            ControlFlow::Continue(())
        }
    }
    let mut count = Count(0);
    let _ = tree.visit(&mut count);
    count.0
}

/// The one statement `sql` holds (trailing semicolons allowed), or `None`
/// for zero or several statements, text sqlparser cannot parse, or text
/// nested too deeply to parse safely.
pub(crate) fn parse_one(sql: &str) -> Option<Ast> {
    let dialect = SQLiteDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .ok()?;
    if nesting_bound(&tokens) > NESTING_MAX {
        return None;
    }
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    while parser.consume_token(&Token::SemiColon) {}
    let statement = parser.parse_statement().ok()?;
    while parser.consume_token(&Token::SemiColon) {}
    (parser.peek_token().token == Token::EOF).then_some(statement)
}

/// An upper bound, in tokens, on how deep a parser's tree of the text can
/// be: the most tokens on any path from the top into nested parentheses,
/// where a path counts every token of each list item it passes through
/// (expression chains such as `a OR b OR c` nest one level per operator),
/// plus one per parenthesis. Counted without recursion.
fn nesting_bound(tokens: &[TokenWithSpan]) -> usize {
    /// One open parenthesis (or the top level): tokens of the current list
    /// item, the deepest group nested in it, the deepest closed item.
    #[derive(Default)]
    struct Level(usize, usize, usize);
    impl Level {
        fn close_item(&mut self) {
            self.2 = self.2.max(self.0 + self.1);
            (self.0, self.1) = (0, 0);
        }
        fn close(mut self) -> usize {
            self.close_item();
            self.2 + 1
        }
    }
    // Invariant: never empty; the first level is the top.
    let mut levels = vec![Level::default()];
    let close = |levels: &mut Vec<Level>| {
        let depth = levels.pop().map_or(0, Level::close);
        let parent = levels.last_mut().expect("the top level stays");
        parent.1 = parent.1.max(depth);
    };
    for token in tokens {
        match token.token {
            Token::Whitespace(_) => {}
            Token::LParen | Token::LBracket => levels.push(Level::default()),
            Token::RParen | Token::RBracket if levels.len() > 1 => close(&mut levels),
            Token::Comma | Token::SemiColon => {
                levels.last_mut().expect("the top level stays").close_item()
            }
            _ => levels.last_mut().expect("the top level stays").0 += 1,
        }
    }
    while levels.len() > 1 {
        close(&mut levels);
    }
    levels.pop().map_or(0, Level::close)
}

#[cfg(test)]
mod tests;
