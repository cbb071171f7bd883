//! Apache Kafka's own programs in tests: its CLI tools, run against Oxbow or a real Kafka
//! broker, and a real Kafka broker (KRaft, combined broker and controller) to compare with.
//!
//! The jars come from Maven Central through `scripts/kafka-tools.sh`, which caches them in
//! `~/.cache/oxbow/kafka/<version>`; `OXBOW_KAFKA_JARS` names another folder. Every tool run is
//! a fresh JVM, bounded by a timeout, with its stdout and stderr kept apart so that a test can
//! check what the tool printed.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use tempfile::TempDir;

use crate::harness::{free_local_addr, BrokerOptions, BrokerProcess};

/// The Kafka release the tests compare with.
pub const KAFKA_VERSION: &str = "4.1.1";
/// How long one tool run may take (a JVM starts in 1–3 s).
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a Kafka broker may take to start.
const KAFKA_START_TIMEOUT: Duration = Duration::from_secs(90);

/// The folder of Kafka's jars: `OXBOW_KAFKA_JARS`, else the cache `scripts/kafka-tools.sh`
/// fills.
pub fn jars() -> Result<PathBuf> {
    let dir = match std::env::var_os("OXBOW_KAFKA_JARS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            PathBuf::from(home)
                .join(".cache/oxbow/kafka")
                .join(KAFKA_VERSION)
        }
    };
    if !dir.join(".complete").exists() {
        bail!(
            "Kafka {KAFKA_VERSION}'s jars are not in {}: run `bash scripts/kafka-tools.sh` (or set OXBOW_KAFKA_JARS)",
            dir.display()
        );
    }
    Ok(dir)
}

/// The main class of a Kafka command by its script name (`kafka-topics`, ...).
pub fn main_class(tool: &str) -> Result<&'static str> {
    Ok(match tool {
        "kafka-topics" => "org.apache.kafka.tools.TopicCommand",
        "kafka-console-producer" => "org.apache.kafka.tools.ConsoleProducer",
        "kafka-console-consumer" => "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "kafka-consumer-groups" => "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "kafka-configs" => "kafka.admin.ConfigCommand",
        "kafka-acls" => "org.apache.kafka.tools.AclCommand",
        "kafka-reassign-partitions" => "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
        "kafka-leader-election" => "org.apache.kafka.tools.LeaderElectionCommand",
        "kafka-delete-records" => "org.apache.kafka.tools.DeleteRecordsCommand",
        "kafka-get-offsets" => "org.apache.kafka.tools.GetOffsetShell",
        "kafka-log-dirs" => "org.apache.kafka.tools.LogDirsCommand",
        "kafka-metadata-quorum" => "org.apache.kafka.tools.MetadataQuorumCommand",
        "kafka-features" => "org.apache.kafka.tools.FeatureCommand",
        "kafka-broker-api-versions" => "org.apache.kafka.tools.BrokerApiVersionsCommand",
        "kafka-producer-perf-test" => "org.apache.kafka.tools.ProducerPerformance",
        "kafka-consumer-perf-test" => "org.apache.kafka.tools.ConsumerPerformance",
        "kafka-transactions" => "org.apache.kafka.tools.TransactionsCommand",
        "kafka-cluster" => "org.apache.kafka.tools.ClusterTool",
        "kafka-storage" => "kafka.tools.StorageTool",
        "kafka-server-start" => "kafka.Kafka",
        "connect-distributed" => "org.apache.kafka.connect.cli.ConnectDistributed",
        other => bail!("no Kafka command is called {other:?}"),
    })
}

/// What a finished tool printed.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub command: String,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// The output of a run that must have succeeded; an error quoting both streams otherwise.
    pub fn ok(self) -> Result<ToolOutput> {
        if !self.success {
            bail!("{self}");
        }
        Ok(self)
    }

    /// stdout's non-empty lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The first stdout line that is a JSON object (what `kafka-log-dirs --describe` prints
    /// after its banner).
    pub fn json_line(&self) -> Result<serde_json::Value> {
        let line = self
            .lines()
            .into_iter()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("no JSON: {self}"))?;
        Ok(serde_json::from_str(line)?)
    }
}

impl std::fmt::Display for ToolOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            if self.success { "succeeded" } else { "failed" },
            self.stdout,
            self.stderr
        )
    }
}

/// The JVM flags of short-lived tools and of the programs tests run: a small heap and a JIT
/// that starts fast.
const TOOL_JVM: &[&str] = &[
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
];

/// The JVM flags `kafka-server-start.sh` gives a broker (its 1 GB heap and Kafka's
/// `KAFKA_JVM_PERFORMANCE_OPTS`): a broker measured in a benchmark runs with these.
pub const SERVER_JVM: &[&str] = &[
    "-Xmx1G",
    "-Xms1G",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
];

/// A `java` command with Kafka's jars on the classpath and `flags`.
fn java(jars: &Path, flags: &[&str], log_config: &str, main: &str) -> Command {
    let mut command = Command::new("java");
    command
        .args(flags)
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            jars.join(log_config).display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", jars.display()))
        .arg(main);
    command
}

/// A Java program of the tests' own, `e2e/java/<file>`: run in source-file mode (compiled when
/// the JVM starts) with Kafka's jars on the classpath, by [`run_java`] or [`JavaProcess::start`].
pub fn java_source(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("java")
        .join(file)
}

/// Runs Kafka's `tool` (its script name, `kafka-topics`) with `args`, feeding `stdin`, and
/// returns what it printed. An error only when the tool cannot run or outlives
/// [`TOOL_TIMEOUT`]; a tool that fails is a [`ToolOutput`] with `success` false.
pub fn run_tool(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<ToolOutput> {
    run_java(main_class(tool)?, tool, args, stdin)
}

/// Runs `main` (a class, or a `.java` source file from [`java_source`]) to its end as
/// [`run_tool`] runs a tool, `shown` naming it in messages.
pub fn run_java(main: &str, shown: &str, args: &[&str], stdin: Option<&str>) -> Result<ToolOutput> {
    let jars = jars()?;
    let mut command = java(&jars, TOOL_JVM, "log4j2-tools.properties", main);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{shown} {}", args.join(" "));
    let mut child = command
        .spawn()
        .with_context(|| format!("starting `{shown}` (is java installed?)"))?;
    if let Some(input) = stdin {
        use std::io::Write as _;
        let mut pipe = child.stdin.take().context("the tool's stdin")?;
        pipe.write_all(input.as_bytes())
            .with_context(|| format!("writing to `{shown}`"))?;
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, TOOL_TIMEOUT);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let status = match status? {
        Some(status) => status,
        None => bail!("`{shown}` did not finish within {TOOL_TIMEOUT:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"),
    };
    Ok(ToolOutput {
        command: shown,
        success: status.success(),
        stdout,
        stderr,
    })
}

/// Runs a tool that must succeed.
pub fn tool(tool: &str, args: &[&str]) -> Result<ToolOutput> {
    run_tool(tool, args, None)?.ok()
}

fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Waits for `child` up to `timeout`; kills it and answers `None` when it is still running.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a Kafka tool")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A long-running Java program with Kafka's jars on its classpath (a broker, a Streams
/// application, a Connect worker): its output goes to a log file; it is killed when dropped.
pub struct JavaProcess {
    child: Option<Child>,
    log_path: PathBuf,
    name: String,
}

impl JavaProcess {
    /// Starts `main` (a class, or a `.java` source file run in source-file mode) with `args`,
    /// logging to `log_path`.
    pub fn start(name: &str, main: &str, args: &[&str], log_path: &Path) -> Result<JavaProcess> {
        JavaProcess::start_with_jvm(name, TOOL_JVM, main, args, log_path)
    }

    /// As [`JavaProcess::start`], with the JVM flags `jvm` (e.g. [`SERVER_JVM`]).
    pub fn start_with_jvm(
        name: &str,
        jvm: &[&str],
        main: &str,
        args: &[&str],
        log_path: &Path,
    ) -> Result<JavaProcess> {
        let jars = jars()?;
        let log = fs::File::create(log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = java(&jars, jvm, "log4j2-server.properties", main)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name} (is java installed?)"))?;
        Ok(JavaProcess {
            child: Some(child),
            log_path: log_path.to_path_buf(),
            name: name.to_string(),
        })
    }

    /// Waits until the log contains `text`; an error if the program exits first
    /// or `timeout` passes.
    pub fn wait_for_log(&mut self, text: &str, timeout: Duration) -> Result<()> {
        // The whole log, not line by line: `text` may span lines or end with a newline.
        let path = self.log_path.clone();
        self.wait_until(&format!("logging {text:?}"), timeout, |_| {
            fs::read_to_string(&path).unwrap_or_default().contains(text)
        })
    }

    /// Whether the log has a line containing `text` now.
    pub fn logged(&self, text: &str) -> bool {
        fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .any(|line| line.contains(text))
    }

    /// SIGTERM, and a wait of up to `timeout` for the program to exit (killed after that).
    pub fn stop(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        )
        .with_context(|| format!("signalling {}", self.name))?;
        match wait_bounded(&mut child, timeout)? {
            Some(status) => Ok(status),
            None => bail!(
                "{} did not exit within {timeout:?} of SIGTERM\n{}",
                self.name,
                self.log_tail(60)
            ),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash: no shutdown hook runs. Waits for the process to be gone.
    pub fn kill(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        child
            .kill()
            .with_context(|| format!("killing {}", self.name))?;
        child
            .wait()
            .with_context(|| format!("waiting for {} to die", self.name))
    }

    /// The log's lines that start with `prefix`, that prefix taken off: the lines a program of
    /// the tests prints for them, among the client's own logging.
    pub fn lines(&self, prefix: &str) -> Vec<String> {
        fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .map(str::to_string)
            .collect()
    }

    /// Waits until `ready` holds of the program's output lines (see [`JavaProcess::lines`]
    /// with an empty prefix); an error if the program exits first or `timeout` passes.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&[String]) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(&self.lines("")) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{} exited with {status} before {what}\n{}",
                        self.name,
                        self.log_tail(60)
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: not {what} within {timeout:?}\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        format!(
            "--- last lines of {} ---\n{}",
            self.log_path.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }
}

impl Drop for JavaProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real Apache Kafka broker: one KRaft node, broker and controller in one process, its
/// storage formatted `--standalone` as Kafka's quick start does, listening on loopback.
pub struct KafkaBroker {
    process: JavaProcess,
    listener: SocketAddr,
    _dir: TempDir,
}

impl KafkaBroker {
    /// Formats and starts a broker with Kafka's defaults plus `extra` settings
    /// (`key=value` lines), and waits until it serves. Its JVM has a tool's small heap and
    /// quick JIT, which is enough for tests.
    pub fn start(extra: &[&str]) -> Result<KafkaBroker> {
        KafkaBroker::start_with_jvm(extra, TOOL_JVM)
    }

    /// As [`KafkaBroker::start`], with the JVM flags `jvm` ([`SERVER_JVM`] for a broker as
    /// `kafka-server-start.sh` runs it).
    pub fn start_with_jvm(extra: &[&str], jvm: &[&str]) -> Result<KafkaBroker> {
        let dir = tempfile::Builder::new().prefix("kafka-broker-").tempdir()?;
        let listener = free_local_addr()?;
        let controller = free_local_addr()?;
        let properties = dir.path().join("server.properties");
        let mut settings = vec![
            "process.roles=broker,controller".to_string(),
            "node.id=1".to_string(),
            format!("controller.quorum.bootstrap.servers={controller}"),
            format!("listeners=PLAINTEXT://{listener},CONTROLLER://{controller}"),
            format!("advertised.listeners=PLAINTEXT://{listener},CONTROLLER://{controller}"),
            "controller.listener.names=CONTROLLER".to_string(),
            "inter.broker.listener.name=PLAINTEXT".to_string(),
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".to_string(),
            format!("log.dirs={}", dir.path().join("data").display()),
            "num.partitions=1".to_string(),
            "offsets.topic.replication.factor=1".to_string(),
            "transaction.state.log.replication.factor=1".to_string(),
            "transaction.state.log.min.isr=1".to_string(),
            "share.coordinator.state.topic.replication.factor=1".to_string(),
            "share.coordinator.state.topic.min.isr=1".to_string(),
            "group.initial.rebalance.delay.ms=0".to_string(),
        ];
        settings.extend(extra.iter().map(|s| s.to_string()));
        fs::write(&properties, settings.join("\n") + "\n")?;
        // As Kafka's own ids: never one that starts with '-', which reads as an option.
        let cluster_id = std::iter::repeat_with(|| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
        })
        .find(|id| !id.starts_with('-'))
        .context("a cluster id")?;
        let properties_arg = properties.to_string_lossy();
        run_tool(
            "kafka-storage",
            &[
                "format",
                "--standalone",
                "-t",
                &cluster_id,
                "-c",
                &properties_arg,
            ],
            None,
        )?
        .ok()
        .context("formatting the Kafka broker's storage")?;
        let mut process = JavaProcess::start_with_jvm(
            "the Kafka broker",
            jvm,
            main_class("kafka-server-start")?,
            &[&properties_arg],
            &dir.path().join("kafka.log"),
        )?;
        process.wait_for_log("Kafka Server started", KAFKA_START_TIMEOUT)?;
        Ok(KafkaBroker {
            process,
            listener,
            _dir: dir,
        })
    }

    pub fn bootstrap(&self) -> String {
        self.listener.to_string()
    }

    /// The broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The last `lines` lines of the broker's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

/// The broker a side-by-side test talks to: Oxbow, or Apache Kafka for comparison.
pub enum Server {
    Oxbow(Box<BrokerProcess>),
    Kafka(Box<KafkaBroker>),
}

/// Which broker a side-by-side test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Oxbow,
    Kafka,
}

impl Server {
    /// A single broker of `flavor` with `extra` settings (`key=value`, Kafka's names).
    pub fn start(flavor: Flavor, extra: &[&str]) -> Result<Server> {
        Ok(match flavor {
            Flavor::Oxbow => {
                let mut options = BrokerOptions::new(crate::harness::broker_binary()?);
                if !extra.is_empty() {
                    let dir = tempfile::Builder::new().prefix("oxbow-config-").tempdir()?;
                    let file = dir.path().join("server.properties");
                    fs::write(&file, extra.join("\n") + "\n")?;
                    // The file outlives the start: the broker reads it once.
                    options = options.arg(format!("--config={}", file.display()));
                    let broker = BrokerProcess::start(options)?;
                    drop(dir);
                    return Ok(Server::Oxbow(Box::new(broker)));
                }
                Server::Oxbow(Box::new(BrokerProcess::start(options)?))
            }
            Flavor::Kafka => Server::Kafka(Box::new(KafkaBroker::start(extra)?)),
        })
    }

    /// Creates `topic` with `partitions` partitions and one replica through `kafka-topics`.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        self.tool(
            "kafka-topics",
            &[
                "--create",
                "--topic",
                topic,
                "--partitions",
                &partitions.to_string(),
                "--replication-factor",
                "1",
            ],
        )?;
        Ok(())
    }

    pub fn flavor(&self) -> Flavor {
        match self {
            Server::Oxbow(_) => Flavor::Oxbow,
            Server::Kafka(_) => Flavor::Kafka,
        }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Server::Oxbow(broker) => broker.bootstrap(),
            Server::Kafka(broker) => broker.bootstrap(),
        }
    }

    /// The node id of the single broker (Oxbow's default 0, the Kafka broker's 1).
    pub fn node_id(&self) -> i32 {
        match self {
            Server::Oxbow(broker) => broker.node_id(),
            Server::Kafka(_) => 1,
        }
    }

    /// The broker's log tail, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        match self {
            Server::Oxbow(broker) => broker.log_tail(lines),
            Server::Kafka(broker) => broker.log_tail(lines),
        }
    }

    /// Runs `tool` against this broker: `--bootstrap-server` is added first.
    pub fn tool(&self, tool: &str, args: &[&str]) -> Result<ToolOutput> {
        self.run(tool, args, None)?.ok()
    }

    /// Like [`Server::tool`], with `stdin` and without requiring success.
    pub fn run(&self, tool: &str, args: &[&str], stdin: Option<&str>) -> Result<ToolOutput> {
        let bootstrap = self.bootstrap();
        let mut all = vec!["--bootstrap-server", bootstrap.as_str()];
        all.extend_from_slice(args);
        run_tool(tool, &all, stdin)
    }
}

/// Runs `check` on a fresh broker of `flavor` with `extra` settings; a failure names the
/// flavor and quotes the broker's log.
pub fn run_on(flavor: Flavor, extra: &[&str], check: fn(&Server) -> Result<()>) -> Result<()> {
    let server = Server::start(flavor, extra)?;
    check(&server).map_err(|e| {
        anyhow::anyhow!(
            "{flavor:?}: {e:#}\n--- broker log ---\n{}",
            server.log_tail(40)
        )
    })
}

/// Declares module `$name` with two tests, `oxbow` and `kafka`, each running the function
/// `$name(&Server) -> Result<()>` of the enclosing module on a fresh broker of that flavor,
/// with the optional `key=value` settings `$extra`.
#[macro_export]
macro_rules! side_by_side {
    ($name:ident) => {
        $crate::side_by_side!($name, &[]);
    };
    ($name:ident, $extra:expr) => {
        mod $name {
            #[test]
            fn oxbow() -> anyhow::Result<()> {
                $crate::kafka::run_on($crate::kafka::Flavor::Oxbow, $extra, super::$name)
            }

            #[test]
            fn kafka() -> anyhow::Result<()> {
                $crate::kafka::run_on($crate::kafka::Flavor::Kafka, $extra, super::$name)
            }
        }
    };
}

/// Repeats `attempt` every half second until it succeeds or `timeout` passes (metadata,
/// group state and connectors settle asynchronously); the last error says what was awaited.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!("{what}: not within {timeout:?}")))
            }
            Err(_) => thread::sleep(Duration::from_millis(500)),
        }
    }
}
