//! Schema changes on a sharded node: every data group applies them, in
//! group order, before the client hears back; a new table is placed as
//! one range on the data group holding the fewest.

use crate::{Router, META};
use paxsql_shard::keys::{SchemaChange, Shape};
use paxsql_sql::ranges::{Directive, RangeChange, RangeRow};
use paxsql_types::{GroupId, ReadLevel, RequestError, RequestId, Response, Statement, StmtResult};

impl Router {
    pub(crate) async fn schema_change(
        &self,
        stmts: Vec<Statement>,
        shapes: Vec<Shape>,
        transaction: bool,
        id: RequestId,
    ) -> Result<Response, RequestError> {
        for s in &shapes {
            if let Shape::Schema(SchemaChange::AlterTable {
                table,
                renamed_to: Some(_),
            }) = s
            {
                return Err(RequestError::BadRequest(format!(
                    "renaming table {table} is not supported on a sharded cluster yet (its \
                     ranges are named by the table)"
                )));
            }
        }
        let mut first: Option<Response> = None;
        for group in self.data_groups() {
            let sub = RequestId(format!("{}/ddl/g{}", id.0, group.0));
            let r = self
                .inner
                .node
                .write_to(group, stmts.clone(), transaction, Some(sub))
                .await?;
            first.get_or_insert(r);
        }
        let response = first.expect("at least one data group");
        for (shape, result) in shapes.iter().zip(&response.results) {
            if matches!(result, StmtResult::Error(_)) {
                continue;
            }
            match shape {
                Shape::Schema(SchemaChange::CreateTable { table, .. }) => {
                    self.ensure_placed(table).await?;
                }
                Shape::Schema(SchemaChange::DropTable { table }) => {
                    self.unplace(table).await?;
                }
                _ => {}
            }
        }
        Ok(response)
    }

    /// Gives a table that exists on the data groups its first range, if
    /// the map has none yet (also repairs a placement a crash cut short).
    pub(crate) async fn ensure_placed(&self, table: &str) -> Result<(), RequestError> {
        let table = table.to_ascii_lowercase();
        let _changing = self.inner.changing.lock().await;
        for _ in 0..5 {
            let map = self.refresh().await?;
            if map.ranges(&table).is_some() {
                return Ok(());
            }
            let Some(pk) = self.table_key(&table).await? else {
                return Ok(()); // no such table: statements on it fail on their own
            };
            let groups = self.data_groups();
            let row = RangeRow {
                range: map.next_range_id(),
                table: table.clone(),
                start: None,
                end: None,
                group: map.emptiest(&groups).0,
                generation: 1,
                pk,
            };
            let put = RangeChange {
                expect: vec![(row.range, None)],
                put: vec![row.clone()],
                ..RangeChange::default()
            };
            // The data group first: the map never names a group that does
            // not know its range.
            self.change(GroupId(row.group), put.clone()).await?;
            let meta = RangeChange {
                new_table: Some(table.clone()),
                ..put
            };
            if self.change(META, meta).await? {
                self.refresh().await?;
                return Ok(());
            }
            // Another node placed it (or took the id) first.
            let undo = RangeChange {
                expect: vec![(row.range, Some(1))],
                drop: vec![row.range],
                ..RangeChange::default()
            };
            self.change(GroupId(row.group), undo).await?;
        }
        Err(RequestError::Unavailable(format!(
            "placing table {table} kept conflicting with other nodes; retry"
        )))
    }

    /// Forgets a dropped table's ranges, on its groups and in the map.
    async fn unplace(&self, table: &str) -> Result<(), RequestError> {
        let _changing = self.inner.changing.lock().await;
        let map = self.refresh().await?;
        let Some(ranges) = map.ranges(table) else {
            return Ok(());
        };
        let ids: Vec<u64> = ranges.iter().map(|r| r.range).collect();
        for g in self.data_groups() {
            let drop = RangeChange {
                replace_table: Some(table.to_ascii_lowercase()),
                ..RangeChange::default()
            };
            self.change(g, drop).await?;
        }
        let drop = RangeChange {
            drop: ids,
            ..RangeChange::default()
        };
        self.change(META, drop).await?;
        self.refresh().await?;
        Ok(())
    }

    /// Sends a change of ranges to a group: `Ok(false)` when its
    /// expectations did not hold.
    pub(crate) async fn change(
        &self,
        group: GroupId,
        change: RangeChange,
    ) -> Result<bool, RequestError> {
        let stmt = Directive::Ranges(change).statement();
        let r = self
            .inner
            .node
            .write_to(group, vec![stmt], true, None)
            .await?;
        match r.results.first() {
            Some(StmtResult::Exec { .. }) => Ok(true),
            Some(StmtResult::Error(e)) if e.starts_with(paxsql_sql::ranges::WRONG_RANGE) => {
                Ok(false)
            }
            other => Err(RequestError::Unavailable(format!(
                "changing the ranges of group {group}: {other:?}"
            ))),
        }
    }

    /// `Some(pk)` when the table exists (pk: its integer primary key).
    async fn table_key(&self, table: &str) -> Result<Option<Option<String>>, RequestError> {
        let Some(sql) = self.create_sql(table).await? else {
            return Ok(None);
        };
        let shape = paxsql_shard::keys::shape(&Statement::new(sql), &|_| None)
            .map_err(RequestError::Unavailable)?;
        Ok(Some(match shape {
            Shape::Schema(SchemaChange::CreateTable { pk, .. }) => pk,
            _ => None,
        }))
    }

    /// A table's `CREATE TABLE` text, as the first data group has it.
    pub(crate) async fn create_sql(&self, table: &str) -> Result<Option<String>, RequestError> {
        let stmt = Statement {
            sql: "SELECT sql FROM sqlite_schema WHERE type = 'table' AND lower(name) = lower(?1)"
                .into(),
            params: paxsql_types::Params::Positional(vec![paxsql_types::Value::Text(
                table.to_owned(),
            )]),
        };
        let group = self.data_groups()[0];
        let r = self
            .inner
            .node
            .read_from(group, vec![stmt], ReadLevel::Linearizable, None)
            .await?;
        Ok(match r.results.into_iter().next() {
            Some(StmtResult::Rows { values, .. }) => {
                values
                    .into_iter()
                    .next()
                    .and_then(|row| match row.into_iter().next() {
                        Some(paxsql_types::Value::Text(sql)) => Some(sql),
                        _ => None,
                    })
            }
            _ => None,
        })
    }
}
