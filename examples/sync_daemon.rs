//! An IPVS connection-synchronisation daemon (`ipvsadm --start-daemon`) built on the crate:
//! a master that replays a capture through a director and sends the sync messages for the
//! connections it creates, or a backup that receives sync messages (from this master or from
//! a kernel IPVS director) into its own connection table and prints what it learnt.
//!
//! ```text
//! # master: replay a capture, send its sync messages, exit
//! cargo run --example sync_daemon -- --master --rules FILE --replay IN.pcap \
//!     [--syncid N] [--version 0|1] [--group ADDR:PORT --interface IF | --peer ADDR:PORT] \
//!     [--maxlen BYTES] [--neigh FILE]
//! # backup: receive until SIGINT/SIGTERM (or --count N datagrams, or --idle SECS of silence)
//! cargo run --example sync_daemon -- --backup [--rules FILE] [--syncid N] \
//!     [--group ADDR:PORT --interface IF | --listen ADDR:PORT] [--count N] [--idle SECS]
//! ```
//!
//! - Multicast by default, as the kernel: group 224.0.0.81, port 8848, TTL 1, no loopback;
//!   `--interface` names the interface to send on or to join the group on (the master's
//!   socket is bound to its IPv4 address, as the kernel binds it). Unicast with `--peer`
//!   (master) and `--listen` (backup).
//! - `--version` (default 1) and `--syncid` (default 0; a backup with 0 takes every id) as
//!   `ipvsadm --syncid`; `--maxlen` is `sync_maxlen` (default 1472).
//! - The master's director follows the kernel's rules for what to sync when
//!   (`sync_threshold` 3 50); at the end of the capture everything pending is sent.
//! - The backup prints one line per datagram, and at exit its connection table as
//!   `ipvsadm -L -n -c` prints it plus its counters. A backup given `--rules` binds what it
//!   learns to its own real servers (and counts them as `ipvsadm -L` would); without, the
//!   connections are kept unbound. Bad datagrams are counted, never fatal.
//!
//! Exit codes: 0 done, 1 system error (socket, file), 2 usage error.

use std::process::ExitCode;

#[cfg(target_os = "linux")]
#[path = "sync_daemon/mod.rs"]
mod sync_daemon;

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    sync_daemon::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    eprintln!("sync_daemon needs Linux");
    ExitCode::from(2)
}
