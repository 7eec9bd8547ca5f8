//! TCP MSS clamping for tunnelled flows: encapsulation adds 20 to 52 bytes, so a client that
//! announces a full-size MSS sends segments the tunnel cannot carry without fragmentation. None
//! of IPVS, Katran or GLB clamps; users of all three ask for it.

use super::nat::ChecksumMode;
use super::{RewriteError, be16, get, put16};
use crate::wire::checksum::update;
use crate::wire::{Fragment, Layout};

/// The MSS that fits a path MTU after `overhead` bytes of tunnel headers, for an inner IPv4 or
/// IPv6 packet without options (MTU − overhead − IP header − 20).
pub const fn mss_for_mtu(mtu: u32, overhead: usize, inner_ipv6: bool) -> u16 {
    let ip = if inner_ipv6 { 40 } else { 20 };
    let v = mtu.saturating_sub((overhead + ip + 20) as u32);
    if v > 0xffff { 0xffff } else { v as u16 }
}

/// Lowers the MSS option of a TCP SYN (or SYN-ACK) to `max` when it is larger; returns whether
/// it changed. Other packets, and SYNs without an MSS option, are left alone (`Ok(false)`);
/// malformed options stop the search without a change. The TCP checksum is updated
/// incrementally (with [`ChecksumMode::Partial`] the options are payload the offload sums, so
/// it is left alone).
pub fn clamp_mss(
    buf: &mut [u8],
    layout: &Layout,
    max: u16,
    mode: ChecksumMode,
) -> Result<bool, RewriteError> {
    if layout.l4_proto != 6 || layout.fragment == Fragment::NonFirst {
        return Ok(false);
    }
    let l4 = layout.l4_offset as usize;
    let h = get(buf, l4, 20)?;
    if h[13] & 0x02 == 0 {
        return Ok(false);
    }
    let doff = (h[12] >> 4) as usize * 4;
    if doff <= 20 {
        return Ok(false);
    }
    let opts = get(buf, l4 + 20, doff - 20)?;
    let mut i = 0;
    let at = loop {
        match opts.get(i) {
            None | Some(0) => return Ok(false),
            Some(1) => i += 1,
            Some(&kind) => {
                let Some(&len) = opts.get(i + 1) else {
                    return Ok(false);
                };
                let len = len as usize;
                if len < 2 || i + len > opts.len() {
                    return Ok(false);
                }
                if kind == 2 {
                    if len != 4 {
                        return Ok(false);
                    }
                    break l4 + 20 + i + 2;
                }
                i += len;
            }
        }
    };
    let old = be16(buf, at);
    if old <= max {
        return Ok(false);
    }
    // The checksum sums 16-bit words from the TCP header's start: an MSS at an odd offset
    // straddles two of them, so update the aligned 4 bytes around it.
    let (w, wlen) = if (at - l4).is_multiple_of(2) {
        (at, 2)
    } else {
        (at - 1, 4)
    };
    let mut before = [0u8; 4];
    before[..wlen].copy_from_slice(&buf[w..w + wlen]);
    put16(buf, at, max);
    if mode == ChecksumMode::Complete {
        let c = update(be16(buf, l4 + 16), &before[..wlen], &buf[w..w + wlen]);
        put16(buf, l4 + 16, c);
    }
    Ok(true)
}
