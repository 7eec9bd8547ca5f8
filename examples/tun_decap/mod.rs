//! The decapsulator behind `examples/tun_decap.rs`.
//!
//! - [`decide`]: the pure part, a frame in, a decision out (unit-tested with the crate's own
//!   encapsulation).
//! - [`stats`]: the counters.
//! - [`sys`]: the Linux calls (AF_PACKET, TUN, getifaddrs, signals, poll).
//! - here: the command line and the receive loop.

pub mod decide;
#[path = "../common/signals.rs"]
pub mod signals;
pub mod stats;
pub mod sys;

use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use decide::{Decision, Malformed, decide_and_complete};
use stats::Stats;

pub const USAGE: &str = "\
usage: tun_decap --if IF --tun TUNDEV [--addr IP]... [--gue-port PORT] [--stats-interval SECS]

Decapsulates, in user space, the tunnel packets an IPVS director in TUN mode (ipvsadm -i)
sends this real server, for kernels without the ipip / ip6_tunnel / ip_gre / fou modules:
IPIP (proto 4), IPv6 or IPv4 in IPv6 (proto 41), GRE (proto 47) and GUE (UDP to --gue-port)
arriving on IF are opened and their inner IP packets written to the TUN device, from where
the kernel delivers them to the VIP (on lo) as if they had arrived there.

  --if IF               the interface tunnel packets arrive on (AF_PACKET, frames the host
                        sends are skipped)
  --tun TUNDEV          the TUN device to write inner packets to: an existing one (ip tuntap
                        add dev TUNDEV mode tun) or a new one, which lasts as long as the
                        process; it is brought up if it is down
  --addr IP             an outer destination that is ours (repeatable); default: the
                        addresses on IF, read again every 5 s
  --gue-port PORT       UDP port of GUE (default 6080, as Katran; 0: no GUE)
  --stats-interval SECS print the counters every SECS seconds (default 0: never); they are
                        also printed on SIGUSR1 and at exit (SIGINT, SIGTERM)
  -h, --help            this text

The kernel still sees the tunnel packets: without a module for them it answers ICMP protocol
(or port) unreachable, so drop them on input, e.g.
  nft add table inet decap
  nft add chain inet decap in '{ type filter hook input priority 0; }'
  nft add rule inet decap in meta l4proto '{ 4, 41, 47 }' drop
  nft add rule inet decap in udp dport 6080 drop
(AF_PACKET sees frames before netfilter.) Inner packets come in through TUNDEV with the
client's source address: turn reverse-path filtering off for it (sysctl
net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.TUNDEV.rp_filter=0, and
net.ipv4.conf.default.rp_filter=0 for a TUNDEV created here), and put the VIP on lo.
";

/// How often the interface's addresses are read again.
const ADDR_REFRESH: Duration = Duration::from_secs(5);
/// How long `poll` waits, so that signals and timers are noticed.
const POLL_MS: i32 = 200;
/// Frames handled per wake-up before the signals and timers are looked at again.
const BURST: usize = 256;
/// Room for the largest IP packet behind an Ethernet header and three VLAN tags.
const BUF_LEN: usize = 14 + 3 * 4 + 65535;

/// The command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `--if`.
    pub interface: String,
    /// `--tun`.
    pub tun: String,
    /// `--addr`, in order; empty: IF's addresses.
    pub addrs: Vec<IpAddr>,
    /// `--gue-port`; `None` for 0.
    pub gue_port: Option<u16>,
    /// `--stats-interval`; `None` for 0.
    pub stats_interval: Option<Duration>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the usage.
    Help,
    /// Decapsulate.
    Run(Options),
}

/// Parses the arguments (without the program name); `Err` is a usage error's message.
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let (mut interface, mut tun) = (None, None);
    let mut o = Options {
        interface: String::new(),
        tun: String::new(),
        addrs: Vec::new(),
        gue_port: Some(6080),
        stats_interval: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let mut value = || match inline.clone().or_else(|| it.next().cloned()) {
            Some(v) => Ok(v),
            None => Err(format!("{flag} needs a value")),
        };
        match flag {
            "--if" => interface = Some(name(flag, value()?)?),
            "--tun" => tun = Some(name(flag, value()?)?),
            "--addr" => {
                let v = value()?;
                let a = v
                    .parse::<IpAddr>()
                    .map_err(|_| format!("--addr {v}: expected an IPv4 or IPv6 address"))?;
                o.addrs.push(a);
            }
            "--gue-port" => {
                let v = value()?;
                let p = v
                    .parse::<u16>()
                    .map_err(|_| format!("--gue-port {v}: expected 0..=65535"))?;
                o.gue_port = (p != 0).then_some(p);
            }
            "--stats-interval" => {
                let v = value()?;
                let s = v
                    .parse::<u64>()
                    .map_err(|_| format!("--stats-interval {v}: expected whole seconds"))?;
                o.stats_interval = (s != 0).then(|| Duration::from_secs(s));
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    match (interface, tun) {
        (Some(i), Some(t)) => {
            o.interface = i;
            o.tun = t;
            Ok(Command::Run(o))
        }
        _ => Err("--if and --tun are required".to_string()),
    }
}

/// An interface name the kernel could accept (`IFNAMSIZ` is 16 with the NUL).
fn name(flag: &str, v: String) -> Result<String, String> {
    if v.is_empty() || v.len() > 15 || v.contains(['/', ' ', '\0']) {
        return Err(format!(
            "{flag} {v:?}: not an interface name (1 to 15 bytes)"
        ));
    }
    Ok(v)
}

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse_args(&args) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(o)) => o,
        Err(msg) => {
            eprintln!("tun_decap: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tun_decap: {msg}");
            ExitCode::from(1)
        }
    }
}

/// A hint for errors that mean "not root".
fn privilege(e: &std::io::Error, cap: &str) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => format!("{e} (run as root, or with {cap})"),
        _ => e.to_string(),
    }
}

/// The outer destinations that count as ours: fixed by `--addr`, or the interface's, read
/// again every [`ADDR_REFRESH`].
struct Local {
    interface: Option<String>,
    addrs: Vec<IpAddr>,
    next_refresh: Instant,
}

impl Local {
    fn refresh(&mut self, now: Instant) {
        let Some(ifname) = &self.interface else {
            return;
        };
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + ADDR_REFRESH;
        match sys::interface_addrs(ifname) {
            Ok(a) if a != self.addrs => {
                eprintln!("tun_decap: outer destinations now {}", list(&a));
                self.addrs = a;
            }
            Ok(_) => {}
            // Kept as they were: the interface may be going away and coming back.
            Err(e) => eprintln!("tun_decap: addresses of {ifname}: {e}"),
        }
    }
}

fn list(a: &[IpAddr]) -> String {
    if a.is_empty() {
        return "(none: every tunnel packet is ignored)".to_string();
    }
    a.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn run(o: &Options) -> Result<(), String> {
    let ifindex = sys::ifindex(&o.interface).map_err(|e| format!("--if {}: {e}", o.interface))?;
    let sock = sys::packet_socket(ifindex).map_err(|e| {
        format!(
            "AF_PACKET socket on {}: {}",
            o.interface,
            privilege(&e, "CAP_NET_RAW")
        )
    })?;
    let (mut tun, tun_name) = sys::open_tun(&o.tun).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EINVAL) => " (a device of that name that is not a TUN device?)",
            Some(libc::EBUSY) => " (another process has it open)",
            _ => "",
        };
        format!(
            "TUN device {}: {}{hint}",
            o.tun,
            privilege(&e, "CAP_NET_ADMIN")
        )
    })?;
    match sys::bring_up(sock.as_raw_fd(), &tun_name) {
        Ok(true) => eprintln!("tun_decap: {tun_name} was down, brought it up"),
        Ok(false) => {}
        Err(e) => eprintln!(
            "tun_decap: could not bring {tun_name} up ({e}): run `ip link set {tun_name} up`"
        ),
    }
    sys::install_signal_handlers().map_err(|e| format!("sigaction: {e}"))?;

    let now = Instant::now();
    let mut local = Local {
        interface: o.addrs.is_empty().then(|| o.interface.clone()),
        addrs: o.addrs.clone(),
        next_refresh: now + ADDR_REFRESH,
    };
    if local.interface.is_some() {
        local.addrs = sys::interface_addrs(&o.interface)
            .map_err(|e| format!("addresses of {}: {e}", o.interface))?;
    }
    let gue = match o.gue_port {
        Some(p) => format!("GUE on UDP {p}"),
        None => "no GUE".to_string(),
    };
    eprintln!(
        "tun_decap: {} (ifindex {ifindex}) -> {tun_name}; {gue}; outer destinations {}{}",
        o.interface,
        list(&local.addrs),
        if local.interface.is_some() {
            " (the interface's, read every 5 s)"
        } else {
            ""
        }
    );

    let mut stats = Stats::default();
    let mut buf = vec![0u8; BUF_LEN];
    // checked_add: an interval too long for the clock (--stats-interval 1e19) is "never".
    let mut next_stats = o.stats_interval.and_then(|i| now.checked_add(i));
    while !sys::STOP.load(Ordering::Relaxed) {
        let now = Instant::now();
        local.refresh(now);
        if sys::DUMP.swap(false, Ordering::Relaxed) {
            report(&sock, &mut stats);
        }
        if let (Some(at), Some(every)) = (next_stats, o.stats_interval)
            && now >= at
        {
            report(&sock, &mut stats);
            next_stats = now.checked_add(every);
        }
        if !sys::poll_in(&sock, POLL_MS).map_err(|e| format!("poll: {e}"))? {
            continue;
        }
        receive_burst(
            &sock,
            &mut buf,
            &mut tun,
            &local.addrs,
            o.gue_port,
            &mut stats,
        )?;
    }
    report(&sock, &mut stats);
    Ok(())
}

/// Prints the counters, with the kernel's drops read first.
fn report(sock: &OwnedFd, stats: &mut Stats) {
    match sys::packet_drops(sock) {
        Ok(n) => stats.kernel_drops += u64::from(n),
        Err(e) => eprintln!("tun_decap: PACKET_STATISTICS: {e}"),
    }
    println!("tun_decap: {stats}");
}

/// Handles the frames waiting on the socket, at most [`BURST`] of them.
fn receive_burst(
    sock: &OwnedFd,
    buf: &mut [u8],
    tun: &mut File,
    local: &[IpAddr],
    gue_port: Option<u16>,
    stats: &mut Stats,
) -> Result<(), String> {
    for _ in 0..BURST {
        let r = match sys::recv(sock, buf) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            // The interface went down; the socket works again once it is up.
            Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                eprintln!("tun_decap: receive: {e}");
                return Ok(());
            }
            Err(e) => return Err(format!("receive: {e}")),
        };
        match r.pkttype {
            // Sent by this host (a kernel without PACKET_IGNORE_OUTGOING): not received.
            libc::PACKET_OUTGOING => continue,
            // Another host's MAC (promiscuous mode): the kernel would drop it in ip_rcv.
            libc::PACKET_OTHERHOST => {
                stats.count(&Decision::Ignore(decide::Ignored::OtherDestination));
                continue;
            }
            _ => {}
        }
        if r.len > buf.len() {
            stats.count(&Decision::Malformed(Malformed::Oversized));
            continue;
        }
        let frame = &mut buf[..r.len];
        let d = decide_and_complete(frame, local, gue_port, r.verify_checksums);
        stats.count(&d);
        if let Decision::Inner(start, end, _) = d {
            match tun.write(&frame[start..end]) {
                Ok(n) if n == end - start => {}
                Ok(n) => stats.tun_error(&std::io::Error::other(format!(
                    "short write: {n} of {} bytes",
                    end - start
                ))),
                Err(e) => stats.tun_error(&e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_line() {
        let Ok(Command::Run(o)) = parse_args(&args("--if vb --tun tun0")) else {
            panic!()
        };
        assert_eq!((o.interface.as_str(), o.tun.as_str()), ("vb", "tun0"));
        assert_eq!((o.gue_port, o.stats_interval), (Some(6080), None));
        assert!(o.addrs.is_empty());
        let Ok(Command::Run(o)) = parse_args(&args(
            "--tun=tun1 --if eth0 --addr 10.0.0.2 --addr 2001:db8::2 --gue-port 0 \
             --stats-interval=10",
        )) else {
            panic!()
        };
        assert_eq!(
            o.addrs,
            [
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "2001:db8::2".parse().unwrap()
            ]
        );
        assert_eq!(
            (o.gue_port, o.stats_interval),
            (None, Some(Duration::from_secs(10)))
        );
        assert_eq!(parse_args(&args("--if x -h")), Ok(Command::Help));
    }

    #[test]
    fn usage_errors() {
        for (line, msg) in [
            ("", "--if and --tun are required"),
            ("--if vb", "--if and --tun are required"),
            ("--if vb --tun", "--tun needs a value"),
            ("--if vb --tun tun0 --frob", "unknown argument --frob"),
            (
                "--if vb --tun tun0 --addr 10.0.0.256",
                "--addr 10.0.0.256: expected",
            ),
            (
                "--if vb --tun tun0 --gue-port 65536",
                "--gue-port 65536: expected",
            ),
            (
                "--if vb --tun tun0 --stats-interval -1",
                "--stats-interval -1: expected",
            ),
            (
                "--if vb --tun a-name-of-16-byte",
                "--tun \"a-name-of-16-byte\": not",
            ),
        ] {
            match parse_args(&args(line)) {
                Err(e) => assert!(e.starts_with(msg), "{line}: {e}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }
}
