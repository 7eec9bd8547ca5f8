//! Linux Virtual Server (IPVS) primitives for user-space dataplanes.
//!
//! A *director* holds a virtual IP (VIP); for each new connection a *scheduler* picks a *real
//! server*, and the director forwards the connection's packets to it in one of three ways:
//!
//! ```text
//!  NAT (-m)   client ──▶ VIP:80 ─[director: dst := RIP:8080]─▶ real server
//!             client ◀── VIP:80 ◀─[director: src := VIP:80]─── reply (gateway = director)
//!
//!  DR  (-g)   client ──▶ VIP ─[director: dst MAC := real server]─▶ real server (holds VIP)
//!             client ◀────────────── reply from the VIP, direct ◀────────┘
//!
//!  TUN (-i)   client ──▶ VIP ─[director: outer header director ▶ RIP]─▶ real server (decap)
//!             client ◀────────────── reply from the VIP, direct ◀────────┘
//! ```
//!
//! This crate makes the director's decisions and rewrites the bytes; the embedding dataplane
//! (DPDK, AF_XDP, AF_PACKET, a smart NIC) owns the I/O. It opens no sockets, reads no clocks
//! and spawns no threads: time comes in as an [`Instant`], frames as byte slices. The kernel's
//! IPVS is the behavioural reference; where the crate differs, the module says how and why.
//!
//! # Module map
//!
//! From the bottom layer up; each layer is usable without the ones above it.
//!
//! | module | what it holds | IPVS counterpart |
//! |---|---|---|
//! | [`time`] | [`Instant`]: time as the caller tells it | `jiffies` |
//! | [`flow`] | [`FlowKey`] and [`Protocol`]: the connection tuple | `ip_vs_conn_param` |
//! | [`dest`] | real servers ([`Dest`]), their counters, thresholds and forwarding method; the ordered [`DestSet`] | `ip_vs_dest` |
//! | [`wire`] | [`wire::classify`]: one parse into a `Copy` layout; checksums (RFC 1071/1624, CRC32c) | the skb header pointers |
//! | [`rewrite`] | NAT, DR, TUN encapsulation and decapsulation, ICMP errors and replies, MSS clamping, in place | `ip_vs_xmit.c`, the `*_snat/dnat_handler`s |
//! | [`sched`] | every IPVS scheduler and `maglev`, behind [`Scheduler`]; the [`Pool`] that feeds them changes; [`sched::analysis`] | `ip_vs_rr.c` … `ip_vs_twos.c` |
//! | [`config`] | the `ipvsadm` rules grammar: parse and print | `ipvsadm`, `ipvsadm-restore` |
//! | [`service`] | virtual services and their lookup in IPVS order | `ip_vs_ctl.c` |
//! | [`conn`] | the connection table: lookups both ways, state machines, timeouts, templates, expiry | `ip_vs_conn.c`, `ip_vs_proto_*.c` |
//! | [`sync`] | the connection synchronisation protocol, versions 0 and 1 | `ip_vs_sync.c` |
//! | [`director`] | [`director::Director`]: frame in, verdict out, over all of the above | `ip_vs_core.c` |
//!
//! # A first look
//!
//! ```
//! use lvs::conn::ConnConfig;
//! use lvs::director::{Director, DirectorConfig, Side, Verdict};
//! use lvs::sched::SchedConfig;
//! use lvs::Instant;
//!
//! // What `ipvsadm -S -n` prints on a kernel director configures this one.
//! let mut director = Director::new(
//!     DirectorConfig::default(),
//!     ConnConfig::default(),
//!     SchedConfig::default(),
//!     Instant::ZERO,
//! );
//! director.apply_rules(
//!     "-A -t 10.0.0.1:80 -s mh\n\
//!      -a -t 10.0.0.1:80 -r 192.168.1.1:8080 -m\n\
//!      -a -t 10.0.0.1:80 -r 192.168.1.2:8080 -m\n",
//! )?;
//! director.set_neighbour("192.168.1.1".parse()?, [2, 0, 0, 0, 1, 1]);
//! director.set_neighbour("192.168.1.2".parse()?, [2, 0, 0, 0, 1, 2]);
//!
//! // A client's SYN to the VIP, as a dataplane receives it.
//! let mut frame = Vec::new();
//! etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 1])
//!     .ipv4([203, 0, 113, 7], [10, 0, 0, 1], 64)
//!     .tcp(40000, 80, 1, 65535)
//!     .syn()
//!     .write(&mut frame, &[])?;
//!
//! match director.process(&mut frame, Side::Client, Instant::from_millis(1)) {
//!     Verdict::Forward(out) => {
//!         // Send frame[out.start..out.end] on the real servers' side: NAT-ed to a real server.
//!         assert_eq!(out.to, Side::Server);
//!         assert!(out.next_hop.to_string().starts_with("192.168.1."));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! // Every millisecond or so, free what timed out.
//! director.expire(Instant::from_millis(2), 1024);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The README (the crate's front page in the repository) has a complete receive–process–send
//! loop, a guide to choosing a scheduler, the examples (pcap replay, a raw-socket director,
//! a TUN-mode decapsulator, a sync daemon, a simulator) and the benchmark figures.
//!
//! # Features
//!
//! - `std` (default): links the standard library (and ahash's `std` support). The API is the
//!   same without it: the crate is `#![no_std]` with `alloc` (errors implement
//!   `core::error::Error`), and builds for bare-metal targets such as `thumbv7em-none-eabihf`.
//! - `bytes`: `rewrite::encap_bytes`, tunnel encapsulation into a `bytes::BytesMut`.
//!
//! # Reading the references
//!
//! The documentation cites IPVS behaviour as `ipvs.md §N`, the project's notes on the kernel
//! (Linux `net/netfilter/ipvs/`): §1 services and real servers (`ip_vs_ctl.c`), §2 connection
//! counters and `OVERLOAD`, §3 schedulers (`ip_vs_<name>.c`), §4 the scheduling flow
//! (`ip_vs_core.c`), §5 the connection table (`ip_vs_conn.c`), §6 state machines and timeouts
//! (`ip_vs_proto_tcp.c`, `_udp.c`, `_sctp.c`), §7 packet rewriting (`ip_vs_xmit.c`), §8 the
//! sync protocol (`ip_vs_sync.c`), §9 the sysctls (`Documentation/networking/ipvs-sysctl.rst`).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod config;
pub mod conn;
pub mod dest;
pub mod director;
pub mod flow;
pub mod rewrite;
pub mod sched;
pub mod service;
pub mod sync;
pub mod time;
pub mod wire;

pub use dest::{Dest, DestConfig, DestId, DestSet, ForwardMethod};
pub use flow::{FlowKey, Protocol};
pub use sched::{Pool, Scheduler, SchedulerKind};
pub use time::Instant;

/// The README's code examples, compiled and run by `cargo test` (doc tests) so that the
/// front page never shows code that does not work.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
