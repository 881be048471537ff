//! Sets of keys as sorted, merged inclusive intervals.
//!
//! Bounds are inclusive because SQL's comparisons on integers map onto them
//! without off-by-one arithmetic at the edges of `i64`: `id > x` is
//! `[x + 1, ∞)` and is empty when `x` is `i64::MAX`. Internally a missing
//! bound is `i64::MIN` / `i64::MAX`; the public form keeps `None` for it so
//! a reader sees "unbounded" rather than a magic number.

/// An inclusive interval of keys; `None` = unbounded on that side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInterval {
    /// The smallest key, `None` for no lower bound.
    pub lo: Option<i64>,
    /// The largest key, `None` for no upper bound.
    pub hi: Option<i64>,
}

impl KeyInterval {
    /// The interval holding exactly `key`.
    pub fn point(key: i64) -> Self {
        Self::from_bounds(key, key)
    }

    /// Whether `key` lies in the interval.
    pub fn contains(&self, key: i64) -> bool {
        let (lo, hi) = self.bounds();
        lo <= key && key <= hi
    }

    fn bounds(self) -> (i64, i64) {
        (self.lo.unwrap_or(i64::MIN), self.hi.unwrap_or(i64::MAX))
    }

    fn from_bounds(lo: i64, hi: i64) -> Self {
        debug_assert!(lo <= hi);
        KeyInterval {
            lo: (lo != i64::MIN).then_some(lo),
            hi: (hi != i64::MAX).then_some(hi),
        }
    }
}

/// The keys of a table's integer primary key a statement may touch.
///
/// Always a superset of the rows the statement can touch: what the analysis
/// does not understand widens to [`Keys::All`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keys {
    /// Any key.
    All,
    /// Only these keys: sorted, non-overlapping, with overlapping and
    /// adjacent intervals merged, never the whole key space (that is
    /// [`Keys::All`]). An empty vector touches no key.
    Some(Vec<KeyInterval>),
}

impl Keys {
    /// No key at all.
    pub fn none() -> Self {
        Keys::Some(Vec::new())
    }

    /// Exactly `key`.
    pub fn point(key: i64) -> Self {
        Keys::Some(vec![KeyInterval::point(key)])
    }

    /// The keys from `lo` to `hi`, both included; none when `lo > hi`.
    pub fn between(lo: i64, hi: i64) -> Self {
        Self::from_bounds(vec![(lo, hi)])
    }

    /// Whether every key may be touched.
    pub fn is_all(&self) -> bool {
        matches!(self, Keys::All)
    }

    /// Whether `key` may be touched.
    pub fn contains(&self, key: i64) -> bool {
        match self {
            Keys::All => true,
            Keys::Some(intervals) => intervals.iter().any(|i| i.contains(key)),
        }
    }

    /// Whether any key of the range `[start, end_exclusive)` may be touched
    /// (`None` = unbounded). An empty range overlaps nothing.
    pub fn overlaps(&self, start: Option<i64>, end_exclusive: Option<i64>) -> bool {
        let lo = start.unwrap_or(i64::MIN);
        let hi = match end_exclusive {
            None => i64::MAX,
            Some(i64::MIN) => return false,
            Some(end) => end - 1,
        };
        if lo > hi {
            return false;
        }
        match self {
            Keys::All => true,
            Keys::Some(intervals) => intervals.iter().any(|i| {
                let (a, b) = i.bounds();
                a <= hi && lo <= b
            }),
        }
    }

    /// The keys in either set.
    pub fn union(self, other: Keys) -> Keys {
        match (self, other) {
            (Keys::Some(mut a), Keys::Some(b)) => {
                a.extend(b);
                Self::from_bounds(a.into_iter().map(KeyInterval::bounds).collect())
            }
            _ => Keys::All,
        }
    }

    /// The keys in both sets.
    pub fn intersect(self, other: Keys) -> Keys {
        let (a, b) = match (self, other) {
            (Keys::All, x) | (x, Keys::All) => return x,
            (Keys::Some(a), Keys::Some(b)) => (a, b),
        };
        // Both sides are sorted and disjoint: one sweep finds every overlap.
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < a.len() && j < b.len() {
            let (alo, ahi) = a[i].bounds();
            let (blo, bhi) = b[j].bounds();
            let (lo, hi) = (alo.max(blo), ahi.min(bhi));
            if lo <= hi {
                out.push((lo, hi));
            }
            if ahi < bhi {
                i += 1;
            } else {
                j += 1;
            }
        }
        Self::from_bounds(out)
    }

    /// Normalizes inclusive `(lo, hi)` pairs: drops empty ones, sorts,
    /// merges overlapping and adjacent ones.
    fn from_bounds(mut bounds: Vec<(i64, i64)>) -> Keys {
        bounds.retain(|(lo, hi)| lo <= hi);
        bounds.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(bounds.len());
        for (lo, hi) in bounds {
            match merged.last_mut() {
                Some(last) if last.1 == i64::MAX || lo <= last.1 + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        if merged == [(i64::MIN, i64::MAX)] {
            return Keys::All;
        }
        Keys::Some(
            merged
                .into_iter()
                .map(|(lo, hi)| KeyInterval::from_bounds(lo, hi))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(lo: Option<i64>, hi: Option<i64>) -> KeyInterval {
        KeyInterval { lo, hi }
    }

    #[test]
    fn union_sorts_and_merges_overlapping_and_adjacent_intervals() {
        let keys = Keys::point(5)
            .union(Keys::between(1, 2))
            .union(Keys::point(3))
            .union(Keys::between(10, 20))
            .union(Keys::between(15, 30));
        assert_eq!(
            keys,
            Keys::Some(vec![
                iv(Some(1), Some(3)),
                iv(Some(5), Some(5)),
                iv(Some(10), Some(30))
            ])
        );
        assert_eq!(Keys::point(1).union(Keys::All), Keys::All);
        assert_eq!(Keys::none().union(Keys::none()), Keys::none());
    }

    #[test]
    fn the_whole_key_space_is_all() {
        let low = Keys::between(i64::MIN, 0);
        let high = Keys::between(1, i64::MAX);
        assert_eq!(low.clone(), Keys::Some(vec![iv(None, Some(0))]));
        assert_eq!(low.union(high), Keys::All);
        assert_eq!(Keys::between(i64::MIN, i64::MAX), Keys::All);
    }

    #[test]
    fn intersect_keeps_only_common_keys() {
        let a = Keys::between(1, 10).union(Keys::between(20, 30));
        let b = Keys::between(5, 25);
        assert_eq!(
            a.clone().intersect(b),
            Keys::Some(vec![iv(Some(5), Some(10)), iv(Some(20), Some(25))])
        );
        assert_eq!(a.clone().intersect(Keys::All), a);
        assert_eq!(Keys::point(3).intersect(Keys::point(4)), Keys::none());
        assert_eq!(Keys::between(5, 4), Keys::none());
    }

    #[test]
    fn contains_and_overlaps_follow_half_open_ranges() {
        let keys = Keys::between(10, 19);
        assert!(keys.contains(10) && keys.contains(19) && !keys.contains(20));
        assert!(keys.overlaps(Some(19), Some(20)));
        assert!(!keys.overlaps(Some(20), None));
        assert!(!keys.overlaps(None, Some(10)));
        assert!(keys.overlaps(None, Some(11)));
        assert!(keys.overlaps(None, None));
        assert!(
            !keys.overlaps(Some(5), Some(5)),
            "an empty range overlaps nothing"
        );
        assert!(!Keys::All.overlaps(Some(0), Some(i64::MIN)));
        assert!(Keys::All.overlaps(Some(7), Some(8)));
        assert!(!Keys::none().overlaps(None, None));
        let top = Keys::between(i64::MAX, i64::MAX);
        assert!(top.overlaps(Some(0), None) && !top.overlaps(Some(0), Some(i64::MAX)));
    }
}
