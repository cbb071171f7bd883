//! Pod networks: a network namespace per pod with one end of a veth pair as its `eth0`, the
//! other end on the sandbox's bridge, an address from the pods' network and a default route
//! through the gateway.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use anyhow::{bail, Context as _};

use crate::kube::sandbox::{self, BRIDGE, GATEWAY, POD_PREFIX};

/// Hands out pod addresses from 10.233.1.1 on, and never the same one to two live pods. A
/// released address is reused only after every other has been handed out once more.
#[derive(Debug, Default)]
pub struct AddressPool {
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    next: u32,
    used: BTreeSet<u32>,
}

/// Host numbers 256 .. 65279 of 10.233.0.0/16: 10.233.1.0 .. 10.233.254.255.
const FIRST_HOST: u32 = 256;
const LAST_HOST: u32 = 65279;

impl AddressPool {
    pub fn take(&self) -> anyhow::Result<Ipv4Addr> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("address pool poisoned"))?;
        let span = LAST_HOST - FIRST_HOST + 1;
        for _ in 0..span {
            let host = FIRST_HOST + state.next % span;
            state.next = state.next.wrapping_add(1);
            // Skip network-style .0 and broadcast-style .255 addresses.
            if host % 256 == 0 || host % 256 == 255 || state.used.contains(&host) {
                continue;
            }
            state.used.insert(host);
            let base = u32::from(GATEWAY) & !((1u32 << (32 - POD_PREFIX)) - 1);
            return Ok(Ipv4Addr::from(base + host));
        }
        bail!("no pod address left")
    }

    pub fn release(&self, address: Ipv4Addr) {
        if let Ok(mut state) = self.state.lock() {
            state
                .used
                .remove(&(u32::from(address) & ((1u32 << (32 - POD_PREFIX)) - 1)));
        }
    }
}

/// A pod's network namespace, named after the pod's UID.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub namespace: String,
    pub address: Ipv4Addr,
}

impl PodNetwork {
    /// The namespace's path, for `nsenter --net=`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.namespace)
    }

    /// Creates the namespace and its link to the bridge.
    pub fn create(uid: &str, address: Ipv4Addr) -> anyhow::Result<PodNetwork> {
        let short: String = uid
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .take(12)
            .collect();
        let namespace = format!("pod-{uid}");
        let host_end = format!("vp{short}");
        let run = sandbox::run;
        // A namespace left by an earlier attempt for the same pod goes first.
        let _ = run("ip", &["netns", "del", &namespace]);
        run("ip", &["netns", "add", &namespace])?;
        let cidr = format!("{address}/{POD_PREFIX}");
        let gateway = GATEWAY.to_string();
        let attached =
            crate::sandbox::attach(&namespace, &host_end, BRIDGE, &cidr).and_then(|()| {
                run(
                    "ip",
                    &["-n", &namespace, "route", "add", "default", "via", &gateway],
                )?;
                run("ip", &["-n", &namespace, "link", "show", "eth0"])
            });
        if let Err(error) = attached {
            let _ = run("ip", &["netns", "del", &namespace]);
            return Err(error).context("setting up the pod's network");
        }
        Ok(PodNetwork { namespace, address })
    }

    /// Removes the namespace (and with it the veth pair). Its processes must be gone.
    pub fn delete(&self) {
        if let Err(error) = sandbox::run("ip", &["netns", "del", &self.namespace]) {
            tracing::warn!(namespace = %self.namespace, %error, "removing a pod network");
        }
    }
}
