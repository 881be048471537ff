//! Writes on a sharded node: each statement goes to the groups owning the
//! keys it names, led by a claim of their ranges.

use crate::map::ShardMap;
use crate::{back_off, is_wrong_range, still_moving, Router, ATTEMPTS};
use paxsql_shard::keys::{self, InsertShape, KeyInterval, KeylessRows, Keys, Shape};
use paxsql_shard::rewrite;
use paxsql_sql::ranges::{Claim, Directive, RangeRow, WRONG_RANGE};
use paxsql_types::{GroupId, RequestError, RequestId, Response, Statement, StmtResult};
use std::collections::BTreeMap;

/// Where one statement goes: groups and the ranges claimed on each.
type Targets = BTreeMap<GroupId, Vec<Claim>>;

impl Router {
    pub(crate) async fn route_write(
        &self,
        stmts: Vec<Statement>,
        transaction: bool,
        id: RequestId,
    ) -> Result<Response, RequestError> {
        let shapes = self.shapes(&stmts).await?;
        let schema = shapes
            .iter()
            .filter(|s| matches!(s, Shape::Schema(_)))
            .count();
        let prefix = shapes
            .iter()
            .take_while(|s| matches!(s, Shape::Schema(_)))
            .count();
        let idempotent = stmts[..prefix]
            .iter()
            .all(|s| s.sql.to_ascii_uppercase().contains("IF NOT EXISTS"));
        if schema > 0 && schema == prefix && prefix < shapes.len() && (!transaction || idempotent) {
            // Schema first, on every group; then the rest, routed.
            let rest_stmts = stmts[prefix..].to_vec();
            let ddl = self
                .schema_change(
                    stmts[..prefix].to_vec(),
                    shapes[..prefix].to_vec(),
                    transaction,
                    id.clone(),
                )
                .await?;
            let rest = Box::pin(self.route_write(
                rest_stmts,
                transaction,
                RequestId(format!("{}/rest", id.0)),
            ))
            .await?;
            let mut results = ddl.results;
            results.extend(rest.results);
            return Ok(Response {
                results,
                index: rest.index,
            });
        }
        if schema > 0 {
            if schema < shapes.len() {
                return Err(RequestError::BadRequest(
                    "on a sharded cluster, send schema changes (CREATE, DROP, ALTER) in a request \
                     of their own"
                        .into(),
                ));
            }
            return self.schema_change(stmts, shapes, transaction, id).await;
        }
        let mut attempt = 0;
        loop {
            let map = match attempt {
                0 => self.map().await,
                _ => self.refresh().await?,
            };
            let (ready, shapes) = self.prepare(&map, &stmts, &shapes).await?;
            let targets = shapes
                .iter()
                .zip(&ready)
                .map(|(shape, stmt)| self.targets(&map, shape, stmt))
                .collect::<Result<Vec<_>, _>>()?;
            let outcome = self
                .run_targets(&ready, &targets, transaction, &id, attempt)
                .await?;
            match outcome {
                Some(response) => return Ok(response),
                None if attempt + 1 >= ATTEMPTS => return Err(still_moving()),
                None => {
                    back_off(attempt).await;
                    attempt += 1;
                }
            }
        }
    }

    /// The shapes of the statements, after placing every table they name
    /// that the map does not hold yet.
    pub(crate) async fn shapes(&self, stmts: &[Statement]) -> Result<Vec<Shape>, RequestError> {
        let mut map = self.map().await;
        for round in 0..2 {
            let pk = |t: &str| map.pk(t);
            let shapes = stmts
                .iter()
                .map(|s| keys::shape(s, &pk))
                .collect::<Result<Vec<_>, _>>()
                .map_err(RequestError::BadRequest)?;
            let missing: Vec<String> = shapes
                .iter()
                .filter_map(|s| match s {
                    Shape::Write { table, .. } => Some(table.clone()),
                    _ => None,
                })
                .filter(|t| map.ranges(t).is_none())
                .collect();
            if missing.is_empty() || round == 1 {
                return Ok(shapes);
            }
            for table in missing {
                self.ensure_placed(&table).await?;
            }
            map = self.map().await;
        }
        unreachable!("two rounds")
    }

    /// Makes every INSERT into a split table name its keys: a missing
    /// column list is filled in from the schema, and rows without a key
    /// get keys from the table's last range (see
    /// [`paxsql_shard::rewrite::assign_keys`]).
    async fn prepare(
        &self,
        map: &ShardMap,
        stmts: &[Statement],
        shapes: &[Shape],
    ) -> Result<(Vec<Statement>, Vec<Shape>), RequestError> {
        let mut out = (
            Vec::with_capacity(stmts.len()),
            Vec::with_capacity(stmts.len()),
        );
        for (stmt, shape) in stmts.iter().zip(shapes) {
            let (mut stmt, mut shape) = (stmt.clone(), shape.clone());
            let split = |t: &str| map.ranges(t).filter(|r| r.len() > 1);
            if let Shape::Write {
                table,
                insert: Some(InsertShape::ColumnsOmitted { .. }),
                ..
            } = &shape
            {
                if split(table).is_some() {
                    let schema = self.gather_schema(map, std::slice::from_ref(table)).await?;
                    let columns = schema.columns.get(table).cloned().unwrap_or_default();
                    stmt.sql = rewrite::name_columns(&stmt.sql, &columns)
                        .map_err(RequestError::BadRequest)?;
                    let pk = |t: &str| map.pk(t);
                    shape = keys::shape(&stmt, &pk).map_err(RequestError::BadRequest)?;
                }
            }
            if let Shape::Write {
                table,
                keys,
                insert: Some(InsertShape::Keyless { rows }),
            } = &mut shape
            {
                if let Some(ranges) = split(table) {
                    let last = ranges.last().expect("split");
                    let (Some(pk), Some(start), KeylessRows::Values(_)) =
                        (&last.pk, last.start, &*rows)
                    else {
                        return Err(keyless_on_split(table, ranges));
                    };
                    stmt.sql = rewrite::assign_keys(&stmt.sql, table, pk, start)
                        .map_err(RequestError::BadRequest)?;
                    *keys = Keys::Some(vec![KeyInterval {
                        lo: Some(start),
                        hi: None,
                    }]);
                }
            }
            out.0.push(stmt);
            out.1.push(shape);
        }
        Ok(out)
    }

    /// The groups a statement goes to, and the ranges claimed on each.
    fn targets(
        &self,
        map: &ShardMap,
        shape: &Shape,
        stmt: &Statement,
    ) -> Result<Targets, RequestError> {
        let all_groups = || -> Targets {
            self.data_groups()
                .into_iter()
                .map(|g| (g, Vec::new()))
                .collect()
        };
        let Shape::Write {
            table,
            keys,
            insert,
        } = shape
        else {
            if matches!(shape, Shape::Other) && writes_rows(&stmt.sql) {
                return Err(RequestError::BadRequest(
                    "on a sharded cluster this statement cannot be routed: the router could \
                     not tell which table and keys it writes (write one table, without \
                     syntax sqlparser does not know)"
                        .into(),
                ));
            }
            return Ok(all_groups());
        };
        let Some(ranges) = map.ranges(table) else {
            // Not a table of the map: SQLite says why on the first group.
            return Ok(BTreeMap::from([(self.data_groups()[0], Vec::new())]));
        };
        let chosen: Vec<&RangeRow> = ranges
            .iter()
            .filter(|r| match keys {
                Keys::All => true,
                k => k.overlaps(r.start, r.end),
            })
            .collect();
        let groups: std::collections::BTreeSet<u32> = chosen.iter().map(|r| r.group).collect();
        if insert.is_some() && groups.len() > 1 && !keys.is_all() {
            return Err(RequestError::BadRequest(format!(
                "this INSERT's rows belong to ranges of table {table} on several groups {:?}: \
                 send one INSERT per group (or per row)",
                groups
            )));
        }
        if insert.is_some() && groups.len() > 1 && keys.is_all() {
            return Err(RequestError::BadRequest(format!(
                "table {table} is split over several groups: an INSERT into it must give its \
                 keys as values or parameters (INSERT ... SELECT or computed keys cannot be \
                 routed)"
            )));
        }
        let mut targets = Targets::new();
        for r in chosen {
            targets
                .entry(GroupId(r.group))
                .or_default()
                .push((r.range, r.generation));
        }
        if targets.is_empty() {
            // Keys no range holds cannot exist; the statement still runs
            // once (on the first range's group) for its result.
            let r = &ranges[0];
            targets.insert(GroupId(r.group), vec![(r.range, r.generation)]);
        }
        Ok(targets)
    }

    /// Runs a request by its targets; `None` when a claim failed (the map
    /// moved: refresh and retry).
    async fn run_targets(
        &self,
        stmts: &[Statement],
        targets: &[Targets],
        transaction: bool,
        id: &RequestId,
        attempt: u32,
    ) -> Result<Option<Response>, RequestError> {
        let mut groups: Vec<GroupId> = targets.iter().flat_map(|t| t.keys().copied()).collect();
        groups.sort();
        groups.dedup();
        if let [group] = groups[..] {
            let claims: Vec<Claim> = targets.iter().flat_map(|t| t[&group].clone()).collect();
            let sub = RequestId(format!("{}/g{}/{attempt}", id.0, group.0));
            return self
                .claimed_write(group, claims, stmts.to_vec(), transaction, sub)
                .await;
        }
        if transaction {
            return Err(RequestError::BadRequest(format!(
                "this transaction touches data groups {:?}: a transaction must stay within one \
                 group until two-phase commit lands; send it without ?transaction (each \
                 statement then runs on its groups) or keep its keys on one group",
                groups.iter().map(|g| g.0).collect::<Vec<_>>()
            )));
        }
        // Statement by statement, each on its groups in order.
        // Once a part was applied, a range that moved is not retried (that
        // would apply the parts done again): the results say what ran.
        let mut results = Vec::with_capacity(stmts.len());
        let mut index = paxsql_types::LogIndex(0);
        let mut applied_any = false;
        for (i, (stmt, t)) in stmts.iter().zip(targets).enumerate() {
            let mut parts = Vec::new();
            let mut moved = None;
            for (group, claims) in t {
                let sub = RequestId(format!("{}/g{}/{attempt}/s{i}", id.0, group.0));
                match self
                    .claimed_write(*group, claims.clone(), vec![stmt.clone()], false, sub)
                    .await?
                {
                    Some(r) => {
                        applied_any = true;
                        index = index.max(r.index);
                        parts.extend(r.results);
                    }
                    None if !applied_any => return Ok(None),
                    None => {
                        moved = Some(*group);
                        break;
                    }
                }
            }
            if let Some(g) = moved {
                let what = match parts.is_empty() {
                    true => "not applied".to_owned(),
                    false => format!("applied only in part (not on group {g})"),
                };
                results.push(StmtResult::Error(format!(
                    "{WRONG_RANGE}: statement {} was {what}: its range moved while this request \
                     ran, after earlier parts of the request were applied; send it again",
                    i + 1
                )));
                for j in i + 1..stmts.len() {
                    results.push(StmtResult::Error(format!(
                        "{WRONG_RANGE}: statement {} was not applied: an earlier statement of \
                         this request met a moving range; send it again",
                        j + 1
                    )));
                }
                break;
            }
            results.push(merge(parts));
        }
        Ok(Some(Response { results, index }))
    }

    /// One write to one group, led by a claim; `None` if the claim failed.
    async fn claimed_write(
        &self,
        group: GroupId,
        claims: Vec<Claim>,
        stmts: Vec<Statement>,
        transaction: bool,
        id: RequestId,
    ) -> Result<Option<Response>, RequestError> {
        let mut all = Vec::with_capacity(stmts.len() + 1);
        all.push(Directive::Claim(claims).statement());
        all.extend(stmts);
        let mut r = self
            .inner
            .node
            .write_to(group, all, transaction, Some(id))
            .await?;
        if r.results.first().is_some_and(is_wrong_range) {
            return Ok(None);
        }
        r.results.remove(0);
        Ok(Some(r))
    }
}

/// One statement's results from several groups as one: rows affected
/// summed, rows concatenated, the first error wins.
pub(crate) fn merge(parts: Vec<StmtResult>) -> StmtResult {
    let mut out: Option<StmtResult> = None;
    for part in parts {
        out = Some(match (out, part) {
            (None, p) => p,
            (Some(e @ StmtResult::Error(_)), _) => e,
            (Some(_), e @ StmtResult::Error(_)) => e,
            (
                Some(StmtResult::Exec {
                    last_insert_id: a,
                    rows_affected: x,
                }),
                StmtResult::Exec {
                    last_insert_id: b,
                    rows_affected: y,
                },
            ) => StmtResult::Exec {
                last_insert_id: a.max(b),
                rows_affected: x + y,
            },
            (
                Some(StmtResult::Rows {
                    columns,
                    types,
                    mut values,
                }),
                StmtResult::Rows { values: more, .. },
            ) => {
                values.extend(more);
                StmtResult::Rows {
                    columns,
                    types,
                    values,
                }
            }
            (Some(first), _) => first,
        });
    }
    out.unwrap_or(StmtResult::Exec {
        last_insert_id: 0,
        rows_affected: 0,
    })
}

/// A keyless INSERT into a split table that is not `INSERT ... VALUES`.
fn keyless_on_split(table: &str, ranges: &[RangeRow]) -> RequestError {
    let pk = ranges[0].pk.as_deref().unwrap_or("the key");
    RequestError::BadRequest(format!(
        "table {table} is split over {} ranges: an INSERT ... SELECT or DEFAULT VALUES into it \
         must give the key column {pk}",
        ranges.len()
    ))
}

/// Whether a statement's text starts as a write of rows does.
fn writes_rows(sql: &str) -> bool {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "INSERT" | "REPLACE" | "UPDATE" | "DELETE" | "WITH"
    )
}
