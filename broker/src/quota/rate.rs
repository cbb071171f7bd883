//! A rate measured over sampled windows, as Kafka's quota sensors measure it: `samples`
//! windows of `window` each (`quota.window.num`, `quota.window.size.seconds`), the oldest
//! dropped once nothing was recorded in it for the whole span, and a rate never computed over
//! less than `samples - 1` full windows, so a burst at the start does not read as a huge rate.
//! Pure: the caller gives the time, in milliseconds of any monotonic clock.

/// `quota.window.num` and `quota.window.size.seconds`, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub samples: u32,
    pub window_ms: i64,
}

impl Windows {
    /// How long the throttle for exceeding `bound` by measuring `observed` lasts: the time
    /// after which, with nothing more recorded, the rate is back at the bound
    /// (`X = (O - T) / T * W`, Kafka's `QuotaUtils.throttleTime`).
    pub fn throttle_ms(observed: f64, bound: f64, window_size_ms: i64) -> i64 {
        if bound <= 0.0 || observed <= bound {
            return 0;
        }
        let ms = (observed - bound) / bound * window_size_ms as f64;
        if ms >= i32::MAX as f64 {
            i64::from(i32::MAX)
        } else {
            ms.round() as i64
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    start: i64,
    last: i64,
    value: f64,
}

impl Sample {
    fn new(now: i64) -> Sample {
        Sample {
            start: now,
            last: now,
            value: 0.0,
        }
    }
}

/// One measured quantity: the sum recorded in each sample window.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    samples: Vec<Sample>,
    current: usize,
}

impl Rate {
    /// Adds `value` at `now` (negative to take back what was recorded).
    pub fn record(&mut self, windows: Windows, value: f64, now: i64) {
        if self.samples.is_empty() {
            self.samples.push(Sample::new(now));
            self.current = 0;
        }
        if now - self.samples[self.current].start >= windows.window_ms {
            // One more slot than samples: the oldest may overlap the measured span.
            let slots = windows.samples as usize + 1;
            self.current = (self.current + 1) % slots;
            if self.current >= self.samples.len() {
                self.samples.push(Sample::new(now));
            } else {
                self.samples[self.current] = Sample::new(now);
            }
        }
        let sample = &mut self.samples[self.current];
        sample.value += value;
        sample.last = now;
    }

    /// The rate per second at `now`.
    pub fn measure(&mut self, windows: Windows, now: i64) -> f64 {
        let size = self.window_size(windows, now);
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        total / (size as f64 / 1000.0)
    }

    /// The span in milliseconds the rate is computed over: from the oldest sample kept, and at
    /// least `samples - 1` whole windows.
    pub fn window_size(&mut self, windows: Windows, now: i64) -> i64 {
        self.purge(windows, now);
        let oldest = self.samples.iter().map(|s| s.start).min().unwrap_or(now);
        let mut elapsed = now - oldest;
        let full = elapsed / windows.window_ms.max(1);
        let least = i64::from(windows.samples) - 1;
        if full < least {
            elapsed += (least - full) * windows.window_ms;
        }
        elapsed.max(1)
    }

    /// The time of the last record, for dropping idle rates.
    pub fn last_record(&self) -> Option<i64> {
        self.samples.iter().map(|s| s.last).max()
    }

    fn purge(&mut self, windows: Windows, now: i64) {
        let expire = i64::from(windows.samples) * windows.window_ms;
        for sample in &mut self.samples {
            if now - sample.last >= expire {
                *sample = Sample::new(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KAFKA: Windows = Windows {
        samples: 11,
        window_ms: 1000,
    };

    #[test]
    fn a_first_burst_is_spread_over_ten_windows() {
        let mut rate = Rate::default();
        rate.record(KAFKA, 10_000.0, 0);
        assert_eq!(rate.window_size(KAFKA, 0), 10_000);
        assert_eq!(rate.measure(KAFKA, 0), 1_000.0);
    }

    #[test]
    fn a_steady_rate_reads_as_itself() {
        let mut rate = Rate::default();
        for ms in (0..30_000).step_by(100) {
            rate.record(KAFKA, 100.0, ms);
        }
        let measured = rate.measure(KAFKA, 30_000);
        assert!((measured - 1000.0).abs() < 60.0, "{measured}");
    }

    #[test]
    fn the_throttle_brings_the_rate_back_to_the_bound() {
        let mut rate = Rate::default();
        rate.record(KAFKA, 20_000.0, 0);
        let size = rate.window_size(KAFKA, 0);
        let observed = rate.measure(KAFKA, 0);
        let throttle = Windows::throttle_ms(observed, 1000.0, size);
        assert_eq!(throttle, 10_000);
        assert_eq!(20_000.0 / ((size + throttle) as f64 / 1000.0), 1000.0);
        assert_eq!(Windows::throttle_ms(900.0, 1000.0, size), 0);
    }

    #[test]
    fn samples_idle_for_the_whole_span_are_forgotten() {
        let mut rate = Rate::default();
        rate.record(KAFKA, 50_000.0, 0);
        assert_eq!(rate.measure(KAFKA, 11_000), 0.0);
        rate.record(KAFKA, 1_000.0, 11_000);
        assert_eq!(rate.measure(KAFKA, 11_000), 100.0);
    }
}
