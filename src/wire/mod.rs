//! The bottom layer: bytes on the wire.
//!
//! [`checksum`]: the Internet checksum (RFC 1071), its incremental update (RFC 1624) and
//! CRC32c for SCTP (RFC 4960 appendix B). The frame classifier and the typed header views arrive
//! with the packet rewrites.

pub mod checksum;
