//! The linearizability checker against histories whose answer is known,
//! and against brute force on thousands of small random histories.

use paxsql_sim::lincheck::{check, Call, Register, RegisterOp, Verdict};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BUDGET: u64 = 1_000_000;
const NEVER: u64 = u64::MAX;

fn w(invoke: u64, ret: u64, v: i64) -> Call<RegisterOp> {
    Call {
        invoke,
        ret,
        op: RegisterOp::Write(v),
    }
}

fn r(invoke: u64, ret: u64, v: Option<i64>) -> Call<RegisterOp> {
    Call {
        invoke,
        ret,
        op: RegisterOp::Read(v),
    }
}

fn verdict(h: &[Call<RegisterOp>]) -> Verdict {
    check::<Register>(h, BUDGET)
}

#[test]
fn an_empty_history_is_linearizable() {
    assert_eq!(verdict(&[]), Verdict::Linearizable);
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    // Porcupine's own register example.
    let h = [w(0, 100, 100), r(25, 75, Some(100)), r(30, 60, None)];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn a_read_after_a_newer_value_was_read_may_not_see_the_older_one() {
    let h = [w(0, 100, 200), r(10, 30, Some(200)), r(40, 90, None)];
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn a_read_after_an_acknowledged_write_sees_it() {
    let h = [w(1, 2, 1), r(3, 4, None)];
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
    let h = [w(1, 2, 1), r(3, 4, Some(1))];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn a_stale_read_after_two_sequential_writes_is_caught() {
    let h = [w(1, 2, 1), w(3, 4, 2), r(5, 6, Some(1))];
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn a_value_nobody_wrote_is_caught() {
    let h = [w(1, 2, 1), r(3, 4, Some(7))];
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn a_write_that_never_returned_may_take_effect_late_or_never() {
    // Seen long after it was invoked...
    let h = [w(1, NEVER, 1), r(50, 51, None), r(60, 61, Some(1))];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // ... or never seen at all.
    let h = [w(1, NEVER, 1), r(50, 51, None)];
    assert_eq!(verdict(&h), Verdict::Linearizable);
    // But once seen, it cannot be unseen (no later write to explain it).
    let h = [w(1, NEVER, 1), r(50, 51, Some(1)), r(60, 61, None)];
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

#[test]
fn reads_may_not_go_back_in_time_between_concurrent_writes() {
    // Two concurrent writes; sequential reads see 1 then 2 then 1: no order
    // of the two writes explains that.
    let h = [
        w(0, 100, 1),
        w(0, 100, 2),
        r(10, 11, Some(1)),
        r(20, 21, Some(2)),
        r(30, 31, Some(1)),
    ];
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
    let h = [
        w(0, 100, 1),
        w(0, 100, 2),
        r(10, 11, Some(1)),
        r(20, 21, Some(2)),
        r(30, 31, Some(2)),
    ];
    assert_eq!(verdict(&h), Verdict::Linearizable);
}

#[test]
fn more_than_64_operations_are_handled() {
    let mut h = Vec::new();
    for i in 0..200u64 {
        h.push(w(4 * i + 1, 4 * i + 2, i as i64));
        h.push(r(4 * i + 3, 4 * i + 4, Some(i as i64)));
    }
    assert_eq!(verdict(&h), Verdict::Linearizable);
    let last = h.len() - 1;
    h[last] = r(4 * 199 + 3, 4 * 199 + 4, Some(198));
    assert_eq!(verdict(&h), Verdict::NotLinearizable);
}

/// Whether some permutation of `h` respects real time and the register.
fn brute_force(h: &[Call<RegisterOp>]) -> bool {
    fn go(h: &[Call<RegisterOp>], used: &mut Vec<bool>, state: Option<i64>, left: usize) -> bool {
        if left == 0 {
            return true;
        }
        for i in 0..h.len() {
            if used[i] {
                continue;
            }
            // `i` may go next only if no unused op returned before it began.
            let blocked = (0..h.len()).any(|j| !used[j] && j != i && h[j].ret < h[i].invoke);
            if blocked {
                continue;
            }
            let next = match h[i].op {
                RegisterOp::Write(v) => Some(Some(v)),
                RegisterOp::Read(v) if v == state => Some(state),
                RegisterOp::Read(_) => None,
            };
            if let Some(s) = next {
                used[i] = true;
                if go(h, used, s, left - 1) {
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    go(h, &mut vec![false; h.len()], None, h.len())
}

/// A small random history: ops take effect at a random point of their
/// interval (so the history starts out linearizable), then sometimes one
/// read's answer is changed.
fn random_history(rng: &mut ChaCha8Rng) -> Vec<Call<RegisterOp>> {
    let n = rng.random_range(1..=7);
    let mut ops: Vec<(u64, u64, u64, bool)> = (0..n)
        .map(|_| {
            let a = rng.random_range(0..40u64);
            let b = a + rng.random_range(1..20u64);
            let point = rng.random_range(a..b);
            (a, b, point, rng.random_bool(0.5))
        })
        .collect();
    ops.sort_by_key(|o| o.2);
    let mut state = None;
    let mut next_value = 0;
    let mut out = Vec::new();
    for (a, b, _, is_write) in ops {
        let ret = if is_write && rng.random_bool(0.15) {
            NEVER
        } else {
            b
        };
        if is_write {
            next_value += 1;
            state = Some(next_value);
            out.push(w(a, ret, next_value));
        } else {
            out.push(r(a, b, state));
        }
    }
    if rng.random_bool(0.5) {
        if let Some(i) = (0..out.len()).find(|&i| matches!(out[i].op, RegisterOp::Read(_))) {
            let v = rng.random_range(0..=next_value);
            out[i].op = RegisterOp::Read(if v == 0 { None } else { Some(v) });
        }
    }
    // Times must be distinct, as the simulator's are: spread them out.
    let mut times: Vec<u64> = out
        .iter()
        .flat_map(|c| [c.invoke, c.ret])
        .filter(|&t| t != NEVER)
        .collect();
    times.sort_unstable();
    times.dedup();
    for c in &mut out {
        let rank = |t: u64| times.binary_search(&t).expect("listed") as u64;
        let (a, b) = (c.invoke, c.ret);
        c.invoke = rank(a) * 100 + rng.random_range(0..50);
        if b != NEVER {
            c.ret = rank(b) * 100 + 50 + rng.random_range(0..50);
        }
    }
    out
}

#[test]
fn agrees_with_brute_force_on_random_small_histories() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut yes, mut no) = (0, 0);
    for case in 0..5000 {
        let h = random_history(&mut rng);
        let expected = brute_force(&h);
        let got = verdict(&h);
        assert_eq!(
            got == Verdict::Linearizable,
            expected,
            "case {case}: checker says {got:?}, brute force says {expected}: {h:?}"
        );
        if expected {
            yes += 1;
        } else {
            no += 1;
        }
    }
    // Both answers must be well represented, or the comparison is weak.
    assert!(yes > 1000 && no > 500, "{yes} linearizable, {no} not");
}

#[test]
fn gives_up_instead_of_running_forever() {
    // Many concurrent writes and no reads pinning them down, then a read
    // that no order satisfies: the search must explore a lot to say no.
    let mut h: Vec<_> = (0..40).map(|i| w(0, 1000, i)).collect();
    h.push(r(2000, 2001, Some(99)));
    assert_eq!(check::<Register>(&h, 1000), Verdict::Unknown);
}
