//! The director behind `examples/afpacket_director.rs`: command line, workers, counters.
//!
//! - [`ring`]: AF_PACKET sockets with TPACKET_V3 receive and transmit rings.
//! - [`worker`]: one director per thread: receive a burst, process it, send it.
//! - [`arp`]: ARP and neighbour-solicitation answers for the VIPs (`--answer-arp`).
//! - [`sys`]: signals, poll, interfaces, the kernel's neighbour table, the control FIFO.
//! - here: the command line, the control thread (FIFO, neighbours, counters) and the report.

pub mod arp;
pub mod ring;
#[path = "../common/signals.rs"]
pub mod signals;
pub mod sys;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lvs::conn::ConnConfig;
use lvs::director::{Director, DirectorConfig, DropReason, PassReason, parse_mac};
use lvs::sched::SchedConfig;

use ring::RingConfig;
use worker::{Msg, Snapshot, Worker, WorkerSetup};

pub const USAGE: &str = "\
usage: afpacket_director --rules FILE --client-if IF [--server-if IF] [options]

  --rules FILE           ipvsadm commands (what `ipvsadm -S -n` prints)
  --client-if IF         the interface clients' frames arrive on
  --server-if IF         the interface towards the real servers (default: the same one; the
                         side of each frame is then told by its source)
  --neigh FILE           neighbours: `IP MAC` per line, `#` comments: real servers and
                         client-side next hops. Real servers not in it are looked up in the
                         kernel's neighbour table (and resolved by the kernel on demand); a
                         client's replies go to the MAC its frames came from
  --answer-arp           answer ARP requests and neighbour solicitations for the VIPs on the
                         client side
  --control PATH         a FIFO (created if missing) taking live changes, one per line:
                         ipvsadm commands (`-e -t VIP:80 -r RIP:80 -g -w 0`, `-d ...`),
                         `stats` (print the counters) or `save` (print the rules)
  --workers N            threads, one director each, shared-nothing, flows spread by
                         PACKET_FANOUT hash (default 1; NAT needs 1: a reply's hash differs
                         from its request's)
  --stats-interval SECS  print the counters every SECS seconds (default 0: on SIGUSR1, on
                         `stats` and at exit only)
  --tunnel-src-v4 ADDR   outer source of IPv4 tunnels (default: the server interface's first
                         IPv4 address)
  --tunnel-src-v6 ADDR   the same for IPv6
  --mtu N                path MTU towards the real servers (default: the server interface's)
  --capacity N           connection table entries per address family (default 1048576)
  --gue-port PORT        UDP port of GUE packets arriving at the director, if any
  --rx-block KB          receive ring block size (default 4; at least one frame + 68 B).
                         TPACKET_V3 hands a block over when it is full or 1 ms after its
                         first frame: small blocks keep the latency low under load
  --rx-blocks N          receive ring blocks (default 2048)
  -h, --help             this text

Turn off the receive offloads of the interfaces (`ethtool -K IF gro off lro off`, and on
veth peers `tx off tso off gso off`): the director forwards frames as it receives them, and
cannot forward a 64 KB coalesced one. Frames whose checksum an offload left partial are
completed. Keep the host's kernel from forwarding VIP traffic itself (net.ipv4.ip_forward=0
or an nftables drop in prerouting: AF_PACKET still sees the frames).
";

/// The command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub rules: PathBuf,
    pub client_if: String,
    pub server_if: Option<String>,
    pub neigh: Option<PathBuf>,
    pub answer_arp: bool,
    pub control: Option<PathBuf>,
    pub workers: usize,
    pub stats_interval: u64,
    pub tunnel_src_v4: Option<Ipv4Addr>,
    pub tunnel_src_v6: Option<Ipv6Addr>,
    pub mtu: Option<u32>,
    pub capacity: u32,
    pub gue_port: Option<u16>,
    pub rx_block_kb: u32,
    pub rx_blocks: u32,
}

/// Parses the command line (without the program name). `Err` holds the message for stderr.
pub fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options {
        workers: 1,
        capacity: 1 << 20,
        rx_block_kb: 4,
        rx_blocks: 2048,
        ..Options::default()
    };
    let mut rules = None;
    let mut client = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{name}: {v:?} is not valid"))
        }
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--rules" => rules = Some(PathBuf::from(val(a)?)),
            "--client-if" => client = Some(val(a)?),
            "--server-if" => o.server_if = Some(val(a)?),
            "--neigh" => o.neigh = Some(PathBuf::from(val(a)?)),
            "--answer-arp" => o.answer_arp = true,
            "--control" => o.control = Some(PathBuf::from(val(a)?)),
            "--workers" => o.workers = num(a, val(a)?)?,
            "--stats-interval" => o.stats_interval = num(a, val(a)?)?,
            "--tunnel-src-v4" => o.tunnel_src_v4 = Some(num(a, val(a)?)?),
            "--tunnel-src-v6" => o.tunnel_src_v6 = Some(num(a, val(a)?)?),
            "--mtu" => o.mtu = Some(num(a, val(a)?)?),
            "--capacity" => o.capacity = num(a, val(a)?)?,
            "--gue-port" => o.gue_port = Some(num(a, val(a)?)?),
            "--rx-block" => o.rx_block_kb = num(a, val(a)?)?,
            "--rx-blocks" => o.rx_blocks = num(a, val(a)?)?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    o.rules = rules.ok_or("--rules is required")?;
    o.client_if = client.ok_or("--client-if is required")?;
    if o.workers == 0 || o.workers > 64 {
        return Err("--workers: 1 to 64".into());
    }
    if !o.rx_block_kb.is_power_of_two() || !(4..=4096).contains(&o.rx_block_kb) {
        return Err("--rx-block: a power of two from 4 to 4096".into());
    }
    if !(8..=1 << 16).contains(&o.rx_blocks) {
        return Err("--rx-blocks: 8 to 65536".into());
    }
    if o.server_if.as_deref() == Some(o.client_if.as_str()) {
        o.server_if = None;
    }
    Ok(Some(o))
}

/// Parses a neighbour file: `IP MAC` per line, `#` comments.
pub fn parse_neigh(name: &str, text: &str) -> Result<Vec<(IpAddr, [u8; 6])>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let parsed = match w[..] {
            [ip, mac] => ip.parse::<IpAddr>().ok().zip(parse_mac(mac)),
            _ => None,
        };
        out.push(
            parsed.ok_or_else(|| format!("{name}:{}: expected `IP MAC`, found {line:?}", i + 1))?,
        );
    }
    Ok(out)
}

/// Runs the director until SIGINT or SIGTERM. `Err` is (message, exit code).
pub fn run(o: Options) -> Result<(), (String, i32)> {
    let fail = |m: String| (m, 1);
    let rules = std::fs::read_to_string(&o.rules)
        .map_err(|e| (format!("{}: {e}", o.rules.display()), 2))?;
    let neigh = match &o.neigh {
        Some(p) => {
            let t = std::fs::read_to_string(p).map_err(|e| (format!("{}: {e}", p.display()), 2))?;
            parse_neigh(&p.display().to_string(), &t).map_err(|m| (m, 2))?
        }
        None => Vec::new(),
    };
    let server_if = o.server_if.clone().unwrap_or_else(|| o.client_if.clone());
    let (client_mac, client_mtu) = sys::link_info(&o.client_if).map_err(|e| fail(e.to_string()))?;
    let (server_mac, server_mtu) = sys::link_info(&server_if).map_err(|e| fail(e.to_string()))?;
    let addrs = sys::addresses(&server_if);
    let cfg = DirectorConfig {
        mac: server_mac,
        addr_v4: o.tunnel_src_v4.or_else(|| {
            addrs.iter().find_map(|a| match a {
                IpAddr::V4(a) => Some(*a),
                _ => None,
            })
        }),
        addr_v6: o.tunnel_src_v6.or_else(|| {
            addrs.iter().find_map(|a| match a {
                IpAddr::V6(a) if !a.is_unicast_link_local() => Some(*a),
                _ => None,
            })
        }),
        mtu: o.mtu.unwrap_or(server_mtu),
        gue_port: o.gue_port,
        ..DirectorConfig::default()
    };
    let conn = ConnConfig {
        capacity_v4: o.capacity,
        capacity_v6: o.capacity,
        hash_seed: random_seed(),
        ..ConnConfig::default()
    };
    // A director of its own for the control thread: it checks every change before the
    // workers see it, and knows the real servers whose MACs are needed.
    let t0 = Instant::now();
    let mut shadow = Director::new(
        cfg,
        ConnConfig {
            capacity_v4: 16,
            capacity_v6: 16,
            ..conn
        },
        SchedConfig::default(),
        lvs::time::Instant::from_millis(0),
    );
    shadow
        .apply_rules(&rules)
        .map_err(|e| (format!("{}: {e}", o.rules.display()), 2))?;
    sys::install_signal_handlers().map_err(|e| fail(format!("signals: {e}")))?;
    let mut control = match &o.control {
        Some(p) => Some(sys::open_fifo(p).map_err(|e| fail(format!("{}: {e}", p.display())))?),
        None => None,
    };
    let ring = RingConfig {
        // A block holds at least one frame of the larger MTU.
        rx_block_size: (o.rx_block_kb << 10)
            .max((server_mtu.max(client_mtu) + 14 + 8 + 80).next_power_of_two()),
        rx_blocks: o.rx_blocks,
        rx_timeout_ms: 1,
        tx_frame_size: (server_mtu + 14 + 8 + 64 + 48)
            .next_power_of_two()
            .max(2048),
        tx_frames: 1024,
    };
    let fanout = (o.workers > 1).then(|| (std::process::id() & 0xffff) as u16);
    let pinned: HashSet<IpAddr> = neigh.iter().map(|(ip, _)| *ip).collect();
    let mut workers = Vec::new();
    for id in 0..o.workers {
        let setup = WorkerSetup {
            client_if: o.client_if.clone(),
            server_if: o.server_if.clone(),
            ring,
            fanout,
            cfg,
            conn,
            rules: rules.clone(),
            neigh: neigh.clone(),
            answer_arp: o.answer_arp,
            client_mac,
            server_mac,
            t0,
        };
        let w = Worker::new(setup).map_err(|e| fail(e.to_string()))?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(format!("director-{id}"))
            .spawn(move || w.run(rx))
            .map_err(|e| fail(e.to_string()))?;
        workers.push((tx, handle));
    }
    eprintln!(
        "afpacket_director: {} worker(s) on {}{}; {} service(s); counters on SIGUSR1{}",
        o.workers,
        o.client_if,
        o.server_if
            .as_ref()
            .map(|s| format!(" / {s}"))
            .unwrap_or_default(),
        shadow.services().iter().count(),
        o.control
            .as_ref()
            .map(|p| format!(", changes through {}", p.display()))
            .unwrap_or_default()
    );
    let mut known: HashMap<IpAddr, [u8; 6]> = HashMap::new();
    let mut last_neigh = Instant::now() - Duration::from_secs(10);
    let mut last_stats = Instant::now();
    let mut pending = String::new();
    while !sys::STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if workers.iter().any(|(_, h)| h.is_finished()) {
            break;
        }
        if let Some(f) = control.as_mut() {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = f.read(&mut buf) {
                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            while let Some(i) = pending.find('\n') {
                let line: String = pending.drain(..=i).collect();
                control_line(line.trim(), &mut shadow, &workers);
            }
        }
        if last_neigh.elapsed() >= Duration::from_secs(1) {
            last_neigh = Instant::now();
            refresh_neighbours(&shadow, &pinned, &mut known, &workers);
        }
        let due =
            o.stats_interval > 0 && last_stats.elapsed() >= Duration::from_secs(o.stats_interval);
        if due || sys::DUMP.swap(false, Ordering::Relaxed) {
            last_stats = Instant::now();
            print_stats(&collect(&workers));
        }
    }
    let mut finals = Vec::new();
    let mut failure = None;
    for (tx, h) in workers {
        drop(tx);
        match h.join() {
            Ok(Ok(s)) => finals.push(s),
            Ok(Err(e)) => failure = Some(e.to_string()),
            Err(_) => failure = Some("a worker panicked".into()),
        }
    }
    print_stats(&finals);
    match failure {
        Some(m) => Err((m, 1)),
        None => Ok(()),
    }
}

fn random_seed() -> [u64; 2] {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    [
        u64::from_ne_bytes(b[..8].try_into().unwrap_or_default()),
        u64::from_ne_bytes(b[8..].try_into().unwrap_or_default()),
    ]
}

type Workers = Vec<(
    mpsc::Sender<Msg>,
    std::thread::JoinHandle<std::io::Result<Snapshot>>,
)>;

/// One line from the control FIFO.
fn control_line(line: &str, shadow: &mut Director, workers: &Workers) {
    match line {
        "" => {}
        "stats" => print_stats(&collect(workers)),
        "save" => {
            print!("{}", shadow.save());
            let _ = std::io::stdout().flush();
        }
        cmd => match shadow.apply_rules(cmd) {
            Ok(()) => {
                for (tx, _) in workers {
                    let _ = tx.send(Msg::Rules(cmd.to_string()));
                }
                eprintln!("applied: {cmd}");
            }
            Err(e) => eprintln!("control: {cmd:?}: {e} (not applied)"),
        },
    }
}

/// Real servers' MACs from the kernel's neighbour table; the kernel is asked to resolve the
/// ones it does not know yet.
fn refresh_neighbours(
    shadow: &Director,
    pinned: &HashSet<IpAddr>,
    known: &mut HashMap<IpAddr, [u8; 6]>,
    workers: &Workers,
) {
    let wanted: HashSet<IpAddr> = shadow
        .services()
        .iter()
        .flat_map(|s| s.pool().dests().iter().map(|(_, d)| d.addr()))
        .filter(|a| !pinned.contains(a))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let table: HashMap<IpAddr, [u8; 6]> = sys::kernel_neighbours().into_iter().collect();
    for ip in wanted {
        match table.get(&ip) {
            Some(mac) if known.get(&ip) != Some(mac) => {
                known.insert(ip, *mac);
                for (tx, _) in workers {
                    let _ = tx.send(Msg::Neighbour(ip, *mac));
                }
            }
            Some(_) => {}
            None => sys::poke_neighbour(ip),
        }
    }
}

fn collect(workers: &Workers) -> Vec<Snapshot> {
    let mut v = Vec::new();
    for (tx, _) in workers {
        let (stx, srx) = mpsc::channel();
        if tx.send(Msg::Stats(stx)).is_ok()
            && let Ok(s) = srx.recv_timeout(Duration::from_secs(2))
        {
            v.push(s);
        }
    }
    v
}

/// Prints the workers' counters summed: `ipvsadm -L -n --stats` per service and real
/// server, then the director's verdicts and the sockets' counters.
fn print_stats(snaps: &[Snapshot]) {
    let Some(first) = snaps.first() else { return };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<4} {:<30} {:<8} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "Prot", "LocalAddress:Port", "Sched", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
    );
    let _ = writeln!(
        t,
        "  -> {:<24} {:<7} {:>6}",
        "RemoteAddress:Port", "Forward", "Weight"
    );
    for (i, svc) in first.services.iter().enumerate() {
        let sum = |f: &dyn Fn(&Snapshot) -> Option<lvs::director::Stats>| {
            snaps
                .iter()
                .filter_map(f)
                .fold(lvs::director::Stats::default(), add)
        };
        let s = sum(&|s: &Snapshot| s.services.get(i).map(|x| x.stats));
        let _ = writeln!(
            t,
            "{:<4} {:<30} {:<8} {}",
            svc.proto,
            svc.addr,
            svc.sched,
            counters(&s)
        );
        for (j, d) in svc.dests.iter().enumerate() {
            let s = sum(&|s: &Snapshot| {
                s.services
                    .get(i)
                    .and_then(|x| x.dests.get(j))
                    .map(|x| x.stats)
            });
            let _ = writeln!(
                t,
                "  -> {:<24} {:<7} {:>6} {}",
                d.addr,
                d.method,
                d.weight,
                counters(&s)
            );
        }
    }
    let mut verdicts: BTreeMap<String, u64> = BTreeMap::new();
    for s in snaps {
        let st = &s.director;
        *verdicts
            .entry("forwarded to real servers".into())
            .or_default() += st.forwarded_in;
        *verdicts.entry("forwarded to clients".into()).or_default() += st.forwarded_out;
        *verdicts
            .entry("replied (ICMP errors sent)".into())
            .or_default() += st.replies.iter().sum::<u64>();
        for r in PassReason::ALL {
            *verdicts.entry(format!("passed: {}", r.name())).or_default() += st.passed(*r);
        }
        for r in DropReason::ALL {
            *verdicts
                .entry(format!("dropped: {}", r.name()))
                .or_default() += st.dropped(*r);
        }
        for (k, v) in s.io.iter() {
            *verdicts.entry(format!("io: {k}")).or_default() += v;
        }
    }
    for (k, v) in verdicts.iter().filter(|(_, v)| **v > 0) {
        let _ = writeln!(t, "  {k:<46} {v:>10}");
    }
    print!("{t}");
    let _ = std::io::stdout().flush();
}

fn add(a: lvs::director::Stats, b: lvs::director::Stats) -> lvs::director::Stats {
    lvs::director::Stats {
        conns: a.conns + b.conns,
        in_packets: a.in_packets + b.in_packets,
        out_packets: a.out_packets + b.out_packets,
        in_bytes: a.in_bytes + b.in_bytes,
        out_bytes: a.out_bytes + b.out_bytes,
    }
}

fn counters(s: &lvs::director::Stats) -> String {
    format!(
        "{:>8} {:>8} {:>8} {:>10} {:>10}",
        s.conns, s.in_packets, s.out_packets, s.in_bytes, s.out_bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_line() {
        let o = parse_args(&args(
            "--rules r --client-if a --server-if a --workers 2 --answer-arp",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(o.client_if, "a");
        assert_eq!(o.server_if, None, "one interface for both sides");
        assert_eq!(o.workers, 2);
        assert!(o.answer_arp);
        assert!(parse_args(&args("--client-if a")).is_err());
        assert!(parse_args(&args("--rules r --client-if a --workers 0")).is_err());
        assert!(parse_args(&args("--rules r --client-if a --bogus")).is_err());
        assert!(parse_args(&args("--rules r --client-if a --mtu")).is_err());
        assert!(parse_args(&args("-h")).unwrap().is_none());
    }

    #[test]
    fn neighbour_file() {
        let v = parse_neigh(
            "n",
            "# c\n10.0.0.1 02:00:00:00:00:01\n\nfd00::1 02:00:00:00:00:02 # x\n",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert!(parse_neigh("n", "10.0.0.1\n").unwrap_err().contains("n:1"));
        assert!(parse_neigh("n", "10.0.0.1 zz\n").is_err());
    }
}
