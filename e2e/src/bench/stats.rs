//! Figures a benchmark reports: rates over a measured interval and exact latency percentiles.
//!
//! Latency samples are kept whole and sorted rather than bucketed: a latency run at 1000
//! records/s for a minute is 60,000 samples, so exact percentiles cost nothing and no
//! histogram precision has to be argued about.

use std::time::Duration;

use serde::Serialize;

/// Bytes in a megabyte as the benchmark reports it (MB/s is 10^6 bytes per second).
pub const MEGABYTE: f64 = 1_000_000.0;

/// What a throughput run moved and how fast.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    pub records: u64,
    /// Payload and key bytes, without Kafka framing.
    pub bytes: u64,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
}

impl Throughput {
    pub fn new(records: u64, bytes: u64, elapsed: Duration) -> Self {
        let elapsed_s = elapsed.as_secs_f64();
        let per_second = |amount: f64| {
            if elapsed_s > 0.0 {
                amount / elapsed_s
            } else {
                0.0
            }
        };
        Self {
            records,
            bytes,
            elapsed_s,
            records_per_s: per_second(records as f64),
            mb_per_s: per_second(bytes as f64 / MEGABYTE),
        }
    }
}

/// Latency percentiles in milliseconds, from a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Summarises samples given in nanoseconds; `None` when there are none.
    pub fn from_nanos(mut samples: Vec<u64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let ms = |nanos: u64| nanos as f64 / 1e6;
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        let mean = sum as f64 / samples.len() as f64 / 1e6;
        Some(Self {
            count: samples.len() as u64,
            min_ms: ms(samples[0]),
            mean_ms: mean,
            p50_ms: ms(nearest_rank(&samples, 50.0)),
            p90_ms: ms(nearest_rank(&samples, 90.0)),
            p99_ms: ms(nearest_rank(&samples, 99.0)),
            p999_ms: ms(nearest_rank(&samples, 99.9)),
            max_ms: ms(samples[samples.len() - 1]),
        })
    }
}

/// The nearest-rank percentile of sorted, non-empty samples: the smallest sample that at
/// least `percent` % of the samples do not exceed.
pub fn nearest_rank(sorted: &[u64], percent: f64) -> u64 {
    debug_assert!(!sorted.is_empty());
    // The epsilon keeps float noise (99.9 / 100 * 1000 = 999.0000000000001) from moving
    // the rank up by one.
    let rank = (percent * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_pick_real_samples() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(nearest_rank(&samples, 50.0), 500);
        assert_eq!(nearest_rank(&samples, 99.0), 990);
        assert_eq!(nearest_rank(&samples, 99.9), 999);
        assert_eq!(nearest_rank(&samples, 100.0), 1000);
        assert_eq!(nearest_rank(&samples, 0.0), 1);
        assert_eq!(nearest_rank(&[7], 99.9), 7);
    }

    #[test]
    fn percentiles_are_reported_in_milliseconds_from_unsorted_nanoseconds() {
        let samples = vec![3_000_000, 1_000_000, 2_000_000, 4_000_000];
        let p = Percentiles::from_nanos(samples).unwrap();
        assert_eq!(p.count, 4);
        assert_eq!(p.min_ms, 1.0);
        assert_eq!(p.p50_ms, 2.0);
        assert_eq!(p.p99_ms, 4.0);
        assert_eq!(p.max_ms, 4.0);
        assert_eq!(p.mean_ms, 2.5);
        assert!(Percentiles::from_nanos(Vec::new()).is_none());
    }

    #[test]
    fn throughput_divides_by_the_measured_interval() {
        let t = Throughput::new(2_000, 3_000_000, Duration::from_millis(500));
        assert_eq!(t.records_per_s, 4_000.0);
        assert_eq!(t.mb_per_s, 6.0);
        assert_eq!(Throughput::new(5, 5, Duration::ZERO).records_per_s, 0.0);
    }
}
