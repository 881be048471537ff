//! Key choice: uniform, or Zipfian as YCSB draws it.
//!
//! The Zipfian sampler is the one YCSB uses (Gray et al., "Quickly
//! generating billion-record synthetic databases", SIGMOD '94): the zeta
//! constant over the whole key space is computed once, then each draw costs
//! one uniform number and one `powf`. Like YCSB's `ScrambledZipfian`, the
//! rank drawn is scattered over the key space with an FNV-1a hash, so the
//! hot keys are not all neighbours in the primary-key B-tree (which would
//! make them share pages and flatter the cache).

use rand::Rng;

/// How keys are picked from `0..keys`.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Every key equally likely.
    Uniform { keys: u64 },
    /// A few keys take most of the traffic.
    Zipfian(Zipfian),
}

impl KeyChooser {
    /// A key in `0..keys`.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        match self {
            KeyChooser::Uniform { keys } => rng.random_range(0..*keys),
            KeyChooser::Zipfian(z) => z.next_scrambled(rng),
        }
    }
}

/// YCSB's Zipfian distribution over ranks `0..n`; rank 0 is the most
/// popular.
#[derive(Clone, Debug)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipfian {
    /// A distribution over `0..n` with skew `theta` (0 < θ < 1; YCSB's
    /// default is 0.99). Costs O(n) once, for the zeta constant.
    pub fn new(n: u64, theta: f64) -> Zipfian {
        assert!(n >= 1, "a Zipfian distribution needs at least one key");
        assert!(
            theta > 0.0 && theta < 1.0,
            "theta must be in (0, 1), got {theta}"
        );
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2.min(n), theta);
        let eta = if n < 2 {
            0.0
        } else {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        };
        Zipfian {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
        }
    }

    /// A rank in `0..n`, rank 0 the most likely.
    pub fn next_rank(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) && self.n > 1 {
            return 1;
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }

    /// A key in `0..n`: a rank, scattered over the key space.
    pub fn next_scrambled(&self, rng: &mut impl Rng) -> u64 {
        fnv1a_64(self.next_rank(rng)) % self.n
    }
}

/// `sum_{i=1..n} 1 / i^theta`.
fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// FNV-1a over the eight little-endian bytes of `x`, as YCSB's `fnvhash64`.
fn fnv1a_64(x: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in x.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn zipfian_ranks_stay_in_range_and_favour_the_head() {
        let z = Zipfian::new(1000, 0.99);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u64; 1000];
        for _ in 0..100_000 {
            counts[z.next_rank(&mut rng) as usize] += 1;
        }
        // Rank 0 has probability 1/zeta(1000, 0.99), about 13%; the tail
        // rank about 0.013%.
        assert!(counts[0] > 10_000, "rank 0 drawn {} times", counts[0]);
        assert!(counts[0] > counts[1] && counts[1] > counts[10]);
        assert!(counts[999] < 100);
    }

    #[test]
    fn scrambled_keys_stay_in_range() {
        let z = Zipfian::new(10, 0.5);
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..10_000 {
            assert!(z.next_scrambled(&mut rng) < 10);
        }
    }

    #[test]
    fn a_single_key_is_always_chosen() {
        let z = Zipfian::new(1, 0.99);
        let mut rng = SmallRng::seed_from_u64(3);
        assert!((0..100).all(|_| z.next_scrambled(&mut rng) == 0));
    }
}
