//! A real LVS director on Linux raw sockets: AF_PACKET with TPACKET_V3 rings, configured by
//! `ipvsadm` rules, forwarding by NAT, DR or TUN as each real server says.
//!
//! ```text
//! sudo cargo run --release --example afpacket_director -- \
//!     --rules director.rules --client-if eth0 --answer-arp --control /run/lvs.ctl
//! ```
//!
//! It receives every frame of the client-side interface (and of `--server-if` if the real
//! servers are on another one), runs each burst through an [`lvs::director::Director`], and
//! sends what it says on the side it says; the host's kernel still gets its copy of every
//! frame, so it must not forward VIP traffic itself. Live changes come through the control
//! FIFO as ipvsadm commands; SIGUSR1 prints `ipvsadm -L -n --stats`-like counters; SIGINT
//! and SIGTERM stop it. `--help` lists the options; `tests/e2e/run.sh` stands up a complete
//! director with real servers in network namespaces.

#[cfg(target_os = "linux")]
mod afpacket;

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match afpacket::parse_args(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", afpacket::USAGE);
            return;
        }
        Err(m) => {
            eprintln!("afpacket_director: {m}\n\n{}", afpacket::USAGE);
            std::process::exit(2);
        }
    };
    if let Err((m, code)) = afpacket::run(opts) {
        eprintln!("afpacket_director: {m}");
        std::process::exit(code);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("afpacket_director needs Linux (AF_PACKET)");
    std::process::exit(2);
}
