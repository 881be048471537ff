//! The one source of randomness of a run: a ChaCha8 stream seeded from the
//! run's seed. ChaCha8 is specified, so a seed means the same run on every
//! machine and with every `rand` release that keeps `rand_chacha` 0.9.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The simulator's random source. Every decision of a run draws from it, in
/// a fixed order, so one seed is one run.
#[derive(Debug)]
pub(crate) struct SimRng(ChaCha8Rng);

impl SimRng {
    pub(crate) fn new(seed: u64) -> Self {
        SimRng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A number in `0..n`; `n` must be positive.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.0.random_range(0..n)
    }

    /// A number in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "between({lo}, {hi})");
        self.0.random_range(lo..=hi)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.0.random_bool(p.clamp(0.0, 1.0))
    }

    pub(crate) fn u64(&mut self) -> u64 {
        self.0.random()
    }

    /// One element of a non-empty slice.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Fisher–Yates, drawing from this stream.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
