//! The private network and mount namespace the test cluster lives in.
//!
//! A process enters it by running itself again under `unshare --net --mount` (see
//! [`crate::sandbox`]); the child then calls [`setup`], which brings up loopback, the pods' bridge
//! ([`BRIDGE`], [`GATEWAY`] in [`POD_CIDR`]), makes every address of [`SERVICE_CIDR`] and
//! [`LOAD_BALANCER_CIDR`] local so Service proxies can bind cluster IPs and load balancer
//! addresses, mounts a tmpfs on `/run/netns` for the pods' network
//! namespaces, and bind-mounts a hosts file of its own over `/etc/hosts`. All of that vanishes
//! with the namespace: the machine's own network and files are untouched.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::sandbox;
pub use crate::sandbox::{available, inside, run, run_inside, SANDBOX_ENV};

/// The bridge pods' network namespaces are attached to.
pub const BRIDGE: &str = "oxbow0";
/// The sandbox's own address on the bridge: the pods' gateway, where the API server listens.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 233, 0, 1);
/// Prefix length of the pods' network.
pub const POD_PREFIX: u8 = 16;
/// The pods' network.
pub const POD_CIDR: &str = "10.233.0.0/16";
/// Cluster IPs of Services (the API server's `--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Addresses of LoadBalancer Services, handed out by the node agent's load balancer
/// controller.
pub const LOAD_BALANCER_CIDR: &str = "10.98.0.0/24";
/// The ingress controller's address (the last of [`LOAD_BALANCER_CIDR`], which the load
/// balancer controller does not hand out).
pub const INGRESS_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 254);
/// The cluster's DNS suffix.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The sandbox as set up by [`setup`].
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The hosts file mounted over `/etc/hosts`; the node agent rewrites it in place.
    pub hosts_file: PathBuf,
}

/// The lines every hosts file starts with.
pub const HOSTS_HEADER: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n";

/// Sets up the network and the hosts file of the sandbox this process runs in. `dir` holds the
/// hosts file; it must outlive the sandbox's processes.
pub fn setup(dir: &Path) -> anyhow::Result<Sandbox> {
    sandbox::prepare()?;
    let gateway = format!("{GATEWAY}/{POD_PREFIX}");
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run("ip", &["addr", "add", &gateway, "dev", BRIDGE])?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    // Every cluster IP is a local address, so a proxy can listen on any of them.
    run("ip", &["route", "add", "local", SERVICE_CIDR, "dev", "lo"])?;
    run(
        "ip",
        &["route", "add", "local", LOAD_BALANCER_CIDR, "dev", "lo"],
    )?;
    let hosts_file = dir.join("hosts");
    std::fs::write(&hosts_file, HOSTS_HEADER).context("writing the sandbox's hosts file")?;
    rustix::mount::mount_bind(&hosts_file, "/etc/hosts")
        .context("bind-mounting the sandbox's hosts file on /etc/hosts")?;
    Ok(Sandbox { hosts_file })
}
