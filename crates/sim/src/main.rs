//! `paxsql-sim`: runs the deterministic cluster simulation.
//!
//! ```text
//! paxsql-sim --seed 42 --trace            # one seed, with its event trace
//! paxsql-sim --seeds 0..1000              # a range, failures reported
//! paxsql-sim --seeds 0..1000000 --duration 30m   # soak
//! paxsql-sim --seeds 0..200 --broken reads-without-barrier   # self-test
//! paxsql-sim --seeds 0..200 --groups 3    # sharded: splits and relocations
//! ```

use clap::Parser;
use paxsql_sim::{parse_broken, run, run_seeds, SeedResult, SimConfig, TraceLevel};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Deterministic simulation of a paxsql cluster: real replicas, simulated
/// network, disks, crashes and clients, one seed per run.
#[derive(Parser, Debug)]
#[command(name = "paxsql-sim")]
struct Args {
    /// Replay one seed (prints its summary, and its trace with --trace).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run a range of seeds, e.g. 0..1000 (end excluded).
    #[arg(long, value_parser = parse_range)]
    seeds: Option<std::ops::Range<u64>>,
    /// Ticks of load with faults per run (a tick is 10 ms of production time).
    #[arg(long, default_value_t = SimConfig::new(0).ticks)]
    ticks: u64,
    /// Cluster size (default: the seed chooses 3, or 5 one time in five).
    #[arg(long)]
    nodes: Option<usize>,
    /// Run a deliberately broken replica: reads-without-barrier, send-before-sync
    /// or read-index-without-quorum.
    #[arg(long, value_parser = parse_broken)]
    broken: Option<paxsql_sim::Broken>,
    /// No faults: only load (a smoke test of the simulator itself).
    #[arg(long)]
    no_faults: bool,
    /// Ticks the final heal may take before the run counts as stuck.
    #[arg(long, default_value_t = SimConfig::new(0).heal_ticks_max)]
    heal_ticks: u64,
    /// Applied entries above the trimmed prefix that make a replica trim
    /// its log (default: the seed chooses, 5..=40; 8192 is production's).
    #[arg(long)]
    snapshot_entries: Option<u64>,
    /// Percent of writes that are runaways, ended only by the statement
    /// budget (default 0).
    #[arg(long, value_name = "PERCENT", default_value_t = 0)]
    runaways: u8,
    /// Run sharded: a metadata group and this many data groups, with
    /// splits and relocations of the table's ranges in the fault schedule.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8))]
    groups: Option<u32>,
    /// A deliberately broken router (with --groups): writes carry no claim
    /// of their range (self-test of the shard checks).
    #[arg(long, requires = "groups")]
    unclaimed_writes: bool,
    /// Isolate faults cut off the leader (otherwise a node at random).
    #[arg(long)]
    isolate_leaders: bool,
    /// Linearizable reads by barrier entries through the log only (the
    /// fallback path), not by read index.
    #[arg(long)]
    barrier_reads: bool,
    /// Print the run's events (with --seed).
    #[arg(long)]
    trace: bool,
    /// Print every message too (with --seed; implies --trace).
    #[arg(long)]
    trace_messages: bool,
    /// Print the history of client operations (with --seed).
    #[arg(long)]
    history: bool,
    /// Stop a seed range after this long (soak), e.g. 90s, 30m, 2h.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Threads for a seed range (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Stop a seed range at the first failure.
    #[arg(long)]
    fail_fast: bool,
}

fn parse_range(s: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: expected A..B"))?;
    let a: u64 = a.parse().map_err(|e| format!("{a:?}: {e}"))?;
    let b: u64 = if b.is_empty() {
        u64::MAX
    } else {
        b.parse().map_err(|e| format!("{b:?}: {e}"))?
    };
    if a >= b {
        return Err(format!("{s:?}: empty range"));
    }
    Ok(a..b)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = SimConfig::new(args.seed.unwrap_or(0));
    cfg.ticks = args.ticks;
    cfg.nodes = args.nodes;
    cfg.broken = args.broken;
    cfg.faults = !args.no_faults;
    cfg.heal_ticks_max = args.heal_ticks;
    cfg.snapshot_entries = args.snapshot_entries;
    cfg.runaways_percent = args.runaways.min(100);
    cfg.groups = args.groups;
    cfg.unclaimed_writes = args.unclaimed_writes;
    cfg.isolate_leaders = args.isolate_leaders;
    cfg.barrier_reads = args.barrier_reads;
    if cfg.groups.is_some() && cfg.runaways_percent > 0 {
        eprintln!("--runaways runs with one group only (leave out --groups)");
        return ExitCode::from(2);
    }
    if let Some(seed) = args.seed {
        return one_seed(cfg, seed, &args);
    }
    let seeds = args.seeds.clone().unwrap_or(0..100);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    many_seeds(cfg, seeds, threads, &args)
}

fn one_seed(mut cfg: SimConfig, seed: u64, args: &Args) -> ExitCode {
    cfg.seed = seed;
    cfg.trace = if args.trace_messages {
        TraceLevel::Messages
    } else if args.trace {
        TraceLevel::Events
    } else {
        TraceLevel::Off
    };
    let started = Instant::now();
    let report = run(&cfg);
    let elapsed = started.elapsed();
    for line in &report.trace {
        println!("{line}");
    }
    if args.history {
        for op in &report.history.ops {
            println!("{}", op.describe());
        }
    }
    println!("seed {seed}: {:?}", report.params);
    println!("seed {seed}: {:?} in {elapsed:.2?}", report.stats);
    if report.passed() {
        println!("seed {seed}: passed");
        ExitCode::SUCCESS
    } else {
        for v in &report.violations {
            println!("seed {seed}: VIOLATION {v}");
        }
        println!(
            "seed {seed}: FAILED; replay: {}",
            report.config.replay_command()
        );
        ExitCode::FAILURE
    }
}

fn many_seeds(
    cfg: SimConfig,
    seeds: std::ops::Range<u64>,
    threads: usize,
    args: &Args,
) -> ExitCode {
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let mut done = 0u64;
    let mut ticks = 0u64;
    let on_result = |r: &SeedResult| {
        done += 1;
        ticks += r.stats.ticks;
        if !r.passed() {
            println!("seed {} FAILED:", r.config.seed);
            for v in &r.violations {
                println!("  {v}");
            }
            println!("  replay: {}", r.config.replay_command());
        }
        if done.is_multiple_of(100) {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "{done} seeds in {secs:.1}s ({:.1} seeds/s, {:.0} ticks/s)",
                done as f64 / secs,
                ticks as f64 / secs
            );
        }
    };
    let results = run_seeds(&cfg, seeds, threads, deadline, args.fail_fast, on_result);
    let failed: Vec<u64> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.config.seed)
        .collect();
    let secs = started.elapsed().as_secs_f64();
    let ticks: u64 = results.iter().map(|r| r.stats.ticks).sum();
    let installs: u64 = results.iter().map(|r| r.stats.snapshots_installed).sum();
    let lost: u64 = results.iter().map(|r| r.stats.database_losses).sum();
    println!(
        "{} seeds, {} failed, in {secs:.1}s on {threads} threads ({:.1} seeds/s, {:.0} simulated ticks/s); \
         {installs} snapshot installs, {lost} database files lost",
        results.len(),
        failed.len(),
        results.len() as f64 / secs,
        ticks as f64 / secs
    );
    if cfg.groups.is_some() {
        let sum =
            |f: fn(&paxsql_sim::Stats) -> u64| -> u64 { results.iter().map(|r| f(&r.stats)).sum() };
        println!(
            "shard map changes: {} splits, {} relocations; {} operations re-routed after \"wrong range\"",
            sum(|s| s.splits),
            sum(|s| s.relocations),
            sum(|s| s.reroutes)
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failed:?}");
        ExitCode::FAILURE
    }
}
