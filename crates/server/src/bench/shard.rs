//! `--groups G` with G above 1: lay the bench table out over the data
//! groups before the run, and read the layout back after it.
//!
//! The table is created (and loaded) as one range on one data group, as any
//! new table is. [`spread`] then splits it at the keys
//! [`super::workload::Workload::split_keys`] gives — G equal ranges over
//! the keys the workload touches — and relocates the ranges so that, in key
//! order, range g lies on data group g. Every command is an ordinary
//! statement sent alone to `/db/execute`; `SHOW RANGES FROM TABLE` (a read)
//! finds the range ids and checks the result.

use super::http::post;
use super::workload::Stmt;
use anyhow::{anyhow, bail};
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long the groups get to elect leaders, and a sharding command to go
/// through while they do (it is answered 503 meanwhile).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One range of the bench table as `SHOW RANGES FROM TABLE` lists it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RangeLayout {
    pub range_id: u64,
    /// Inclusive; `None` below every key.
    pub start_key: Option<i64>,
    /// Exclusive; `None` above every key.
    pub end_key: Option<i64>,
    pub group_id: u64,
    pub rows: i64,
}

/// Waits until every node knows a leader for the metadata group and each
/// of `groups` data groups (`GET /shards`).
pub async fn wait_groups_led(
    client: &reqwest::Client,
    nodes: &[String],
    groups: u32,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    for node in nodes {
        loop {
            let led = match client.get(format!("http://{node}/shards")).send().await {
                Ok(r) if r.status().is_success() => {
                    let s: Value = r.json().await.unwrap_or_default();
                    let gs = s["groups"].as_array().cloned().unwrap_or_default();
                    gs.len() == groups as usize + 1 && gs.iter().all(|g| g["leader"].is_u64())
                }
                _ => false,
            };
            if led {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {node} did not know a leader for each of its {groups} data groups within {SETTLE_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Runs `stmts` at `node`, again while the node answers 503 (a leader
/// being elected, the shard map changing); any other failure is an error.
pub async fn execute_retrying(
    client: &reqwest::Client,
    node: &str,
    stmts: &[Stmt],
) -> anyhow::Result<()> {
    let url = format!("http://{node}/db/execute");
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let outcome = post(client, &url, stmts)
            .await
            .and_then(|r| super::http::check_results(&r, stmts.len(), false));
        match outcome {
            Ok(()) => return Ok(()),
            Err(e) if e.starts_with("http 503") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("{} at {node}: {e}", stmts[0].sql),
        }
    }
}

/// `SHOW RANGES FROM TABLE table` at `node`, in key order.
pub async fn ranges(
    client: &reqwest::Client,
    node: &str,
    table: &str,
) -> anyhow::Result<Vec<RangeLayout>> {
    let url = format!("http://{node}/db/query?level=linearizable");
    let stmt = Stmt {
        sql: format!("SHOW RANGES FROM TABLE {table}").into(),
        args: vec![],
    };
    let results = post(client, &url, &[stmt])
        .await
        .map_err(|e| anyhow!("SHOW RANGES FROM TABLE {table} at {node}: {e}"))?;
    let result = results.first().cloned().unwrap_or_default();
    let columns = result["columns"].as_array().cloned().unwrap_or_default();
    let at = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| anyhow!("SHOW RANGES has no column {name}: {result}"))
    };
    let (id, start, end, group, rows) = (
        at("range_id")?,
        at("start_key")?,
        at("end_key")?,
        at("group_id")?,
        at("rows")?,
    );
    let mut out = Vec::new();
    for r in result["values"].as_array().cloned().unwrap_or_default() {
        out.push(RangeLayout {
            range_id: r[id]
                .as_u64()
                .ok_or_else(|| anyhow!("SHOW RANGES: a range without an id: {r}"))?,
            start_key: r[start].as_i64(),
            end_key: r[end].as_i64(),
            group_id: r[group]
                .as_u64()
                .ok_or_else(|| anyhow!("SHOW RANGES: a range without a group: {r}"))?,
            rows: r[rows].as_i64().unwrap_or(0),
        });
    }
    out.sort_by_key(|r| r.start_key.map_or(i128::MIN, i128::from));
    Ok(out)
}

/// Splits `table` at `keys` and moves range g (in key order, from 1) to
/// data group g; returns the layout, checked.
pub async fn spread(
    client: &reqwest::Client,
    node: &str,
    table: &str,
    keys: &[i64],
) -> anyhow::Result<Vec<RangeLayout>> {
    let plain = |sql: String| Stmt {
        sql: sql.into(),
        args: vec![],
    };
    if !keys.is_empty() {
        let list: Vec<String> = keys.iter().map(|k| format!("({k})")).collect();
        let split = format!("ALTER TABLE {table} SPLIT AT VALUES {}", list.join(", "));
        execute_retrying(client, node, &[plain(split)]).await?;
    }
    for (r, group) in ranges(client, node, table).await?.iter().zip(1u64..) {
        if r.group_id != group {
            let relocate = format!("ALTER RANGE {} RELOCATE TO GROUP {group}", r.range_id);
            execute_retrying(client, node, &[plain(relocate)]).await?;
        }
    }
    let layout = ranges(client, node, table).await?;
    let groups: Vec<u64> = layout.iter().map(|r| r.group_id).collect();
    let wanted: Vec<u64> = (1..=keys.len() as u64 + 1).collect();
    if groups != wanted {
        bail!("{table} was not laid out one range per data group: {layout:?}");
    }
    Ok(layout)
}
