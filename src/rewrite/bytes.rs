//! A `bytes::BytesMut` convenience on top of the slice API (feature `bytes`).

use bytes::BytesMut;

use super::{Encapsulated, RewriteError, TunnelParams, encap, tunnel_overhead};
use crate::wire::Layout;

/// [`encap`] for a frame held in a `BytesMut` without headroom: the frame is copied once into a
/// new buffer with room for the outer headers, which replaces `frame`; the returned offsets are
/// within the new `frame` (`start` is 0). On error `frame` is unchanged.
///
/// `BytesMut` has no cheap prepend, so this copies; a dataplane that reserves headroom when it
/// receives (as skbs, DPDK mbufs and AF_XDP frames do) should call [`encap`] on the slice.
pub fn encap_bytes(
    frame: &mut BytesMut,
    layout: &Layout,
    p: &TunnelParams,
) -> Result<Encapsulated, RewriteError> {
    let overhead = tunnel_overhead(p.kind, p.dst.is_ipv6());
    let mut b = BytesMut::with_capacity(overhead + frame.len());
    b.resize(overhead, 0);
    b.extend_from_slice(frame);
    let e = encap(&mut b, overhead, layout, p)?;
    b.truncate(e.end);
    let _ = b.split_to(e.start);
    *frame = b;
    Ok(Encapsulated {
        start: 0,
        end: frame.len(),
        ..e
    })
}
