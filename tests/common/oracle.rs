//! The independent oracle for rewrites: etherparse parses the frame and computes every checksum
//! from scratch; SCTP's CRC32c is a bitwise implementation written here from RFC 3309. Nothing
//! in it calls the crate under test. Shared by tests/, the fuzz harnesses and the capture test.

#![allow(dead_code)]

use etherparse::{
    Icmpv4Slice, Icmpv6Slice, IpNumber, Ipv4HeaderSlice, NetSlice, SlicedPacket, TcpSlice, UdpSlice,
};

/// What checksums a frame carries, and which of them verify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Checksums recomputed and compared.
    pub checked: u32,
    /// Of those, wrong ones.
    pub bad: u32,
}

impl Checked {
    fn add(&mut self, ok: bool) {
        self.checked += 1;
        if !ok {
            self.bad += 1;
        }
    }
    pub fn all_good(&self) -> bool {
        self.bad == 0
    }
}

/// Bitwise CRC32c (Castagnoli, reflected 0x82F63B78), init and final xor 0xFFFFFFFF.
pub fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn ones_sum(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            (c[0] as u16) << 8
        };
        acc += w as u32;
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Checks every checksum of a frame (`ethernet`: with an Ethernet header, else bare IP) that
/// etherparse can see, recursing into IPIP, IPv6-in-IP, GRE and GUE (UDP to `gue_port`).
/// Returns `None` when etherparse cannot parse the frame at all; `truncated` frames (IP length
/// beyond the buffer) are reported as `None` too, since no full checksum can be computed.
pub fn check_frame(frame: &[u8], ethernet: bool, gue_port: Option<u16>) -> Option<Checked> {
    let sp = if ethernet {
        SlicedPacket::from_ethernet(frame).ok()?
    } else {
        SlicedPacket::from_ip(frame).ok()?
    };
    let mut out = Checked::default();
    check_net(&sp, gue_port, &mut out)?;
    Some(out)
}

fn check_net(sp: &SlicedPacket<'_>, gue_port: Option<u16>, out: &mut Checked) -> Option<()> {
    let (src, dst, payload, v6): ([u8; 16], [u8; 16], etherparse::IpPayloadSlice<'_>, bool) =
        match sp.net.as_ref()? {
            NetSlice::Ipv4(ip) => {
                let h: Ipv4HeaderSlice<'_> = ip.header();
                out.add(h.to_header().calc_header_checksum() == h.header_checksum());
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s[..4].copy_from_slice(&h.source());
                d[..4].copy_from_slice(&h.destination());
                (s, d, ip.payload().clone(), false)
            }
            NetSlice::Ipv6(ip) => {
                let h = ip.header();
                if has_routing_header(ip.extensions().first_header(), ip.extensions().slice()) {
                    // A routing header changes the pseudo-header's destination: not modelled.
                    return Some(());
                }
                (h.source(), h.destination(), ip.payload().clone(), true)
            }
            _ => return None,
        };
    if payload.fragmented {
        return Some(());
    }
    let data = payload.payload;
    let proto = payload.ip_number;
    let s4 = [src[0], src[1], src[2], src[3]];
    let d4 = [dst[0], dst[1], dst[2], dst[3]];
    match proto {
        IpNumber::TCP => {
            let t = TcpSlice::from_slice(data).ok()?;
            let c = if v6 {
                t.calc_checksum_ipv6(src, dst)
            } else {
                t.calc_checksum_ipv4(s4, d4)
            };
            out.add(c.ok()? == t.checksum());
        }
        IpNumber::UDP => {
            let u = UdpSlice::from_slice(data).ok()?;
            let h = u.to_header();
            // A zero checksum means none over IPv4, and over IPv6 for tunnels (RFC 6935).
            let tunnel = gue_port == Some(u.destination_port());
            if u.checksum() != 0 || (v6 && !tunnel) {
                let c = if v6 {
                    h.calc_checksum_ipv6_raw(src, dst, u.payload())
                } else {
                    h.calc_checksum_ipv4_raw(s4, d4, u.payload())
                };
                out.add(c.ok()? == u.checksum());
            }
            if gue_port == Some(u.destination_port()) {
                let g = u.payload();
                let (&b0, _) = g.split_first()?;
                let inner = match b0 >> 6 {
                    1 => g,
                    0 => g.get(4 + (b0 & 0x1f) as usize * 4..)?,
                    _ => return None,
                };
                // Best effort: a UDP payload to that port need not be GUE.
                let _ = check_inner(inner, gue_port, out);
            }
        }
        IpNumber::ICMP if !v6 => {
            let i = Icmpv4Slice::from_slice(data).ok()?;
            let c = !fold_ones(ones_sum(0, &zero_at(data, 2)));
            out.add(c == i.checksum());
        }
        IpNumber::IPV6_ICMP if v6 => {
            let i = Icmpv6Slice::from_slice(data).ok()?;
            out.add(i.is_checksum_valid(src, dst));
        }
        IpNumber(132) => {
            if data.len() < 12 {
                return None;
            }
            let got = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
            let mut z = data.to_vec();
            z[8..12].fill(0);
            out.add(crc32c_bitwise(&z) == got);
        }
        IpNumber(47) => {
            if data.len() < 4 {
                return None;
            }
            let flags = u16::from_be_bytes([data[0], data[1]]);
            if flags & 0x8000 != 0 {
                out.add(fold_ones(ones_sum(0, data)) == 0xffff);
            }
            let len = 4 + 4
                * ((flags & 0x8000 != 0) as usize
                    + (flags & 0x2000 != 0) as usize
                    + (flags & 0x1000 != 0) as usize);
            if let Some(inner) = data.get(len..) {
                let _ = check_inner(inner, gue_port, out);
            }
        }
        IpNumber(4) | IpNumber(41) => {
            let _ = check_inner(data, gue_port, out);
        }
        _ => {}
    }
    Some(())
}

fn check_inner(data: &[u8], gue_port: Option<u16>, out: &mut Checked) -> Option<()> {
    let sp = SlicedPacket::from_ip(data).ok()?;
    check_net(&sp, gue_port, out)
}

fn zero_at(data: &[u8], at: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v[at] = 0;
    v[at + 1] = 0;
    v
}

fn fold_ones(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn has_routing_header(first: Option<IpNumber>, mut b: &[u8]) -> bool {
    let mut next = first;
    while let Some(IpNumber(n)) = next {
        if n == 43 {
            return true;
        }
        let len = match n {
            0 | 60 => (*b.get(1).unwrap_or(&0) as usize + 1) * 8,
            51 => (*b.get(1).unwrap_or(&0) as usize + 2) * 4,
            44 => 8,
            _ => return false,
        };
        let Some(&nh) = b.first() else { return false };
        next = Some(IpNumber(nh));
        b = b.get(len..).unwrap_or(&[]);
        if b.is_empty() {
            return false;
        }
    }
    false
}
