//! The sync daemon's parts: arguments, sockets, master and backup loops.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant as WallInstant};

use lvs::conn::{Conn, ConnFlags, ConnState};
use lvs::director::{Director, DirectorConfig, SyncBackupConfig, SyncError};
use lvs::sync::{self, Message, SenderConfig, Version};
use lvs::time::Instant;

#[path = "../replay/mod.rs"]
#[allow(dead_code)]
mod replay;
#[path = "../common/signals.rs"]
pub mod signals;
#[path = "../tun_decap/sys.rs"]
#[allow(dead_code, unused_imports)]
mod sys;

const USAGE: &str = "\
usage: sync_daemon --master --rules FILE --replay IN.pcap [--neigh FILE]
                   [--syncid N] [--version 0|1] [--maxlen BYTES]
                   [--group ADDR:PORT --interface IF | --peer ADDR:PORT]
       sync_daemon --backup [--rules FILE] [--syncid N]
                   [--group ADDR:PORT --interface IF | --listen ADDR:PORT]
                   [--count N] [--idle SECS]
The default group is 224.0.0.81:8848, as ipvsadm --start-daemon's.";

#[derive(Debug)]
struct Args {
    master: bool,
    backup: bool,
    rules: Option<String>,
    replay: Option<String>,
    neigh: Option<String>,
    syncid: u8,
    version: Version,
    maxlen: usize,
    group: SocketAddrV4,
    interface: Option<String>,
    peer: Option<SocketAddr>,
    listen: Option<SocketAddr>,
    count: Option<u64>,
    idle: Option<u64>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        master: false,
        backup: false,
        rules: None,
        replay: None,
        neigh: None,
        syncid: 0,
        version: Version::V1,
        maxlen: sync::DEFAULT_MAXLEN_V4,
        group: sync::DEFAULT_ENDPOINT,
        interface: None,
        peer: None,
        listen: None,
        count: None,
        idle: None,
    };
    let mut it = args.iter();
    while let Some(opt) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{opt} needs a value"))
        };
        let num = |v: String| -> Result<u64, String> {
            v.parse().map_err(|_| format!("{opt}: not a number: {v}"))
        };
        match opt.as_str() {
            "--master" => a.master = true,
            "--backup" => a.backup = true,
            "--rules" => a.rules = Some(val()?),
            "--replay" => a.replay = Some(val()?),
            "--neigh" => a.neigh = Some(val()?),
            "--syncid" => {
                let v = num(val()?)?;
                a.syncid = u8::try_from(v).map_err(|_| format!("--syncid {v}: 0 to 255"))?;
            }
            "--version" => {
                a.version = match val()?.as_str() {
                    "0" => Version::V0,
                    "1" => Version::V1,
                    v => return Err(format!("--version {v}: 0 or 1")),
                }
            }
            "--maxlen" => a.maxlen = num(val()?)? as usize,
            "--group" => {
                let v = val()?;
                a.group = v
                    .parse()
                    .map_err(|_| format!("--group {v}: an IPv4 ADDR:PORT"))?;
                if !a.group.ip().is_multicast() {
                    return Err(format!("--group {v}: not a multicast address"));
                }
            }
            "--interface" => a.interface = Some(val()?),
            "--peer" => {
                let v = val()?;
                a.peer = Some(v.parse().map_err(|_| format!("--peer {v}: ADDR:PORT"))?);
            }
            "--listen" => {
                let v = val()?;
                a.listen = Some(v.parse().map_err(|_| format!("--listen {v}: ADDR:PORT"))?);
            }
            "--count" => a.count = Some(num(val()?)?),
            "--idle" => a.idle = Some(num(val()?)?),
            "-h" | "--help" => return Err(String::new()),
            o => return Err(format!("unknown option {o}")),
        }
    }
    if a.master == a.backup {
        return Err("give --master or --backup".into());
    }
    if a.master && (a.rules.is_none() || a.replay.is_none()) {
        return Err("--master needs --rules and --replay".into());
    }
    if a.master && a.listen.is_some() || a.backup && a.peer.is_some() {
        return Err("--peer is for a master, --listen for a backup".into());
    }
    if a.peer.is_none() && a.listen.is_none() && a.interface.is_none() {
        return Err("multicast needs --interface IF (or use --peer / --listen)".into());
    }
    Ok(a)
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// The IPv4 address of an interface (the master binds its socket to it, as the kernel does,
/// and the backup joins the group on it).
fn interface_v4(name: &str) -> Result<Ipv4Addr, String> {
    let addrs = sys::interface_addrs(name).map_err(|e| format!("--interface {name}: {e}"))?;
    addrs
        .into_iter()
        .find_map(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("--interface {name}: no IPv4 address"))
}

/// `IP_MULTICAST_IF` by interface index (std has no call for it).
fn set_multicast_if(sock: &UdpSocket, ifname: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let index = sys::ifindex(ifname)?;
    let mreq = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index,
    };
    // SAFETY: `mreq` is a valid ip_mreqn that outlives the call; the length is its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&mreq as *const libc::ip_mreqn).cast(),
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A larger receive buffer, so a burst of sync datagrams is not dropped.
fn set_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: an int option, its address and size; failure only leaves the default size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("sync_daemon: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if e.is_empty() { 0 } else { 2 });
        }
    };
    let r = if a.master { master(&a) } else { backup(&a) };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("sync_daemon: {e}");
            ExitCode::from(code)
        }
    }
}

type Fail = (u8, String);

fn sys_fail(e: impl std::fmt::Display) -> Fail {
    (1, e.to_string())
}

fn master(a: &Args) -> Result<(), Fail> {
    let usage = |e: String| (2, e);
    let rules_name = a.rules.clone().unwrap_or_default();
    let rules = read(&rules_name).map_err(usage)?;
    let neigh = match &a.neigh {
        Some(p) => {
            let text = read(p).map_err(usage)?;
            replay::parse_neigh(p, &text).map_err(|f| (f.code, f.message))?
        }
        None => Vec::new(),
    };
    let setup = replay::engine::Setup {
        rules_name: rules_name.clone(),
        rules,
        neigh,
        net: replay::engine::Net::default(),
    };
    let (sock, dest) = match a.peer {
        Some(peer) => {
            let bind: SocketAddr = if peer.is_ipv6() {
                "[::]:0".parse().unwrap()
            } else {
                "0.0.0.0:0".parse().unwrap()
            };
            (UdpSocket::bind(bind).map_err(sys_fail)?, peer)
        }
        None => {
            let ifname = a.interface.as_deref().unwrap_or_default();
            let local = interface_v4(ifname).map_err(usage)?;
            let s = UdpSocket::bind((local, 0)).map_err(sys_fail)?;
            set_multicast_if(&s, ifname).map_err(sys_fail)?;
            s.set_multicast_ttl_v4(1).map_err(sys_fail)?;
            s.set_multicast_loop_v4(false).map_err(sys_fail)?;
            (s, SocketAddr::V4(a.group))
        }
    };
    let path = a.replay.clone().unwrap_or_default();
    let file = File::open(&path).map_err(|e| (2, format!("{path}: {e}")))?;
    let mut reader =
        replay::capture::Reader::open(file).map_err(|e| (2, format!("{path}: {e}")))?;
    let mut raw = Vec::new();
    let mut frame = Vec::new();
    let mut engine: Option<replay::engine::Engine> = None;
    let sender = SenderConfig {
        version: a.version,
        syncid: a.syncid,
        maxlen: a.maxlen,
        ..SenderConfig::default()
    };
    let (mut frames, mut datagrams, mut bytes) = (0u64, 0u64, 0u64);
    let mut send = |g: &[u8], datagrams: &mut u64| -> Result<(), Fail> {
        sock.send_to(g, dest).map_err(sys_fail)?;
        *datagrams += 1;
        bytes += g.len() as u64;
        // Paced, so a backup's socket buffer keeps up with a replay at full speed.
        if (*datagrams).is_multiple_of(32) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    };
    loop {
        let p = match reader.next(&mut raw) {
            Ok(Some(p)) => p,
            Ok(None) | Err(replay::capture::ReadError::Truncated) => break,
            Err(replay::capture::ReadError::Bad(e)) => return Err((2, format!("{path}: {e}"))),
        };
        let e = match &mut engine {
            Some(e) => e,
            None => {
                let link = replay::capture::director_link(p.link);
                let mut e = replay::engine::Engine::new(&setup, link, Instant::from_nanos(p.ts_ns))
                    .map_err(usage)?;
                e.director_mut().enable_sync_master(sender);
                engine.insert(e)
            }
        };
        let mac = e.director().config().mac;
        if replay::capture::to_frame(p.link, &raw, e.link(), mac, &mut frame).is_err() {
            continue;
        }
        frames += 1;
        e.step(p.ts_ns, &frame);
        let now = e.now();
        while let Some(g) = e.director_mut().poll_sync(now) {
            send(&g, &mut datagrams)?;
            if let Some(s) = e.director_mut().sync_sender_mut() {
                s.recycle(g);
            }
        }
    }
    let Some(mut e) = engine else {
        return Err((2, format!("{path}: no packets")));
    };
    let d = e.director_mut();
    if let Some(s) = d.sync_sender_mut() {
        s.flush();
    }
    while let Some(g) = d.poll_sync(Instant::from_nanos(u64::MAX / 2)) {
        send(&g, &mut datagrams)?;
    }
    let st = d.sync_sender().map(|s| *s.stats()).unwrap_or_default();
    println!(
        "master: {frames} frames replayed, {} connections in the table; sent {} records in \
         {datagrams} datagrams ({bytes} bytes, version {}, syncid {}) to {dest}",
        d.conns().len(),
        st.records,
        if a.version == Version::V0 { 0 } else { 1 },
        a.syncid,
    );
    if st.unencodable > 0 {
        println!(
            "master: {} records could not be encoded (IPv6 in version 0)",
            st.unencodable
        );
    }
    Ok(())
}

fn backup(a: &Args) -> Result<(), Fail> {
    signals::install_signal_handlers().map_err(sys_fail)?;
    let mut d = Director::new(
        DirectorConfig::default(),
        lvs::conn::ConnConfig::default(),
        lvs::sched::SchedConfig::default(),
        Instant::ZERO,
    );
    if let Some(p) = &a.rules {
        let text = read(p).map_err(|e| (2, e))?;
        d.apply_rules(&text)
            .map_err(|e| (2, replay::engine::rules_message(p, &e)))?;
    }
    d.set_sync_backup(SyncBackupConfig {
        syncid: a.syncid,
        ..SyncBackupConfig::default()
    });
    let sock = match a.listen {
        Some(l) => UdpSocket::bind(l).map_err(sys_fail)?,
        None => {
            let ifname = a.interface.as_deref().unwrap_or_default();
            let local = interface_v4(ifname).map_err(|e| (2, e))?;
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, a.group.port())).map_err(sys_fail)?;
            s.join_multicast_v4(a.group.ip(), &local)
                .map_err(sys_fail)?;
            s
        }
    };
    set_rcvbuf(&sock, 8 << 20);
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(sys_fail)?;
    let where_ = match a.listen {
        Some(l) => l.to_string(),
        None => format!("{} on {}", a.group, a.interface.as_deref().unwrap_or("")),
    };
    println!("backup: listening on {where_}, syncid {}", a.syncid);
    let start = WallInstant::now();
    let mut last = WallInstant::now();
    let mut buf = vec![0u8; 65_536];
    let mut n = 0u64;
    while !signals::STOP.load(Ordering::Relaxed) {
        if a.count.is_some_and(|c| n >= c) {
            break;
        }
        if a.idle
            .is_some_and(|s| n > 0 && last.elapsed() >= Duration::from_secs(s))
        {
            break;
        }
        let (len, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(sys_fail(e)),
        };
        n += 1;
        last = WallInstant::now();
        let now = Instant::from_nanos(start.elapsed().as_nanos() as u64);
        let g = &buf[..len];
        match d.apply_sync(g, now) {
            Ok(r) => {
                let m = Message::parse(g).expect("applied, so valid");
                println!(
                    "datagram {n} from {from}: version {}, syncid {}, {} records: {} created, \
                     {} updated, {} replaced, {} stale, {} skipped, {} refused, {} unbound",
                    if m.version() == Version::V0 { 0 } else { 1 },
                    m.syncid(),
                    m.count(),
                    r.created,
                    r.updated,
                    r.replaced,
                    r.stale,
                    r.skipped,
                    r.refused,
                    r.unbound
                );
            }
            Err(e @ SyncError::SyncId { .. }) => println!("datagram {n} from {from}: ignored: {e}"),
            Err(e) => println!("datagram {n} from {from}: bad datagram ({len} bytes): {e}"),
        }
        let _ = d.expire(now, 1 << 16);
    }
    let now = Instant::from_nanos(start.elapsed().as_nanos() as u64);
    print!("{}", connection_table(&d, now));
    let s = d.sync_stats();
    println!(
        "backup: {} datagrams ({} malformed, {} of another sync id); {} created, {} updated, \
         {} replaced, {} stale, {} skipped, {} refused, {} unbound; {} connections now",
        s.datagrams,
        s.malformed,
        s.other_syncid,
        s.created,
        s.updated,
        s.replaced,
        s.stale,
        s.skipped.iter().sum::<u64>(),
        s.refused,
        s.unbound,
        d.conns().len()
    );
    Ok(())
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        0 => "IP".into(),
        p => p.to_string(),
    }
}

fn state_name(c: &Conn) -> String {
    match c.state {
        ConnState::Tcp(s) => s.name().to_ascii_uppercase(),
        ConnState::Sctp(s) => s.name().to_ascii_uppercase(),
        ConnState::Udp => "UDP".into(),
        ConnState::Template { .. } => "NONE".into(),
        _ => "ICMP".into(),
    }
}

fn endpoint(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// The table as `ipvsadm -L -n -c` prints it (expiry as mm:ss), plus the method and whether
/// the connection is bound to a configured real server.
fn connection_table(d: &Director, now: Instant) -> String {
    let mut out = String::from(
        "IPVS connection entries\npro expire state       source                 virtual                destination            method bound\n",
    );
    let mut conns: Vec<Conn> = d.conns().iter().collect();
    conns.sort_by_key(|c| (c.vaddr, c.vport, c.caddr, c.cport));
    for c in conns {
        let left = c.expires.saturating_duration_since(now).as_secs();
        let method = match c.flags.fwd() {
            ConnFlags::MASQ => "Masq",
            ConnFlags::DROUTE => "Route",
            ConnFlags::TUNNEL => "Tunnel",
            ConnFlags::LOCALNODE => "Local",
            _ => "Bypass",
        };
        let _ = writeln!(
            out,
            "{:<3} {:02}:{:02}  {:<11} {:<22} {:<22} {:<22} {:<6} {}",
            proto_name(c.protocol),
            left / 60,
            left % 60,
            state_name(&c),
            endpoint(c.caddr, c.cport),
            endpoint(c.vaddr, c.vport),
            endpoint(c.daddr, c.dport),
            method,
            if c.dest.is_some() { "yes" } else { "no" },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn arguments() {
        let a = args("--backup --interface eth0").unwrap();
        assert_eq!(a.group, sync::DEFAULT_ENDPOINT);
        assert_eq!((a.version, a.syncid), (Version::V1, 0));
        let a = args("--master --rules r --replay p --peer 10.0.0.2:8848 --version 0 --syncid 7")
            .unwrap();
        assert_eq!((a.version, a.syncid), (Version::V0, 7));
        assert!(args("--master --backup --interface x").is_err());
        assert!(args("--master --rules r --interface x").is_err());
        assert!(args("--backup --interface x --group 10.0.0.1:8848").is_err());
        assert!(args("--backup --peer 10.0.0.1:1").is_err());
        assert!(args("--backup").is_err());
        assert!(args("--backup --listen 0.0.0.0:8848 --syncid 256").is_err());
    }
}
