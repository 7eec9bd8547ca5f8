//! Flow keys: what a scheduler and a connection table know of a packet.
//!
//! A [`FlowKey`] is the IPVS connection tuple seen from the client: protocol, client address and
//! port, virtual address and port (`caddr:cport -> vaddr:vport`, ipvs.md §5).
//! IPv4 and IPv6 use the same type; both addresses of one key are of the same family.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr};

/// The layer-4 protocols LVS balances or relates to connections. The discriminant is the IANA
/// protocol number, so [`Protocol::number`] is free on the per-packet path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp = 6,
    /// UDP (IP protocol 17).
    Udp = 17,
    /// SCTP (IP protocol 132).
    Sctp = 132,
    /// ICMP for IPv4 (IP protocol 1). Never balanced by itself; errors follow connections.
    Icmp = 1,
    /// ICMPv6 (IP protocol 58).
    Icmpv6 = 58,
}

impl Protocol {
    /// The IANA protocol number.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The protocol with IANA number `n`, if LVS knows it.
    pub const fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            1 => Some(Protocol::Icmp),
            58 => Some(Protocol::Icmpv6),
            _ => None,
        }
    }

    /// Whether the protocol has 16-bit source and destination ports (TCP, UDP, SCTP). Only then
    /// do `sh-port`/`mh-port` hash a port (IPVS reads ports for exactly these three).
    pub const fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
    }

    /// The lower-case name `ipvsadm` and the simulator use (`tcp`, `udp`, `sctp`, `icmp`, `icmpv6`).
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A connection tuple in the client-to-virtual-service direction.
///
/// For ICMP the ports are zero. A director scheduling the packet embedded in an ICMP error
/// ("inverse" scheduling, ipvs.md §4.5) passes the embedded header already swapped, so that `src`
/// is always the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    /// Layer-4 protocol.
    pub proto: Protocol,
    /// Client address (`caddr`).
    pub src: IpAddr,
    /// Client port (`cport`).
    pub sport: u16,
    /// Virtual address (`vaddr`).
    pub dst: IpAddr,
    /// Virtual port (`vport`).
    pub dport: u16,
}

impl FlowKey {
    /// A key from its five fields.
    pub const fn new(proto: Protocol, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Self {
        FlowKey {
            proto,
            src,
            sport,
            dst,
            dport,
        }
    }

    /// The same flow seen from the other end: addresses and ports swapped.
    pub const fn reversed(&self) -> Self {
        FlowKey::new(self.proto, self.dst, self.dport, self.src, self.sport)
    }

    /// Whether both addresses are IPv6.
    pub const fn is_ipv6(&self) -> bool {
        matches!(self.src, IpAddr::V6(_))
    }
}

impl Default for FlowKey {
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        FlowKey::new(Protocol::Tcp, any, 0, any, 0)
    }
}

/// Formats an address and port as `ipvsadm -n` does: `10.0.0.1:80`, `[2001:db8::1]:80`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketDisplay(pub IpAddr, pub u16);

impl fmt::Display for SocketDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.proto,
            SocketDisplay(self.src, self.sport),
            SocketDisplay(self.dst, self.dport)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use core::net::Ipv6Addr;

    #[test]
    fn protocol_numbers_round_trip() {
        for p in [
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Sctp,
            Protocol::Icmp,
            Protocol::Icmpv6,
        ] {
            assert_eq!(Protocol::from_number(p.number()), Some(p));
        }
        assert_eq!(Protocol::from_number(47), None);
        assert!(Protocol::Sctp.has_ports() && !Protocol::Icmp.has_ports());
    }

    #[test]
    fn display_brackets_ipv6() {
        let k = FlowKey::new(
            Protocol::Udp,
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            5353,
            IpAddr::V6("2001:db8::1".parse().unwrap()),
            53,
        );
        assert_eq!(k.to_string(), "udp [::1]:5353 -> [2001:db8::1]:53");
        assert!(k.is_ipv6());
        assert_eq!(
            SocketDisplay(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80).to_string(),
            "10.0.0.1:80"
        );
    }
}
