//! Connection limits: how many connections the broker holds in all (`max.connections`) and
//! from one address (`max.connections.per.ip`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a new connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the broker already holds max.connections={0} connections")]
    Total(usize),
    #[error("{ip} already holds max.connections.per.ip={max} connections")]
    PerIp { ip: IpAddr, max: usize },
}

/// Counts the open client connections, in all and by address.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            open: Mutex::new(Open::default()),
        })
    }

    /// Admits a connection from `ip`, or says which limit it would break. Connections on the
    /// inter-broker listener (`exempt_total`) do not count against `max.connections`, so
    /// replication goes on when clients fill the broker (as in Kafka, KIP-402); they do
    /// count per address.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        exempt_total: bool,
    ) -> Result<ConnectionSlot, Refused> {
        let mut open = self.open.lock();
        if !exempt_total && open.total >= self.max_total {
            return Err(Refused::Total(self.max_total));
        }
        let from_ip = open.by_ip.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            return Err(Refused::PerIp {
                ip,
                max: self.max_per_ip,
            });
        }
        *from_ip += 1;
        open.total += 1;
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Open connections in all.
    pub fn open(&self) -> usize {
        self.open.lock().total
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_ip.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn per_address_and_total_limits_hold_and_free_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let a1 = limits.admit(ip(1), false).unwrap();
        let _a2 = limits.admit(ip(1), false).unwrap();
        assert_eq!(
            limits.admit(ip(1), false).unwrap_err(),
            Refused::PerIp { ip: ip(1), max: 2 }
        );
        let _b1 = limits.admit(ip(2), false).unwrap();
        assert_eq!(limits.admit(ip(3), false).unwrap_err(), Refused::Total(3));
        let _replication = limits.admit(ip(3), true).unwrap();
        assert_eq!(limits.open(), 4);
        drop(a1);
        assert_eq!(limits.admit(ip(1), false).unwrap_err(), Refused::Total(3));
        assert_eq!(limits.open(), 3);
    }
}
