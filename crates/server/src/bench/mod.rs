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
   on free loopback ports with fresh data dirs ([`local`]); `--http` uses a
   running cluster.
2. Create the table (`--table`, dropped first if it exists) and, for
   workloads that read or update, load `--keys` rows ([`workload`]); wait
   until every replica has applied the load.
3. Drive the workload ([`drive`]), with a progress bar on a terminal.
4. With `--verify`, compare the replicas row by row ([`verify`]).
5. Stop a local cluster, so the baseline does not share the CPU with idle
   nodes.
6. With `--baseline sqlite`, time the disk's fsync ([`disk`]; also done
   before a local cluster's run) and run the identical workload against one local
   SQLite file, as durable as the cluster's log ([`baseline`] explains why
   its path is a fair one).
7. Print the table; write `--json` and `--plot` ([`report`], [`plot`]).

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
    let spec = WorkloadSpec {
        kind: args.workload,
        table: args.table.clone(),
        keys: args.keys,
        row_size: args.row_size,
        batch: args.batch,
        distribution: args.distribution,
        theta: args.theta,
        seed: args.seed,
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

    // 1–5: the cluster.
    let mut local = match args.local_cluster {
        Some(n) => {
            eprintln!("bench: starting a local cluster of {n} nodes");
            Some(local::LocalCluster::start(n, &parent)?)
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
    let cluster = rt.block_on(async {
        let mut summary = cluster_run(&args, &spec, &plan, &nodes).await?;
        summary.fsync = fsync;
        let verified = if args.verify {
            eprintln!("bench: comparing the replicas");
            Some(verify::verify(&nodes).await?)
        } else {
            None
        };
        anyhow::Ok((summary, verified))
    });
    if let (Err(_), Some(c)) = (&cluster, &local) {
        print_log_tails(c.dir(), nodes.len());
    }
    if let Some(c) = &mut local {
        c.stop();
    }
    drop(local);
    let (cluster, verified) = cluster?;

    // 6: the baseline.
    let mut runs = vec![cluster];
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
    if let [_, plain, metered] = runs.as_slice() {
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
    let ratios = runs.get(1).map(|b| report::Ratios::of(&runs[0], b));
    println!("{}", title(&args));
    print!(
        "{}",
        report::table(&runs, ratios.as_ref(), verified.as_ref())
    );
    if let Some(path) = &args.plot {
        plot::plot(path, &title(&args), &runs)?;
        eprintln!("bench: plot written to {}", path.display());
    }
    let failed_verify = verified.as_ref().is_some_and(|v| !v.passed);
    if let Some(path) = &args.json {
        let doc = report::Report {
            format_version: 1,
            config: config(&args, &nodes),
            runs,
            ratio_to_baseline: ratios,
            verify: verified,
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

/// Sets up the table on the cluster and drives the workload against it.
async fn cluster_run(
    args: &BenchArgs,
    spec: &WorkloadSpec,
    plan: &Plan,
    nodes: &[String],
) -> anyhow::Result<RunSummary> {
    let workload = Workload::new(spec.clone());
    let setup = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = format!("http://{}/db/execute", nodes[0]);
    eprintln!("bench: creating table {} at {}", spec.table, nodes[0]);
    for request in workload.setup_requests() {
        let results = http::post(&setup, &url, &request)
            .await
            .and_then(|r| http::check_results(&r, request.len(), false))
            .map_err(|e| anyhow!("setting up {} at {}: {e}", spec.table, nodes[0]));
        results?;
    }
    verify::wait_caught_up(&setup, nodes)
        .await
        .map_err(|_| anyhow!("the replicas did not all apply the table's load within a minute"))?;
    let clients = (0..args.concurrency)
        .map(|i| {
            http::HttpClient::new(&nodes[i % nodes.len()], args.level, args.timeout)
                .map(Client::Http)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let name = match args.local_cluster {
        Some(n) => format!("paxsql, {n} nodes"),
        None => format!("paxsql, {} addresses", nodes.len()),
    };
    drive(name, workload, clients, plan).await
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
