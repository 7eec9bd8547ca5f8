//! Which real server will each client land on, and what moves if I drain this one?
//!
//! ```text
//! cargo run --release --example simulate -- --rules FILE --flows FILE [--report] [--remove IP:PORT]...
//! cargo run --release --example simulate          # a built-in demonstration
//! ```
//!
//! - `--rules`: ipvsadm commands applied in order, as `ipvsadm-restore` applies them (a file
//!   saved with `ipvsadm -S -n` is just `-A` and `-a` lines).
//! - `--flows`: CSV lines `proto,src_ip,src_port,dst_ip,dst_port` (`tcp` or `udp`; a header line
//!   starting with `proto` and `#` comments are skipped). Each flow is a new connection that
//!   stays open (TCP ones count as active, UDP as inactive, as IPVS counts them), so least-
//!   connection schedulers see the load build up. Persistent services (`-p`) send a client
//!   network back to its first real server.
//! - Output: one CSV line `src_ip:src_port,real_server` per flow, in input order
//!   (`real_server` is `IP:PORT`, or `none`). `--report` adds, as `#` lines, each real server's
//!   share of its service's flows against its share of the weight, and the max/min ratio.
//!   `--remove IP:PORT` (repeatable) replays the flows with those real servers removed and
//!   reports the fraction of flows whose real server changed.
//!
//! Bad input gets a message naming the file, line and problem, and exit code 2.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;

use lvs::config::{self, Command, ServiceKey};
use lvs::dest::{ConnKind, DestId};
use lvs::flow::{FlowKey, Protocol, SocketDisplay};
use lvs::sched::SchedConfig;
use lvs::service::Services;
use lvs::time::Instant;

const DEMO_RULES: &str = "\
# Two services: HTTP on wlc with weights 3:2:1, DNS on mh (Maglev) over three servers.
-A -t 10.0.0.1:80 -s wlc
-a -t 10.0.0.1:80 -r 192.168.1.1:80 -m -w 3
-a -t 10.0.0.1:80 -r 192.168.1.2:80 -m -w 2
-a -t 10.0.0.1:80 -r 192.168.1.3:80 -m -w 1
-A -u 10.0.0.1:53 -s mh -b mh-port
-a -u 10.0.0.1:53 -r 192.168.1.1:53 -g -w 1
-a -u 10.0.0.1:53 -r 192.168.1.2:53 -g -w 1
-a -u 10.0.0.1:53 -r 192.168.1.3:53 -g -w 1
";

#[derive(Clone, Copy, Debug)]
struct Flow {
    key: FlowKey,
}

struct Fail(String);

fn fail<T>(msg: impl Into<String>) -> Result<T, Fail> {
    Err(Fail(msg.into()))
}

fn load_rules(name: &str, text: &str) -> Result<Vec<config::Rule>, Fail> {
    config::parse(text).map_err(|e| Fail(format!("{name}:{}:{}: {}", e.line, e.column, e.kind)))
}

fn build(name: &str, rules: &[config::Rule], extra: &[Command]) -> Result<Services, Fail> {
    let mut s = Services::new(SchedConfig::default());
    for r in rules {
        s.apply(&r.command)
            .map_err(|e| Fail(format!("{name}:{}: {e}", r.line)))?;
    }
    for c in extra {
        s.apply(c).map_err(|e| Fail(format!("--remove: {e}")))?;
    }
    Ok(s)
}

fn parse_flows(name: &str, text: &str) -> Result<Vec<Flow>, Fail> {
    let mut flows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() || (flows.is_empty() && line.starts_with("proto")) {
            continue;
        }
        let at = |what: &str| Fail(format!("{name}:{}: {what} in {raw:?}", i + 1));
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 5 {
            return Err(at(
                "expected 5 fields proto,src_ip,src_port,dst_ip,dst_port",
            ));
        }
        let proto = match f[0] {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return Err(at("expected proto tcp or udp")),
        };
        let src: IpAddr = f[1].parse().map_err(|_| at("bad src_ip"))?;
        let sport: u16 = f[2].parse().map_err(|_| at("bad src_port (0..=65535)"))?;
        let dst: IpAddr = f[3].parse().map_err(|_| at("bad dst_ip"))?;
        let dport: u16 = f[4].parse().map_err(|_| at("bad dst_port (0..=65535)"))?;
        if src.is_ipv6() != dst.is_ipv6() {
            return Err(at("src_ip and dst_ip of different address families"));
        }
        flows.push(Flow {
            key: FlowKey::new(proto, src, sport, dst, dport),
        });
    }
    Ok(flows)
}

fn parse_server(s: &str) -> Result<(IpAddr, u16), Fail> {
    let err = || Fail(format!("--remove {s:?}: expected IP:PORT or [IPV6]:PORT"));
    let (a, p) = if let Some(rest) = s.strip_prefix('[') {
        rest.split_once("]:").ok_or_else(err)?
    } else {
        s.rsplit_once(':').ok_or_else(err)?
    };
    Ok((a.parse().map_err(|_| err())?, p.parse().map_err(|_| err())?))
}

/// Client network for persistence: the address masked to the service's prefix length.
fn client_net(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix.min(32))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix.min(128))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Schedules every flow as a new, lasting connection; the real server of each, by address.
fn run(services: &mut Services, flows: &[Flow]) -> Vec<Option<(ServiceKey, IpAddr, u16)>> {
    let mut templates: HashMap<(ServiceKey, IpAddr, u16), DestId> = HashMap::new();
    let now = Instant::ZERO;
    flows
        .iter()
        .map(|f| {
            let k = f.key;
            let key = services.lookup(None, k.proto, k.dst, k.dport)?;
            let svc = services.get_mut(&key)?;
            let persistence = svc.options().persistence;
            let pool = svc.pool_mut();
            let id = match persistence {
                Some(p) => {
                    let ServiceKey::Addr { port, .. } = key else {
                        unreachable!("lookup without a mark finds address services")
                    };
                    let t = (
                        key,
                        client_net(k.src, p.prefix_len),
                        if port == 0 { 0 } else { k.dport },
                    );
                    match templates.get(&t) {
                        Some(&id) if pool.dests().get(id).is_some_and(|d| d.is_available()) => id,
                        _ => {
                            let id = pool.schedule(&k, now)?;
                            templates.insert(t, id);
                            id
                        }
                    }
                }
                None => pool.schedule(&k, now)?,
            };
            pool.bind(id, ConnKind::Inactive).ok()?;
            if k.proto == Protocol::Tcp {
                pool.set_active(id, true).ok()?;
            }
            let d = pool.dests().get(id)?;
            Some((key, d.addr(), d.port()))
        })
        .collect()
}

fn report(services: &Services, results: &[Option<(ServiceKey, IpAddr, u16)>], out: &mut String) {
    let mut per: BTreeMap<ServiceKey, BTreeMap<(IpAddr, u16), u64>> = BTreeMap::new();
    let mut none = 0u64;
    for r in results {
        match r {
            Some((k, a, p)) => *per.entry(*k).or_default().entry((*a, *p)).or_default() += 1,
            None => none += 1,
        }
    }
    for svc in services.iter() {
        let counts = per.get(&svc.key()).cloned().unwrap_or_default();
        let total: u64 = counts.values().sum();
        let wsum: u64 = svc
            .pool()
            .dests()
            .iter()
            .map(|(_, d)| d.weight() as u64)
            .sum();
        let _ = writeln!(
            out,
            "# service {} scheduler {}: {total} flows",
            svc.key(),
            svc.options().scheduler
        );
        let _ = writeln!(
            out,
            "#   {:<28} {:>6} {:>8} {:>8} {:>8} {:>8}",
            "real server", "weight", "flows", "share", "w-share", "ratio"
        );
        let (mut max, mut min) = (f64::MIN, f64::MAX);
        for (_, d) in svc.pool().dests().iter() {
            let n = counts.get(&(d.addr(), d.port())).copied().unwrap_or(0);
            let share = if total == 0 {
                0.0
            } else {
                n as f64 / total as f64
            };
            let wshare = if wsum == 0 {
                0.0
            } else {
                d.weight() as f64 / wsum as f64
            };
            let ratio = if wshare > 0.0 {
                share / wshare
            } else {
                f64::NAN
            };
            if wshare > 0.0 && total > 0 {
                max = max.max(ratio);
                min = min.min(ratio);
            }
            let _ = writeln!(
                out,
                "#   {:<28} {:>6} {:>8} {:>7.2}% {:>7.2}% {:>8.3}",
                SocketDisplay(d.addr(), d.port()).to_string(),
                d.weight(),
                n,
                share * 100.0,
                wshare * 100.0,
                ratio
            );
        }
        if max >= min {
            let _ = writeln!(
                out,
                "#   imbalance (flow share / weight share): max {max:.3}, min {min:.3}"
            );
        }
    }
    if none > 0 {
        let _ = writeln!(out, "# {none} flows had no real server (none)");
    }
}

fn removal_report(
    name: &str,
    rules: &[config::Rule],
    removed: &[(IpAddr, u16)],
    flows: &[Flow],
    before: &[Option<(ServiceKey, IpAddr, u16)>],
    out: &mut String,
) -> Result<(), Fail> {
    let base = build(name, rules, &[])?;
    let mut extra = Vec::new();
    for &(a, p) in removed {
        let mut found = false;
        for svc in base.iter() {
            if svc.pool().dests().find(a, p).is_some() {
                extra.push(Command::DeleteServer(svc.key(), a, p));
                found = true;
            }
        }
        if !found {
            return fail(format!(
                "--remove {}: no such real server in any service",
                SocketDisplay(a, p)
            ));
        }
    }
    let mut after_services = build(name, rules, &extra)?;
    let after = run(&mut after_services, flows);
    let mut moved = 0u64;
    let mut kept_total = 0u64;
    let mut kept_moved = 0u64;
    // Per service: (flows, moved, flows not on a removed server, of those moved).
    let mut per: BTreeMap<ServiceKey, [u64; 4]> = BTreeMap::new();
    for (b, a) in before.iter().zip(&after) {
        let changed = b.map(|x| (x.1, x.2)) != a.map(|x| (x.1, x.2));
        moved += changed as u64;
        let on_removed = b.is_some_and(|(_, ad, p)| removed.contains(&(ad, p)));
        if let Some((k, ..)) = b.or(*a) {
            let e = per.entry(k).or_default();
            e[0] += 1;
            e[1] += changed as u64;
            if !on_removed {
                e[2] += 1;
                e[3] += changed as u64;
            }
        }
        if !on_removed && b.is_some() {
            kept_total += 1;
            kept_moved += changed as u64;
        }
    }
    let total = flows.len().max(1) as f64;
    let list: Vec<String> = removed
        .iter()
        .map(|&(a, p)| SocketDisplay(a, p).to_string())
        .collect();
    let _ = writeln!(
        out,
        "# removing {}: {moved} of {} flows ({:.2}%) change real server",
        list.join(" "),
        flows.len(),
        moved as f64 * 100.0 / total
    );
    let _ = writeln!(
        out,
        "#   of the {kept_total} flows not on a removed server, {kept_moved} ({:.2}%) move",
        kept_moved as f64 * 100.0 / kept_total.max(1) as f64
    );
    for (k, [n, m, kt, km]) in per {
        let _ = writeln!(
            out,
            "#   service {k}: {m} of {n} flows ({:.2}%) move; {km} of the {kt} not on a removed server ({:.2}%)",
            m as f64 * 100.0 / n.max(1) as f64,
            km as f64 * 100.0 / kt.max(1) as f64
        );
    }
    Ok(())
}

fn demo_flows() -> Vec<Flow> {
    // A fixed pseudo-random client population (xorshift), so the demo prints the same thing
    // every time.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..6000)
        .map(|i| {
            let r = next();
            let src = IpAddr::V4(std::net::Ipv4Addr::new(
                198,
                18 + (r >> 56) as u8 % 2,
                (r >> 48) as u8,
                (r >> 40) as u8,
            ));
            let sport = 1024 + (r as u16 % 60000);
            let (proto, dport) = if i % 2 == 0 {
                (Protocol::Tcp, 80)
            } else {
                (Protocol::Udp, 53)
            };
            Flow {
                key: FlowKey::new(proto, src, sport, "10.0.0.1".parse().unwrap(), dport),
            }
        })
        .collect()
}

/// Runs the simulator on command-line `args`; the text to print, or an error message.
pub fn execute(args: Vec<String>) -> Result<String, String> {
    execute_inner(args).map_err(|Fail(m)| m)
}

fn execute_inner(args: Vec<String>) -> Result<String, Fail> {
    let mut out = String::new();
    if args.is_empty() {
        let rules = load_rules("<demo rules>", DEMO_RULES)?;
        let flows = demo_flows();
        let mut services = build("<demo rules>", &rules, &[])?;
        let results = run(&mut services, &flows);
        out.push_str("# lvs simulate: built-in demonstration (run with --help for usage)\n");
        out.push_str("# rules:\n");
        for line in DEMO_RULES.lines().filter(|l| !l.starts_with('#')) {
            let _ = writeln!(out, "#   {line}");
        }
        let _ = writeln!(out, "# first 8 of {} flows:", flows.len());
        for (f, r) in flows.iter().zip(&results).take(8) {
            let _ = writeln!(out, "{}", line_for(f, r));
        }
        report(&services, &results, &mut out);
        let removed = [
            ("192.168.1.2".parse().unwrap(), 53),
            ("192.168.1.2".parse().unwrap(), 80),
        ];
        removal_report("<demo rules>", &rules, &removed, &flows, &results, &mut out)?;
        return Ok(out);
    }
    let mut rules_path = None;
    let mut flows_path = None;
    let mut want_report = false;
    let mut removed = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rules" => rules_path = Some(it.next().ok_or(Fail("--rules needs a FILE".into()))?),
            "--flows" => flows_path = Some(it.next().ok_or(Fail("--flows needs a FILE".into()))?),
            "--report" => want_report = true,
            "--remove" => {
                let s = it.next().ok_or(Fail("--remove needs IP:PORT".into()))?;
                removed.push(parse_server(&s)?);
            }
            "-h" | "--help" => {
                return Ok("usage: simulate --rules FILE --flows FILE [--report] [--remove IP:PORT]...\n       simulate   (built-in demonstration)\n".into());
            }
            other => return fail(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let rules_path = rules_path.ok_or(Fail("missing --rules FILE".into()))?;
    let flows_path = flows_path.ok_or(Fail("missing --flows FILE".into()))?;
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| Fail(format!("{p}: {e}")));
    let rules = load_rules(&rules_path, &read(&rules_path)?)?;
    let flows = parse_flows(&flows_path, &read(&flows_path)?)?;
    let mut services = build(&rules_path, &rules, &[])?;
    let results = run(&mut services, &flows);
    for (f, r) in flows.iter().zip(&results) {
        let _ = writeln!(out, "{}", line_for(f, r));
    }
    if want_report {
        report(&services, &results, &mut out);
    }
    if !removed.is_empty() {
        removal_report(&rules_path, &rules, &removed, &flows, &results, &mut out)?;
    }
    Ok(out)
}

fn line_for(f: &Flow, r: &Option<(ServiceKey, IpAddr, u16)>) -> String {
    let client = SocketDisplay(f.key.src, f.key.sport);
    match r {
        Some((_, a, p)) => format!("{client},{}", SocketDisplay(*a, *p)),
        None => format!("{client},none"),
    }
}

#[allow(dead_code)] // the integration test includes this file as a module
fn main() -> ExitCode {
    match execute(std::env::args().skip(1).collect()) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("simulate: {msg}");
            ExitCode::from(2)
        }
    }
}
