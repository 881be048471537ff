//! Reads on a sharded node: from the one group that holds everything a
//! query needs, or gathered from every group into an in-memory SQLite
//! database and answered there. A gathered query that reads one table has
//! its WHERE (and, where the order is total, its `ORDER BY ... LIMIT`)
//! applied by each range's SELECT too, so only rows that can count are
//! copied (`paxsql_shard::pushdown`).

use crate::map::ShardMap;
use crate::writes::merge;
use crate::{back_off, still_moving, Router, ATTEMPTS};
use paxsql_shard::gather::Gather;
use paxsql_shard::keys::{Keys, Shape};
use paxsql_shard::pushdown::{pushdown, Pushdown};
use paxsql_sql::ranges::{claim_check_sql, ident, Claim, RangeRow};
use paxsql_types::{
    GroupId, LogIndex, Params, ReadLevel, RequestError, Response, Statement, StmtResult, Value,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How a read is answered.
enum Plan {
    /// By one group, with these ranges claimed.
    Direct(GroupId, Vec<Claim>),
    /// By gathering these tables' rows (and these views' definitions).
    Gather(Vec<String>),
}

impl Router {
    pub(crate) async fn route_read(
        &self,
        stmts: Vec<Statement>,
        level: ReadLevel,
        timeout: Option<Duration>,
    ) -> Result<Response, RequestError> {
        let shapes = self.read_shapes(&stmts).await?;
        let mut results = Vec::with_capacity(stmts.len());
        let mut index = LogIndex(0);
        for (stmt, shape) in stmts.into_iter().zip(shapes) {
            let (result, at) = self.read_one(stmt, &shape, level, timeout).await?;
            index = index.max(at);
            results.push(result);
        }
        Ok(Response { results, index })
    }

    /// The shapes of reads, after placing tables the map lacks.
    async fn read_shapes(&self, stmts: &[Statement]) -> Result<Vec<Shape>, RequestError> {
        let map = self.map().await;
        let pk = |t: &str| map.pk(t);
        let shapes = stmts
            .iter()
            .map(|s| paxsql_shard::keys::shape(s, &pk))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RequestError::BadRequest)?;
        let unknown = shapes.iter().any(|s| match s {
            Shape::Read { tables, .. } => tables.iter().any(|t| map.ranges(t).is_none()),
            _ => false,
        });
        if !unknown {
            return Ok(shapes);
        }
        // Maybe tables placed by another node, or views.
        let map = self.refresh().await?;
        let pk = |t: &str| map.pk(t);
        stmts
            .iter()
            .map(|s| paxsql_shard::keys::shape(s, &pk))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RequestError::BadRequest)
    }

    async fn read_one(
        &self,
        stmt: Statement,
        shape: &Shape,
        level: ReadLevel,
        timeout: Option<Duration>,
    ) -> Result<(StmtResult, LogIndex), RequestError> {
        let mut attempt = 0;
        loop {
            let map = match attempt {
                0 => self.map().await,
                _ => self.refresh().await?,
            };
            let plan = self.plan(&map, shape).await?;
            let outcome = match plan {
                Plan::Direct(group, claims) => self
                    .claimed_read(group, &claims, vec![stmt.clone()], level, timeout)
                    .await?
                    .map(|(mut r, at)| (r.remove(0), at)),
                Plan::Gather(names) => self.gather(&map, &stmt, &names, level, timeout).await?,
            };
            match outcome {
                Some(done) => return Ok(done),
                None if attempt + 1 >= ATTEMPTS => return Err(still_moving()),
                None => {
                    back_off(attempt).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Which groups answer a read.
    async fn plan(&self, map: &ShardMap, shape: &Shape) -> Result<Plan, RequestError> {
        let first = self.data_groups()[0];
        let Shape::Read { tables, keys } = shape else {
            // PRAGMA, EXPLAIN, a write sent as a read (refused there): any
            // data group knows the schema.
            return Ok(Plan::Direct(first, Vec::new()));
        };
        let (mapped, views) = self.expand(map, tables).await?;
        let mut needed: Vec<&RangeRow> = Vec::new();
        for t in &mapped {
            let ranges = map.ranges(t).unwrap_or_default();
            let single = tables.len() == 1 && views.is_empty();
            needed.extend(ranges.iter().filter(|r| match keys {
                Keys::Some(_) if single => keys.overlaps(r.start, r.end),
                _ => true,
            }));
        }
        let groups: BTreeSet<u32> = needed.iter().map(|r| r.group).collect();
        match groups.len() {
            0 => Ok(Plan::Direct(first, Vec::new())),
            1 => {
                let g = GroupId(*groups.first().expect("one"));
                Ok(Plan::Direct(
                    g,
                    needed.iter().map(|r| (r.range, r.generation)).collect(),
                ))
            }
            _ => {
                let mut names = mapped;
                names.extend(views);
                Ok(Plan::Gather(names))
            }
        }
    }

    /// Splits the names a query reads into mapped tables and views (with
    /// the tables those views read, recursively). Unknown names are left
    /// to SQLite's error.
    async fn expand(
        &self,
        map: &ShardMap,
        names: &[String],
    ) -> Result<(Vec<String>, Vec<String>), RequestError> {
        let (mut tables, mut views) = (BTreeSet::new(), BTreeSet::new());
        let mut todo: Vec<String> = names.to_vec();
        while let Some(name) = todo.pop() {
            let name = name.to_ascii_lowercase();
            if tables.contains(&name) || views.contains(&name) {
                continue;
            }
            if map.ranges(&name).is_some() {
                tables.insert(name);
                continue;
            }
            let Some(sql) = self.view_sql(&name).await? else {
                continue;
            };
            if let Ok(Shape::Read { tables: inner, .. }) =
                paxsql_shard::keys::shape(&Statement::new(view_select(&sql)), &|_| None)
            {
                todo.extend(inner);
            }
            views.insert(name);
        }
        Ok((tables.into_iter().collect(), views.into_iter().collect()))
    }

    async fn view_sql(&self, name: &str) -> Result<Option<String>, RequestError> {
        let stmt = Statement {
            sql: "SELECT sql FROM sqlite_schema WHERE type = 'view' AND lower(name) = ?1".into(),
            params: Params::Positional(vec![Value::Text(name.to_owned())]),
        };
        let rows = self.schema_rows(stmt).await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| match r.into_iter().next() {
                Some(Value::Text(s)) => Some(s),
                _ => None,
            }))
    }

    async fn schema_rows(&self, stmt: Statement) -> Result<Vec<Vec<Value>>, RequestError> {
        let group = self.data_groups()[0];
        let r = self
            .inner
            .node
            .read_from(group, vec![stmt], ReadLevel::Local, None)
            .await?;
        match r.results.into_iter().next() {
            Some(StmtResult::Rows { values, .. }) => Ok(values),
            Some(StmtResult::Error(e)) => Err(RequestError::Unavailable(e)),
            _ => Ok(Vec::new()),
        }
    }

    /// A read on one group after a check, in the same read transaction,
    /// that the group holds the claimed ranges at their generations; `None`
    /// if it does not.
    async fn claimed_read(
        &self,
        group: GroupId,
        claims: &[Claim],
        stmts: Vec<Statement>,
        level: ReadLevel,
        timeout: Option<Duration>,
    ) -> Result<Option<(Vec<StmtResult>, LogIndex)>, RequestError> {
        let mut all = Vec::with_capacity(stmts.len() + 1);
        all.push(Statement::new(claim_check_sql(claims)));
        all.extend(stmts);
        let mut r = self
            .inner
            .node
            .read_from(group, all, level, timeout)
            .await?;
        let held = match r.results.remove(0) {
            StmtResult::Rows { values, .. } => values
                .iter()
                .filter_map(|row| match row[..] {
                    [Value::Integer(id), Value::Integer(g)] => Some((id as u64, g as u64)),
                    _ => None,
                })
                .collect::<BTreeSet<_>>(),
            StmtResult::Error(e) => return Err(RequestError::Unavailable(e)),
            StmtResult::Exec { .. } => BTreeSet::new(),
        };
        let wanted: BTreeSet<Claim> = claims.iter().copied().collect();
        Ok((held == wanted).then_some((r.results, r.index)))
    }

    /// Copies the rows of every range of `names` (views: their definition)
    /// into an in-memory database and runs the query there. Of a query that
    /// reads one table, only the rows its pushed-down WHERE and limit keep.
    async fn gather(
        &self,
        map: &ShardMap,
        stmt: &Statement,
        names: &[String],
        level: ReadLevel,
        timeout: Option<Duration>,
    ) -> Result<Option<(StmtResult, LogIndex)>, RequestError> {
        let schema = self.gather_schema(map, names).await?;
        // A query reading one table and nothing else: each range's SELECT
        // also applies its WHERE (and ORDER BY ... LIMIT where safe).
        let push =
            pushdown(stmt, &|t| map.pk(t)).filter(|p| matches!(names, [only] if *only == p.table));
        // Per group: the claims and one SELECT per range held there.
        let mut per_group: BTreeMap<u32, GroupReads> = BTreeMap::new();
        for t in names {
            let Some(ranges) = map.ranges(t) else {
                continue;
            };
            let columns = &schema.columns[t];
            for r in ranges {
                let e = per_group.entry(r.group).or_default();
                e.0.push((r.range, r.generation));
                e.1.push((t.clone(), range_select(t, columns, r, push.as_ref())));
            }
        }
        let mut rows: Vec<(String, Vec<String>, Vec<Vec<Value>>)> = Vec::new();
        let mut index = LogIndex(0);
        for (g, (claims, selects)) in per_group {
            let (tables, stmts): (Vec<String>, Vec<Statement>) = selects.into_iter().unzip();
            let Some((results, at)) = self
                .claimed_read(GroupId(g), &claims, stmts, level, timeout)
                .await?
            else {
                return Ok(None);
            };
            index = index.max(at);
            for (t, result) in tables.into_iter().zip(results) {
                match result {
                    StmtResult::Rows {
                        columns, values, ..
                    } => rows.push((t, columns, values)),
                    StmtResult::Error(e) => return Ok(Some((StmtResult::Error(e), index))),
                    StmtResult::Exec { .. } => {}
                }
            }
        }
        tracing::debug!(
            rows = rows.iter().map(|(_, _, v)| v.len()).sum::<usize>(),
            pushdown = ?push,
            "gathered"
        );
        let (bytes_max, rows_max) = (
            self.inner.options.gather_bytes_max,
            self.inner.options.result_rows_max,
        );
        let stmt = stmt.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<StmtResult, String> {
            let mut db = Gather::new(bytes_max)?;
            for sql in &schema.creates {
                db.schema(sql)?;
            }
            for (t, columns, values) in rows {
                db.add_rows(&t, &columns, values)?;
            }
            Ok(db.query(&stmt, rows_max))
        })
        .await
        .map_err(|e| RequestError::Unavailable(format!("gathered query: {e}")))?;
        let result = result.unwrap_or_else(StmtResult::Error);
        Ok(Some((merge(vec![result]), index)))
    }

    /// The schema a gathered query needs: `CREATE` texts (tables, then
    /// indexes, then views) and each table's stored columns.
    pub(crate) async fn gather_schema(
        &self,
        map: &ShardMap,
        names: &[String],
    ) -> Result<GatherSchema, RequestError> {
        let list = names
            .iter()
            .map(|n| format!("'{}'", n.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ");
        let creates = self
            .schema_rows(Statement::new(format!(
                "SELECT sql FROM sqlite_schema WHERE lower(tbl_name) IN ({list}) AND sql IS NOT NULL \
                   AND type IN ('table', 'index', 'view') AND name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' \
                 ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END"
            )))
            .await?
            .into_iter()
            .filter_map(|r| match r.into_iter().next() {
                Some(Value::Text(s)) => Some(s),
                _ => None,
            })
            .collect();
        let mut columns = BTreeMap::new();
        for t in names {
            let stmt = Statement {
                sql: "SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0".into(),
                params: Params::Positional(vec![Value::Text(t.clone())]),
            };
            let mut cols: Vec<String> = self
                .schema_rows(stmt)
                .await?
                .into_iter()
                .filter_map(|r| match r.into_iter().next() {
                    Some(Value::Text(s)) => Some(s),
                    _ => None,
                })
                .collect();
            // A table without an integer primary key keeps its rowids.
            let rowid = Statement {
                sql: "SELECT wr FROM pragma_table_list(?1)".into(),
                params: Params::Positional(vec![Value::Text(t.clone())]),
            };
            let without_rowid = self.schema_rows(rowid).await?;
            let has_rowid = matches!(
                without_rowid.first().map(|r| &r[..]),
                Some([Value::Integer(0)])
            );
            if has_rowid && map.pk(t).is_none() {
                cols.insert(0, "rowid".into());
            }
            columns.insert(t.clone(), cols);
        }
        Ok(GatherSchema { creates, columns })
    }
}

/// What a gathered query reads on one group: the claims, and per range its
/// table and SELECT.
type GroupReads = (Vec<Claim>, Vec<(String, Statement)>);

pub(crate) struct GatherSchema {
    pub(crate) creates: Vec<String>,
    pub(crate) columns: BTreeMap<String, Vec<String>>,
}

/// The rows of one range: its stored columns (and the rowid of a table
/// without an integer primary key, so rowids survive), only those meeting
/// the pushed-down filter and within the pushed-down limit, if any.
fn range_select(
    table: &str,
    columns: &[String],
    r: &RangeRow,
    push: Option<&Pushdown>,
) -> Statement {
    let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    Statement::new(match push {
        Some(p) => p.range_select(&cols, r.key_condition().as_deref()),
        None => format!(
            "SELECT {} FROM {}{}",
            cols.join(", "),
            ident(table),
            r.key_filter()
        ),
    })
}

/// The SELECT of a `CREATE VIEW v AS SELECT ...` text.
fn view_select(create: &str) -> String {
    let upper = create.to_ascii_uppercase();
    match upper.find(" AS ") {
        Some(at) => create[at + 4..].to_owned(),
        None => create.to_owned(),
    }
}
