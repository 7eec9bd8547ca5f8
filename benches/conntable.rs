//! Connection-table benchmarks at 100 000, 1 000 000 and 10 000 000 entries: hit and miss
//! lookups, batched lookups, state updates (one packet), insert, and insert-plus-expire churn.
//! Each group holds, as baselines, `std::collections::HashMap` (SipHash) and
//! `hashbrown::HashMap` with ahash keyed by the same `FlowKey`s and holding a value with the
//! same information (real server, state, expiry, counters).
//!
//! Keys are random IPv4 clients to one VIP, looked up in a random order, so at 1M and 10M
//! entries nearly every lookup misses the CPU caches, as in a director.
//!
//! `cargo bench --bench conntable` (all sizes; `LVS_BENCH_SIZES=100000,1000000` to choose).

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lvs::conn::{ConnConfig, ConnFlags, ConnId, ConnTable, Direction, NewConn, Segment, TcpFlags};
use lvs::dest::ForwardMethod;
use lvs::flow::{FlowKey, Protocol};
use lvs::time::Instant;

const BATCH: usize = 32;

/// What the baselines store per connection: what a user would put in a map value.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
struct Val {
    daddr: IpAddr,
    dport: u16,
    dest: u32,
    state: u8,
    flags: u16,
    deadline: u64,
    in_pkts: u32,
    in_bytes: u64,
}

type Ahash = hashbrown::HashMap<FlowKey, Val, ahash::RandomState>;

fn keys(n: usize, seed: u64) -> Vec<FlowKey> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n);
    let vip = IpAddr::from([10, 0, 0, 1]);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let a = (x >> 16) as u32;
        out.push(FlowKey::new(
            Protocol::Tcp,
            IpAddr::from(a.to_be_bytes()),
            (x as u16) | 1024,
            vip,
            80,
        ));
    }
    out.sort_unstable();
    out.dedup();
    // Random order again.
    let mut y = seed ^ 0x5555;
    for i in (1..out.len()).rev() {
        y ^= y << 13;
        y ^= y >> 7;
        y ^= y << 17;
        out.swap(i, (y % (i as u64 + 1)) as usize);
    }
    out
}

fn new_conn(k: &FlowKey) -> NewConn {
    NewConn {
        key: *k,
        daddr: IpAddr::from([192, 168, 1, 1]),
        dport: 80,
        dest: None,
        flags: ConnFlags::for_method(ForwardMethod::Nat),
        template: None,
    }
}

fn val() -> Val {
    Val {
        daddr: IpAddr::from([192, 168, 1, 1]),
        dport: 80,
        dest: 0,
        state: 1,
        flags: 0,
        deadline: 0,
        in_pkts: 0,
        in_bytes: 0,
    }
}

struct Setup {
    keys: Vec<FlowKey>,
    misses: Vec<FlowKey>,
    table: ConnTable,
    std: HashMap<FlowKey, Val>,
    ahash: Ahash,
    now: Instant,
}

fn setup(n: usize) -> Setup {
    let mut ks = keys(n + n / 4 + 64, 0x1234_5678 ^ n as u64);
    let misses = ks.split_off(n);
    let now = Instant::from_secs(100);
    let cfg = ConnConfig {
        capacity_v4: n as u32 + 1024,
        capacity_v6: 1024,
        ..ConnConfig::default()
    };
    let mut table = ConnTable::new(cfg, now);
    let mut std = HashMap::new();
    let mut ahash = Ahash::with_hasher(ahash::RandomState::with_seeds(1, 2, 3, 4));
    for k in &ks {
        let id = table.insert(&mut (), &new_conn(k), now).unwrap();
        // ESTABLISHED: 900 s, so nothing expires during the run.
        table
            .packet(
                &mut (),
                id,
                Direction::Input,
                Segment::Tcp(TcpFlags::SYN),
                60,
                now,
            )
            .unwrap();
        table
            .packet(
                &mut (),
                id,
                Direction::Input,
                Segment::Tcp(TcpFlags::ACK),
                60,
                now,
            )
            .unwrap();
        std.insert(*k, val());
        ahash.insert(*k, val());
    }
    // Look up in another random order than the one of insertion: entries are allocated in
    // insertion order, so replaying it would read the table's memory sequentially.
    let mut y = 0x9e37_79b9_7f4a_7c15u64 ^ n as u64;
    for i in (1..ks.len()).rev() {
        y ^= y << 13;
        y ^= y >> 7;
        y ^= y << 17;
        ks.swap(i, (y % (i as u64 + 1)) as usize);
    }
    Setup {
        keys: ks,
        misses,
        table,
        std,
        ahash,
        now,
    }
}

fn sizes() -> Vec<usize> {
    std::env::var("LVS_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000, 10_000_000])
}

fn lookups(c: &mut Criterion) {
    for n in sizes() {
        let s = setup(n);
        println!(
            "{n} entries: {:.1} bytes per IPv4 entry (index and wheel included)",
            s.table.memory().v4_bytes_per_entry()
        );
        for (name, keys) in [("hit", &s.keys), ("miss", &s.misses)] {
            let mut g = c.benchmark_group(format!("conntable/{name}/{n}"));
            g.throughput(Throughput::Elements(BATCH as u64));
            let chunks = keys.len() / BATCH;
            let mut i = 0;
            g.bench_function("lvs", |b| {
                b.iter(|| {
                    i = (i + 1) % chunks;
                    let mut acc = 0usize;
                    for k in &keys[i * BATCH..(i + 1) * BATCH] {
                        acc += s.table.lookup_in(black_box(k), s.now).is_some() as usize;
                    }
                    acc
                })
            });
            if name == "hit" {
                let mut out = [None::<ConnId>; BATCH];
                g.bench_function("lvs batch", |b| {
                    b.iter(|| {
                        i = (i + 1) % chunks;
                        s.table.lookup_in_batch(
                            black_box(&keys[i * BATCH..(i + 1) * BATCH]),
                            s.now,
                            &mut out,
                        );
                        out.iter().filter(|o| o.is_some()).count()
                    })
                });
            }
            g.bench_function("hashbrown+ahash", |b| {
                b.iter(|| {
                    i = (i + 1) % chunks;
                    let mut acc = 0usize;
                    for k in &keys[i * BATCH..(i + 1) * BATCH] {
                        acc += s.ahash.contains_key(black_box(k)) as usize;
                    }
                    acc
                })
            });
            g.bench_function("std HashMap", |b| {
                b.iter(|| {
                    i = (i + 1) % chunks;
                    let mut acc = 0usize;
                    for k in &keys[i * BATCH..(i + 1) * BATCH] {
                        acc += s.std.contains_key(black_box(k)) as usize;
                    }
                    acc
                })
            });
            g.finish();
        }
        updates(c, n, s);
    }
}

/// One packet of an established connection: find it, count it, re-arm its expiry.
fn updates(c: &mut Criterion, n: usize, mut s: Setup) {
    let mut g = c.benchmark_group(format!("conntable/state/{n}"));
    g.throughput(Throughput::Elements(BATCH as u64));
    let chunks = s.keys.len() / BATCH;
    let mut i = 0;
    let mut now = s.now;
    g.bench_function("lvs", |b| {
        b.iter(|| {
            i = (i + 1) % chunks;
            now += Duration::from_micros(1);
            for k in &s.keys[i * BATCH..(i + 1) * BATCH] {
                if let Some(id) = s.table.lookup_in(k, now) {
                    let _ = s.table.packet(
                        &mut (),
                        id,
                        Direction::Input,
                        Segment::Tcp(TcpFlags::ACK),
                        1500,
                        now,
                    );
                }
            }
        })
    });
    let t = now.as_nanos();
    g.bench_function("hashbrown+ahash", |b| {
        b.iter(|| {
            i = (i + 1) % chunks;
            for k in &s.keys[i * BATCH..(i + 1) * BATCH] {
                if let Some(v) = s.ahash.get_mut(k) {
                    v.in_pkts += 1;
                    v.in_bytes += 1500;
                    v.deadline = t + 900_000_000_000;
                }
            }
        })
    });
    g.bench_function("std HashMap", |b| {
        b.iter(|| {
            i = (i + 1) % chunks;
            for k in &s.keys[i * BATCH..(i + 1) * BATCH] {
                if let Some(v) = s.std.get_mut(k) {
                    v.in_pkts += 1;
                    v.in_bytes += 1500;
                    v.deadline = t + 900_000_000_000;
                }
            }
        })
    });
    g.finish();
}

/// Steady state at `n` live connections: each new connection inserted, and as many old ones
/// expired, per element. The table expires through its timer wheel (`expire` every
/// iteration); the maps remove the oldest key from a FIFO, the cheapest expiry a map allows
/// (it only works because every entry here has the same timeout).
fn churn(c: &mut Criterion) {
    for n in sizes() {
        let mut g = c.benchmark_group(format!("conntable/churn/{n}"));
        g.throughput(Throughput::Elements(BATCH as u64));
        let fresh = keys(n * 3, 0xabcdef ^ n as u64);
        // Lifetime 3 s (a connection that never sees its first packet): n live connections
        // means one new connection every 3 s / n.
        let step = Duration::from_nanos(3_000_000_000 / n as u64);
        {
            let cfg = ConnConfig {
                capacity_v4: n as u32 + n as u32 / 8 + 4096,
                capacity_v6: 1024,
                ..ConnConfig::default()
            };
            let mut now = Instant::from_secs(10);
            let mut table = ConnTable::new(cfg, now);
            let mut i = 0usize;
            for k in fresh.iter().take(n) {
                let _ = table.insert(&mut (), &new_conn(k), now);
                now += step;
                table.expire(&mut (), now, 1 << 20);
                i += 1;
            }
            g.bench_function("lvs", |b| {
                b.iter(|| {
                    for _ in 0..BATCH {
                        i = (i + 1) % fresh.len();
                        now += step;
                        let _ = table.insert(&mut (), &new_conn(&fresh[i]), now);
                        table.expire(&mut (), now, 1 << 20);
                    }
                })
            });
            println!("churn {n}: {} live, {:?}", table.len(), table.stats());
        }
        {
            let mut map = Ahash::with_hasher(ahash::RandomState::with_seeds(1, 2, 3, 4));
            let mut fifo = VecDeque::new();
            let mut i = 0usize;
            for k in fresh.iter().take(n) {
                map.insert(*k, val());
                fifo.push_back(*k);
                i += 1;
            }
            g.bench_function("hashbrown+ahash", |b| {
                b.iter(|| {
                    for _ in 0..BATCH {
                        i = (i + 1) % fresh.len();
                        if map.insert(fresh[i], val()).is_none() {
                            fifo.push_back(fresh[i]);
                        }
                        if let Some(old) = fifo.pop_front() {
                            map.remove(&old);
                        }
                    }
                })
            });
        }
        {
            let mut map = HashMap::new();
            let mut fifo = VecDeque::new();
            let mut i = 0usize;
            for k in fresh.iter().take(n) {
                map.insert(*k, val());
                fifo.push_back(*k);
                i += 1;
            }
            g.bench_function("std HashMap", |b| {
                b.iter(|| {
                    for _ in 0..BATCH {
                        i = (i + 1) % fresh.len();
                        if map.insert(fresh[i], val()).is_none() {
                            fifo.push_back(fresh[i]);
                        }
                        if let Some(old) = fifo.pop_front() {
                            map.remove(&old);
                        }
                    }
                })
            });
        }
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = lookups, churn
}
criterion_main!(benches);
