//! A private network and mount namespace for a test: the test binary runs itself again under
//! `unshare --net --mount` (see [`sandboxed`]), so the bridges, network namespaces, addresses
//! and firewall rules it makes vanish with it, and nothing it starts is reachable from outside.
//!
//! The Kubernetes test cluster ([`crate::kube::sandbox`]) and the brokers of a
//! [`crate::cluster::Cluster`] in network namespaces of their own ([`crate::netns`]) live in
//! one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context as _};

/// Set in the environment of a process that runs inside a sandbox.
pub const SANDBOX_ENV: &str = "OXBOW_SANDBOX";

/// Whether this process runs inside a sandbox.
pub fn inside() -> bool {
    std::env::var_os(SANDBOX_ENV).is_some()
}

/// Whether this machine can make a sandbox: root, `unshare`, `ip` and `mount`.
pub fn available() -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("a sandbox needs root (network namespaces, bind mounts)");
    }
    for tool in ["unshare", "nsenter", "ip", "mount"] {
        if !has_command(tool) {
            bail!("a sandbox needs `{tool}` (util-linux, iproute2)");
        }
    }
    Ok(())
}

/// Whether `tool` is a command on the PATH.
pub fn has_command(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Gives the network namespace `namespace` an `eth0` with address `cidr`, the other end of
/// its veth pair (`host_end`) on `bridge`, and brings up its loopback.
pub fn attach(namespace: &str, host_end: &str, bridge: &str, cidr: &str) -> anyhow::Result<()> {
    let steps: [&[&str]; 5] = [
        &[
            "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", namespace,
        ],
        &["link", "set", host_end, "master", bridge, "up"],
        &["-n", namespace, "link", "set", "lo", "up"],
        &["-n", namespace, "addr", "add", cidr, "dev", "eth0"],
        &["-n", namespace, "link", "set", "eth0", "up"],
    ];
    for step in steps {
        run("ip", step)?;
    }
    Ok(())
}

/// Runs `program args` in a new sandbox and waits for it: the child finds [`SANDBOX_ENV`] set,
/// and `env` in its environment.
pub fn run_inside(
    program: &Path,
    args: &[String],
    env: &[(&str, &Path)],
) -> anyhow::Result<std::process::ExitStatus> {
    available()?;
    Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(program)
        .args(args)
        .env(SANDBOX_ENV, "1")
        .envs(env.iter().copied())
        .status()
        .context("starting unshare")
}

/// Where a sandboxed test's child notes that it ran the test's body (see [`sandboxed`]).
const RAN_ENV: &str = "OXBOW_SANDBOX_RAN";

/// Brings up the sandbox's loopback and mounts a tmpfs of its own on `/run/netns`, where
/// `ip netns` keeps the network namespaces made inside it.
pub fn prepare() -> anyhow::Result<()> {
    if !inside() {
        bail!("not inside a sandbox: run through sandbox::sandboxed or sandbox::run_inside");
    }
    run("ip", &["link", "set", "lo", "up"])?;
    std::fs::create_dir_all("/run/netns").context("creating /run/netns")?;
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "mode=0755",
            "oxbow-netns",
            "/run/netns",
        ],
    )
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs a test in a sandbox of its own. Outside a sandbox this runs the same test binary again,
/// filtered to `test` alone (ignored or not: the parent was asked to run it), under `unshare`
/// (one such child at a time on the machine: each runs a whole cluster), and fails when it
/// fails or did not run `body` (a `test` that names no test); inside, it runs `body`.
pub fn sandboxed(test: &str, body: impl FnOnce() -> anyhow::Result<()>) {
    if inside() {
        // A new network namespace starts with its loopback down.
        if let Err(error) = run("ip", &["link", "set", "lo", "up"]) {
            panic!("{test}: {error:#}");
        }
        if let Err(error) = body() {
            panic!("{test}: {error:#}");
        }
        if let Some(path) = std::env::var_os(RAN_ENV) {
            std::fs::write(&path, test)
                .unwrap_or_else(|e| panic!("{test}: noting that it ran: {e}"));
        }
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Each sandbox runs a whole cluster: one at a time on the machine, whichever test binary
    // runs them.
    let lock_path = std::env::temp_dir().join("oxbow-sandbox.lock");
    let machine_turn = std::fs::File::create(&lock_path)
        .and_then(|file| {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
            Ok(file)
        })
        .unwrap_or_else(|e| panic!("{test}: locking {}: {e}", lock_path.display()));
    let exe = std::env::current_exe().expect("the test binary's path");
    let args = vec![
        test.to_string(),
        "--exact".to_string(),
        "--include-ignored".to_string(),
        "--nocapture".to_string(),
        "--test-threads=1".to_string(),
    ];
    let ran = tempfile::NamedTempFile::new()
        .unwrap_or_else(|e| panic!("{test}: a file for the sandbox's report: {e}"));
    let status = run_inside(&exe, &args, &[(RAN_ENV, ran.path())])
        .unwrap_or_else(|e| panic!("{test}: {e:#}"));
    drop(machine_turn);
    assert!(status.success(), "{test} failed in its sandbox ({status})");
    let noted = std::fs::read_to_string(ran.path()).unwrap_or_default();
    assert!(
        noted == test,
        "the sandbox ran no test named {test}: sandboxed() must be given the test function's name"
    );
}

/// Runs a command to completion; an error carries its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
