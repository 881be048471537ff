//! Proof that the checks can fail: deliberately broken replicas are caught
//! within a bounded number of seeds.

use paxsql_sim::{broken_name, run_seeds, Broken, SeedResult, SimConfig};

/// Seeds a broken mode must be caught within.
const SEEDS_MAX: u64 = 200;

/// Runs seeds of `broken` from 0 on until one fails a check in `checks`;
/// returns how many seeds that took.
fn seeds_to_catch(broken: Broken, checks: &[&str]) -> u64 {
    let mut cfg = SimConfig::new(0);
    cfg.broken = Some(broken);
    caught_within(broken_name(broken), &cfg, checks)
}

/// Runs seeds of `cfg` from 0 on until one fails a check in `checks`;
/// returns how many seeds that took.
fn caught_within(name: &str, cfg: &SimConfig, checks: &[&str]) -> u64 {
    quiet_panics_in_runs();
    let results = run_seeds(cfg, 0..SEEDS_MAX, 2, None, false, |_| {});
    let caught = |r: &&SeedResult| r.violations.iter().any(|v| checks.contains(&v.check));
    let first = results
        .iter()
        .find(caught)
        .unwrap_or_else(|| panic!("{name}: no seed of {SEEDS_MAX} failed {checks:?}"));
    let failing = results.iter().filter(caught).count();
    eprintln!(
        "{name}: caught by {checks:?} at seed {} ({failing} of {SEEDS_MAX} seeds fail); first violation: {}\n  replay: {}",
        first.config.seed,
        first
            .violations
            .iter()
            .find(|v| checks.contains(&v.check))
            .expect("caught"),
        first.config.replay_command()
    );
    first.config.seed + 1
}

/// A broken replica may panic (OmniPaxos asserts on a log it finds
/// inconsistent); the run reports that as a violation. Keep the default
/// panic message for the test threads, drop it for the runs' threads.
fn quiet_panics_in_runs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some() {
                default(info);
            }
        }));
    });
}

#[test]
fn linearizable_reads_served_without_a_barrier_are_caught() {
    let n = seeds_to_catch(Broken::ReadsWithoutBarrier, &["linearizability"]);
    assert!(n <= SEEDS_MAX);
}

#[test]
fn messages_sent_before_the_log_is_synced_are_caught() {
    // The cheapest signal: a restarted node whose log lost entries its
    // database had applied.
    let n = seeds_to_catch(Broken::SendBeforeSync, &["durability", "election"]);
    assert!(n <= SEEDS_MAX);
    // What clients and replicas actually suffer from it: lost or diverging
    // data, a different decided entry, a non-linearizable history.
    let n = seeds_to_catch(
        Broken::SendBeforeSync,
        &[
            "lost_writes",
            "divergence",
            "log_matching",
            "linearizability",
        ],
    );
    assert!(n <= SEEDS_MAX);
}

/// A router whose writes carry no claim of their range: a write sent to
/// the group a range just left still updates the row the group keeps until
/// the relocation deletes it, and is lost with it.
#[test]
fn writes_without_range_claims_are_caught() {
    let mut cfg = SimConfig::new(0);
    cfg.groups = Some(3);
    cfg.unclaimed_writes = true;
    let n = caught_within(
        "unclaimed-writes",
        &cfg,
        &[
            "lost_writes",
            "linearizability",
            "exactly_once",
            "ownership",
        ],
    );
    assert!(n <= SEEDS_MAX);
}

/// A leader that confirms a read index without a majority's promise: once
/// deposed (isolated, a new leader elected and writing) it serves reads
/// from a state the majority has moved past.
#[test]
fn read_indexes_confirmed_without_a_quorum_are_caught() {
    let mut cfg = SimConfig::new(0);
    cfg.broken = Some(Broken::ReadIndexWithoutQuorum);
    cfg.isolate_leaders = true;
    let n = caught_within("read-index-without-quorum", &cfg, &["linearizability"]);
    assert!(n <= SEEDS_MAX);
}
