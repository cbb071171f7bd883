//! Connection limits: how many connections the broker holds in all (`max.connections`), on
//! one listener (`listener.name.<name>.max.connections`) and from one address
//! (`max.connections.per.ip`).

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
    #[error("listener {listener} already holds its max.connections={max} connections")]
    Listener { listener: String, max: usize },
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
    by_listener: HashMap<Arc<str>, usize>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    listener: Arc<str>,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            open: Mutex::new(Open::default()),
        })
    }

    /// Admits a connection from `ip` on `listener` (whose own limit is `listener_max`), or
    /// says which limit it would break. Connections on the inter-broker listener
    /// (`exempt_total`) do not count against `max.connections`, so replication goes on when
    /// clients fill the broker (as in Kafka, KIP-402); they do count per address and against
    /// their listener's own limit.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        exempt_total: bool,
        listener: &Arc<str>,
        listener_max: Option<usize>,
    ) -> Result<ConnectionSlot, Refused> {
        let mut open = self.open.lock();
        if !exempt_total && open.total >= self.max_total {
            return Err(Refused::Total(self.max_total));
        }
        let on_listener = open.by_listener.get(listener).copied().unwrap_or(0);
        if let Some(max) = listener_max.filter(|max| on_listener >= *max) {
            return Err(Refused::Listener {
                listener: listener.to_string(),
                max,
            });
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
        *open.by_listener.entry(Arc::clone(listener)).or_insert(0) += 1;
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
            listener: Arc::clone(listener),
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
        if let Some(count) = open.by_listener.get_mut(&self.listener) {
            *count = count.saturating_sub(1);
        }
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
    fn per_address_listener_and_total_limits_hold_and_free_on_drop() {
        let limits = ConnectionLimits::new(3, 2);
        let plain: Arc<str> = Arc::from("PLAINTEXT");
        let internal: Arc<str> = Arc::from("INTERNAL");
        let admit =
            |last, exempt, listener: &Arc<str>| limits.admit(ip(last), exempt, listener, None);
        let a1 = admit(1, false, &plain).unwrap();
        let _a2 = admit(1, false, &plain).unwrap();
        assert_eq!(
            admit(1, false, &plain).unwrap_err(),
            Refused::PerIp { ip: ip(1), max: 2 }
        );
        let _b1 = admit(2, false, &plain).unwrap();
        assert_eq!(admit(3, false, &plain).unwrap_err(), Refused::Total(3));
        let replication = admit(3, true, &internal).unwrap();
        assert_eq!(limits.open(), 4);
        drop(a1);
        assert_eq!(admit(1, false, &plain).unwrap_err(), Refused::Total(3));
        assert_eq!(limits.open(), 3);
        // A listener's own limit counts its connections alone, and frees with them.
        assert_eq!(
            limits.admit(ip(4), true, &internal, Some(1)).unwrap_err(),
            Refused::Listener {
                listener: "INTERNAL".to_string(),
                max: 1
            }
        );
        drop(replication);
        let _again = limits.admit(ip(4), true, &internal, Some(1)).unwrap();
    }
}
