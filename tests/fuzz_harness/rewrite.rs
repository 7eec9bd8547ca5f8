#![allow(dead_code)] // each fuzz binary uses one of the harnesses

//! The rewrite fuzz harnesses (libFuzzer targets `nat`, `dr`, `tun` and `icmp`, and the
//! `cargo test` corpus replay).
//!
//! Input: 4 control bytes (link type, options, a port, an address seed), then a frame. Any
//! bytes: no panic; on error the frame is unchanged; every offset returned lies inside the
//! buffer. When the input frame is whole and all its checksums verify (by the etherparse
//! oracle), a successful rewrite's output must re-parse with etherparse and verify too.

use std::net::IpAddr;

use lvs::rewrite::{
    ChecksumMode, DrParams, GueChecksum, IcmpReply, NatOptions, RewriteError, TunnelKind,
    TunnelParams, clamp_mss, complete_remcsum, decap, dr, encap, icmp_error_info, nat_icmp_in,
    nat_icmp_out, nat_in, nat_out, verify_outer, write_icmp_error,
};
use lvs::wire::{Classified, ClassifyOptions, Layout, LinkType, classify};

use super::oracle::check_frame;

const GUE: u16 = 6080;

struct Input<'a> {
    ethernet: bool,
    flags: u8,
    port: u16,
    frame: &'a [u8],
}

fn split(data: &[u8]) -> Option<Input<'_>> {
    let (c, frame) = data.split_first_chunk::<4>()?;
    Some(Input {
        ethernet: c[0] & 1 == 0,
        flags: c[1],
        port: u16::from_be_bytes([c[2], c[3]]),
        frame,
    })
}

fn layout(frame: &[u8], ethernet: bool) -> Option<Layout> {
    let link = if ethernet {
        LinkType::Ethernet
    } else {
        LinkType::RawIp
    };
    match classify(
        frame,
        link,
        &ClassifyOptions {
            gue_port: Some(GUE),
        },
    ) {
        Ok(Classified::Ip(l)) => Some(l),
        _ => None,
    }
}

/// Whole and every checksum verifying, by the oracle.
fn valid(frame: &[u8], l: &Layout, ethernet: bool) -> bool {
    !l.truncated
        && check_frame(frame, ethernet, Some(GUE)).is_some_and(|c| c.checked > 0 && c.all_good())
}

fn assert_valid(frame: &[u8], ethernet: bool, what: &str) {
    let c = check_frame(frame, ethernet, Some(GUE));
    assert!(
        c.is_some_and(|c| c.all_good()),
        "{what}: output fails the oracle: {c:?}"
    );
}

fn addr(v6: bool, seed: u8) -> IpAddr {
    if v6 {
        IpAddr::V6([0xfd00, 0, 0, 0, 0, 0, 0, seed as u16].into())
    } else {
        IpAddr::V4([172, 16, seed, 1].into())
    }
}

pub fn nat(data: &[u8]) {
    let Some(inp) = split(data) else { return };
    let Some(l) = layout(inp.frame, inp.ethernet) else {
        return;
    };
    let ok_in = valid(inp.frame, &l, inp.ethernet);
    let opts = NatOptions {
        decrement_ttl: inp.flags & 1 != 0,
        checksum: if inp.flags & 2 != 0 {
            ChecksumMode::Partial
        } else {
            ChecksumMode::Complete
        },
    };
    // Sometimes the wrong family, to exercise the refusal.
    let v6 = (l.ip_version == 6) ^ (inp.flags & 0x80 != 0);
    let a = addr(v6, inp.flags);
    for out in [false, true] {
        let mut f = inp.frame.to_vec();
        let r = if out {
            nat_out(&mut f, &l, a, inp.port, &opts)
        } else {
            nat_in(&mut f, &l, a, inp.port, &opts)
        };
        match r {
            Ok(()) => {
                assert_eq!(f.len(), inp.frame.len());
                if ok_in && opts.checksum == ChecksumMode::Complete {
                    assert_valid(&f, inp.ethernet, "nat");
                    let l2 = layout(&f, inp.ethernet).expect("NAT output classifies");
                    if let Some(fl) = l2.flow {
                        assert_eq!(if out { fl.src } else { fl.dst }, a);
                    }
                }
            }
            Err(e) => {
                assert_eq!(f, inp.frame, "{e}: frame changed on error");
                let _ = e.to_string();
            }
        }
    }
    let mut f = inp.frame.to_vec();
    match clamp_mss(&mut f, &l, inp.port, ChecksumMode::Complete) {
        Ok(_) if ok_in => assert_valid(&f, inp.ethernet, "mss"),
        Ok(_) => {}
        Err(_) => assert_eq!(f, inp.frame),
    }
}

pub fn dr_target(data: &[u8]) {
    let Some(inp) = split(data) else { return };
    let Some(l) = layout(inp.frame, inp.ethernet) else {
        return;
    };
    let ok_in = valid(inp.frame, &l, inp.ethernet);
    let mut p = DrParams::new([0x02, 0, 0, 0, 0, 0xaa], [0x02, 0, 0, 0, 0, 0xbb]);
    p.decrement_ttl = inp.flags & 1 != 0;
    if inp.flags & 2 != 0 {
        p.vlan_id = Some(inp.port);
    }
    let mut f = inp.frame.to_vec();
    match dr(&mut f, &l, &p) {
        Ok(()) => {
            assert_eq!(&f[..6], &p.dst_mac);
            if ok_in {
                assert_valid(&f, true, "dr");
            }
        }
        Err(e) => {
            assert_eq!(f, inp.frame, "{e}: frame changed on error");
        }
    }
}

pub fn tun(data: &[u8]) {
    let Some(inp) = split(data) else { return };
    // Any bytes through decap: bounds inside the buffer.
    if let Some(l) = layout(inp.frame, inp.ethernet)
        && let Ok(d) = decap(inp.frame, &l)
    {
        assert!(d.start < d.end && d.end <= inp.frame.len());
    }
    // Any bytes through verify_outer: no panic, whatever it answers.
    if let Some(l) = layout(inp.frame, inp.ethernet) {
        let _ = verify_outer(inp.frame, &l);
    }
    let Some(l) = layout(inp.frame, inp.ethernet) else {
        return;
    };
    let ok_in = valid(inp.frame, &l, inp.ethernet);
    let outer_v6 = inp.flags & 1 != 0;
    let kind = match (inp.flags >> 1) % 6 {
        0 => TunnelKind::Ipip,
        1 => TunnelKind::Gue {
            port: GUE,
            checksum: GueChecksum::None,
        },
        2 => TunnelKind::Gue {
            port: GUE,
            checksum: GueChecksum::Full,
        },
        3 => TunnelKind::Gre { checksum: false },
        4 => TunnelKind::Gre { checksum: true },
        _ => TunnelKind::Gue {
            port: GUE,
            checksum: GueChecksum::RemCsum,
        },
    };
    let mut p = TunnelParams::new(kind, addr(outer_v6, 1), addr(outer_v6, 2));
    // Said to be partial: a REMCSUM option then points at the inner checksum.
    p.inner_partial = inp.port & 2 != 0;
    p.decrement_ttl = inp.flags & 0x10 != 0;
    p.pmtu_disc = inp.flags & 0x20 != 0;
    p.flow_hash = u32::from(inp.port).wrapping_mul(0x9e37_79b9);
    p.src_hash_bits = inp.flags >> 6;
    p.flow_label = inp.flags & 0x40 != 0;
    if inp.flags & 0x80 != 0 {
        p.mtu = inp.port as u32;
    }
    // Headroom short by one sometimes.
    let remcsum = p.remcsum_option();
    let room = p.overhead() - (inp.port & 1) as usize;
    let mut buf = vec![0u8; room];
    buf.extend_from_slice(inp.frame);
    let before = buf.clone();
    match encap(&mut buf, room, &l, &p) {
        Ok(e) => {
            assert!(e.start <= room && e.end <= buf.len() && e.start < e.end);
            let out = &buf[e.start..e.end];
            let lo = layout(out, inp.ethernet).expect("encapsulated frame classifies");
            let d = decap(out, &lo).expect("own encapsulation decapsulates");
            // Its outer checksums verify, unless the inner packet was cut short.
            match verify_outer(out, &lo) {
                Ok(()) => {}
                Err(RewriteError::Incomplete) => assert!(lo.truncated || l.truncated),
                Err(e) => panic!("own encapsulation: {e}"),
            }
            let l3 = l.l3_offset as usize;
            let inner_end = (l3 + l.ip_len as usize).min(inp.frame.len());
            assert_eq!(d.end - d.start, inner_end - l3);
            if !p.decrement_ttl {
                assert_eq!(&out[d.start..d.end], &inp.frame[l3..inner_end]);
            }
            if ok_in {
                assert_valid(out, inp.ethernet, "encap");
            }
            // The option points inside the inner packet, at its checksum field, and only
            // there the real server's completion writes.
            assert_eq!(d.remcsum.is_some(), remcsum);
            if let Some((from, field)) = d.remcsum {
                assert!(d.start <= from && from < d.end && field + 2 <= d.end);
                let mut rx = out.to_vec();
                assert!(complete_remcsum(&mut rx, &d));
                assert_eq!(&rx[..field], &out[..field]);
                assert_eq!(&rx[field + 2..], &out[field + 2..]);
            }
        }
        Err(e) => assert_eq!(buf, before, "{e}: buffer changed on error"),
    }
}

pub fn icmp(data: &[u8]) {
    let Some(inp) = split(data) else { return };
    let Some(l) = layout(inp.frame, inp.ethernet) else {
        return;
    };
    let ok_in = valid(inp.frame, &l, inp.ethernet);
    let v6 = l.ip_version == 6;
    if let Ok(info) = icmp_error_info(inp.frame, &l) {
        let q = info.quote;
        assert!((q.l4_offset as usize) <= inp.frame.len());
        let a = addr(v6 ^ (inp.flags & 0x80 != 0), inp.flags);
        for out in [false, true] {
            let mut f = inp.frame.to_vec();
            let r = if out {
                nat_icmp_out(&mut f, &l, &info, a, inp.port, inp.flags & 1 != 0)
            } else {
                nat_icmp_in(&mut f, &l, &info, a, inp.port, inp.flags & 1 != 0)
            };
            match r {
                Ok(()) => {
                    if ok_in {
                        assert_valid(&f, inp.ethernet, "nat_icmp");
                    }
                }
                Err(e) => assert_eq!(f, inp.frame, "{e}: frame changed on error"),
            }
        }
    }
    let reply = match inp.flags % 4 {
        0 => IcmpReply::TooBig {
            mtu: inp.port as u32,
        },
        1 => IcmpReply::TimeExceeded,
        2 => IcmpReply::PortUnreachable,
        _ => IcmpReply::HostUnreachable,
    };
    let mut out = vec![0u8; 200 + (inp.port as usize % 1400)];
    if let Ok(n) = write_icmp_error(&mut out, inp.frame, &l, reply, addr(v6, 9)) {
        assert!(n <= out.len());
        if ok_in {
            assert_valid(&out[..n], inp.ethernet, "write_icmp_error");
        }
    }
}
