//! Startup, liveness and readiness probes: TCP connects and HTTP GETs to the pod's address,
//! made from outside the pod as the kubelet makes them, with the probe's timing fields.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The state of one probe of one container.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub probe: Probe,
    pub successes: i32,
    pub failures: i32,
    /// The outcome the thresholds have settled on so far.
    pub passing: bool,
    next: Instant,
}

/// What a probe's run changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unchanged,
    Passed,
    Failed,
}

impl ProbeState {
    pub fn new(probe: Probe, started: Instant) -> ProbeState {
        let delay = probe.initial_delay_seconds.unwrap_or(0).max(0) as u64;
        ProbeState {
            probe,
            successes: 0,
            failures: 0,
            passing: false,
            next: started + Duration::from_secs(delay),
        }
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.probe.period_seconds.unwrap_or(10).max(1) as u64)
    }

    /// Runs the probe once and applies its thresholds.
    pub async fn run(&mut self, address: Ipv4Addr, ports: &[ContainerPort]) -> Verdict {
        self.next = Instant::now() + self.period();
        let ok = check(&self.probe, address, ports).await;
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.passing && self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                self.passing = true;
                return Verdict::Passed;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                self.passing = false;
                self.failures = 0;
                return Verdict::Failed;
            }
        }
        Verdict::Unchanged
    }
}

fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// One probe attempt.
pub async fn check(probe: &Probe, address: Ipv4Addr, ports: &[ContainerPort]) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&tcp.port, ports) else {
            return false;
        };
        return matches!(
            tokio::time::timeout(
                timeout,
                TcpStream::connect(SocketAddr::from((address, port)))
            )
            .await,
            Ok(Ok(_))
        );
    }
    if let Some(http) = &probe.http_get {
        let Some(port) = resolve_port(&http.port, ports) else {
            return false;
        };
        if http
            .scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("http"))
        {
            tracing::warn!("HTTPS probes are not supported by the node agent");
            return false;
        }
        let path = http.path.clone().unwrap_or_else(|| "/".to_string());
        return tokio::time::timeout(timeout, http_get(address, port, &path))
            .await
            .ok()
            .flatten()
            .is_some_and(|status| (200..400).contains(&status));
    }
    tracing::warn!("exec and gRPC probes are not supported by the node agent");
    false
}

async fn http_get(address: Ipv4Addr, port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(SocketAddr::from((address, port)))
        .await
        .ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}:{port}\r\nUser-Agent: kube-probe/1.37\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        let n = stream.read(&mut head[filled..]).await.ok()?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let line = std::str::from_utf8(&head[..filled]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}
