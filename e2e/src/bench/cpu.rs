//! The benchmark client's own CPU time over a run, per thread, from `/proc/self/task`.
//!
//! On a small machine the client and the broker share the CPUs, and a throughput figure is
//! only a statement about the broker while the client is not the limit. Each throughput
//! report therefore carries the client's CPU time split into the application's threads (the
//! workload's own `producer-N` / `consumer-N` threads and the main thread) and librdkafka's
//! (`rdk:*`), and the share of the run the busiest single thread was on a CPU: a thread near
//! 100% is a client-side ceiling no broker can lift.
//!
//! Every client must still exist when the second sample is taken (a finished thread leaves
//! `/proc`), which is what [`Lines`] arranges.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

/// Cumulative CPU ticks of each live thread of this process, by thread id.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    threads: BTreeMap<u32, (String, u64)>,
}

impl Sample {
    /// Reads every thread of this process.
    pub fn take() -> Result<Self> {
        let mut threads = BTreeMap::new();
        for entry in fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
            let entry = entry.context("reading /proc/self/task")?;
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A thread may end between the listing and the read: it is simply not sampled.
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some(thread) = parse_stat(&stat) {
                threads.insert(tid, thread);
            }
        }
        Ok(Self { threads })
    }
}

/// The name and user + system ticks of one `/proc/.../stat` line. The name is in parentheses
/// and may itself contain spaces and parentheses, so the fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    // After the name: state (field 3) ... utime (14), stime (15).
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// The client's CPU time over a measured interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientCpu {
    /// All threads of the benchmark process.
    pub total_s: f64,
    /// The workload's threads and the main thread.
    pub application_s: f64,
    /// librdkafka's internal threads (`rdk:*`).
    pub librdkafka_s: f64,
    /// The thread with the most CPU time over the interval.
    pub busiest_thread: String,
    /// Its CPU time divided by the interval: near 1.0, that thread was the limit.
    pub busiest_share: f64,
}

impl ClientCpu {
    /// What each thread used between two samples; threads started after `before` count from 0.
    pub fn between(before: &Sample, after: &Sample, elapsed: Duration) -> Self {
        let tick = 1.0 / rustix::param::clock_ticks_per_second().max(1) as f64;
        let mut total = 0;
        let mut librdkafka = 0;
        let mut busiest = (String::new(), 0);
        for (tid, (name, ticks)) in &after.threads {
            let used =
                ticks.saturating_sub(before.threads.get(tid).map_or(0, |(_, earlier)| *earlier));
            total += used;
            if name.starts_with("rdk:") {
                librdkafka += used;
            }
            if used > busiest.1 {
                busiest = (name.clone(), used);
            }
        }
        let elapsed_s = elapsed.as_secs_f64();
        Self {
            total_s: total as f64 * tick,
            application_s: (total - librdkafka) as f64 * tick,
            librdkafka_s: librdkafka as f64 * tick,
            busiest_thread: busiest.0,
            busiest_share: if elapsed_s > 0.0 {
                busiest.1 as f64 * tick / elapsed_s
            } else {
                0.0
            },
        }
    }
}

/// A run as [`Lines::measure`] saw it.
#[derive(Debug, Clone)]
pub struct Measured {
    pub start: Instant,
    pub elapsed: Duration,
    pub cpu: ClientCpu,
}

/// Where a run's client threads and the measuring thread meet: all start together, and at the
/// finish every client waits, still holding its librdkafka handle, until the measuring thread
/// has stopped the clock and read the CPU times.
#[derive(Debug)]
pub struct Lines {
    start: Barrier,
    finish: Barrier,
    release: Barrier,
}

impl Lines {
    /// Lines for `clients` client threads and one measuring thread.
    pub fn new(clients: usize) -> Self {
        Self {
            start: Barrier::new(clients + 1),
            finish: Barrier::new(clients + 1),
            release: Barrier::new(clients + 1),
        }
    }

    /// A client thread: wait for the others before starting. Every client thread must call
    /// this and then [`Lines::finish`] exactly once, whatever happens, or the others wait
    /// forever.
    pub fn start(&self) {
        self.start.wait();
    }

    /// A client thread that is done (or has failed): wait until the run has been measured.
    pub fn finish(&self) {
        self.finish.wait();
        self.release.wait();
    }

    /// The measuring thread: starts every client, waits for all to finish, and returns when
    /// they started, how long they took and the CPU the process used meanwhile.
    pub fn measure(&self) -> Result<Measured> {
        self.start.wait();
        let before = Sample::take();
        let start = Instant::now();
        self.finish.wait();
        let elapsed = start.elapsed();
        let after = Sample::take();
        self.release.wait();
        Ok(Measured {
            start,
            elapsed,
            cpu: ClientCpu::between(&before?, &after?, elapsed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_the_name_and_user_plus_system_ticks() {
        let line = "4242 (rdk:broker0) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0";
        assert_eq!(parse_stat(line), Some(("rdk:broker0".to_owned(), 175)));
        let odd = "7 (a) b (c)) R 1 2 3 4 5 6 7 8 9 10 3 4 0 0";
        assert_eq!(parse_stat(odd), Some(("a) b (c)".to_owned(), 7)));
        assert_eq!(parse_stat("7 (cut short) R 1 2"), None);
    }

    #[test]
    fn a_busy_thread_shows_as_the_busiest_and_librdkafka_threads_are_counted_apart() {
        let tick = 1.0 / rustix::param::clock_ticks_per_second() as f64;
        let mut before = Sample::default();
        before.threads.insert(1, ("main".to_owned(), 10));
        before.threads.insert(2, ("rdk:broker0".to_owned(), 100));
        let mut after = before.clone();
        after.threads.insert(1, ("main".to_owned(), 30));
        after.threads.insert(2, ("rdk:broker0".to_owned(), 180));
        after.threads.insert(3, ("consumer-0".to_owned(), 5));
        let cpu = ClientCpu::between(&before, &after, Duration::from_secs_f64(100.0 * tick));
        assert_eq!(cpu.busiest_thread, "rdk:broker0");
        assert!((cpu.busiest_share - 0.8).abs() < 1e-9, "{cpu:?}");
        assert!((cpu.librdkafka_s - 80.0 * tick).abs() < 1e-9);
        assert!((cpu.application_s - 25.0 * tick).abs() < 1e-9);
        assert!((cpu.total_s - 105.0 * tick).abs() < 1e-9);
    }

    /// This thread's CPU ticks so far.
    fn own_ticks() -> u64 {
        fs::read_to_string("/proc/thread-self/stat")
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .map_or(0, |(_, ticks)| ticks)
    }

    #[test]
    fn a_spinning_thread_is_seen_as_the_busiest_with_the_cpu_it_used() {
        // The thread spins until it has used 30 ticks of CPU (however busy the machine is and
        // so however long that takes), then the measure must show at least that much for it.
        const SPIN_TICKS: u64 = 30;
        let tick = 1.0 / rustix::param::clock_ticks_per_second().max(1) as f64;
        let lines = std::sync::Arc::new(Lines::new(1));
        let client = {
            let lines = std::sync::Arc::clone(&lines);
            std::thread::Builder::new()
                .name("consumer-spin".to_owned())
                .spawn(move || {
                    lines.start();
                    let from = own_ticks();
                    let give_up = Instant::now() + Duration::from_secs(30);
                    while own_ticks() < from + SPIN_TICKS && Instant::now() < give_up {
                        std::hint::spin_loop();
                    }
                    lines.finish();
                    own_ticks() - from
                })
                .expect("spawning a thread")
        };
        let Measured { elapsed, cpu, .. } = lines.measure().expect("reading /proc/self/task");
        let spun = client.join().expect("the spinning thread");
        assert!(spun >= SPIN_TICKS, "spun {spun} ticks");
        assert_eq!(cpu.busiest_thread, "consumer-spin", "{cpu:?}");
        // The measure starts a moment before or after the thread's first tick counted.
        let busiest_s = cpu.busiest_share * elapsed.as_secs_f64();
        let floor = (SPIN_TICKS - 2) as f64 * tick - 1e-9;
        assert!(busiest_s >= floor, "{cpu:?} over {elapsed:?}");
        assert!(cpu.application_s >= busiest_s - 1e-9, "{cpu:?}");
    }
}
