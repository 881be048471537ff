/*!
`paxsql bench`: a workload generator that states every speed as a measured
ratio — the replicated cluster against a plain local SQLite file, the same
workload, in the same run.

# What is measured

An **operation** is one request of `--batch` statements of one kind
(insert, update or read; a YCSB mix picks the kind per operation).
`--concurrency` client tasks each keep one operation in flight, closed
loop: send, wait for the answer, send the next. Each task owns its
connection (one keep-alive HTTP connection to one node; tasks are spread
over the nodes round-robin, and writes at a follower are forwarded to the
leader as any user's would be).

The run is `--warmup` (operations run but are not counted), then either
`--duration` of measuring or exactly `--ops` measured operations. An
operation counts when it *started* after the warm-up; its latency is
send-to-answer. For the totals: `ops = ok + errors` and
`statements = ops × batch`; throughput (`ops/s`, `statements/s`) counts
successful operations over the measured time; latency percentiles come from
HDR histograms of successful operations. Failures are never retried or
hidden: each is counted under a short kind (`http 503: ...`,
`statement: UNIQUE constraint failed: ...`, `client timeout`, `read: 0 rows
for one key`) and listed.

# The run, step by step

1. Start the target: `--local-cluster N` spawns N `paxsql node` processes
   on free loopback ports with fresh data dirs, each with `--groups G`
   ([`local`]); `--http` uses a running cluster.
2. Create the table (`--table`, dropped first if it exists) and, for
   workloads that read or update, load `--keys` rows ([`workload`]); wait
   until every replica has applied the load. With G above 1, split the
   table into G equal ranges over the keys the workload touches and move
   range g to data group g ([`shard`]; the workload's keys spread over
   them, see [`workload`]).
3. Drive the workload ([`drive`]), with a progress bar on a terminal.
4. With `--verify`, compare the replicas row by row ([`verify`]).
5. Stop a local cluster, so the next run and the baseline do not share
   the CPU with idle nodes. With a list `--groups 1,2,4`, steps 1–5 run
   once per value, each on a fresh cluster.
6. With `--baseline sqlite`, time the disk's fsync ([`disk`]; also done
   before a local cluster's run) and run the identical workload against one local
   SQLite file, as durable as the cluster's log ([`baseline`] explains why
   its path is a fair one).
7. Print the table (with several `--groups` values, also the runs side by
   side, throughput as a ratio to the first value); write `--json` and
   `--plot` ([`report`], [`plot`]).

The bench client runs on the machine it measures (on a 2-core laptop it
takes a share of the CPU from the nodes); the baseline pays the same client
costs except HTTP.
*/

mod baseline;
mod disk;
mod http;
mod local;
mod plot;
mod report;
mod shard;
mod stats;
mod verify;
mod workload;
mod zipf;

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use stats::{Recorder, RunSummary};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{Distribution, Op, Workload, WorkloadKind, WorkloadSpec};

/// Read consistency for read operations (`--level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// The node's own replica, possibly stale.
    Local,
    /// Served by the node that believes it leads.
    Leader,
    /// Sees every write acknowledged before the read began.
    Linearizable,
}

impl Level {
    /// As the HTTP API spells it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Local => "local",
            Level::Leader => "leader",
            Level::Linearizable => "linearizable",
        }
    }
}

/// What `--baseline` runs the workload against as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineKind {
    /// One local SQLite file, WAL, synchronous=FULL, one transaction per request.
    Sqlite,
    /// The SQLite baseline, then the same again with the statement budget's
    /// meter on its connections (SQLite's progress handler every 1000 VM
    /// steps, counting as replicas count): the two side by side show what
    /// counting work costs a write, with nothing else in between.
    SqliteMetered,
}

/// Flags of `paxsql bench`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["http", "local_cluster"])))]
pub struct BenchArgs {
    /// HTTP addresses of a running cluster's nodes (HOST:PORT,...); client
    /// tasks are spread over them round-robin.
    #[arg(long, value_delimiter = ',')]
    http: Vec<String>,
    /// Start a cluster of N nodes on loopback with fresh data dirs, and stop
    /// it afterwards.
    #[arg(long, value_name = "N")]
    local_cluster: Option<u64>,
    /// Data groups of the local cluster (`paxsql node --groups`), as a list
    /// to compare: `1,2,4` runs the workload once per value, each on a
    /// fresh cluster whose table is split into that many ranges, one per
    /// data group, and prints the runs side by side.
    #[arg(long, value_delimiter = ',', default_value = "1", value_name = "G,...")]
    groups: Vec<u32>,
    /// The workload.
    #[arg(long, value_enum, default_value = "insert")]
    workload: WorkloadKind,
    /// Consistency of reads (read and YCSB workloads).
    #[arg(long, value_enum, default_value = "linearizable")]
    level: Level,
    /// How keys are chosen for reads and updates.
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: Distribution,
    /// Zipfian skew, 0 < θ < 1.
    #[arg(long, default_value_t = 0.99)]
    theta: f64,
    /// Bytes in each row's value.
    #[arg(long, default_value_t = 100)]
    row_size: usize,
    /// Rows loaded before read, update and YCSB workloads (the key space).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Client tasks, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: usize,
    /// Statements per request.
    #[arg(long, short = 'b', default_value_t = 1)]
    batch: usize,
    /// How long to measure (after the warm-up), e.g. 10s, 1m.
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Measure exactly this many operations instead of a duration.
    #[arg(long, conflicts_with = "duration")]
    ops: Option<u64>,
    /// Run, but do not count, for this long first.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Run the identical workload against a local database too, and report
    /// the ratio.
    #[arg(long, value_enum)]
    baseline: Option<BaselineKind>,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw throughput over time and the latency CDF here (.png or .svg).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// After the run, check that every replica holds the same rows.
    #[arg(long)]
    verify: bool,
    /// The table the workload uses (dropped and created anew).
    #[arg(long, default_value = "paxsql_bench")]
    table: String,
    /// Where the local cluster's and the baseline's files go (a fresh
    /// directory inside, removed afterwards). Default: the system temp dir.
    /// Put it on the disk you mean to measure: a tmpfs makes fsync free.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Give up on a request after this long (counted as an error).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Seed for keys and values; the same seed sends the same operations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// The flags as the JSON output records them.
#[derive(Debug, Serialize)]
struct Config {
    workload: WorkloadKind,
    level: Level,
    distribution: Distribution,
    theta: f64,
    keys: u64,
    row_size: usize,
    concurrency: usize,
    batch: usize,
    warmup_s: f64,
    duration_s: Option<f64>,
    ops: Option<u64>,
    baseline: Option<BaselineKind>,
    nodes: Vec<String>,
    local_cluster: Option<u64>,
    groups: Vec<u32>,
    table: String,
    timeout_s: f64,
    seed: u64,
}

/// How long a run lasts and how it shows progress.
#[derive(Clone, Debug)]
struct Plan {
    warmup: Duration,
    duration: Duration,
    ops: Option<u64>,
    batch: usize,
    progress: bool,
}

/// Appends + fdatasyncs timed before each run (see [`disk`]).
const FSYNC_PROBE_ROUNDS: u64 = 200;

/// Runs `paxsql bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let spec = |groups: u32| WorkloadSpec {
        kind: args.workload,
        table: args.table.clone(),
        keys: args.keys,
        row_size: args.row_size,
        batch: args.batch,
        distribution: args.distribution,
        theta: args.theta,
        seed: args.seed,
        ranges: groups.into(),
    };
    let plan = Plan {
        warmup: args.warmup,
        duration: args.duration,
        ops: args.ops,
        batch: args.batch,
        progress: !args.quiet,
    };
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let rt = crate::runtime()?;
    catch_ctrl_c(&rt);

    // 1–5: the cluster, once per data-group count.
    let mut passes: Vec<ClusterPass> = Vec::new();
    for &groups in &args.groups {
        passes.push(cluster_pass(&args, &spec(groups), &plan, &parent, &rt)?);
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
    }
    let nodes = passes[0].nodes.clone();
    let verified = passes[0].verified.clone();
    let spec = spec(args.groups[0]);

    // 6: the baseline.
    let mut runs: Vec<RunSummary> = passes.iter().map(|p| p.summary.clone()).collect();
    if let Some(kind) = args.baseline {
        let metered = match kind {
            BaselineKind::Sqlite => vec![false],
            BaselineKind::SqliteMetered => vec![false, true],
        };
        for metered in metered {
            let dir = tempfile::Builder::new()
                .prefix("paxsql-bench-baseline-")
                .tempdir_in(&parent)
                .with_context(|| format!("creating a directory in {}", parent.display()))?;
            let fsync = disk::probe(dir.path(), FSYNC_PROBE_ROUNDS)?;
            let mut summary = rt.block_on(sqlite_run(&args, &spec, &plan, dir.path(), metered))?;
            summary.fsync = Some(fsync);
            runs.push(summary);
        }
    }
    let baselines = &runs[passes.len()..];
    if let [plain, metered] = baselines {
        println!(
            "statement budget meter: metered/plain SQLite = {:.3}x ops/s ({:.0} vs {:.0}), \
             {:.3}x median latency ({:.3} vs {:.3} ms)",
            metered.ops_per_s / plain.ops_per_s.max(f64::MIN_POSITIVE),
            metered.ops_per_s,
            plain.ops_per_s,
            metered.latency_ms.p50 / plain.latency_ms.p50.max(f64::MIN_POSITIVE),
            metered.latency_ms.p50,
            plain.latency_ms.p50,
        );
    }

    // 7: the report.
    let ratios = args
        .baseline
        .map(|_| report::Ratios::of(&runs[0], &runs[passes.len()]));
    let side_by_side: Vec<report::GroupsRun> = passes
        .into_iter()
        .map(|p| report::GroupsRun::of(p.groups, &p.summary, &runs[0], p.ranges, p.verified))
        .collect();
    println!("{}", title(&args));
    if side_by_side.len() == 1 {
        print!(
            "{}",
            report::table(&runs, ratios.as_ref(), verified.as_ref())
        );
    } else {
        print!("{}", report::table(&runs, None, None));
        print!("{}", report::groups_table(&side_by_side));
    }
    if let Some(path) = &args.plot {
        plot::plot(path, &title(&args), &runs)?;
        eprintln!("bench: plot written to {}", path.display());
    }
    let failed_verify = side_by_side
        .iter()
        .any(|g| g.verify.as_ref().is_some_and(|v| !v.passed));
    if let Some(path) = &args.json {
        let doc = report::Report {
            format_version: 1,
            config: config(&args, &nodes),
            runs,
            ratio_to_baseline: ratios,
            verify: verified.filter(|_| side_by_side.len() == 1),
            groups: side_by_side,
        };
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: results written to {}", path.display());
    }
    if failed_verify {
        bail!("--verify: the replicas differ (see above)");
    }
    Ok(())
}

fn validate(args: &BenchArgs) -> anyhow::Result<()> {
    if !workload::valid_table_name(&args.table) {
        bail!(
            "--table {:?}: use letters, digits and _ (not starting with a digit, _paxsql or sqlite_)",
            args.table
        );
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if !(1..=10_000).contains(&args.batch) {
        bail!("--batch must be between 1 and 10000 (the HTTP API's statements per request)");
    }
    if !(1..=1_000_000).contains(&args.row_size) {
        bail!("--row-size must be between 1 and 1000000 bytes");
    }
    if args.workload.needs_preload() && args.keys == 0 {
        bail!(
            "--keys must be at least 1 for the {:?} workload",
            args.workload
        );
    }
    if !(args.theta > 0.0 && args.theta < 1.0) {
        bail!("--theta must be between 0 and 1 (exclusive); YCSB uses 0.99");
    }
    if args.ops == Some(0) || (args.ops.is_none() && args.duration.is_zero()) {
        bail!("nothing to measure: give --duration above 0 or --ops above 0");
    }
    if args.local_cluster.is_none() && args.http.is_empty() {
        bail!("give --http HOST:PORT,... or --local-cluster N");
    }
    validate_groups(args)?;
    if let Some(p) = &args.plot {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !ext.eq_ignore_ascii_case("png") && !ext.eq_ignore_ascii_case("svg") {
            bail!(
                "--plot {}: the file name must end in .png or .svg",
                p.display()
            );
        }
    }
    Ok(())
}

fn validate_groups(args: &BenchArgs) -> anyhow::Result<()> {
    let max = paxsql_node::GROUPS_MAX;
    if let Some(g) = args.groups.iter().find(|&&g| g == 0 || g > max) {
        bail!("--groups {g}: each value must be between 1 and {max}");
    }
    if args.groups != [1] && args.local_cluster.is_none() {
        bail!(
            "--groups starts clusters with that many data groups, so it needs --local-cluster N \
             (against a running cluster, split and relocate the table yourself)"
        );
    }
    if args.groups.len() > 1 && args.baseline.is_some() {
        bail!("--baseline compares one cluster run with SQLite: give one --groups value with it");
    }
    let most = args.groups.iter().copied().max().unwrap_or(1);
    if args.workload.needs_preload() && args.keys < most.into() {
        bail!(
            "--keys {} cannot be split into {most} ranges: give at least {most} keys",
            args.keys
        );
    }
    Ok(())
}

fn title(args: &BenchArgs) -> String {
    let mut t = format!(
        "paxsql bench: {}, {} clients, batch {}, {} B rows",
        name(&args.workload),
        args.concurrency,
        args.batch,
        args.row_size
    );
    if args.workload != WorkloadKind::Insert {
        t += &format!(", {} keys {}", args.keys, name(&args.distribution));
        if args.distribution == Distribution::Zipfian {
            t += &format!(" θ={}", args.theta);
        }
    }
    if !matches!(args.workload, WorkloadKind::Insert | WorkloadKind::Update) {
        t += &format!(", reads {}", args.level.name());
    }
    t
}

/// A flag value as the command line spells it.
fn name(v: &impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

fn config(args: &BenchArgs, nodes: &[String]) -> Config {
    Config {
        workload: args.workload,
        level: args.level,
        distribution: args.distribution,
        theta: args.theta,
        keys: args.keys,
        row_size: args.row_size,
        concurrency: args.concurrency,
        batch: args.batch,
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: args.ops.is_none().then_some(args.duration.as_secs_f64()),
        ops: args.ops,
        baseline: args.baseline,
        nodes: nodes.to_vec(),
        local_cluster: args.local_cluster,
        groups: args.groups.clone(),
        table: args.table.clone(),
        timeout_s: args.timeout.as_secs_f64(),
        seed: args.seed,
    }
}

/// One client task's way to a target.
#[derive(Debug)]
enum Client {
    Http(http::HttpClient),
    Sqlite(baseline::SqliteClient),
}

impl Client {
    async fn run(&self, op: &Op) -> Result<(), String> {
        match self {
            Client::Http(c) => c.run(op).await,
            Client::Sqlite(c) => c.run(op).await,
        }
    }
}

/// Steps 1–5 at one data-group count (`spec.ranges`).
#[derive(Debug)]
struct ClusterPass {
    groups: u32,
    nodes: Vec<String>,
    summary: RunSummary,
    /// The table's ranges after the run, with G above 1.
    ranges: Option<Vec<shard::RangeLayout>>,
    verified: Option<verify::VerifyReport>,
}

/// Starts a local cluster (if asked to) of `spec.ranges` data groups, runs
/// the workload against the target, verifies, and stops the cluster.
fn cluster_pass(
    args: &BenchArgs,
    spec: &WorkloadSpec,
    plan: &Plan,
    parent: &Path,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<ClusterPass> {
    let groups = u32::try_from(spec.ranges).context("--groups")?;
    let mut local = match args.local_cluster {
        Some(n) => {
            eprintln!("bench: starting a local cluster of {n} nodes, {groups} data group(s)");
            Some(local::LocalCluster::start(n, groups, parent)?)
        }
        None => None,
    };
    let nodes = match &local {
        Some(c) => c.http().to_vec(),
        None => args.http.clone(),
    };
    let fsync = match &local {
        Some(c) => Some(disk::probe(c.dir(), FSYNC_PROBE_ROUNDS)?),
        None => None,
    };
    let pass = rt.block_on(async {
        let (mut summary, ranges) = cluster_run(args, spec, plan, &nodes).await?;
        summary.fsync = fsync;
        let verified = if args.verify {
            eprintln!("bench: comparing the replicas");
            Some(verify::verify(&nodes).await?)
        } else {
            None
        };
        anyhow::Ok((summary, ranges, verified))
    });
    if let (Err(_), Some(c)) = (&pass, &local) {
        print_log_tails(c.dir(), nodes.len());
    }
    if let Some(c) = &mut local {
        c.stop();
    }
    drop(local);
    let (summary, ranges, verified) = pass?;
    Ok(ClusterPass {
        groups,
        nodes,
        summary,
        ranges,
        verified,
    })
}

/// Sets up the table on the cluster (split over `spec.ranges` data groups
/// when above 1), drives the workload against it, and with G above 1 reads
/// back how the table's rows lie over the ranges.
async fn cluster_run(
    args: &BenchArgs,
    spec: &WorkloadSpec,
    plan: &Plan,
    nodes: &[String],
) -> anyhow::Result<(RunSummary, Option<Vec<shard::RangeLayout>>)> {
    let workload = Workload::new(spec.clone());
    let setup = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let sharded = spec.ranges > 1;
    if sharded {
        shard::wait_groups_led(&setup, nodes, spec.ranges as u32).await?;
    }
    eprintln!("bench: creating table {} at {}", spec.table, nodes[0]);
    for request in workload.setup_requests() {
        shard::execute_retrying(&setup, &nodes[0], &request)
            .await
            .with_context(|| format!("setting up {} at {}", spec.table, nodes[0]))?;
    }
    let caught_up = |what: &'static str| {
        let setup = &setup;
        async move {
            verify::wait_caught_up(setup, nodes)
                .await
                .map_err(|_| anyhow!("the replicas did not all apply {what} within a minute"))
        }
    };
    caught_up("the table's load").await?;
    if sharded {
        let keys = workload.split_keys();
        eprintln!(
            "bench: splitting {} at {keys:?}, range g to data group g",
            spec.table
        );
        shard::spread(&setup, &nodes[0], &spec.table, &keys).await?;
        caught_up("the relocated ranges").await?;
    }
    let clients = (0..args.concurrency)
        .map(|i| {
            http::HttpClient::new(&nodes[i % nodes.len()], args.level, args.timeout)
                .map(Client::Http)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut name = match args.local_cluster {
        Some(n) => format!("paxsql, {n} nodes"),
        None => format!("paxsql, {} addresses", nodes.len()),
    };
    if args.groups != [1] {
        name += &format!(", {} group{}", spec.ranges, if sharded { "s" } else { "" });
    }
    let summary = drive(name, workload, clients, plan).await?;
    let ranges = match sharded {
        true => Some(shard::ranges(&setup, &nodes[0], &spec.table).await?),
        false => None,
    };
    Ok((summary, ranges))
}

/// Sets up a fresh SQLite file in `dir` and drives the same workload
/// against it.
async fn sqlite_run(
    args: &BenchArgs,
    spec: &WorkloadSpec,
    plan: &Plan,
    dir: &Path,
    metered: bool,
) -> anyhow::Result<RunSummary> {
    let workload = Workload::new(spec.clone());
    let path = dir.join("baseline.sqlite");
    eprintln!(
        "bench: baseline: SQLite at {} (metered: {metered})",
        path.display()
    );
    let db = baseline::SqliteBaseline::open(&path, args.concurrency, metered)?;
    for request in workload.setup_requests() {
        db.execute(request)
            .await
            .map_err(|e| anyhow!("setting up the baseline: {e}"))?;
    }
    let clients = (0..args.concurrency)
        .map(|_| db.client(spec.kind.has_reads()).map(Client::Sqlite))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // `drive` consumes the clients, so their connections are closed before
    // `db` joins its writer.
    let name = if metered {
        "sqlite metered"
    } else {
        "sqlite baseline"
    };
    drive(name.into(), workload, clients, plan).await
}

/// Counters the progress bar reads while the tasks run.
#[derive(Debug, Default)]
struct Progress {
    measured: AtomicU64,
    failed: AtomicU64,
}

/// Set by the first Ctrl-C: the client tasks stop sending, and the run is
/// reported as far as it got. A second Ctrl-C exits at once.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Watches for Ctrl-C for the rest of the process (see [`INTERRUPTED`]).
fn catch_ctrl_c(rt: &tokio::runtime::Runtime) {
    rt.spawn(async {
        while tokio::signal::ctrl_c().await.is_ok() {
            if INTERRUPTED.swap(true, Ordering::Relaxed) {
                eprintln!("bench: interrupted twice; exiting");
                std::process::exit(130);
            }
            eprintln!(
                "bench: interrupted; finishing the operations in flight (Ctrl-C again to quit now)"
            );
        }
    });
}

/// Runs one client task per client until the plan says stop (or Ctrl-C),
/// and merges what they recorded.
async fn drive(
    name: String,
    workload: Arc<Workload>,
    clients: Vec<Client>,
    plan: &Plan,
) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let measure_from = started + plan.warmup;
    let measure_until = plan.ops.is_none().then(|| measure_from + plan.duration);
    let tickets = plan.ops.map(|n| Arc::new(AtomicI64::new(n as i64)));
    let progress = Arc::new(Progress::default());
    eprintln!(
        "bench: {name}: {} clients, {}",
        clients.len(),
        match plan.ops {
            Some(n) => format!("{n} ops after {:?} warm-up", plan.warmup),
            None => format!("{:?} after {:?} warm-up", plan.duration, plan.warmup),
        }
    );

    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let mut generator = workload.generator(i);
        let tickets = tickets.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let mut recorder = Recorder::new();
            while !INTERRUPTED.load(Ordering::Relaxed) {
                let measured = Instant::now() >= measure_from;
                if measured {
                    let out_of_tickets = tickets
                        .as_ref()
                        .is_some_and(|t| t.fetch_sub(1, Ordering::Relaxed) <= 0);
                    let out_of_time = measure_until.is_some_and(|u| Instant::now() >= u);
                    if out_of_tickets || out_of_time {
                        break;
                    }
                }
                let op = generator.next_op();
                let sent = Instant::now();
                let outcome = client.run(&op).await;
                let answered = Instant::now();
                if measured {
                    if outcome.is_err() {
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    progress.measured.fetch_add(1, Ordering::Relaxed);
                    recorder.record(
                        op.kind,
                        answered.saturating_duration_since(measure_from),
                        answered - sent,
                        outcome,
                    );
                }
            }
            recorder
        });
    }

    let bar = progress_bar(plan);
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                update_bar(&bar, &plan, &progress, started, measure_from);
            }
        })
    };

    let mut merged = Recorder::new();
    while let Some(done) = tasks.join_next().await {
        merged.merge(done.context("a client task panicked")?);
    }
    let finished = Instant::now();
    ticker.abort();
    bar.finish_and_clear();
    let elapsed = finished.saturating_duration_since(measure_from);
    Ok(merged.summarise(name, elapsed, plan.batch))
}

fn progress_bar(plan: &Plan) -> ProgressBar {
    if !plan.progress {
        return ProgressBar::hidden();
    }
    let len = match plan.ops {
        Some(n) => n,
        None => (plan.warmup + plan.duration).as_millis() as u64,
    };
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

fn update_bar(
    bar: &ProgressBar,
    plan: &Plan,
    progress: &Progress,
    started: Instant,
    measure_from: Instant,
) {
    let now = Instant::now();
    let measured = progress.measured.load(Ordering::Relaxed);
    let failed = progress.failed.load(Ordering::Relaxed);
    match plan.ops {
        Some(_) => bar.set_position(measured),
        None => bar.set_position(now.duration_since(started).as_millis() as u64),
    }
    if now < measure_from {
        bar.set_message("warming up");
        return;
    }
    let secs = now.duration_since(measure_from).as_secs_f64().max(1e-3);
    bar.set_message(format!(
        "{measured} ops, {:.0} ops/s, {failed} errors",
        measured as f64 / secs
    ));
}

/// After a failure with a local cluster: the end of each node's log.
fn print_log_tails(dir: &Path, nodes: usize) {
    for i in 1..=nodes {
        let log = std::fs::read_to_string(dir.join(format!("node-{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!("--- node {i} log, last lines ---");
        for l in &lines[lines.len().saturating_sub(20)..] {
            eprintln!("{l}");
        }
    }
}
