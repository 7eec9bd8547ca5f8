//! The neighbour table a director forwards with: IP address to MAC address.

use core::net::IpAddr;

use hashbrown::HashMap;

/// IP-to-MAC entries the caller fills (from ARP and NDP, static configuration, or the host's
/// neighbour table); the crate never sends ARP or neighbour solicitations.
///
/// The contract: a director looks up the MAC of each real server it forwards to by DR, NAT or
/// TUN (TUN: the real server's, or the next hop's if the caller enters the router's MAC under
/// the real server's address), and for NAT replies the MAC of the client, falling back to the
/// configured client-side gateway ([`DirectorConfig::client_gateway`](super::DirectorConfig)).
/// A frame whose next hop is unknown is dropped with
/// [`DropReason::NoNeighbour`](super::DropReason::NoNeighbour): the caller counts it,
/// resolves the address, and the client's retransmission goes through. Changes take effect
/// for the next packet.
#[derive(Clone, Debug)]
pub struct Neighbours {
    map: HashMap<IpAddr, [u8; 6], ahash::RandomState>,
}

impl Default for Neighbours {
    fn default() -> Self {
        Neighbours {
            // A fixed seed: the table is filled by the operator, not by remote parties.
            map: HashMap::with_hasher(ahash::RandomState::with_seeds(1, 2, 3, 4)),
        }
    }
}

impl Neighbours {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the MAC of `ip`; returns the previous one.
    pub fn insert(&mut self, ip: IpAddr, mac: [u8; 6]) -> Option<[u8; 6]> {
        self.map.insert(ip, mac)
    }

    /// Forgets `ip`.
    pub fn remove(&mut self, ip: &IpAddr) -> Option<[u8; 6]> {
        self.map.remove(ip)
    }

    /// The MAC of `ip`.
    #[inline]
    pub fn get(&self, ip: &IpAddr) -> Option<[u8; 6]> {
        self.map.get(ip).copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, [u8; 6])> + '_ {
        self.map.iter().map(|(a, m)| (*a, *m))
    }
}

/// Parses a MAC address written `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:00:0a:0b:0c:ff"),
            Some([2, 0, 10, 11, 12, 255])
        );
        assert_eq!(parse_mac("2-0-a-b-c-ff"), Some([2, 0, 10, 11, 12, 255]));
        assert_eq!(parse_mac("02:00:0a:0b:0c"), None);
        assert_eq!(parse_mac("02:00:0a:0b:0c:ff:01"), None);
        assert_eq!(parse_mac("02:00:0a:0b:0c:fff"), None);
        assert_eq!(parse_mac("zz:00:0a:0b:0c:ff"), None);
    }

    #[test]
    fn insert_get_remove() {
        let mut n = Neighbours::new();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(n.insert(ip, [1; 6]), None);
        assert_eq!(n.get(&ip), Some([1; 6]));
        assert_eq!(n.insert(ip, [2; 6]), Some([1; 6]));
        assert_eq!(n.len(), 1);
        assert_eq!(n.remove(&ip), Some([2; 6]));
        assert!(n.is_empty());
    }
}
