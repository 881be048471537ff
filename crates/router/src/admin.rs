//! The sharding commands: `ALTER TABLE t SPLIT AT VALUES (k), ...`,
//! `ALTER RANGE r RELOCATE TO GROUP g`, `SHOW RANGES [FROM TABLE t]`, and
//! the map as `GET /shards` shows it.
//!
//! A map change touches two groups' logs (the metadata group's and a data
//! group's), so it is a sequence of steps, each a compare-and-set, ordered
//! so that no write can land on a group that does not own its key and no
//! row is lost: see docs/sharding.md. A step cut short by a crash leaves
//! the range refusing writes (retryably) until the same command runs again,
//! which finishes it.

use crate::map::ShardMap;
use crate::{Router, META};
use paxsql_shard::command::{self, Command};
use paxsql_sql::ranges::{ident, RangeChange, RangeRow};
use paxsql_types::{
    GroupId, LogIndex, Params, ReadLevel, RequestError, RequestId, Response, Statement, StmtResult,
    Value,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// Rows copied per write when a range moves.
const COPY_CHUNK_ROWS: usize = 1000;

/// The sharding command a request is, if it is one (then it must be alone).
pub(crate) fn command_of(stmts: &[Statement]) -> Result<Option<Command>, RequestError> {
    let mut found = None;
    for (i, s) in stmts.iter().enumerate() {
        if let Some(parsed) = command::parse(&s.sql) {
            let cmd = parsed
                .map_err(|e| RequestError::BadRequest(format!("statement {}: {e}", i + 1)))?;
            found = Some(cmd);
        }
    }
    match found {
        Some(_) if stmts.len() > 1 => Err(RequestError::BadRequest(
            "send a sharding command (SPLIT AT, RELOCATE, SHOW RANGES) in a request of its own"
                .into(),
        )),
        found => Ok(found),
    }
}

/// Whether a text is `SHOW RANGES` (a read).
pub(crate) fn is_show(sql: &str) -> bool {
    matches!(command::parse(sql), Some(Ok(Command::ShowRanges { .. })))
}

/// One range as `SHOW RANGES` and `/shards` show it.
#[derive(Clone, Debug, Serialize)]
pub struct RangeInfo {
    /// The range's id.
    pub range_id: u64,
    /// Its table.
    pub table: String,
    /// First key (inclusive), `null` = unbounded.
    pub start_key: Option<i64>,
    /// First key after it, `null` = unbounded.
    pub end_key: Option<i64>,
    /// The data group holding it.
    pub group: u32,
    /// The node leading that group, as this node believes.
    pub leader: Option<u64>,
    /// Raised by every change of the range.
    pub generation: u64,
    /// Rows in it.
    pub rows: i64,
    /// Bytes of its values (text and blob lengths, numbers as text).
    pub bytes: i64,
}

impl Router {
    pub(crate) async fn admin(&self, command: Command) -> Result<Response, RequestError> {
        if !self.is_sharded() {
            return Err(RequestError::BadRequest(
                "this cluster has one group: ranges, splits and relocations need a sharded \
                 cluster (start it with --groups N)"
                    .into(),
            ));
        }
        match command {
            Command::SplitAt { table, keys } => self.split(&table, keys).await,
            Command::Relocate { range, group } => self.relocate(range, GroupId(group)).await,
            Command::ShowRanges { table } => self.show_ranges(table.as_deref()).await,
        }
    }

    async fn split(&self, table: &str, keys: Vec<i64>) -> Result<Response, RequestError> {
        command::check_split_keys(&keys).map_err(RequestError::BadRequest)?;
        self.ensure_placed(table).await?;
        let _changing = self.inner.changing.lock().await;
        let map = self.refresh().await?;
        let Some(ranges) = map.ranges(table) else {
            return Err(no_such_table(table));
        };
        if ranges[0].pk.is_none() {
            return Err(RequestError::BadRequest(format!(
                "table {table} has no INTEGER PRIMARY KEY (a rowid alias): it stays one range \
                 and cannot be split"
            )));
        }
        let mut done = 0;
        for k in keys {
            let map = self.refresh().await?;
            let ranges = map.ranges(table).unwrap_or_default();
            let Some(r) = ranges.iter().find(|r| r.holds(k)) else {
                continue;
            };
            if r.start == Some(k) {
                continue; // split there already
            }
            let change = RangeChange::split(r, k, map.next_range_id());
            if !self.change(META, change).await? {
                return Err(changed_meanwhile());
            }
            self.sync_group(table, GroupId(r.group)).await?;
            done += 1;
        }
        // Also finishes a split a crash cut short.
        let map = self.refresh().await?;
        let mut groups: Vec<u32> = map
            .ranges(table)
            .unwrap_or_default()
            .iter()
            .map(|r| r.group)
            .collect();
        groups.dedup();
        for g in groups {
            self.sync_group(table, GroupId(g)).await?;
        }
        Ok(done_response(done))
    }

    /// Gives a data group exactly the ranges of `table` the map says it holds.
    async fn sync_group(&self, table: &str, group: GroupId) -> Result<(), RequestError> {
        let map = self.refresh().await?;
        let put: Vec<RangeRow> = map
            .ranges(table)
            .unwrap_or_default()
            .iter()
            .filter(|r| r.group == group.0)
            .cloned()
            .collect();
        let change = RangeChange {
            replace_table: Some(table.to_ascii_lowercase()),
            put,
            ..RangeChange::default()
        };
        self.change(group, change).await?;
        Ok(())
    }

    /// Moves a range's rows to another data group, online:
    /// 1. the source drops the range (it refuses writes to it from now on,
    ///    and keeps its rows);
    /// 2. its rows are read from the source and written to the target in
    ///    chunks, the first also giving the target the range at the next
    ///    generation (no router sends there yet: the map names the source);
    /// 3. the map names the target (compare-and-set on the generation);
    /// 4. the source deletes the rows.
    async fn relocate(&self, range: u64, to: GroupId) -> Result<Response, RequestError> {
        let groups = self.data_groups();
        if !groups.contains(&to) {
            return Err(RequestError::BadRequest(format!(
                "group {to} does not exist: the data groups are {}..={}",
                groups[0],
                groups[groups.len() - 1]
            )));
        }
        let _changing = self.inner.changing.lock().await;
        let map = self.refresh().await?;
        let Some(r) = map.range(range).cloned() else {
            return Err(RequestError::BadRequest(format!(
                "range {range} does not exist (SHOW RANGES lists them)"
            )));
        };
        let from = GroupId(r.group);
        if from == to {
            return Ok(done_response(0));
        }
        let drop = RangeChange {
            drop: vec![r.range],
            ..RangeChange::default()
        };
        self.change(from, drop).await?;
        let moved = r.moved_to(to.0);
        let copied = self.copy_rows(&map, &r, &moved, from, to).await?;
        let point = RangeChange {
            expect: vec![(r.range, Some(r.generation))],
            put: vec![moved],
            ..RangeChange::default()
        };
        if !self.change(META, point).await? {
            return Err(changed_meanwhile());
        }
        let delete = Statement::new(format!("DELETE FROM {}{}", ident(&r.table), r.key_filter()));
        self.inner
            .node
            .write_to(from, vec![delete], true, None)
            .await?;
        self.refresh().await?;
        tracing::info!(range, from = from.0, to = to.0, copied, "range relocated");
        Ok(done_response(copied))
    }

    /// Steps 2 of a relocation: the rows, chunk by chunk, by key order.
    async fn copy_rows(
        &self,
        map: &ShardMap,
        r: &RangeRow,
        moved: &RangeRow,
        from: GroupId,
        to: GroupId,
    ) -> Result<u64, RequestError> {
        let schema = self
            .gather_schema(map, std::slice::from_ref(&r.table))
            .await?;
        let columns = schema.columns.get(&r.table).cloned().unwrap_or_default();
        let key =
            r.pk.clone()
                .or_else(|| columns.iter().find(|c| *c == "rowid").cloned());
        let cols = columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let marks = vec!["?"; columns.len()].join(", ");
        let insert = format!("INSERT INTO {} ({cols}) VALUES ({marks})", ident(&r.table));
        let take = Statement::new(format!("DELETE FROM {}{}", ident(&r.table), r.key_filter()));
        let first = vec![
            paxsql_sql::Directive::Ranges(RangeChange {
                put: vec![moved.clone()],
                ..RangeChange::default()
            })
            .statement(),
            take,
        ];
        let mut after: Option<i64> = None;
        let mut copied = 0u64;
        let mut chunk_no = 0;
        loop {
            let mut filter = r.key_filter();
            let mut order = String::new();
            if let Some(k) = &key {
                let col = ident(k);
                if let Some(a) = after {
                    filter = match filter.is_empty() {
                        true => format!(" WHERE {col} > {a}"),
                        false => format!("{filter} AND {col} > {a}"),
                    };
                }
                order = format!(" ORDER BY {col} LIMIT {COPY_CHUNK_ROWS}");
            }
            let select = Statement::new(format!(
                "SELECT {cols} FROM {}{filter}{order}",
                ident(&r.table)
            ));
            let read = self
                .inner
                .node
                .read_from(from, vec![select], ReadLevel::Linearizable, None)
                .await?;
            let rows = match read.results.into_iter().next() {
                Some(StmtResult::Rows { values, .. }) => values,
                Some(StmtResult::Error(e)) => return Err(RequestError::Unavailable(e)),
                _ => Vec::new(),
            };
            let key_at = key
                .as_ref()
                .and_then(|k| columns.iter().position(|c| c == k));
            let last = key_at.and_then(|i| match rows.last().map(|row| &row[i]) {
                Some(Value::Integer(v)) => Some(*v),
                _ => None,
            });
            let mut stmts = if chunk_no == 0 {
                first.clone()
            } else {
                Vec::new()
            };
            let n = rows.len();
            stmts.extend(rows.into_iter().map(|row| Statement {
                sql: insert.clone(),
                params: Params::Positional(row),
            }));
            if !stmts.is_empty() {
                let id = RequestId(format!(
                    "relocate-{}-{}-{chunk_no}",
                    r.range, moved.generation
                ));
                let w = self.inner.node.write_to(to, stmts, true, Some(id)).await?;
                if let Some(StmtResult::Error(e)) =
                    w.results.iter().find(|x| matches!(x, StmtResult::Error(_)))
                {
                    return Err(RequestError::Unavailable(format!(
                        "copying range {} to group {to}: {e}",
                        r.range
                    )));
                }
            }
            copied += n as u64;
            chunk_no += 1;
            match (key_at, last) {
                (Some(_), Some(l)) if n == COPY_CHUNK_ROWS => after = Some(l),
                _ => return Ok(copied),
            }
        }
    }

    async fn show_ranges(&self, table: Option<&str>) -> Result<Response, RequestError> {
        if let Some(t) = table {
            self.ensure_placed(t).await?;
        }
        let infos = self.range_infos(table).await?;
        if let Some(t) = table {
            if infos.is_empty() {
                return Err(no_such_table(t));
            }
        }
        let columns = [
            "range_id",
            "table_name",
            "start_key",
            "end_key",
            "group_id",
            "leader",
            "generation",
            "rows",
            "bytes",
        ];
        let int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
        let values = infos
            .into_iter()
            .map(|i| {
                vec![
                    Value::Integer(i.range_id as i64),
                    Value::Text(i.table),
                    int(i.start_key),
                    int(i.end_key),
                    Value::Integer(i.group.into()),
                    int(i.leader.map(|l| l as i64)),
                    Value::Integer(i.generation as i64),
                    Value::Integer(i.rows),
                    Value::Integer(i.bytes),
                ]
            })
            .collect();
        let types = [
            "integer", "text", "integer", "integer", "integer", "integer", "integer", "integer",
            "integer",
        ];
        Ok(Response {
            results: vec![StmtResult::Rows {
                columns: columns.iter().map(|c| c.to_string()).collect(),
                types: types.iter().map(|c| c.to_string()).collect(),
                values,
            }],
            index: LogIndex(0),
        })
    }

    /// Every range (of one table, or all), with its rows and bytes counted
    /// on its group: one read per data group (every range's count in it),
    /// the groups at once.
    pub(crate) async fn range_infos(
        &self,
        table: Option<&str>,
    ) -> Result<Vec<RangeInfo>, RequestError> {
        let map = self.refresh().await?;
        let ranges: Vec<&RangeRow> = map
            .tables()
            .filter(|(t, _)| table.is_none_or(|want| want.eq_ignore_ascii_case(t)))
            .flat_map(|(_, rs)| rs.iter())
            .collect();
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        // By table (the map lists each table's ranges together).
        let mut tables: Vec<String> = ranges.iter().map(|r| r.table.clone()).collect();
        tables.dedup();
        let schema = self.gather_schema(&map, &tables).await?;
        let count = |r: &RangeRow| {
            let columns = schema.columns.get(&r.table).cloned().unwrap_or_default();
            let bytes = match columns.is_empty() {
                true => "0".to_owned(),
                false => columns
                    .iter()
                    .map(|c| format!("coalesce(length(CAST({} AS BLOB)), 0)", ident(c)))
                    .collect::<Vec<_>>()
                    .join(" + "),
            };
            Statement::new(format!(
                "SELECT count(*), coalesce(sum({bytes}), 0) FROM {}{}",
                ident(&r.table),
                r.key_filter()
            ))
        };
        let mut by_group: BTreeMap<u32, Vec<&RangeRow>> = BTreeMap::new();
        for r in &ranges {
            by_group.entry(r.group).or_default().push(r);
        }
        let reads = by_group.iter().map(|(&g, rs)| {
            let stmts = rs.iter().map(|r| count(r)).collect();
            self.inner
                .node
                .read_from(GroupId(g), stmts, ReadLevel::Linearizable, None)
        });
        let answers = futures::future::try_join_all(reads).await?;
        let mut counted: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
        for (rs, answer) in by_group.values().zip(answers) {
            for (r, result) in rs.iter().zip(answer.results) {
                let n = match result {
                    StmtResult::Rows { values, .. } => match values.first().map(|v| &v[..]) {
                        Some([Value::Integer(n), Value::Integer(b)]) => (*n, *b),
                        _ => (0, 0),
                    },
                    _ => (0, 0),
                };
                counted.insert(r.range, n);
            }
        }
        Ok(ranges
            .into_iter()
            .map(|r| {
                let (rows, bytes) = counted.get(&r.range).copied().unwrap_or_default();
                RangeInfo {
                    range_id: r.range,
                    table: r.table.clone(),
                    start_key: r.start,
                    end_key: r.end,
                    group: r.group,
                    leader: self.inner.node.leader_of(GroupId(r.group)).map(|n| n.0),
                    generation: r.generation,
                    rows,
                    bytes,
                }
            })
            .collect())
    }

    /// `GET /shards`: the groups with their leaders, and every range.
    pub async fn shards(&self) -> Result<serde_json::Value, RequestError> {
        let groups: Vec<serde_json::Value> = self
            .inner
            .node
            .groups()
            .into_iter()
            .map(|g| {
                serde_json::json!({
                    "group": g.0,
                    "role": if g == META && self.is_sharded() { "metadata" } else { "data" },
                    "leader": self.inner.node.leader_of(g).map(|n| n.0),
                })
            })
            .collect();
        let ranges = match self.is_sharded() {
            true => self.range_infos(None).await?,
            false => Vec::new(),
        };
        Ok(serde_json::json!({
            "sharded": self.is_sharded(),
            "groups": groups,
            "ranges": ranges,
        }))
    }
}

fn no_such_table(table: &str) -> RequestError {
    RequestError::BadRequest(format!("no such table: {table}"))
}

fn changed_meanwhile() -> RequestError {
    RequestError::Unavailable(
        "the shard map changed while this command ran (another node changed it); retry".into(),
    )
}

fn done_response(n: u64) -> Response {
    Response {
        results: vec![StmtResult::Exec {
            last_insert_id: 0,
            rows_affected: n,
        }],
        index: LogIndex(0),
    }
}
