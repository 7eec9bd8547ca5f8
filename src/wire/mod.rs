//! The bottom layer: bytes on the wire.
//!
//! - [`checksum`]: the Internet checksum (RFC 1071), its incremental update (RFC 1624) and
//!   CRC32c for SCTP (RFC 4960 appendix B).
//! - [`packet`]: [`classify`] parses a frame once into a `Copy` [`Layout`] that rewrites use
//!   without parsing again.

pub mod checksum;
pub mod packet;

pub use packet::{
    Classified, ClassifyOptions, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Fragment, Layout, LinkType,
    ParseError, ParseErrorKind, Quote, Tunnel, classify, parse_quote,
};
