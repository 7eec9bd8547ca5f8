//! Valid packets built with etherparse (plus SCTP, which etherparse lacks, with the oracle's
//! bitwise CRC32c), and proptest strategies for them. Shared by the rewrite property tests, the
//! capture test and the fuzz seed generator.

#![allow(dead_code)]

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::icmpv6::DestUnreachableCode;
use etherparse::{
    Icmpv4Type, Icmpv6Type, IpDscp, IpEcn, IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions,
    Ipv6Header, Ipv6RawExtHeader, PacketBuilder, PacketBuilderStep, VlanId,
};
use proptest::prelude::*;

use super::oracle::crc32c_bitwise;

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        syn: bool,
        nops: u8,
        mss: Option<u16>,
    },
    Udp {
        zero_checksum: bool,
    },
    Sctp,
    /// An ICMP error quoting a TCP (or UDP) packet that went from `dst` to `src`.
    IcmpError {
        tcp: bool,
        quote: usize,
        too_big: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub ethernet: bool,
    pub vlans: u8,
    pub v6: bool,
    /// IPv4 options, or IPv6 hop-by-hop and destination options headers.
    pub ip_options: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub tos: u8,
    pub df: bool,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Spec {
    pub fn src_ip(&self) -> std::net::IpAddr {
        ip(self.v6, &self.src)
    }
    pub fn dst_ip(&self) -> std::net::IpAddr {
        ip(self.v6, &self.dst)
    }
    pub fn l2_len(&self) -> usize {
        if self.ethernet {
            14 + 4 * self.vlans as usize
        } else {
            0
        }
    }
}

pub fn ip(v6: bool, a: &[u8; 16]) -> std::net::IpAddr {
    if v6 {
        std::net::Ipv6Addr::from(*a).into()
    } else {
        std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()
    }
}

fn ip_headers(s: &Spec, src: &[u8; 16], dst: &[u8; 16]) -> IpHeaders {
    if s.v6 {
        let h = Ipv6Header {
            traffic_class: s.tos,
            flow_label: Default::default(),
            payload_length: 0,
            next_header: IpNumber::TCP,
            hop_limit: s.ttl,
            source: *src,
            destination: *dst,
        };
        let mut e = Ipv6Extensions::default();
        if s.ip_options {
            // PadN options: 6 bytes of option data each.
            e.hop_by_hop_options =
                Some(Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[1, 4, 0, 0, 0, 0]).unwrap());
            e.destination_options =
                Some(Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[1, 4, 0, 0, 0, 0]).unwrap());
        }
        IpHeaders::Ipv6(h, e)
    } else {
        let mut h = Ipv4Header::new(
            0,
            s.ttl,
            IpNumber::TCP,
            [src[0], src[1], src[2], src[3]],
            [dst[0], dst[1], dst[2], dst[3]],
        )
        .unwrap();
        h.dscp = IpDscp::try_new(s.tos >> 2).unwrap();
        h.ecn = IpEcn::try_new(s.tos & 3).unwrap();
        h.dont_fragment = s.df;
        h.identification = 0x1234;
        if s.ip_options {
            // NOP NOP NOP EOL, then a record-route-sized padding of NOPs.
            h.options = [1u8, 1, 1, 1, 1, 1, 1, 0].into();
        }
        IpHeaders::Ipv4(h, Default::default())
    }
}

/// The link-layer step, shared by every layer-4 kind (one closure instance keeps the
/// builder's large state in one stack frame; a macro with a copy per branch overflowed
/// debug-build test threads).
#[inline(never)]
fn with_l2(s: &Spec, hdrs: IpHeaders, f: impl FnOnce(PacketBuilderStep<IpHeaders>)) {
    if !s.ethernet {
        return f(PacketBuilder::ip(hdrs));
    }
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let vid = |v| VlanId::try_new(v).unwrap();
    match s.vlans {
        0 => f(eth.ip(hdrs)),
        1 => f(eth.single_vlan(vid(10)).ip(hdrs)),
        _ => f(eth.double_vlan(vid(10), vid(20)).ip(hdrs)),
    }
}

fn tcp_options(nops: u8, mss: Option<u16>) -> Vec<u8> {
    let mut o = vec![1u8; nops as usize];
    if let Some(m) = mss {
        o.extend_from_slice(&[2, 4]);
        o.extend_from_slice(&m.to_be_bytes());
    }
    while !o.len().is_multiple_of(4) {
        o.push(0);
    }
    o
}

pub fn sctp_packet(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    // One DATA chunk carrying the payload, padded to 4 bytes.
    let len = 16 + payload.len();
    p.extend_from_slice(&[0, 3]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    while !p.len().is_multiple_of(4) {
        p.push(0);
    }
    let c = crc32c_bitwise(&p);
    p[8..12].copy_from_slice(&c.to_le_bytes());
    p
}

/// The frame `s` describes.
pub fn build(s: &Spec) -> Vec<u8> {
    let mut buf = Vec::new();
    let hdrs = ip_headers(s, &s.src, &s.dst);
    match &s.l4 {
        L4::Tcp { syn, nops, mss } => with_l2(s, hdrs, |b| {
            let t = b.tcp(s.sport, s.dport, 1000, 65535);
            let t = if *syn { t.syn() } else { t.ack(77) };
            let t = t.options_raw(&tcp_options(*nops, *mss)).unwrap();
            t.write(&mut buf, &s.payload).unwrap()
        }),
        L4::Udp { zero_checksum } => {
            with_l2(s, hdrs, |b| {
                b.udp(s.sport, s.dport).write(&mut buf, &s.payload).unwrap()
            });
            if *zero_checksum && !s.v6 {
                let at = buf.len() - s.payload.len() - 2;
                buf[at] = 0;
                buf[at + 1] = 0;
            }
        }
        L4::Sctp => {
            let p = sctp_packet(s.sport, s.dport, &s.payload);
            with_l2(s, hdrs, |b| b.write(&mut buf, IpNumber(132), &p).unwrap())
        }
        L4::IcmpError {
            tcp,
            quote,
            too_big,
        } => {
            // The quoted packet went the other way, without L2 and options.
            let inner = Spec {
                ethernet: false,
                vlans: 0,
                ip_options: false,
                src: s.dst,
                dst: s.src,
                sport: s.dport,
                dport: s.sport,
                l4: if *tcp {
                    L4::Tcp {
                        syn: false,
                        nops: 0,
                        mss: None,
                    }
                } else {
                    L4::Udp {
                        zero_checksum: false,
                    }
                },
                ..s.clone()
            };
            let full = build(&inner);
            let hl = if s.v6 { 40 } else { 20 };
            let q = &full[..(*quote).clamp(hl + 8, full.len())];
            with_l2(s, hdrs, |b| {
                if s.v6 {
                    let t = if *too_big {
                        Icmpv6Type::PacketTooBig { mtu: 1280 }
                    } else {
                        Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port)
                    };
                    b.icmpv6(t).write(&mut buf, q).unwrap()
                } else {
                    let t = if *too_big {
                        DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 }
                    } else {
                        DestUnreachableHeader::Port
                    };
                    b.icmpv4(Icmpv4Type::DestinationUnreachable(t))
                        .write(&mut buf, q)
                        .unwrap()
                }
            })
        }
    }
    buf
}

pub fn l4_strategy() -> impl Strategy<Value = L4> {
    prop_oneof![
        (any::<bool>(), 0u8..4, prop::option::of(any::<u16>()))
            .prop_map(|(syn, nops, mss)| L4::Tcp { syn, nops, mss }),
        any::<bool>().prop_map(|zero_checksum| L4::Udp { zero_checksum }),
        Just(L4::Sctp),
        (any::<bool>(), 28usize..200, any::<bool>()).prop_map(|(tcp, quote, too_big)| {
            L4::IcmpError {
                tcp,
                quote,
                too_big,
            }
        }),
    ]
}

prop_compose! {
    pub fn spec_with(l4: BoxedStrategy<L4>)(
        ethernet in prop::bool::weighted(0.8),
        vlans in 0u8..=2,
        v6 in any::<bool>(),
        ip_options in any::<bool>(),
        src in any::<[u8; 16]>(),
        dst in any::<[u8; 16]>(),
        sport in 1u16.., dport in 1u16..,
        ttl in 2u8..,
        tos in any::<u8>(),
        df in any::<bool>(),
        l4 in l4,
        payload in prop::collection::vec(any::<u8>(), 0..300),
    ) -> Spec {
        let mut src = src;
        let mut dst = dst;
        // Unicast sources and destinations, so ICMP replies are allowed.
        if v6 { src[0] = 0x20; dst[0] = 0x20; } else { src[0] = 10; dst[0] = 192; }
        Spec { ethernet, vlans, v6, ip_options, src, dst, sport, dport, ttl, tos, df, l4, payload }
    }
}

pub fn spec() -> impl Strategy<Value = Spec> {
    spec_with(l4_strategy().boxed())
}
