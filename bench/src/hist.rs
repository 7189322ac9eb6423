//! A log-linear latency histogram (64 sub-buckets per power of two, ~1.6 % resolution),
//! constant memory and mergeable across threads.

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    sum: u128,
    max: u64,
}

impl Default for Hist {
    fn default() -> Hist {
        Hist { counts: vec![0; BUCKETS], n: 0, sum: 0, max: 0 }
    }
}

fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    ((shift as usize + 1) << SUB_BITS) + ((v >> shift) as usize - SUB)
}

/// The smallest value of bucket `i` and its width.
fn bounds(i: usize) -> (u64, u64) {
    let shift = (i >> SUB_BITS) as u32;
    let sub = (i & (SUB - 1)) as u64;
    if shift == 0 {
        return (sub, 1);
    }
    ((sub | SUB as u64) << (shift - 1), 1u64 << (shift - 1))
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.n += 1;
        self.sum += v as u128;
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum as f64 / self.n as f64
        }
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Value at quantile q (0..=1), the middle of its bucket.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let want = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                let (lo, w) = bounds(i);
                return (lo as f64 + (w as f64 - 1.0) / 2.0).min(self.max as f64);
            }
        }
        self.max as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_precise() {
        let mut prev_end = 0;
        for i in 0..BUCKETS - SUB {
            let (lo, w) = bounds(i);
            if i > 0 {
                assert_eq!(lo, prev_end, "bucket {i}");
            }
            assert_eq!(index(lo), i);
            assert_eq!(index(lo + w - 1), i);
            prev_end = lo + w;
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5);
        assert!((p50 - 50_000_000.0).abs() / 50_000_000.0 < 0.02, "{p50}");
        let p99 = h.quantile(0.99);
        assert!((p99 - 99_000_000.0).abs() / 99_000_000.0 < 0.02, "{p99}");
        assert_eq!(h.count(), 100_000);
    }
}
