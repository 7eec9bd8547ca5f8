//! DR, direct routing (ipvs.md §7.2): the IP packet keeps the VIP as its destination; only the
//! Ethernet header changes, so the frame reaches the real server that holds the VIP on a
//! non-ARPing interface. Forwarding decrements the TTL and fixes the IPv4 header checksum.

use super::{RewriteError, apply_ttl, check_ttl, ip_header, put16};
use crate::wire::Layout;

/// DR settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrParams {
    /// The real server's MAC address (from the caller's neighbour table: the crate does no ARP).
    pub dst_mac: [u8; 6],
    /// The director's MAC address on the egress interface.
    pub src_mac: [u8; 6],
    /// Set the VLAN ID of the outermost tag (priority and DEI kept), for real servers on another
    /// VLAN than the clients. To add or remove a tag, see [`vlan_push`] and [`vlan_pop`].
    pub vlan_id: Option<u16>,
    /// Decrement the TTL / hop limit (default `true`, as IPVS does).
    pub decrement_ttl: bool,
}

impl DrParams {
    /// Rewrite the MACs and decrement the TTL, keeping VLAN tags.
    pub fn new(dst_mac: [u8; 6], src_mac: [u8; 6]) -> Self {
        DrParams {
            dst_mac,
            src_mac,
            vlan_id: None,
            decrement_ttl: true,
        }
    }
}

/// Forwards an Ethernet frame to a real server by direct routing: destination MAC := the real
/// server's, source MAC := the director's, optionally a new VLAN ID, TTL / hop limit
/// decremented ([`RewriteError::TtlExpired`] at 1 or 0). The IP addresses, ports and layer-4
/// checksums are untouched; fragments, options and extension headers need nothing special.
///
/// ```
/// use lvs::rewrite::{dr, DrParams};
/// use lvs::wire::{classify, Classified, ClassifyOptions, LinkType};
///
/// let mut frame = Vec::new();
/// etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 1])
///     .ipv4([203, 0, 113, 7], [10, 0, 0, 1], 64)
///     .tcp(40000, 80, 1, 65535)
///     .write(&mut frame, b"GET /")?;
/// let Classified::Ip(layout) = classify(&frame, LinkType::Ethernet, &ClassifyOptions::default())?
/// else { unreachable!() };
///
/// let real_server = [2, 0, 0, 0, 1, 1];
/// let director = [2, 0, 0, 0, 0, 1];
/// dr(&mut frame, &layout, &DrParams::new(real_server, director))?;
/// assert_eq!(&frame[..12], &[2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1]);
/// assert_eq!(frame[14 + 8], 63); // TTL
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[inline]
pub fn dr(buf: &mut [u8], layout: &Layout, p: &DrParams) -> Result<(), RewriteError> {
    if layout.l2_len < 14 {
        return Err(RewriteError::NoLinkLayer);
    }
    if let Some(vid) = p.vlan_id {
        if layout.vlan_tags == 0 {
            return Err(RewriteError::NoVlanTag);
        }
        if vid > 0x0fff {
            return Err(RewriteError::BadVlanId(vid));
        }
    }
    let h = ip_header(buf, layout)?;
    if p.decrement_ttl {
        check_ttl(h, layout.ip_version)?;
    }
    let hlen = h.len();
    let l3 = layout.l3_offset as usize;
    if p.decrement_ttl {
        apply_ttl(&mut buf[l3..l3 + hlen], layout.ip_version);
    }
    buf[0..6].copy_from_slice(&p.dst_mac);
    buf[6..12].copy_from_slice(&p.src_mac);
    if let Some(vid) = p.vlan_id {
        // ip_header succeeded, so the first tag (bytes 14..18) lies before it.
        let tci = u16::from_be_bytes([buf[14], buf[15]]);
        put16(buf, 14, (tci & 0xf000) | vid);
    }
    Ok(())
}

const TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// Inserts a VLAN tag (`tpid` 0x8100 for 802.1Q, 0x88a8 for 802.1ad; `tci` = priority, DEI and
/// VLAN ID) after the MAC addresses of the frame at `buf[start..]`, using 4 bytes of headroom.
/// Returns the frame's new start; every layout offset grows by 4.
pub fn vlan_push(buf: &mut [u8], start: usize, tpid: u16, tci: u16) -> Result<usize, RewriteError> {
    if start < 4 {
        return Err(RewriteError::NoHeadroom {
            needed: 4,
            available: start as u32,
        });
    }
    if buf.len().saturating_sub(14) < start {
        return Err(RewriteError::Truncated {
            offset: start as u32,
            needed: 14,
        });
    }
    let new = start - 4;
    buf.copy_within(start..start + 12, new);
    put16(buf, new + 12, tpid);
    put16(buf, new + 14, tci);
    Ok(new)
}

/// Removes the outermost VLAN tag of the frame at `buf[start..]`. Returns the frame's new
/// start; every layout offset shrinks by 4.
pub fn vlan_pop(buf: &mut [u8], start: usize) -> Result<usize, RewriteError> {
    let Some(h) = start.checked_add(18).and_then(|end| buf.get(start..end)) else {
        return Err(RewriteError::Truncated {
            offset: start as u32,
            needed: 18,
        });
    };
    if !TPIDS.contains(&u16::from_be_bytes([h[12], h[13]])) {
        return Err(RewriteError::NoVlanTag);
    }
    buf.copy_within(start..start + 12, start + 4);
    Ok(start + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Classified, ClassifyOptions, LinkType, classify};
    use alloc::vec::Vec;

    fn layout(b: &[u8]) -> Layout {
        match classify(b, LinkType::Ethernet, &ClassifyOptions::default()) {
            Ok(Classified::Ip(l)) => l,
            other => panic!("{other:?}"),
        }
    }

    /// Ethernet / 802.1Q VLAN 10 / IPv4 / UDP 192.0.2.7:5000 → 198.51.100.1:53, TTL 64.
    static VLAN_UDP: [u8; 18 + 20 + 8 + 4] = [
        0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x81, 0x00, 0x20, 0x0a, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, 192, 0, 2, 7, 198, 51,
        100, 1, 0x13, 0x88, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, b'a', b'b', b'c', b'd',
    ];

    fn with_ip_checksum(mut f: Vec<u8>, l3: usize) -> Vec<u8> {
        let c = crate::wire::checksum::checksum(&f[l3..l3 + 20]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn dr_rewrites_macs_vlan_and_ttl_only() {
        let orig = with_ip_checksum(VLAN_UDP.to_vec(), 18);
        let mut f = orig.clone();
        let l = layout(&f);
        let mut p = DrParams::new([0xaa; 6], [0xbb; 6]);
        p.vlan_id = Some(20);
        dr(&mut f, &l, &p).unwrap();
        assert_eq!(&f[0..6], &[0xaa; 6]);
        assert_eq!(&f[6..12], &[0xbb; 6]);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x20, 0x14]); // priority 1 kept, VID 20
        assert_eq!(f[18 + 8], 63);
        assert!(crate::wire::checksum::verifies(0, &f[18..38]));
        // Nothing else moved.
        assert_eq!(&f[18 + 12..], &orig[18 + 12..]);
        assert_eq!(&f[18..18 + 8], &orig[18..18 + 8]);
    }

    #[test]
    fn dr_refusals_leave_the_frame_alone() {
        let orig = with_ip_checksum(VLAN_UDP.to_vec(), 18);
        let mut f = orig.clone();
        let l = layout(&f);
        let mut p = DrParams::new([0xaa; 6], [0xbb; 6]);
        p.vlan_id = Some(5000);
        assert_eq!(dr(&mut f, &l, &p), Err(RewriteError::BadVlanId(5000)));
        f[18 + 8] = 1;
        let one = f.clone();
        assert_eq!(
            dr(&mut f, &l, &DrParams::new([0xaa; 6], [0xbb; 6])),
            Err(RewriteError::TtlExpired)
        );
        assert_eq!(f, one);
        let mut raw = orig[18..].to_vec();
        let lr = match classify(&raw, LinkType::RawIp, &ClassifyOptions::default()) {
            Ok(Classified::Ip(l)) => l,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            dr(&mut raw, &lr, &DrParams::new([0; 6], [0; 6])),
            Err(RewriteError::NoLinkLayer)
        );
    }

    #[test]
    fn vlan_push_and_pop_round_trip() {
        let orig = VLAN_UDP.to_vec();
        let mut buf = [0u8; 4].to_vec();
        buf.extend_from_slice(&orig);
        let s = vlan_pop(&mut buf, 4).unwrap();
        assert_eq!(s, 8);
        assert_eq!(&buf[s + 12..s + 14], &[0x08, 0x00]);
        assert_eq!(layout(&buf[s..]).vlan_tags, 0);
        let s = vlan_push(&mut buf, s, 0x8100, 0x200a).unwrap();
        assert_eq!(&buf[s..], &orig[..]);
        assert_eq!(
            vlan_pop(&mut buf[..20], 4 + 4),
            Err(RewriteError::Truncated {
                offset: 8,
                needed: 18
            })
        );
        assert!(matches!(
            vlan_push(&mut buf, 3, 0x8100, 1),
            Err(RewriteError::NoHeadroom { .. })
        ));
    }
}
