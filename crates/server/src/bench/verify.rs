//! `--verify`: after the run, are the replicas the same?
//!
//! 1. Wait until every node reports the same applied index for every group
//!    (followers may still be applying the run's tail).
//! 2. On every node, list the user tables (on a sharded node this moves
//!    the metadata group's applied index, so wait again), then read each
//!    one whole at `level=local` — this node's own replicas — in rowid
//!    pages, hashing every row's values in order. Rows are compared, not counts: a replica
//!    with one different value has a different hash.
//! 3. Check the applied indexes again: if they moved, something wrote
//!    during the comparison and the verdict would mean nothing.
//!
//! paxsql's own bookkeeping tables (`_paxsql_*`) are not readable through
//! the API and are left out.

use super::http::post;
use super::workload::{Arg, Stmt};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};
use std::time::{Duration, Instant};

/// Rows per page when reading a table.
const PAGE_ROWS: i64 = 5_000;
/// How long followers get to catch up before the replicas are compared.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// One table on one node.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TableCopy {
    pub node: String,
    pub rows: u64,
    pub hash: String,
}

/// The outcome of `--verify`.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub passed: bool,
    /// Each node's applied index per group, as compared.
    pub applied_index: BTreeMap<String, Vec<u64>>,
    /// Each table's copies, one per node.
    pub tables: BTreeMap<String, Vec<TableCopy>>,
    /// What differed, in words; empty when passed.
    pub problems: Vec<String>,
}

/// Compares the replicas behind `nodes` (HTTP addresses).
pub async fn verify(nodes: &[String]) -> anyhow::Result<VerifyReport> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut problems = Vec::new();
    let mut applied = wait_caught_up(&client, nodes).await;
    let mut lists = BTreeMap::new();
    for n in nodes {
        lists.insert(n.clone(), table_names(&client, n).await?);
    }
    if applied.is_ok() {
        // On a sharded node listing the tables refreshes the shard map with
        // a linearizable read of the metadata group, which moves that
        // group's applied index: take the indexes to compare after it.
        applied = wait_caught_up(&client, nodes).await;
    }
    let applied = match applied {
        Ok(a) => a,
        Err(a) => {
            problems.push(format!(
                "the nodes did not reach the same applied index within {CATCH_UP_TIMEOUT:?}"
            ));
            a
        }
    };
    let names = lists.values().next().cloned().unwrap_or_default();
    for (n, l) in &lists {
        if *l != names {
            problems.push(format!(
                "node {n} has tables {l:?}, node {} has {names:?}",
                nodes[0]
            ));
        }
    }
    let mut tables = BTreeMap::new();
    for t in &names {
        let mut copies = Vec::new();
        for n in nodes {
            let (rows, hash) = read_table(&client, n, t).await?;
            copies.push(TableCopy {
                node: n.clone(),
                rows,
                hash: format!("{hash:016x}"),
            });
        }
        if copies
            .iter()
            .any(|c| (c.rows, &c.hash) != (copies[0].rows, &copies[0].hash))
        {
            let seen: Vec<String> = copies
                .iter()
                .map(|c| format!("{}: {} rows, {}", c.node, c.rows, c.hash))
                .collect();
            problems.push(format!("table {t} differs: {}", seen.join("; ")));
        }
        tables.insert(t.clone(), copies);
    }
    let after = applied_indexes(&client, nodes).await?;
    if after != applied {
        problems.push(
            "the applied index moved while the replicas were compared (is something else writing?)"
                .into(),
        );
    }
    Ok(VerifyReport {
        passed: problems.is_empty(),
        applied_index: applied,
        tables,
        problems,
    })
}

/// Every node's applied index per group, once they agree (`Ok`), or as
/// last seen when they did not within the timeout (`Err`).
pub async fn wait_caught_up(
    client: &reqwest::Client,
    nodes: &[String],
) -> Result<BTreeMap<String, Vec<u64>>, BTreeMap<String, Vec<u64>>> {
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let mut last = BTreeMap::new();
    loop {
        if let Ok(s) = indexes(client, nodes).await {
            let a: BTreeMap<String, Vec<u64>> = s
                .iter()
                .map(|(n, g)| (n.clone(), g.iter().map(|&(applied, _)| applied).collect()))
                .collect();
            let all_applied = s
                .values()
                .flatten()
                .all(|&(applied, decided)| applied >= decided);
            let mut values = a.values();
            let first = values.next();
            if all_applied && values.all(|v| Some(v) == first) {
                return Ok(a);
            }
            last = a;
        }
        if Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/status` of each node: the applied index of each of its groups.
pub async fn applied_indexes(
    client: &reqwest::Client,
    nodes: &[String],
) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
    Ok(indexes(client, nodes)
        .await?
        .into_iter()
        .map(|(n, g)| (n, g.into_iter().map(|(applied, _)| applied).collect()))
        .collect())
}

/// `/status` of each node: `(applied, decided)` index of each of its groups.
async fn indexes(
    client: &reqwest::Client,
    nodes: &[String],
) -> anyhow::Result<BTreeMap<String, Vec<(u64, u64)>>> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let status: Value = client
            .get(format!("http://{n}/status"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let groups = status["groups"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("{n}/status has no groups"))?;
        let applied = groups
            .iter()
            .map(|g| {
                (
                    g["applied_index"].as_u64().unwrap_or(0),
                    g["decided_index"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        out.insert(n.clone(), applied);
    }
    Ok(out)
}

async fn local_query(
    client: &reqwest::Client,
    node: &str,
    stmt: Stmt,
) -> anyhow::Result<Vec<Value>> {
    let url = format!("http://{node}/db/query?level=local");
    let results = post(client, &url, &[stmt])
        .await
        .map_err(|e| anyhow::anyhow!("reading at {node}: {e}"))?;
    let r = results
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("reading at {node}: no result"))?;
    if let Some(e) = r.get("error") {
        anyhow::bail!("reading at {node}: {e}");
    }
    Ok(r.get("values")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

async fn table_names(client: &reqwest::Client, node: &str) -> anyhow::Result<Vec<String>> {
    let sql = "SELECT name FROM sqlite_master WHERE type = 'table' \
               AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
               AND name NOT LIKE '\\_paxsql%' ESCAPE '\\' ORDER BY name";
    let rows = local_query(
        client,
        node,
        Stmt {
            sql: sql.into(),
            args: vec![],
        },
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r[0].as_str().map(str::to_owned))
        .collect())
}

/// The row count and a hash over every row, in rowid order.
async fn read_table(
    client: &reqwest::Client,
    node: &str,
    table: &str,
) -> anyhow::Result<(u64, u64)> {
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let page_sql: std::sync::Arc<str> =
        format!("SELECT rowid, * FROM {quoted} WHERE rowid > ? ORDER BY rowid LIMIT ?").into();
    let mut hasher = DefaultHasher::new();
    let mut rows = 0u64;
    let mut after = i64::MIN;
    loop {
        let stmt = Stmt {
            sql: page_sql.clone(),
            args: vec![Arg::Int(after), Arg::Int(PAGE_ROWS)],
        };
        let page = match local_query(client, node, stmt).await {
            Ok(p) => p,
            // A WITHOUT ROWID table: read it whole, in a canonical order.
            Err(e) if e.to_string().contains("rowid") => {
                return read_table_whole(client, node, &quoted).await;
            }
            Err(e) => return Err(e),
        };
        for row in &page {
            hash_row(&mut hasher, row);
            rows += 1;
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE_ROWS => {
                after = last[0]
                    .as_i64()
                    .ok_or_else(|| anyhow::anyhow!("{table}: rowid is not an integer"))?;
            }
            _ => return Ok((rows, hasher.finish())),
        }
    }
}

async fn read_table_whole(
    client: &reqwest::Client,
    node: &str,
    quoted: &str,
) -> anyhow::Result<(u64, u64)> {
    let stmt = Stmt {
        sql: format!("SELECT * FROM {quoted}").into(),
        args: vec![],
    };
    let mut rows: Vec<String> = local_query(client, node, stmt)
        .await?
        .iter()
        .map(Value::to_string)
        .collect();
    rows.sort();
    let mut hasher = DefaultHasher::new();
    for r in &rows {
        hasher.write(r.as_bytes());
        hasher.write_u8(b'\n');
    }
    Ok((rows.len() as u64, hasher.finish()))
}

fn hash_row(hasher: &mut DefaultHasher, row: &Value) {
    hasher.write(row.to_string().as_bytes());
    hasher.write_u8(b'\n');
}
