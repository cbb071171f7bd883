//! A real `oxbow-broker` process on free loopback ports, and client configs that reach it.
//!
//! [`BrokerProcess`] owns one broker: it picks its ports once, so [`BrokerProcess::restart`]
//! brings the broker back at the same address over the same data directory, which is what
//! crash and restart tests need. The broker's stdout and stderr go to a log file, and every
//! error this module returns about the process carries the tail of that log.
//!
//! The API is blocking on purpose (process control is short and bounded); async tests may call
//! it directly, since the clients they drive run on librdkafka's own threads.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, StreamConsumer};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tempfile::TempDir;

/// How long a broker may take to accept connections after it was spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the broker log quoted in errors.
const LOG_TAIL_LINES: usize = 80;

/// What to start: the binary and how to run it. Ports are chosen by [`BrokerProcess::start`].
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    binary: PathBuf,
    node_id: i32,
    data_dir: Option<PathBuf>,
    /// Several log directories (`log.dirs`), in place of `data_dir`.
    log_dirs: Vec<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl BrokerOptions {
    /// A broker with node id 0 and a fresh temporary data directory.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            node_id: 0,
            data_dir: None,
            log_dirs: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn node_id(mut self, node_id: i32) -> Self {
        self.node_id = node_id;
        self
    }

    /// Use this data directory (`--log-dirs`) instead of a temporary one; it is not removed.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Use these log directories (`--log-dirs`, comma-separated) instead of one data
    /// directory. The harness creates none of them (the broker does) and removes none;
    /// [`BrokerProcess::data_dir`] is the first.
    pub fn log_dirs<I, P>(mut self, dirs: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.log_dirs = dirs.into_iter().map(Into::into).collect();
        self
    }

    /// An extra command-line argument, passed after the ones the harness sets.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// One running (or stopped) broker process. Dropping it kills the process.
#[derive(Debug)]
pub struct BrokerProcess {
    options: BrokerOptions,
    listener: SocketAddr,
    metrics: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
    // Last field: removed after the process is gone (fields drop in declaration order).
    _scratch: TempDir,
}

impl BrokerProcess {
    /// Spawns the broker on free 127.0.0.1 ports and waits until it accepts connections.
    pub fn start(options: BrokerOptions) -> Result<Self> {
        let scratch = tempfile::Builder::new()
            .prefix("oxbow-broker-")
            .tempdir()
            .context("creating the broker's scratch directory")?;
        let data_dir = match (options.log_dirs.first(), &options.data_dir) {
            (Some(first), _) => first.clone(),
            (None, Some(dir)) => dir.clone(),
            (None, None) => scratch.path().join("data"),
        };
        if options.log_dirs.is_empty() {
            fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        }
        let mut broker = Self {
            listener: free_local_addr()?,
            metrics: free_local_addr()?,
            log_path: scratch.path().join("broker.log"),
            data_dir,
            options,
            child: None,
            starts: 0,
            _scratch: scratch,
        };
        broker.spawn_and_wait()?;
        Ok(broker)
    }

    /// `host:port` for a client's `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.listener.to_string()
    }

    pub fn listener_addr(&self) -> SocketAddr {
        self.listener
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics)
    }

    pub fn node_id(&self) -> i32 {
        self.options.node_id
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive (it may have exited on its own).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // Fails only when the process already exited, which is fine: `wait` still reaps it.
        let _ = child.kill();
        child
            .wait()
            .with_context(|| format!("reaping killed broker {}", child.id()))?;
        Ok(())
    }

    /// Asks the broker to shut down with SIGTERM and waits for it to exit.
    ///
    /// Returns its exit status; a broker that does not exit within [`STOP_TIMEOUT`] is killed
    /// and reported as an error.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("broker is not running");
        };
        if let Some(status) = child.try_wait().context("checking the broker process")? {
            return Ok(status);
        }
        let pid = child.id();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running `kill -TERM`")?;
        if !sent.success() {
            bail!("`kill -TERM {pid}` failed: {sent}");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the broker to exit")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "broker {pid} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the broker again on the same ports and data directory, stopping it first with
    /// SIGTERM if it is still running.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            let status = self.stop()?;
            if !status.success() {
                bail!(
                    "broker exited with {status} when stopped for a restart\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
        }
        self.child = None;
        self.spawn_and_wait()
    }

    /// The last `lines` lines of the broker log, headed by the log's path.
    pub fn log_tail(&self, lines: usize) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                let tail = &all[all.len().saturating_sub(lines)..];
                format!(
                    "--- last {} lines of {} ---\n{}\n--- end of broker log ---",
                    tail.len(),
                    self.log_path.display(),
                    tail.join("\n")
                )
            }
            Err(err) => format!("(broker log {} unreadable: {err})", self.log_path.display()),
        }
    }

    /// Adds the broker log tail to a failed outcome, so a failing test shows what the broker
    /// said.
    pub fn explain<T>(&self, outcome: Result<T>) -> Result<T> {
        outcome.map_err(|err| anyhow!("{err:#}\n\n{}", self.log_tail(LOG_TAIL_LINES)))
    }

    /// GETs the Prometheus text from the metrics endpoint.
    pub fn scrape_metrics(&self) -> Result<String> {
        crate::http::get(&self.metrics.to_string(), "/metrics")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.starts += 1;
        let (stdout, stderr) = broker_log_outputs(
            &self.log_path,
            &format!(
                "start #{} of {}",
                self.starts,
                self.options.binary.display()
            ),
        )?;

        let listener = format!("PLAINTEXT://{}", self.listener);
        let log_dirs = if self.options.log_dirs.is_empty() {
            self.data_dir.as_os_str().to_owned()
        } else {
            let joined: Vec<String> = self
                .options
                .log_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            joined.join(",").into()
        };
        let mut command = Command::new(&self.options.binary);
        command
            .arg("--listeners")
            .arg(&listener)
            .arg("--advertised-listeners")
            .arg(&listener)
            .arg("--log-dirs")
            .arg(&log_dirs)
            .arg("--node-id")
            .arg(self.options.node_id.to_string())
            .arg("--metrics-address")
            .arg(self.metrics.to_string())
            .args(&self.options.args)
            // Plain log lines, readable in a file and in a failing test's output.
            .env("NO_COLOR", "1")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.options.binary.display()))?;
        self.child = Some(child);
        self.wait_until_ready()
    }

    /// The broker binds its listener only once its logs are loaded, so a TCP connect means
    /// ready.
    fn wait_until_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().context("checking the broker process")?,
                None => bail!("broker process is gone"),
            };
            if let Some(status) = exited {
                self.child = None;
                bail!(
                    "broker exited with {status} before accepting connections on {}\n{}",
                    self.listener,
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            if TcpStream::connect_timeout(&self.listener, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill()?;
                bail!(
                    "broker did not accept connections on {} within {START_TIMEOUT:?}\n{}",
                    self.listener,
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.log_tail(LOG_TAIL_LINES));
        }
        let _ = self.kill();
    }
}

/// A broker process's stdout and stderr: its log file at `path`, opened for appending after a
/// line `=== oxbow-e2e: <header> ===`, so the starts of one broker follow each other there.
pub(crate) fn broker_log_outputs(path: &Path, header: &str) -> Result<(Stdio, Stdio)> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening broker log {}", path.display()))?;
    writeln!(log, "=== oxbow-e2e: {header} ===").context("writing to the broker log")?;
    let stderr = log
        .try_clone()
        .context("duplicating the broker log handle")?;
    Ok((Stdio::from(log), Stdio::from(stderr)))
}

/// A broker process's wall clock that a test moves: libfaketime preloaded, reading its offset
/// from a file. Its monotonic clock, which timeouts use, runs on.
#[derive(Debug, Clone)]
pub struct FakeClock {
    library: PathBuf,
    file: PathBuf,
}

impl FakeClock {
    /// A clock at real time whose offset lives in `file`. Needs libfaketime's multithreaded
    /// library, from the Debian package `faketime` (the test command installs it).
    pub fn new(file: PathBuf) -> Result<FakeClock> {
        let candidates = std::iter::once(PathBuf::from("/usr/lib/faketime")).chain(
            fs::read_dir("/usr/lib")
                .context("listing /usr/lib")?
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("faketime")),
        );
        let library = candidates
            .map(|dir| dir.join("libfaketimeMT.so.1"))
            .find(|library| library.is_file())
            .context(
                "libfaketimeMT.so.1 not found: install the Debian package faketime (scripts/test.sh does)",
            )?;
        fs::write(&file, "+0\n").with_context(|| format!("writing {}", file.display()))?;
        Ok(FakeClock { library, file })
    }

    /// The environment a broker process starts with to follow this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", self.library.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_CACHE_DURATION", "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Moves the clock to `offset` from real time, in libfaketime's syntax (`+2h`, `-30m`,
    /// `+0`), and waits until the process reads it at its next clock call. libfaketime reads
    /// the file again once the whole seconds since its last read exceed the cache duration (1),
    /// which can take up to 2 s; the file is replaced by a rename so no read sees it empty.
    pub fn set(&self, offset: &str) -> Result<()> {
        let staged = self.file.with_extension("next");
        fs::write(&staged, format!("{offset}\n"))
            .with_context(|| format!("writing {}", staged.display()))?;
        fs::rename(&staged, &self.file)
            .with_context(|| format!("replacing {}", self.file.display()))?;
        thread::sleep(Duration::from_millis(2500));
        Ok(())
    }
}

/// A loopback address with a port that was free a moment ago (bound to port 0, then released).
pub fn free_local_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    listener
        .local_addr()
        .context("reading the address of a free port")
}

/// A client config reaching `bootstrap`, with settings every test client shares.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "30000")
        // Fail fast on a broker bug instead of hiding it behind librdkafka's long retries.
        .set("message.timeout.ms", "30000");
    config
}

/// Producer settings: acks from all in-sync replicas, no idempotence (InitProducerId is not
/// implemented yet), small linger so tests batch without waiting long.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = client_config(bootstrap);
    config
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("linger.ms", "5");
    config
}

/// Consumer settings for manual assignment: a group id (librdkafka requires one) but no
/// automatic commits, reading from the beginning when no offset is given.
pub fn consumer_config(bootstrap: &str, group_id: &str) -> ClientConfig {
    let mut config = client_config(bootstrap);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    config
}

pub fn future_producer(bootstrap: &str) -> Result<FutureProducer> {
    producer_config(bootstrap)
        .create()
        .with_context(|| format!("creating a producer for {bootstrap}"))
}

pub fn stream_consumer(bootstrap: &str, group_id: &str) -> Result<StreamConsumer> {
    consumer_config(bootstrap, group_id)
        .create()
        .with_context(|| format!("creating a stream consumer for {bootstrap}"))
}

pub fn base_consumer(bootstrap: &str, group_id: &str) -> Result<BaseConsumer> {
    consumer_config(bootstrap, group_id)
        .create()
        .with_context(|| format!("creating a consumer for {bootstrap}"))
}

/// The broker binary for tests outside the broker crate, which Cargo gives no path to:
/// `OXBOW_BROKER_BIN`, or `oxbow-broker` in the profile folder of the running test binary
/// (target/<profile>/deps/<test> → target/<profile>/oxbow-broker). An error when it is missing.
pub fn broker_binary() -> Result<PathBuf> {
    workspace_binary("oxbow-broker", "OXBOW_BROKER_BIN")
}

/// A binary of the workspace: the path in `variable`, or `name` in the running binary's
/// profile folder (`target/<profile>/`), built by `cargo build --workspace --bins`.
pub fn workspace_binary(name: &str, variable: &str) -> Result<PathBuf> {
    let binary = match std::env::var_os(variable) {
        Some(path) => PathBuf::from(path),
        None => {
            // A binary of the workspace sits in target/<profile>/; a test binary one below.
            let exe = std::env::current_exe().context("the running binary's path")?;
            let beside = exe.parent().map(|dir| dir.join(name));
            match beside.filter(|path| path.exists()) {
                Some(path) => path,
                None => exe
                    .parent()
                    .and_then(Path::parent)
                    .map(|dir| dir.join(name))
                    .context("the test binary lives in target/<profile>/deps")?,
            }
        }
    };
    if !binary.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --workspace --bins` (or set {variable})",
            binary.display()
        );
    }
    Ok(binary)
}

/// Creates `topic` with `partitions` partitions and replication factor 1 through librdkafka's
/// admin API, and fails unless the broker created it.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap)
        .create()
        .context("creating an admin client")?;
    let options = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(10)));
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .with_context(|| format!("CreateTopics {topic} with {partitions} partitions"))?;
    for result in results {
        result.map_err(|(name, code)| anyhow!("CreateTopics {name}: {code}"))?;
    }
    Ok(())
}

/// Where the broker acknowledged a record: (partition, offset).
pub type Ack = (i32, i64);

/// How many distinct keys numbered records cycle through.
const NUMBERED_KEYS: usize = 1000;
/// Numbered records in flight at once: well under librdkafka's default queue of 100 000.
const NUMBERED_IN_FLIGHT: usize = 10_000;
/// Bound for one numbered record's acknowledgement.
const NUMBERED_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// The key of numbered record `seq`: `key-<seq mod 1000>`.
pub fn numbered_key(seq: usize) -> String {
    format!("key-{}", seq % NUMBERED_KEYS)
}

/// The value of numbered record `seq`: `seq-<seq>`.
pub fn numbered_value(seq: usize) -> String {
    format!("seq-{seq}")
}

/// Produces the numbered records `seqs` (keyed, to the partition `partition_of` names or the
/// partitioner's choice), appending where each was acknowledged to `acks`, so that
/// `acks[seq]` belongs to record `seq`: ranges must be produced in order.
pub async fn produce_numbered(
    producer: &FutureProducer,
    topic: &str,
    seqs: Range<usize>,
    partition_of: impl Fn(usize) -> Option<i32>,
    acks: &mut Vec<Ack>,
) -> Result<()> {
    ensure!(
        acks.len() == seqs.start,
        "records must be produced in sequence order"
    );
    let mut pending: VecDeque<(usize, DeliveryFuture)> = VecDeque::new();
    for seq in seqs {
        let (key, value) = (numbered_key(seq), numbered_value(seq));
        let mut record = FutureRecord::to(topic).key(&key).payload(&value);
        if let Some(partition) = partition_of(seq) {
            record = record.partition(partition);
        }
        let delivery = producer
            .send_result(record)
            .map_err(|(err, _)| anyhow!("queueing record {seq} for {topic}: {err}"))?;
        pending.push_back((seq, delivery));
        if pending.len() >= NUMBERED_IN_FLIGHT {
            if let Some((seq, delivery)) = pending.pop_front() {
                acks.push(await_numbered_ack(topic, seq, delivery).await?);
            }
        }
    }
    while let Some((seq, delivery)) = pending.pop_front() {
        acks.push(await_numbered_ack(topic, seq, delivery).await?);
    }
    Ok(())
}

async fn await_numbered_ack(topic: &str, seq: usize, delivery: DeliveryFuture) -> Result<Ack> {
    let delivery = tokio::time::timeout(NUMBERED_ACK_TIMEOUT, delivery)
        .await
        .with_context(|| {
            format!("record {seq} to {topic} not acknowledged in {NUMBERED_ACK_TIMEOUT:?}")
        })?
        .context("producer dropped the delivery report")?
        .map_err(|(err, _)| anyhow!("record {seq} to {topic} failed: {err}"))?;
    Ok((delivery.partition, delivery.offset))
}

/// The value of one sample of a Prometheus text (`/metrics`), by its full series name with
/// labels.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

#[cfg(test)]
mod tests {
    //! The harness driven against a stand-in broker (a small Python script that listens where
    //! it is told), so harness bugs show up apart from broker bugs.

    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use anyhow::{ensure, Context, Result};

    use super::{BrokerOptions, BrokerProcess};

    const FAKE_BROKER: &str = r#"#!/usr/bin/env python3
import signal, socket, sys
args = sys.argv[1:]
print("args:", " ".join(args), flush=True)
if "--fail" in args:
    print("refusing to start", flush=True)
    sys.exit(3)
host, port = args[args.index("--listeners") + 1].split("://")[-1].rsplit(":", 1)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, int(port)))
server.listen()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    server.accept()[0].close()
"#;

    fn fake_broker(dir: &Path) -> Result<PathBuf> {
        let path = dir.join("fake-broker");
        fs::write(&path, FAKE_BROKER).context("writing the fake broker")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).context("chmod")?;
        Ok(path)
    }

    #[test]
    fn a_broker_is_stopped_killed_and_restarted_on_the_same_address() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut broker =
            BrokerProcess::start(BrokerOptions::new(fake_broker(dir.path())?).node_id(7))?;
        let bootstrap = broker.bootstrap();
        ensure!(bootstrap.starts_with("127.0.0.1:"), "bootstrap {bootstrap}");
        ensure!(
            broker.log_tail(5).contains("--node-id 7"),
            "{}",
            broker.log_tail(5)
        );

        let status = broker.stop()?;
        ensure!(status.success(), "SIGTERM exit status {status}");
        broker.restart()?;
        ensure!(broker.bootstrap() == bootstrap, "restart moved the broker");

        broker.kill()?;
        ensure!(!broker.is_running(), "still running after kill");
        broker.restart()?;
        ensure!(broker.is_running(), "not running after restart");
        ensure!(
            broker.log_tail(100).contains("start #3"),
            "{}",
            broker.log_tail(100)
        );
        Ok(())
    }

    #[test]
    fn a_broker_that_exits_at_start_is_reported_with_its_log() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let options = BrokerOptions::new(fake_broker(dir.path())?).arg("--fail");
        let err = BrokerProcess::start(options).expect_err("the fake broker exits at once");
        let message = format!("{err:#}");
        ensure!(message.contains("refusing to start"), "{message}");
        ensure!(message.contains("exit status: 3"), "{message}");
        Ok(())
    }
}
