//! A user-space tunnel decapsulator for the real servers of an IPVS director in TUN mode
//! (`ipvsadm -a ... -i`), on hosts whose kernel lacks the ipip, ip6_tunnel, ip_gre or fou
//! modules.
//!
//! ```text
//! cargo run --example tun_decap -- --if IF --tun TUNDEV [--addr IP]... [--gue-port PORT] \
//!     [--stats-interval SECS]
//! ```
//!
//! An AF_PACKET socket on IF receives the frames; [`lvs::wire::classify`] finds the tunnels
//! (IPIP, IPv6 or IPv4 in IPv6, GRE, GUE on `--gue-port`, 6080 by default as in Katran);
//! those whose outer destination is ours (`--addr`, or the addresses on IF) go through
//! [`lvs::rewrite::decap`], and the inner IP packet is written to the TUN device, from where
//! the kernel delivers it to the VIP configured on `lo`. The real server's replies go straight
//! to the client, as in any LVS TUN or DR setup.
//!
//! Counters (frames received, decapsulated per tunnel, ignored, malformed per error, TUN
//! write errors) are printed every `--stats-interval` seconds, on SIGUSR1 and at exit
//! (SIGINT, SIGTERM: exit code 0). Usage errors exit with 2, system errors (not root, no such
//! interface) with 1. See `--help` for the firewall and sysctl settings the host needs.
//!
//! [`lvs::wire::classify`]: lvs::wire::classify()

use std::process::ExitCode;

#[cfg(target_os = "linux")]
#[path = "tun_decap/mod.rs"]
mod tun_decap;

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    tun_decap::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    eprintln!("tun_decap needs Linux");
    ExitCode::from(2)
}
