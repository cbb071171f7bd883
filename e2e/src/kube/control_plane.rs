//! The Kubernetes control plane: etcd, kube-apiserver (RBAC on), kube-controller-manager and
//! kube-scheduler, from the binaries `scripts/k8s-tools.sh` builds, with a throw-away PKI made
//! by `openssl`. It runs inside the sandbox: the API server listens on the pods' gateway
//! ([`super::sandbox::GATEWAY`]) so pods reach it as they would a cluster's `kubernetes`
//! Service.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::sandbox::{self, GATEWAY, SERVICE_CIDR};

/// The API server's port on the gateway.
pub const API_PORT: u16 = 6443;
const ETCD_CLIENT: &str = "127.0.0.1:2379";
const ETCD_PEER: &str = "127.0.0.1:2380";

/// Where `scripts/k8s-tools.sh` leaves the binaries: `OXBOW_K8S_BIN` or its default cache.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("OXBOW_K8S_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let version = std::env::var("OXBOW_K8S_VERSION").unwrap_or_else(|_| "v1.37.2".to_string());
    let dir = PathBuf::from(home).join(".cache/oxbow/k8s").join(version);
    if !dir.join("kube-apiserver").is_file() {
        bail!(
            "no Kubernetes binaries in {}: run scripts/k8s-tools.sh (or set OXBOW_K8S_BIN)",
            dir.display()
        );
    }
    Ok(dir)
}

/// A running control plane. Dropping it stops its processes.
#[derive(Debug)]
pub struct ControlPlane {
    pub dir: PathBuf,
    pub bin: PathBuf,
    /// Admin credentials (system:masters), for the tests and the node agent.
    pub kubeconfig: PathBuf,
    /// The cluster CA certificate.
    pub ca: PathBuf,
    processes: Vec<(String, Child)>,
}

impl ControlPlane {
    /// Starts the control plane with its state under `dir`, and waits until the API server is
    /// ready and the `default` ServiceAccount exists.
    pub fn start(dir: &Path, bin: &Path) -> anyhow::Result<ControlPlane> {
        let pki = dir.join("pki");
        let logs = dir.join("logs");
        fs::create_dir_all(&pki)?;
        fs::create_dir_all(&logs)?;
        make_pki(&pki)?;
        let kubeconfig = dir.join("admin.kubeconfig");
        fs::write(&kubeconfig, admin_kubeconfig(&pki)?)?;
        let mut plane = ControlPlane {
            dir: dir.to_path_buf(),
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.clone(),
            ca: pki.join("ca.crt"),
            processes: Vec::new(),
        };
        let etcd_data = dir.join("etcd");
        fs::create_dir_all(&etcd_data)?;
        plane.spawn(
            "etcd",
            &[
                "--name=oxbow",
                &format!("--data-dir={}", etcd_data.display()),
                &format!("--listen-client-urls=http://{ETCD_CLIENT}"),
                &format!("--advertise-client-urls=http://{ETCD_CLIENT}"),
                &format!("--listen-peer-urls=http://{ETCD_PEER}"),
                &format!("--initial-advertise-peer-urls=http://{ETCD_PEER}"),
                &format!("--initial-cluster=oxbow=http://{ETCD_PEER}"),
                "--listen-metrics-urls=",
                "--unsafe-no-fsync=true",
                "--auto-compaction-retention=1",
                "--log-level=warn",
            ],
        )?;
        let p = |name: &str| pki.join(name).display().to_string();
        plane.spawn(
            "kube-apiserver",
            &[
                &format!("--etcd-servers=http://{ETCD_CLIENT}"),
                "--bind-address=0.0.0.0",
                &format!("--advertise-address={GATEWAY}"),
                &format!("--secure-port={API_PORT}"),
                &format!("--tls-cert-file={}", p("apiserver.crt")),
                &format!("--tls-private-key-file={}", p("apiserver.key")),
                &format!("--client-ca-file={}", p("ca.crt")),
                &format!(
                    "--service-account-issuer=https://kubernetes.default.svc.{}",
                    sandbox::CLUSTER_DOMAIN
                ),
                &format!("--service-account-key-file={}", p("sa.pub")),
                &format!("--service-account-signing-key-file={}", p("sa.key")),
                &format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
        )?;
        plane.wait_until(
            "the API server's /readyz",
            Duration::from_secs(120),
            |plane| plane.kubectl_quiet(&["get", "--raw", "/readyz"]),
        )?;
        let kc = kubeconfig.display().to_string();
        plane.spawn(
            "kube-controller-manager",
            &[
                &format!("--kubeconfig={kc}"),
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                &format!("--root-ca-file={}", p("ca.crt")),
                &format!("--service-account-private-key-file={}", p("sa.key")),
                "--use-service-account-credentials=true",
                &format!("--cluster-signing-cert-file={}", p("ca.crt")),
                &format!("--cluster-signing-key-file={}", p("ca.key")),
                "--controllers=*",
                "--v=1",
            ],
        )?;
        plane.spawn(
            "kube-scheduler",
            &[
                &format!("--kubeconfig={kc}"),
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--v=1",
            ],
        )?;
        plane.wait_until(
            "the default ServiceAccount",
            Duration::from_secs(120),
            |plane| plane.kubectl_quiet(&["-n", "default", "get", "serviceaccount", "default"]),
        )?;
        Ok(plane)
    }

    fn spawn(&mut self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        let log = fs::File::create(self.dir.join("logs").join(format!("{name}.log")))?;
        let child = Command::new(self.bin.join(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.processes.push((name.to_string(), child));
        Ok(())
    }

    fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&ControlPlane) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            let logs = self.dir.join("logs");
            for (name, child) in &mut self.processes {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{name} exited ({status}) while waiting for {what}: see {}/{name}.log",
                        logs.display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what} (logs in {})",
                    self.dir.join("logs").display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The log file of one of the control plane's processes.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.bin.join("kubectl"));
        command.env("KUBECONFIG", &self.kubeconfig);
        command
    }

    fn kubectl_quiet(&self, args: &[&str]) -> bool {
        self.kubectl()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Whether every process is still running; the name of one that is not.
    pub fn exited(&mut self) -> Option<String> {
        self.processes
            .iter_mut()
            .find_map(|(name, child)| (!matches!(child.try_wait(), Ok(None))).then(|| name.clone()))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for (_, child) in self.processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (install the Debian package openssl)")?;
    if !output.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A CA, the API server's serving certificate (valid for every name pods use), an admin client
/// certificate in `system:masters`, and the ServiceAccount signing key pair.
fn make_pki(dir: &Path) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "30",
            "-subj",
            "/CN=oxbow-test-cluster-ca",
        ],
    )?;
    let domain = sandbox::CLUSTER_DOMAIN;
    fs::write(
        dir.join("apiserver.ext"),
        format!(
            "subjectAltName=IP:127.0.0.1,IP:{GATEWAY},IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.{domain}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
        ),
    )?;
    fs::write(
        dir.join("client.ext"),
        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
    )?;
    for (name, subject, ext) in [
        ("apiserver", "/CN=kube-apiserver", "apiserver.ext"),
        (
            "admin",
            "/O=system:masters/CN=oxbow-test-admin",
            "client.ext",
        ),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                subject,
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "30",
                "-extfile",
                ext,
            ],
        )?;
    }
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(())
}

fn admin_kubeconfig(pki: &Path) -> anyhow::Result<String> {
    use base64::Engine as _;
    let b64 = |name: &str| -> anyhow::Result<String> {
        let bytes = fs::read(pki.join(name)).with_context(|| format!("reading {name}"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: oxbow-test\n  cluster:\n    server: https://{GATEWAY}:{API_PORT}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: oxbow-test\n  context: {{cluster: oxbow-test, user: admin, namespace: default}}\ncurrent-context: oxbow-test\n",
        b64("ca.crt")?,
        b64("admin.crt")?,
        b64("admin.key")?
    ))
}
