//! The capture replay behind `examples/pcap_replay.rs`, shared with its test and with the
//! sample generator (`examples/make_sample.rs`).
//!
//! - [`engine`]: one frame at a time through a director (clock, side, learnt MACs).
//! - [`capture`]: pcap/pcapng in, link types, pcap out.
//! - [`sample`]: the bundled sample, built deterministically.
//! - here: the command line, the replay loop and the `ipvsadm -L -n --stats`-like report.

pub mod capture;
pub mod engine;
pub mod sample;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lvs::config::ServiceKey;
use lvs::dest::ForwardMethod;
use lvs::director::{DropReason, PassReason, Stats, Verdict, parse_mac};
use lvs::flow::{Protocol, SocketDisplay};
use lvs::time::Instant;
use lvs::wire::LinkType;

use capture::{ReadError, Reader, Skip, Writer};
use engine::{Engine, Gateway, Net, Setup};

pub const USAGE: &str = "\
usage: pcap_replay                      replay the bundled sample (examples/data/)
       pcap_replay --rules FILE --in CAPTURE --out OUT.pcap [options]

  --rules FILE          ipvsadm commands (what `ipvsadm -S -n` prints)
  --in FILE             pcap or pcapng: Ethernet, Linux cooked (SLL, SLL2) or raw IP
  --out FILE            pcap of the frames sent on: forwarded ones rewritten, passed ones as
                        they were (dropped frames and the director's replies are not in it)
  --replies FILE        pcap of the director's own ICMP errors
  --neigh FILE          neighbours: `IP MAC` per line, `#` comments
  --mac MAC             the director's MAC (default 02:00:00:00:00:01)
  --gateway MAC|IP      where NAT replies go for a client of unknown MAC (an IP: its MAC
                        from the neighbour file); client MACs are otherwise learnt
  --tunnel-src-v4 ADDR  outer source of IPv4 tunnels (needed for -i real servers)
  --tunnel-src-v6 ADDR  outer source of IPv6 tunnels
  --mtu N               path MTU towards the real servers (default 0: no check)
  --capacity N          connection table entries per address family
  -h, --help            this text
";

/// Why the replay stopped: a message and the process exit code.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, naming the file (and line) involved.
    pub message: String,
    /// 2 for bad input (usage, rules, neighbours, an unreadable capture), 1 for output errors.
    pub code: u8,
}

fn bad<T>(message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        message: message.into(),
        code: 2,
    })
}

fn io_fail(what: &Path, e: impl std::fmt::Display) -> Failure {
    Failure {
        message: format!("{}: {e}", what.display()),
        code: 1,
    }
}

/// The command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `--rules`.
    pub rules: PathBuf,
    /// `--in`.
    pub input: PathBuf,
    /// `--out`.
    pub out: PathBuf,
    /// `--replies`.
    pub replies: Option<PathBuf>,
    /// `--neigh`.
    pub neigh: Option<PathBuf>,
    /// The director's network.
    pub net: Net,
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the usage.
    Help,
    /// Replay.
    Run(Options),
}

/// Parses the arguments (without the program name). No arguments at all is the bundled
/// sample's replay.
pub fn parse_args(args: &[String]) -> Result<Command, Failure> {
    if args.is_empty() {
        return Ok(Command::Run(sample_options()?));
    }
    let mut o = Options::default();
    let (mut rules, mut input, mut out) = (None, None, None);
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
            None => bad(format!("{flag} needs a value\n{USAGE}")),
        };
        match flag {
            "--rules" => rules = Some(PathBuf::from(value()?)),
            "--in" => input = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--replies" => o.replies = Some(PathBuf::from(value()?)),
            "--neigh" => o.neigh = Some(PathBuf::from(value()?)),
            "--mac" => {
                let v = value()?;
                o.net.mac = Some(parse_mac(&v).ok_or_else(|| Failure {
                    message: format!("--mac {v}: expected a MAC like 02:00:00:00:00:01"),
                    code: 2,
                })?);
            }
            "--gateway" => {
                let v = value()?;
                o.net.gateway = Some(match (parse_mac(&v), v.parse::<IpAddr>()) {
                    (Some(m), _) => Gateway::Mac(m),
                    (None, Ok(ip)) => Gateway::Ip(ip),
                    _ => return bad(format!("--gateway {v}: expected a MAC or an IP address")),
                });
            }
            "--tunnel-src-v4" => {
                let v = value()?;
                o.net.tunnel_src_v4 =
                    Some(v.parse().or_else(|_| {
                        bad(format!("--tunnel-src-v4 {v}: expected an IPv4 address"))
                    })?);
            }
            "--tunnel-src-v6" => {
                let v = value()?;
                o.net.tunnel_src_v6 =
                    Some(v.parse().or_else(|_| {
                        bad(format!("--tunnel-src-v6 {v}: expected an IPv6 address"))
                    })?);
            }
            "--mtu" => {
                let v = value()?;
                o.net.mtu = match v.parse::<u32>() {
                    Ok(n) if n == 0 || (68..=65535).contains(&n) => n,
                    _ => return bad(format!("--mtu {v}: expected 0 or 68..=65535")),
                };
            }
            "--capacity" => {
                let v = value()?;
                o.net.capacity = match v.parse::<u32>() {
                    Ok(n) if n > 0 && n <= lvs::conn::MAX_CAPACITY => n,
                    _ => {
                        return bad(format!(
                            "--capacity {v}: expected 1..={}",
                            lvs::conn::MAX_CAPACITY
                        ));
                    }
                };
            }
            _ => return bad(format!("unknown argument {arg}\n{USAGE}")),
        }
    }
    match (rules, input, out) {
        (Some(r), Some(i), Some(w)) => {
            o.rules = r;
            o.input = i;
            o.out = w;
            Ok(Command::Run(o))
        }
        _ => bad(format!("--rules, --in and --out are required\n{USAGE}")),
    }
}

/// The crate's directory (the example's paths are relative to it).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled sample's replay: its files, its network, output under `target/pcap_replay/`.
pub fn sample_options() -> Result<Options, Failure> {
    let data = manifest_dir().join("examples/data");
    let out = manifest_dir().join("target/pcap_replay");
    let mut args: Vec<String> = vec![
        "--rules".into(),
        data.join("sample.rules").display().to_string(),
        "--in".into(),
        data.join("sample.pcap").display().to_string(),
        "--out".into(),
        out.join("out.pcap").display().to_string(),
        "--replies".into(),
        out.join("replies.pcap").display().to_string(),
        "--neigh".into(),
        data.join("sample.neigh").display().to_string(),
    ];
    args.extend(sample::ARGS.iter().map(|s| s.to_string()));
    match parse_args(&args)? {
        Command::Run(o) => Ok(o),
        Command::Help => bad("unreachable"),
    }
}

/// Parses a neighbour file: `IP MAC` per line, `#` comments, blank lines.
pub fn parse_neigh(name: &str, text: &str) -> Result<Vec<(IpAddr, [u8; 6])>, Failure> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(ip), Some(mac), None) = (words.next(), words.next(), words.next()) else {
            return bad(format!(
                "{name}:{}: expected `IP MAC`, found {line:?}",
                i + 1
            ));
        };
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return bad(format!("{name}:{}: {ip:?} is not an IP address", i + 1));
        };
        let Some(mac) = parse_mac(mac) else {
            return bad(format!("{name}:{}: {mac:?} is not a MAC address", i + 1));
        };
        out.push((ip, mac));
    }
    Ok(out)
}

/// What one frame of the capture became.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It went through the director.
    Verdict(Verdict),
    /// It did not reach the director.
    Skipped(Skip),
}

/// A finished replay.
#[derive(Debug)]
pub struct Summary {
    /// The engine, with the director and its counters.
    pub engine: Engine,
    /// Packets read.
    pub frames: u64,
    /// Frames written to the output.
    pub written: u64,
    /// Replies written (or that would have been, without `--replies`).
    pub replies: u64,
    /// Packets that did not reach the director, by reason.
    pub skipped: BTreeMap<Skip, u64>,
    /// First and last timestamps.
    pub span: Option<(u64, u64)>,
    /// The capture ended in the middle of a record.
    pub truncated: bool,
    /// Per packet, when asked for.
    pub outcomes: Option<Vec<Outcome>>,
}

/// Where the replay writes.
pub struct Sinks<'a> {
    /// The forwarded and passed frames.
    pub out: &'a mut dyn Write,
    /// The director's replies, if wanted.
    pub replies: Option<&'a mut dyn Write>,
}

/// Replays `capture` through a director configured by `setup`, writing into `sinks`.
/// `record` keeps every frame's outcome; `progress` is called every few thousand frames.
pub fn replay(
    setup: &Setup,
    capture: impl Read,
    sinks: Sinks<'_>,
    record: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, Failure> {
    let mut reader = Reader::open(capture).or_else(bad)?;
    let mut raw = Vec::new();
    let mut frame = Vec::new();
    let first = match reader.next(&mut raw) {
        Ok(p) => p,
        Err(ReadError::Truncated) => None,
        Err(ReadError::Bad(e)) => return bad(format!("unreadable capture: {e}")),
    };
    // The director is made for the first packet's link type, its clock starting at the
    // first timestamp.
    let link = first.map_or(LinkType::Ethernet, |p| capture::director_link(p.link));
    let start = Instant::from_nanos(first.map_or(0, |p| p.ts_ns));
    let engine = Engine::new(setup, link, start).or_else(bad)?;
    let mac = engine.director().config().mac;
    let out_err = |e: String| Failure {
        message: format!("writing the output: {e}"),
        code: 1,
    };
    let mut out = Writer::new(sinks.out, link).map_err(out_err)?;
    let mut replies = match sinks.replies {
        Some(w) => Some(Writer::new(w, link).map_err(out_err)?),
        None => None,
    };
    let mut s = Summary {
        engine,
        frames: 0,
        written: 0,
        replies: 0,
        skipped: BTreeMap::new(),
        span: None,
        truncated: false,
        outcomes: record.then(Vec::new),
    };
    let mut next = first;
    while let Some(p) = next {
        s.frames += 1;
        s.span = Some(s.span.map_or((p.ts_ns, p.ts_ns), |(a, b)| {
            (a.min(p.ts_ns), b.max(p.ts_ns))
        }));
        if s.frames.is_multiple_of(4096) {
            progress(s.frames);
        }
        let outcome = match capture::to_frame(p.link, &raw, link, mac, &mut frame) {
            Err(skip) => {
                *s.skipped.entry(skip).or_default() += 1;
                Outcome::Skipped(skip)
            }
            Ok(()) => {
                let step = s.engine.step(p.ts_ns, &frame);
                let bytes = s.engine.output(&step);
                // On the wire: what was written, plus what the capture's snap length cut.
                let cut = p.orig_len.saturating_sub(raw.len() as u32);
                let orig = (bytes.len() as u32).saturating_add(cut);
                match step.verdict {
                    Verdict::Forward(_) | Verdict::Pass(_) => {
                        out.write(p.ts_ns, orig, bytes).map_err(out_err)?;
                        s.written += 1;
                    }
                    Verdict::Reply(_) => {
                        if let Some(r) = replies.as_mut() {
                            r.write(p.ts_ns, bytes.len() as u32, bytes)
                                .map_err(out_err)?;
                        }
                        s.replies += 1;
                    }
                    Verdict::Drop(_) => {}
                }
                Outcome::Verdict(step.verdict)
            }
        };
        if let Some(o) = s.outcomes.as_mut() {
            o.push(outcome);
        }
        next = match reader.next(&mut raw) {
            Ok(p) => p,
            Err(ReadError::Truncated) => {
                s.truncated = true;
                None
            }
            Err(ReadError::Bad(e)) => {
                return bad(format!(
                    "unreadable capture after {} packets: {e}",
                    s.frames
                ));
            }
        };
    }
    out.into_inner()
        .flush()
        .map_err(|e| out_err(e.to_string()))?;
    if let Some(r) = replies {
        r.into_inner().flush().map_err(|e| out_err(e.to_string()))?;
    }
    Ok(s)
}

fn method_name(m: ForwardMethod) -> &'static str {
    match m {
        ForwardMethod::Nat => "Masq",
        ForwardMethod::Tunnel(_) => "Tunnel",
        _ => "Route",
    }
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
        _ => "TCP",
    }
}

fn counters(s: &Stats) -> String {
    format!(
        "{:>8} {:>8} {:>8} {:>10} {:>10}",
        s.conns, s.in_packets, s.out_packets, s.in_bytes, s.out_bytes
    )
}

/// The per-service and per-real-server table, as `ipvsadm -L -n --stats` lays it out with
/// the scheduler, forwarding method and weight added.
pub fn service_table(e: &Engine) -> String {
    let d = e.director();
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
    for svc in d.services().iter() {
        let key = svc.key();
        let (proto, addr) = match key {
            ServiceKey::Addr { proto, addr, port } => {
                (proto_name(proto), SocketDisplay(addr, port).to_string())
            }
            ServiceKey::Fwmark { mark, ipv6 } => {
                ("FWM", format!("{mark}{}", if ipv6 { " IPv6" } else { "" }))
            }
            #[allow(unreachable_patterns)]
            _ => ("?", String::new()),
        };
        let mut sched = svc.options().scheduler.to_string();
        if let Some(p) = svc.options().persistence {
            let _ = write!(sched, " persistent {}", p.timeout);
        }
        let stats = d.service_stats(&key).unwrap_or_default();
        let _ = writeln!(t, "{proto:<4} {addr:<30} {sched:<8} {}", counters(&stats));
        for (_, dest) in svc.pool().dests().iter() {
            let ds = d
                .dest_stats(&key, dest.addr(), dest.port())
                .unwrap_or_default();
            let _ = writeln!(
                t,
                "  -> {:<24} {:<7} {:>6} {}",
                SocketDisplay(dest.addr(), dest.port()).to_string(),
                method_name(dest.method()),
                dest.weight(),
                counters(&ds)
            );
        }
    }
    t
}

fn reply_name(i: usize) -> &'static str {
    [
        "port unreachable",
        "fragmentation needed / too big",
        "time exceeded",
    ]
    .get(i)
    .copied()
    .unwrap_or("?")
}

/// The verdict counts: forwarded both ways, replies by kind, every pass and drop reason that
/// occurred, and the packets that never reached the director.
pub fn verdict_table(s: &Summary) -> String {
    let st = s.engine.director().stats();
    let mut t = String::new();
    let mut line = |what: &str, n: u64| {
        let _ = writeln!(t, "  {what:<46} {n:>8}");
    };
    line("forwarded to real servers", st.forwarded_in);
    line("forwarded to clients", st.forwarded_out);
    for (i, n) in st.replies.iter().enumerate() {
        line(&format!("replied: {}", reply_name(i)), *n);
    }
    for r in PassReason::ALL {
        if st.passed(*r) > 0 {
            let what = if *r == PassReason::Malformed {
                "passed: malformed (unchanged)".to_string()
            } else {
                format!("passed: {}", r.name())
            };
            line(&what, st.passed(*r));
        }
    }
    for r in DropReason::ALL {
        if st.dropped(*r) > 0 {
            line(&format!("dropped: {}", r.name()), st.dropped(*r));
        }
    }
    for (skip, n) in &s.skipped {
        line(&format!("not replayed: {skip}"), *n);
    }
    t
}

/// Hints for counters that mean a missing option.
fn hints(s: &Summary) -> String {
    let st = s.engine.director().stats();
    let mut t = String::new();
    if st.dropped(DropReason::NoTunnelSource) > 0 {
        t.push_str("hint: TUN real servers need --tunnel-src-v4 / --tunnel-src-v6\n");
    }
    if st.dropped(DropReason::NoNeighbour) > 0 {
        t.push_str(
            "hint: no-neighbour drops: give the real servers' MACs (--neigh), and --gateway\n",
        );
    }
    t
}

/// The whole report of a replay.
pub fn report(s: &Summary) -> String {
    let mut t = String::new();
    let secs = s
        .span
        .map_or(0.0, |(a, b)| Duration::from_nanos(b - a).as_secs_f64());
    let link = match s.engine.link() {
        LinkType::Ethernet => "Ethernet",
        LinkType::RawIp => "raw IP",
    };
    let _ = writeln!(
        t,
        "{} packets over {secs:.3} s, replayed as {link} frames",
        s.frames
    );
    if s.truncated {
        t.push_str("warning: the capture ends in the middle of a packet record (cut short?)\n");
    }
    t.push('\n');
    t.push_str(&service_table(&s.engine));
    t.push_str("\nVerdicts:\n");
    t.push_str(&verdict_table(s));
    let c = s.engine.director().conns();
    let _ = writeln!(
        t,
        "\nConnection table at the end: {} entries ({} created, {} expired); {} client MACs learnt",
        c.len(),
        c.stats().inserted,
        c.stats().expired,
        s.engine.learned()
    );
    t.push_str(&hints(s));
    t
}

fn read_text(p: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(p).or_else(|e| bad(format!("{}: {e}", p.display())))
}

/// A reader that counts the bytes read, for the progress bar.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

fn create(p: &Path) -> Result<BufWriter<File>, Failure> {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_fail(dir, e))?;
    }
    Ok(BufWriter::new(File::create(p).map_err(|e| io_fail(p, e))?))
}

/// Runs the command line: the report on success.
pub fn execute(args: Vec<String>) -> Result<String, Failure> {
    let sample = args.is_empty();
    let o = match parse_args(&args)? {
        Command::Help => return Ok(USAGE.to_string()),
        Command::Run(o) => o,
    };
    let rules = read_text(&o.rules)?;
    let neigh = match &o.neigh {
        Some(p) => parse_neigh(&p.display().to_string(), &read_text(p)?)?,
        None => Vec::new(),
    };
    let setup = Setup {
        rules_name: o.rules.display().to_string(),
        rules,
        neigh,
        net: o.net.clone(),
    };
    let file = File::open(&o.input).or_else(|e| bad(format!("{}: {e}", o.input.display())))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let count = Rc::new(Cell::new(0));
    let input = Counting {
        inner: file,
        count: count.clone(),
    };
    // A bar for files that take a while, on a terminal only.
    let bar = if std::io::stderr().is_terminal() && size > 16 << 20 {
        ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut out = create(&o.out)?;
    let mut replies = match &o.replies {
        Some(p) => Some(create(p)?),
        None => None,
    };
    let sinks = Sinks {
        out: &mut out,
        replies: replies.as_mut().map(|w| w as &mut dyn Write),
    };
    let result = replay(&setup, input, sinks, false, &mut |frames| {
        bar.set_position(count.get());
        bar.set_message(format!("{frames} packets"));
    });
    bar.finish_and_clear();
    let s = result.map_err(|mut f| {
        f.message = format!("{}: {}", o.input.display(), f.message);
        f
    })?;
    let mut t = String::new();
    if sample {
        let _ = writeln!(
            t,
            "Replaying the bundled sample, as\n  pcap_replay {}\n",
            sample_command(&o)
        );
    }
    t.push_str(&report(&s));
    let _ = writeln!(t, "\nWrote {} frames to {}", s.written, o.out.display());
    match &o.replies {
        Some(p) => {
            let _ = writeln!(t, "Wrote {} ICMP replies to {}", s.replies, p.display());
        }
        None if s.replies > 0 => {
            let _ = writeln!(t, "{} ICMP replies not written (no --replies)", s.replies);
        }
        None => {}
    }
    Ok(t)
}

/// The sample run's command line, with paths relative to the crate.
fn sample_command(o: &Options) -> String {
    let base = manifest_dir();
    let rel = |p: &Path| p.strip_prefix(&base).unwrap_or(p).display().to_string();
    let mut words = vec![
        format!("--rules {}", rel(&o.rules)),
        format!("--in {}", rel(&o.input)),
        format!("--out {}", rel(&o.out)),
    ];
    if let Some(r) = &o.replies {
        words.push(format!("--replies {}", rel(r)));
    }
    if let Some(n) = &o.neigh {
        words.push(format!("--neigh {}", rel(n)));
    }
    words.push(sample::ARGS.join(" "));
    words.join(" \\\n      ")
}
