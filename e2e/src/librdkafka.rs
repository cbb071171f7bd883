//! librdkafka's own integration tests (its `tests/test-runner`) against a broker.
//!
//! `scripts/librdkafka-tests.sh` builds the runner from the librdkafka source that the
//! workspace's `rdkafka-sys` vendors, into `~/.cache/oxbow/librdkafka-<version>`
//! (`OXBOW_LIBRDKAFKA_TESTS` names another runner directory). A run selects librdkafka's tests by
//! number (`TESTS=0103`), talks to the brokers named in a generated `test.conf`, runs broker
//! tests only (`-L`), and is killed with everything it started (its Java helper included) when
//! it outlives its timeout.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rustix::process::{kill_process_group, Pid, Signal};

/// The runner directory (librdkafka's `tests/`): `OXBOW_LIBRDKAFKA_TESTS`, else the cache
/// `scripts/librdkafka-tests.sh` fills for the librdkafka version the `rdkafka` crate links.
pub fn runner_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("OXBOW_LIBRDKAFKA_TESTS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let (_, version) = rdkafka::util::get_rdkafka_version();
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            PathBuf::from(home)
                .join(".cache/oxbow")
                .join(format!("librdkafka-{version}"))
                .join("tests")
        }
    };
    let complete = dir.parent().map(|root| root.join(".complete"));
    if !dir.join("test-runner").exists() || !complete.is_some_and(|c| c.exists()) {
        bail!(
            "librdkafka's test runner is not built in {}: run `bash scripts/librdkafka-tests.sh` (or set OXBOW_LIBRDKAFKA_TESTS)",
            dir.display()
        );
    }
    Ok(dir)
}

/// One run of the test runner, finished.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    /// stdout and stderr together, as the runner interleaves them, without colour codes.
    pub text: String,
    pub elapsed: Duration,
}

impl RunOutput {
    /// The runner's lines that name `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<&str> {
        self.text.lines().filter(|l| l.contains(needle)).collect()
    }

    /// The last `count` lines, for failure messages.
    pub fn tail(&self, count: usize) -> String {
        tail(&self.text, count)
    }

    /// Checks that the run exited 0, and that each of `tests` (full names, `0103_transactions`)
    /// PASSED, none was skipped or failed, and no sub-test was skipped. Returns the sub-tests
    /// that passed.
    pub fn expect_passed(&self, tests: &[&str]) -> Result<Vec<String>> {
        let context = || format!("after {:.0?}:\n{}", self.elapsed, self.tail(80));
        ensure!(
            self.status.success(),
            "the test runner exited with {} {}",
            self.status,
            context()
        );
        for test in tests {
            let verdicts: Vec<&str> = self
                .lines_with(&format!("= Test {test} "))
                .into_iter()
                .filter(|l| l.contains("PASSED") || l.contains("FAILED") || l.contains("SKIPPED"))
                .collect();
            ensure!(
                verdicts.len() == 1 && verdicts[0].contains(&format!("Test {test} PASSED")),
                "test {test}: {verdicts:?} {}",
                context()
            );
        }
        let skipped = self.lines_with(": SKIP: ");
        ensure!(
            skipped.is_empty(),
            "sub-tests skipped: {skipped:?} {}",
            context()
        );
        let failed = self.lines_with("TEST FAILURE");
        ensure!(failed.is_empty(), "failures: {failed:?} {}", context());
        Ok(self
            .lines_with(": PASS (")
            .into_iter()
            .map(|l| l.trim().to_string())
            .collect())
    }
}

/// Runs librdkafka's tests `tests` (`"0103"`, or a comma-separated list) against
/// `bootstrap`, with `conf` lines added to the generated `test.conf`, for at most `timeout`.
pub fn run(bootstrap: &str, tests: &str, conf: &[&str], timeout: Duration) -> Result<RunOutput> {
    let dir = runner_dir()?;
    let root = dir.parent().context("the runner directory has a parent")?;
    let work = tempfile::Builder::new()
        .prefix("librdkafka-run-")
        .tempdir()?;
    let conf_path = work.path().join("test.conf");
    let mut lines = vec![format!("bootstrap.servers={bootstrap}")];
    lines.extend(conf.iter().map(|l| l.to_string()));
    fs::write(&conf_path, lines.join("\n") + "\n")
        .with_context(|| format!("writing {}", conf_path.display()))?;
    let out_path = work.path().join("runner.out");
    let out =
        File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
    let libs = format!(
        "{}:{}",
        root.join("src").display(),
        root.join("src-cpp").display()
    );
    let started = Instant::now();
    let mut command = Command::new(dir.join("test-runner"));
    command
        .arg("-L")
        .current_dir(&dir)
        .env("TESTS", tests)
        .env("RDKAFKA_TEST_CONF", &conf_path)
        .env("TEST_KAFKA_VERSION", crate::kafka::KAFKA_VERSION)
        .env("KAFKA_PATH", root.join("kafka-path"))
        .env("LD_LIBRARY_PATH", libs)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", dir.join("test-runner").display()))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            if let Some(group) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
                // The runner and whatever it started (the Java producer) share its group.
                let _ = kill_process_group(group, Signal::KILL);
            }
            let _ = child.wait();
            bail!(
                "librdkafka's TESTS={tests} did not finish within {timeout:?}:\n{}",
                tail(&read_text(&out_path)?, 80)
            );
        }
        thread::sleep(Duration::from_millis(200));
    };
    Ok(RunOutput {
        status,
        text: read_text(&out_path)?,
        elapsed: started.elapsed(),
    })
}

/// The last `count` lines of `text`.
fn tail(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The runner's output without its terminal colour codes.
fn read_text(path: &Path) -> Result<String> {
    let raw = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&raw);
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter, or ESC ( B.
            match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                // ESC ( B: back to the default character set.
                Some('(') => {
                    chars.next();
                }
                Some(_) | None => {}
            }
        } else {
            clean.push(c);
        }
    }
    Ok(clean)
}
