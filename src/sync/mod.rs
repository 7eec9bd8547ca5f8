//! The IPVS connection synchronisation protocol (ipvs.md §8): how several directors share
//! connection state, so that a backup (or a peer behind the same ECMP router) keeps forwarding
//! a connection to the real server the master chose.
//!
//! ```text
//!  master director                                   backup director
//!  process() ─▶ ConnTable::sync_needed ─▶ Sender ──UDP 224.0.0.81:8848──▶ Director::apply_sync
//!               (§8.4: states, threshold,   (packs records          (§8.3: validate, filter
//!                period, refresh)            into ≤ maxlen)           by syncid, apply records)
//! ```
//!
//! - [`codec`]: byte-exact encoding and decoding of versions 0 and 1, interoperable with the
//!   kernel's sync daemon (`ipvsadm --start-daemon`) and checked against Wireshark's dissector.
//! - [`Sender`]: the master's packing and flushing of records into datagrams (no I/O: the
//!   caller sends what it hands out).
//! - The table's part ([`ConnTable::sync_needed`](crate::conn::ConnTable::sync_needed) and
//!   [`ConnTable::apply_sync`](crate::conn::ConnTable::apply_sync)) and the director's
//!   ([`Director::enable_sync_master`](crate::director::Director::enable_sync_master),
//!   [`Director::apply_sync`](crate::director::Director::apply_sync)).
//!
//! What differs from the kernel, and why:
//! - A datagram with a defect that makes the kernel drop "the buffer" is refused whole: the
//!   kernel has by then applied the records before the defect, the crate applies none (the
//!   datagram is validated before anything is applied).
//! - Version 0 flags are masked with `BACKUP_MASK` like version 1's (the kernel keeps all 16
//!   bits of a version 0 record but `HASHED`; the others, such as `ONE_PACKET`, make no sense
//!   on a backup).
//! - Sequence adjustments are carried by the codec but not stored: the crate has no
//!   payload-mangling application helpers (FTP), so they are always zero.
//! - Records with persistence-engine data are skipped ([`RecordError::UnknownEngine`]): the
//!   kernel's only engine is SIP, which the crate does not have.
//! - A template re-armed at expiry because it still controls connections is not re-synced
//!   (the kernel syncs it then); templates are synced after each of their connections.
//! - One-packet (`-o`) datagrams are never synced, as in the kernel, but neither is the
//!   template of a persistent one-packet service (the kernel syncs it after each datagram).
//! - The firewall mark sent is the service's (0 for a service by address); the kernel sends the
//!   mark the packet carried.

pub mod codec;
mod sender;

pub use codec::{
    EncodeError, Encoder, Message, MessageError, OptionDefect, RecordError, Records, Seq, SeqData,
    SyncConn, Version,
};
pub use sender::{Sender, SenderConfig, SenderStats};

use core::net::{Ipv4Addr, SocketAddrV4};

/// The kernel's default sync group, 224.0.0.81.
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The kernel's default sync port.
pub const DEFAULT_PORT: u16 = 8848;
/// Group and port together.
pub const DEFAULT_ENDPOINT: SocketAddrV4 = SocketAddrV4::new(DEFAULT_GROUP, DEFAULT_PORT);
/// The master's default message limit over IPv4: 1500 − 20 (IP) − 8 (UDP).
pub const DEFAULT_MAXLEN_V4: usize = 1472;
/// The master's default message limit over IPv6: 1500 − 40 − 8.
pub const DEFAULT_MAXLEN_V6: usize = 1452;

/// Connection flags a backup accepts from a record (`IP_VS_CONN_F_BACKUP_MASK`): the method,
/// `NOOUTPUT`, `INACTIVE`, the sequence flags, `NO_CPORT` and `TEMPLATE`.
pub const BACKUP_MASK: u32 = 0x0007 | 0x0080 | 0x0100 | 0x0600 | 0x0800 | 0x1000;
/// Flags a record may change on an existing connection (`IP_VS_CONN_F_BACKUP_UPD_MASK`).
pub const BACKUP_UPD_MASK: u32 = 0x0100 | 0x0600;
/// The flag a backup sets on what it learnt (`IP_VS_CONN_F_SYNC`).
pub const SYNC_FLAG: u32 = 0x0020;
