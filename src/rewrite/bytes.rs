//! A `bytes::BytesMut` convenience on top of the slice API (feature `bytes`).

use bytes::BytesMut;

use super::{Encapsulated, RewriteError, TunnelParams, encap};
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
    let overhead = p.overhead();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::TunnelKind;
    use crate::wire::{Classified, ClassifyOptions, LinkType, classify};

    #[test]
    fn encap_bytes_prepends_and_keeps_the_inner_packet() {
        // Ethernet / IPv4 / UDP 192.0.2.7:5000 -> 198.51.100.1:53, 4 bytes of payload, TTL 64.
        let mut f: [u8; 46] = [
            2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0,
            0, 192, 0, 2, 7, 198, 51, 100, 1, 0x13, 0x88, 0, 53, 0, 12, 0, 0, b'a', b'b', b'c',
            b'd',
        ];
        let c = crate::wire::checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let Ok(Classified::Ip(l)) = classify(&f, LinkType::Ethernet, &ClassifyOptions::default())
        else {
            panic!()
        };
        let mut b = BytesMut::from(&f[..]);
        let p = TunnelParams::new(
            TunnelKind::Ipip,
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
        );
        let e = encap_bytes(&mut b, &l, &p).unwrap();
        assert_eq!((e.start, e.end, b.len()), (0, 66, 66));
        assert_eq!(&b[..12], &f[..12]);
        assert_eq!(&b[14..16], &[0x45, 0]);
        assert_eq!(b[14 + 9], 4);
        assert_eq!(&b[34 + 12..], &f[14 + 12..]); // inner addresses and payload untouched
        assert_eq!(b[34 + 8], 63);
        // Refusal leaves the BytesMut alone.
        let mut short = BytesMut::from(&f[..20]);
        assert!(encap_bytes(&mut short, &l, &p).is_err());
        assert_eq!(&short[..], &f[..20]);
    }
}
