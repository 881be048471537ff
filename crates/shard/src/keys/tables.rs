//! The tables a query reads.

use std::ops::ControlFlow;

use sqlparser::ast::{ObjectName, ObjectNamePart, Query, SetExpr, TableFactor, Visit, Visitor};

/// What the walk over a query found.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Table and view names (lower-case, deduplicated, first use first).
    pub(crate) tables: Vec<String>,
    /// Every table factor: tables, CTE references, table-valued functions,
    /// derived tables. One means the query reads one relation, nothing else.
    pub(crate) factors: usize,
    /// Queries, the outermost included.
    pub(crate) queries: usize,
}

/// Walks `tree` for the relations it reads. CTE names are in scope in the
/// query that defines them (its body and its CTEs, for recursive ones), and
/// are not tables. Table-valued functions (`json_each(...)`) are not tables.
pub(crate) fn find(tree: &impl Visit) -> Found {
    #[derive(Default)]
    struct Walk {
        found: Found,
        /// Invariant: one entry per query being visited.
        scopes: Vec<Vec<String>>,
    }
    impl Visitor for Walk {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            self.found.queries += 1;
            let ctes = query.with.iter().flat_map(|w| &w.cte_tables);
            self.scopes.push(
                ctes.map(|c| c.alias.name.value.to_ascii_lowercase())
                    .collect(),
            );
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.scopes.pop();
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            self.found.factors += 1;
            if let TableFactor::Table {
                name, args: None, ..
            } = factor
            {
                let is_cte = name.0.len() == 1
                    && self.scopes.iter().flatten().any(|c| *c == table_name(name));
                let table = table_name(name);
                if !is_cte && !self.found.tables.contains(&table) {
                    self.found.tables.push(table);
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut walk = Walk::default();
    let _ = tree.visit(&mut walk);
    walk.found
}

/// A table's name without its schema, lower-case.
pub(crate) fn table_name(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => ident.value.to_ascii_lowercase(),
        Some(other) => other.to_string().to_ascii_lowercase(),
        None => String::new(),
    }
}

/// The one table a plain `SELECT ... FROM t [AS a] WHERE ...` reads, with
/// its alias: `None` for compound queries, joins, CTEs and anything else.
pub(crate) fn single_table(query: &Query) -> Option<(&ObjectName, Option<String>)> {
    if query.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() {
        return None;
    }
    match &from.relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => Some((name, alias.as_ref().map(|a| a.name.value.clone()))),
        _ => None,
    }
}
