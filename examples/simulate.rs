//! Which real server will each client land on, and what moves if I drain this one?
//!
//! ```text
//! cargo run --release --example simulate -- --rules FILE --flows FILE [--report] [--remove IP:PORT]... [--svg FILE]
//! cargo run --release --example simulate          # a built-in demonstration
//! cargo run --release --example simulate -- --svg docs/simulate.svg   # every scheduler, as a picture
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
//! - `--svg FILE`: compares every scheduler (IPVS's fourteen and this crate's `maglev`) on the
//!   first TCP or UDP virtual service of the rules: the rules are replayed once per scheduler
//!   with only that service's `-s` replaced (its `-b` flags, persistence and real servers kept),
//!   over the same flows. The picture has two panels: each real server's share of the service's
//!   flows divided by its share of the weight (1.0 = exactly its weight's share), and the
//!   fraction of the service's flows whose real server changes when the `--remove` servers are
//!   removed, split into the flows that were on a removed server (they must move: the minimum)
//!   and the others that moved anyway. Without `--remove`, the real server with the highest
//!   weight is removed (of several, the one added first in the rules). The same numbers are
//!   printed as `#` lines. The output is deterministic (`twos` draws from the crate's fixed
//!   default seed), so the same input writes a byte-identical file.
//! - With `--svg` but no `--rules`/`--flows`, the input is a larger built-in case instead of
//!   the text demonstration's: one HTTPS service `-t 203.0.113.10:443` with ten real servers
//!   (one of weight 200, five of 100, four of 50) and 100 000 TCP clients from a few thousand
//!   /24 networks (a fixed pseudo-random population). Only the comparison is printed, not the
//!   100 000 CSV lines; `--report` and `--remove` work as with files. `docs/simulate.svg` is
//!   exactly `cargo run --release --example simulate -- --svg docs/simulate.svg`, and a test
//!   keeps it so.
//!
//! Bad input, or an SVG file that cannot be written, gets a message naming the file (and line
//! and problem) and exit code 2.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;

use lvs::config::{self, Command, ServiceKey};
use lvs::dest::{ConnKind, DestId};
use lvs::flow::{FlowKey, Protocol, SocketDisplay};
use lvs::sched::{SchedConfig, SchedulerKind};
use lvs::service::{Services, VirtualService};
use lvs::time::Instant;

#[path = "simulate/svg.rs"]
mod svg;

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

/// The `--svg` demonstration's service: one large, five medium and four small real servers.
const SVG_DEMO_RULES: &str = "\
# One HTTPS service, ten real servers: one of weight 200, five of 100, four of 50.
-A -t 203.0.113.10:443 -s wlc
-a -t 203.0.113.10:443 -r 10.1.0.1:443 -m -w 200
-a -t 203.0.113.10:443 -r 10.1.0.2:443 -m -w 100
-a -t 203.0.113.10:443 -r 10.1.0.3:443 -m -w 100
-a -t 203.0.113.10:443 -r 10.1.0.4:443 -m -w 100
-a -t 203.0.113.10:443 -r 10.1.0.5:443 -m -w 100
-a -t 203.0.113.10:443 -r 10.1.0.6:443 -m -w 100
-a -t 203.0.113.10:443 -r 10.1.0.7:443 -m -w 50
-a -t 203.0.113.10:443 -r 10.1.0.8:443 -m -w 50
-a -t 203.0.113.10:443 -r 10.1.0.9:443 -m -w 50
-a -t 203.0.113.10:443 -r 10.1.0.10:443 -m -w 50
";

/// Clients of the `--svg` demonstration.
const SVG_DEMO_FLOWS: usize = 100_000;

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

/// Flows per real server.
type Counts = BTreeMap<(IpAddr, u16), u64>;

/// One real server's share of its service's flows against its share of the weight.
struct Share {
    addr: IpAddr,
    port: u16,
    weight: u32,
    flows: u64,
    share: f64,
    wshare: f64,
    /// `share / wshare`; NaN for a server without weight share.
    ratio: f64,
}

/// Each real server of `svc` (IPVS list order) with its share of `counts`; the service's flows.
fn shares(svc: &VirtualService, counts: &Counts) -> (u64, Vec<Share>) {
    let total: u64 = counts.values().sum();
    let wsum: u64 = svc
        .pool()
        .dests()
        .iter()
        .map(|(_, d)| d.weight() as u64)
        .sum();
    let rows = svc
        .pool()
        .dests()
        .iter()
        .map(|(_, d)| {
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
            Share {
                addr: d.addr(),
                port: d.port(),
                weight: d.weight(),
                flows: n,
                share,
                wshare,
                ratio,
            }
        })
        .collect();
    (total, rows)
}

/// The largest and smallest ratio of servers with weight, if the service had flows.
fn imbalance(total: u64, rows: &[Share]) -> Option<(f64, f64)> {
    let (mut max, mut min) = (f64::MIN, f64::MAX);
    for r in rows {
        if r.wshare > 0.0 && total > 0 {
            max = max.max(r.ratio);
            min = min.min(r.ratio);
        }
    }
    (max >= min).then_some((max, min))
}

/// Flows per service and real server.
fn count(results: &[Option<(ServiceKey, IpAddr, u16)>]) -> (BTreeMap<ServiceKey, Counts>, u64) {
    let mut per: BTreeMap<ServiceKey, Counts> = BTreeMap::new();
    let mut none = 0u64;
    for r in results {
        match r {
            Some((k, a, p)) => *per.entry(*k).or_default().entry((*a, *p)).or_default() += 1,
            None => none += 1,
        }
    }
    (per, none)
}

fn report(services: &Services, results: &[Option<(ServiceKey, IpAddr, u16)>], out: &mut String) {
    let (per, none) = count(results);
    for svc in services.iter() {
        let counts = per.get(&svc.key()).cloned().unwrap_or_default();
        let (total, rows) = shares(svc, &counts);
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
        for r in &rows {
            let _ = writeln!(
                out,
                "#   {:<28} {:>6} {:>8} {:>7.2}% {:>7.2}% {:>8.3}",
                SocketDisplay(r.addr, r.port).to_string(),
                r.weight,
                r.flows,
                r.share * 100.0,
                r.wshare * 100.0,
                r.ratio
            );
        }
        if let Some((max, min)) = imbalance(total, &rows) {
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

/// The `-d` commands that remove `removed` from every service that has them.
fn removal_commands(base: &Services, removed: &[(IpAddr, u16)]) -> Result<Vec<Command>, Fail> {
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
    Ok(extra)
}

/// Per service: `[flows, moved, flows not on a removed server, of those moved]`.
fn moved_counts(
    removed: &[(IpAddr, u16)],
    before: &[Option<(ServiceKey, IpAddr, u16)>],
    after: &[Option<(ServiceKey, IpAddr, u16)>],
) -> BTreeMap<ServiceKey, [u64; 4]> {
    let mut per: BTreeMap<ServiceKey, [u64; 4]> = BTreeMap::new();
    for (b, a) in before.iter().zip(after) {
        let changed = b.map(|x| (x.1, x.2)) != a.map(|x| (x.1, x.2));
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
    }
    per
}

fn removal_report(
    name: &str,
    rules: &[config::Rule],
    removed: &[(IpAddr, u16)],
    flows: &[Flow],
    before: &[Option<(ServiceKey, IpAddr, u16)>],
    out: &mut String,
) -> Result<(), Fail> {
    let extra = removal_commands(&build(name, rules, &[])?, removed)?;
    let mut after_services = build(name, rules, &extra)?;
    let after = run(&mut after_services, flows);
    let mut moved = 0u64;
    let mut kept_total = 0u64;
    let mut kept_moved = 0u64;
    let per = moved_counts(removed, before, &after);
    for (b, a) in before.iter().zip(&after) {
        let changed = b.map(|x| (x.1, x.2)) != a.map(|x| (x.1, x.2));
        moved += changed as u64;
        let on_removed = b.is_some_and(|(_, ad, p)| removed.contains(&(ad, p)));
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

/// One scheduler's results on the compared service.
struct SchedRun {
    kind: SchedulerKind,
    /// The service's flows that got a real server.
    total: u64,
    /// Its real servers, IPVS list order.
    rows: Vec<Share>,
    /// The service's `[flows, moved, not on a removed server, of those moved]`.
    moved: [u64; 4],
}

/// Every scheduler on one service (`--svg`).
struct Comparison {
    key: ServiceKey,
    /// Flows addressed to the service.
    offered: u64,
    /// The removed real servers, and whether they were picked (no `--remove`).
    removed: Vec<(IpAddr, u16)>,
    picked: bool,
    runs: Vec<SchedRun>,
}

/// The first TCP or UDP virtual service the rules add that is still there after them.
fn first_service(rules: &[config::Rule], services: &Services) -> Option<ServiceKey> {
    rules.iter().find_map(|r| match r.command {
        Command::AddService(
            k @ ServiceKey::Addr {
                proto: Protocol::Tcp | Protocol::Udp,
                ..
            },
            _,
        ) if services.get(&k).is_some() => Some(k),
        _ => None,
    })
}

/// The rules with every `-A` and `-E` of `key` scheduled by `kind` instead.
fn with_scheduler(
    rules: &[config::Rule],
    key: ServiceKey,
    kind: SchedulerKind,
) -> Vec<config::Rule> {
    rules
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if let Command::AddService(k, o) | Command::EditService(k, o) = &mut r.command
                && *k == key
            {
                o.scheduler = kind;
            }
            r
        })
        .collect()
}

/// Runs `flows` through the first TCP/UDP service of `rules` under every scheduler, with and
/// without the `removed` real servers (without `--remove`: the highest weight one of that
/// service, the last in IPVS list order, i.e. the first added, among equals).
fn compare(
    name: &str,
    rules: &[config::Rule],
    flows: &[Flow],
    removed: &[(IpAddr, u16)],
) -> Result<Comparison, Fail> {
    let base = build(name, rules, &[])?;
    let key = first_service(rules, &base)
        .ok_or_else(|| Fail(format!("--svg: {name} has no TCP or UDP virtual service")))?;
    let svc = base
        .get(&key)
        .ok_or_else(|| Fail(format!("--svg: service {key} vanished")))?;
    let picked = removed.is_empty();
    let removed = if picked {
        let mut best: Option<(u32, IpAddr, u16)> = None;
        for (_, d) in svc
            .pool()
            .dests()
            .iter()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if best.is_none_or(|(w, ..)| d.weight() > w) {
                best = Some((d.weight(), d.addr(), d.port()));
            }
        }
        let (_, a, p) =
            best.ok_or_else(|| Fail(format!("--svg: service {key} has no real servers")))?;
        vec![(a, p)]
    } else {
        removed.to_vec()
    };
    let extra = removal_commands(&base, &removed)?;
    let offered = flows
        .iter()
        .filter(|f| base.lookup(None, f.key.proto, f.key.dst, f.key.dport) == Some(key))
        .count() as u64;
    let mut runs = Vec::new();
    for kind in SchedulerKind::ALL {
        let rules = with_scheduler(rules, key, kind);
        let with = |r: Result<Services, Fail>| {
            r.map_err(|Fail(m)| Fail(format!("--svg, scheduler {kind}: {m}")))
        };
        let mut before_services = with(build(name, &rules, &[]))?;
        let before = run(&mut before_services, flows);
        let mut after_services = with(build(name, &rules, &extra))?;
        let after = run(&mut after_services, flows);
        let counts = count(&before).0.remove(&key).unwrap_or_default();
        let svc = before_services
            .get(&key)
            .ok_or_else(|| Fail(format!("--svg: service {key} vanished")))?;
        let (total, rows) = shares(svc, &counts);
        let moved = moved_counts(&removed, &before, &after)
            .remove(&key)
            .unwrap_or_default();
        runs.push(SchedRun {
            kind,
            total,
            rows,
            moved,
        });
    }
    Ok(Comparison {
        key,
        offered,
        removed,
        picked,
        runs,
    })
}

fn percent(n: u64, of: u64) -> f64 {
    n as f64 * 100.0 / of.max(1) as f64
}

/// The weight of a real server of the compared service, if it is one.
fn weight_of(c: &Comparison, (a, p): (IpAddr, u16)) -> Option<u32> {
    c.runs
        .first()?
        .rows
        .iter()
        .find(|r| (r.addr, r.port) == (a, p))
        .map(|r| r.weight)
}

fn removed_text(c: &Comparison) -> String {
    let list: Vec<String> = c
        .removed
        .iter()
        .map(|&(a, p)| match weight_of(c, (a, p)) {
            Some(w) => format!("{} (weight {w})", SocketDisplay(a, p)),
            None => format!("{} (not in this service)", SocketDisplay(a, p)),
        })
        .collect();
    list.join(", ")
}

/// The comparison as `#` lines: the numbers the picture shows.
fn comparison_text(c: &Comparison, path: &str, out: &mut String) {
    let servers = c.runs.first().map_or(0, |r| r.rows.len());
    let _ = writeln!(
        out,
        "# --svg {path}: service {}, {servers} real servers, every scheduler in turn",
        c.key
    );
    let _ = writeln!(
        out,
        "#   moved: flows of the service whose real server changes when removing {}{}",
        removed_text(c),
        if c.picked {
            ", picked as the highest weight (no --remove)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "#   must move: those that were on a removed server; ratio: flow share / weight share"
    );
    let _ = writeln!(
        out,
        "#   {:<9} {:>8} {:>9} {:>9} {:>8} {:>9}",
        "scheduler", "flows", "max ratio", "min ratio", "moved", "must move"
    );
    for r in &c.runs {
        let [n, m, kept, _] = r.moved;
        let (max, min) = imbalance(r.total, &r.rows).unwrap_or((f64::NAN, f64::NAN));
        let _ = writeln!(
            out,
            "#   {:<9} {:>8} {:>9.3} {:>9.3} {:>7.2}% {:>8.2}%",
            r.kind.name(),
            r.total,
            max,
            min,
            percent(m, n),
            percent(n - kept, n)
        );
    }
}

/// What would puzzle a reader of the picture.
fn comparison_notes(c: &Comparison) -> Vec<String> {
    let mut notes = vec![
        "dh, lblc and lblcr choose by destination address, the same for every flow of a virtual \
         service: they are meant for cache farms (IPVS semantics)."
            .to_string(),
    ];
    let buckets = 1u64 << SchedConfig::default().sh_table_bits;
    let wsum: u64 = c
        .runs
        .first()
        .map_or(0, |r| r.rows.iter().map(|s| s.weight as u64).sum::<u64>());
    if wsum > buckets {
        notes.push(format!(
            "sh deals its {buckets} buckets weight by weight in IPVS list order, and these weights \
             add up to {wsum}: the servers at the end of the list get none (as in the kernel)."
        ));
    }
    for r in &c.runs {
        if r.total < c.offered {
            let why = if r.kind == SchedulerKind::Ovf {
                " (ovf refuses a connection when every server has more active ones than its weight)"
            } else {
                ""
            };
            notes.push(format!(
                "{}: only {} of the {} flows got a real server{why}; its ratios are of those.",
                r.kind, r.total, c.offered
            ));
        }
    }
    notes
}

/// The picture of the comparison.
fn comparison_svg(c: &Comparison) -> Result<String, Fail> {
    // Real servers in the order the rules add them (the reverse of IPVS list order).
    let servers: Vec<(IpAddr, u16, u32)> = c
        .runs
        .first()
        .map(|r| {
            r.rows
                .iter()
                .rev()
                .map(|s| (s.addr, s.port, s.weight))
                .collect()
        })
        .unwrap_or_default();
    let flows = c.runs.iter().map(|r| r.moved[0]).max().unwrap_or(0);
    let picture = svg::Picture {
        title: format!(
            "Every scheduler on {}: {} real servers, {flows} new flows",
            c.key,
            servers.len()
        ),
        servers: servers
            .iter()
            .map(|&(_, _, weight)| svg::Server { weight })
            .collect(),
        rows: c
            .runs
            .iter()
            .map(|r| {
                let [n, m, kept, _] = r.moved;
                svg::Row {
                    name: r.kind.name(),
                    ratios: servers
                        .iter()
                        .map(|&(a, p, _)| {
                            r.rows
                                .iter()
                                .find(|s| (s.addr, s.port) == (a, p))
                                .map(|s| s.ratio)
                                .filter(|x| x.is_finite() && r.total > 0)
                        })
                        .collect(),
                    moved: percent(m, n),
                    must: percent(n - kept, n),
                }
            })
            .collect(),
        removed: removed_text(c),
        notes: comparison_notes(c),
    };
    svg::render(&picture).map_err(|e| Fail(format!("--svg: drawing failed: {e}")))
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

/// The `--svg` demonstration's clients: [`SVG_DEMO_FLOWS`] TCP connections to the VIP's port
/// 443 from 4000 /24 networks spread over the unicast IPv4 space (a fixed pseudo-random
/// population, about 25 connections per network, some clients more than once), ephemeral
/// source ports as Linux picks them (32768..61000).
fn svg_demo_flows() -> Vec<Flow> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let nets: Vec<u32> = (0..4000)
        .map(|_| {
            let r = next();
            let mut first = 1 + ((r >> 56) % 223) as u32;
            if first == 10 || first == 127 {
                first += 1;
            }
            (first << 24) | ((r >> 24) as u32 & 0x00ff_ff00)
        })
        .collect();
    let vip: IpAddr = "203.0.113.10".parse().unwrap();
    (0..SVG_DEMO_FLOWS)
        .map(|_| {
            let r = next();
            let net = nets[(r % nets.len() as u64) as usize];
            let host = 1 + ((r >> 16) % 254) as u32;
            let sport = 32768 + ((r >> 32) % 28232) as u16;
            let src = IpAddr::V4((net | host).into());
            Flow {
                key: FlowKey::new(Protocol::Tcp, src, sport, vip, 443),
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
    let mut svg_path = None;
    let mut want_report = false;
    let mut removed = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rules" => rules_path = Some(it.next().ok_or(Fail("--rules needs a FILE".into()))?),
            "--flows" => flows_path = Some(it.next().ok_or(Fail("--flows needs a FILE".into()))?),
            "--svg" => svg_path = Some(it.next().ok_or(Fail("--svg needs a FILE".into()))?),
            "--report" => want_report = true,
            "--remove" => {
                let s = it.next().ok_or(Fail("--remove needs IP:PORT".into()))?;
                removed.push(parse_server(&s)?);
            }
            "-h" | "--help" => {
                return Ok(USAGE.into());
            }
            other => return fail(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let demo = svg_path.is_some() && rules_path.is_none() && flows_path.is_none();
    let (rules_name, rules, flows) = if demo {
        let name = "<svg demo rules>".to_string();
        let rules = load_rules(&name, SVG_DEMO_RULES)?;
        (name, rules, svg_demo_flows())
    } else {
        let rules_path = rules_path.ok_or(Fail("missing --rules FILE".into()))?;
        let flows_path = flows_path.ok_or(Fail("missing --flows FILE".into()))?;
        let read = |p: &str| std::fs::read_to_string(p).map_err(|e| Fail(format!("{p}: {e}")));
        let rules = load_rules(&rules_path, &read(&rules_path)?)?;
        let flows = parse_flows(&flows_path, &read(&flows_path)?)?;
        (rules_path, rules, flows)
    };
    let mut services = build(&rules_name, &rules, &[])?;
    let results = run(&mut services, &flows);
    if demo {
        let _ = writeln!(
            out,
            "# lvs simulate: --svg demonstration, {} flows (run with --help for usage)",
            flows.len()
        );
        out.push_str("# rules:\n");
        for line in SVG_DEMO_RULES.lines().filter(|l| !l.starts_with('#')) {
            let _ = writeln!(out, "#   {line}");
        }
    } else {
        for (f, r) in flows.iter().zip(&results) {
            let _ = writeln!(out, "{}", line_for(f, r));
        }
    }
    if want_report {
        report(&services, &results, &mut out);
    }
    if !removed.is_empty() {
        removal_report(&rules_name, &rules, &removed, &flows, &results, &mut out)?;
    }
    if let Some(path) = svg_path {
        let c = compare(&rules_name, &rules, &flows, &removed)?;
        let picture = comparison_svg(&c)?;
        std::fs::write(&path, picture).map_err(|e| Fail(format!("{path}: {e}")))?;
        comparison_text(&c, &path, &mut out);
    }
    Ok(out)
}

const USAGE: &str = "\
usage: simulate --rules FILE --flows FILE [--report] [--remove IP:PORT]... [--svg FILE]
       simulate                  built-in demonstration (text)
       simulate --svg FILE [--report] [--remove IP:PORT]...
                                 built-in --svg case: -t 203.0.113.10:443, ten real servers
                                 (weights 200, 5 x 100, 4 x 50), 100000 TCP clients
  --rules FILE       ipvsadm commands (-A, -a, -E, -e, -d, ...), as ipvsadm-restore applies them
  --flows FILE       CSV proto,src_ip,src_port,dst_ip,dst_port; each flow is a new connection
                     that stays open
  --report           each real server's share of the flows against its share of the weight
  --remove IP:PORT   replay without this real server (repeatable); report the flows that move
  --svg FILE         write an SVG comparing every scheduler on the first TCP/UDP service of the
                     rules (only its -s replaced): flow share / weight share per real server, and
                     the flows that move when the --remove servers (default: the highest weight
                     one) are removed; the numbers are printed as # lines
";

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
