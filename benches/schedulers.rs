//! Scheduler benchmarks.
//!
//! - `pick`: every scheduler of [`SchedulerKind::ALL`] at N = 10, 100, 1000, 10000 destinations,
//!   each element one new connection scheduled and bound as inactive (`Pool::schedule_new`), as
//!   a director accounts it. Baseline `wlc_linear_scan`: the IPVS O(n) wlc loop over the same
//!   list, binding through a pool whose scheduler (`rr`) indexes no load.
//! - `table_build`: `mh` (M = 4093, the kernel default, and M = 65521, the largest kernel prime
//!   below 65537) and `maglev` (M = 65537) table builds at N = 10, 100, 1000, against the
//!   `maglev` crate 0.2.1 with capacity 65537.
//! - `lookup`: `maglev` (with the availability check, and `maglev_owner` without it) and `mh`
//!   (M = 4093) table lookups per flow at N = 100, 1000, against the `maglev` crate's `get`.
//!   Results are summed and the sum goes through `black_box` once per batch, so independent
//!   lookups overlap as in a dataplane burst; the flow keys (4096, cycled) stay in cache as a
//!   just-parsed burst's do.
//!
//! Destinations are 10.0.x.y:80 with weights in 1..=100 derived from their index; flows come
//! from a seeded xoshiro256++ (TCP, random client address and port, one of 256 virtual
//! addresses 10.200.0.k:80 so `lblc`/`lblcr` see several cache entries).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use lvs::dest::{ConnKind, DestConfig};
use lvs::flow::{FlowKey, Protocol};
use lvs::sched::{
    MaglevKey, MaglevTable, MhTable, MhTableSize, Pool, SchedConfig, SchedFlags, SchedulerKind,
    by_name,
};
use lvs::time::Instant;
use maglev::ConsistentHasher;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};

/// Flows scheduled per timed iteration.
const BATCH: usize = 1024;
/// Pre-generated flows; iterations walk through them a batch at a time.
const FLOWS: usize = 64 * BATCH;
/// Distinct virtual (destination) addresses among the flows.
const VIPS: u64 = 256;
const PICK_SIZES: [usize; 4] = [10, 100, 1000, 10_000];
const BUILD_SIZES: [usize; 3] = [10, 100, 1000];
const LOOKUP_SIZES: [usize; 2] = [100, 1000];
const MAGLEV_M: u32 = 65_537;
/// The largest `mh` table size the kernel offers below 65537 (`CONFIG_IP_VS_MH_TAB_INDEX` 16).
const MH_BIG_M: u32 = 65_521;
const NOW: Instant = Instant::from_secs(1);

fn dest_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32 + 1 + i as u32)
}

/// A weight in 1..=100, fixed per index.
fn dest_weight(i: usize) -> u32 {
    let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    1 + ((h >> 32) % 100) as u32
}

fn dest_configs(n: usize) -> Vec<DestConfig> {
    (0..n)
        .map(|i| DestConfig::new(IpAddr::V4(dest_addr(i)), 80).weight(dest_weight(i)))
        .collect()
}

/// A pool of `n` destinations scheduled by `rr` (no load index). Filled under `rr` so that
/// schedulers with tables are built once, by `set_scheduler`, rather than once per add.
fn rr_pool(n: usize) -> Pool {
    let mut pool = Pool::new(by_name("rr", SchedFlags::NONE).expect("rr"));
    for cfg in dest_configs(n) {
        pool.add_dest(&cfg).expect("add_dest");
    }
    pool
}

/// The `mh` table size used for `n` destinations in `pick`: the kernel default unless `n`
/// does not fit.
fn mh_size_for(n: usize) -> MhTableSize {
    if n <= MhTableSize::default().size() as usize {
        MhTableSize::default()
    } else {
        MhTableSize::from_size(MH_BIG_M).expect("65521 is a kernel mh size")
    }
}

fn pool_for(kind: SchedulerKind, n: usize) -> Pool {
    let mut pool = rr_pool(n);
    let cfg = SchedConfig {
        mh_table_size: mh_size_for(n),
        ..SchedConfig::default()
    };
    pool.set_scheduler(kind.build(&cfg).expect("build scheduler"))
        .expect("set_scheduler");
    pool
}

fn flows() -> Vec<FlowKey> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x6c76_735f_6265_6e63);
    (0..FLOWS)
        .map(|_| {
            let r = rng.next_u64();
            let src = Ipv4Addr::from((r >> 32) as u32);
            let sport = 1024 + ((r >> 16) as u16 % (u16::MAX - 1024));
            let vip = Ipv4Addr::new(10, 200, 0, (r % VIPS) as u8);
            FlowKey::new(Protocol::Tcp, IpAddr::V4(src), sport, IpAddr::V4(vip), 80)
        })
        .collect()
}

/// The next batch of flows, cycling through the pre-generated ones.
#[inline]
fn next_batch<'a, T>(all: &'a [T], cursor: &mut usize) -> &'a [T] {
    let start = *cursor;
    *cursor = (start + BATCH) % all.len();
    &all[start..start + BATCH]
}

/// IPVS's O(n) `ip_vs_wlc_schedule`, shared with the property tests that use it as the oracle.
#[path = "../tests/common/naive.rs"]
#[allow(dead_code)]
mod naive;
use naive::wlc as wlc_linear_scan;

/// The baseline must pick what `wlc` picks, or the comparison means nothing.
fn check_linear_scan_matches_wlc(n: usize, flows: &[FlowKey]) {
    let mut tree = pool_for(SchedulerKind::Wlc, n);
    let mut linear = rr_pool(n);
    for f in flows.iter().take(2000) {
        let a = tree.schedule_new(f, NOW);
        let b = wlc_linear_scan(linear.dests());
        assert_eq!(a, b, "wlc tree and linear scan disagree at N = {n}");
        linear
            .bind(b.expect("a destination"), ConnKind::Inactive)
            .expect("bind");
    }
}

fn bench_pick(c: &mut Criterion) {
    let flows = flows();
    let mut group = c.benchmark_group("pick");
    group.throughput(Throughput::Elements(BATCH as u64));
    for &n in &PICK_SIZES {
        for kind in SchedulerKind::ALL {
            let mut pool = pool_for(kind, n);
            assert!(
                pool.schedule(&flows[0], NOW).is_some(),
                "{kind} picked nothing at N = {n}"
            );
            let mut cursor = 0;
            group.bench_function(BenchmarkId::new(kind.name(), n), |b| {
                b.iter(|| {
                    for f in next_batch(&flows, &mut cursor) {
                        black_box(pool.schedule_new(black_box(f), NOW));
                    }
                })
            });
        }

        check_linear_scan_matches_wlc(n, &flows);
        let mut pool = rr_pool(n);
        let mut cursor = 0;
        group.bench_function(BenchmarkId::new("wlc_linear_scan", n), |b| {
            b.iter(|| {
                for f in next_batch(&flows, &mut cursor) {
                    // The flow plays no part in wlc; keep it observable like the others.
                    black_box(f);
                    if let Some(id) = wlc_linear_scan(pool.dests()) {
                        black_box(pool.bind(id, ConnKind::Inactive).is_ok());
                    }
                }
            })
        });
    }
    group.finish();
}

/// `"10.0.x.y:80"` for every destination, the `maglev` crate's node names.
fn node_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{}:80", dest_addr(i))).collect()
}

fn bench_table_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("table_build");
    // One build of the maglev crate at N = 1000 is long (N * M permutation entries); flat
    // sampling keeps the iteration count at one per sample.
    group.sampling_mode(SamplingMode::Flat);
    let mh_small = MhTableSize::default();
    let mh_big = MhTableSize::from_size(MH_BIG_M).expect("65521 is a kernel mh size");
    for &n in &BUILD_SIZES {
        let pool = rr_pool(n);
        let dests = pool.dests();
        group.bench_function(BenchmarkId::new("mh_4093", n), |b| {
            b.iter(|| MhTable::build(black_box(dests), mh_small).expect("mh build"))
        });
        group.bench_function(BenchmarkId::new("mh_65521", n), |b| {
            b.iter(|| MhTable::build(black_box(dests), mh_big).expect("mh build"))
        });
        group.bench_function(BenchmarkId::new("maglev_65537", n), |b| {
            b.iter(|| {
                MaglevTable::build(black_box(dests), MAGLEV_M, MaglevKey::default(), 0)
                    .expect("maglev build")
            })
        });
        let nodes = node_names(n);
        group.bench_function(BenchmarkId::new("maglev_crate_65537", n), |b| {
            b.iter(|| maglev::Maglev::with_capacity(black_box(&nodes).iter(), MAGLEV_M as usize))
        });
    }
    group.finish();
}

/// A flow as the `maglev` crate hashes it: (src, sport, dst, dport, proto).
type TupleKey = (u32, u16, u32, u16, u8);

fn tuple_key(f: &FlowKey) -> TupleKey {
    let v4 = |a: IpAddr| match a {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(_) => unreachable!("IPv4 flows only"),
    };
    (v4(f.src), f.sport, v4(f.dst), f.dport, f.proto.number())
}

fn bench_lookup(c: &mut Criterion) {
    // A dataplane looks up the flows of a burst it has just parsed, so their keys are in
    // cache: cycle through 4 bursts' worth (160 KiB) rather than streaming 2.6 MB of keys.
    let flows: Vec<FlowKey> = flows().into_iter().take(4 * BATCH).collect();
    let keys: Vec<TupleKey> = flows.iter().map(tuple_key).collect();
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(BATCH as u64));
    for &n in &LOOKUP_SIZES {
        let pool = rr_pool(n);
        let dests = pool.dests();

        let table = MaglevTable::build(dests, MAGLEV_M, MaglevKey::default(), 0).expect("maglev");
        let mut cursor = 0;
        group.bench_function(BenchmarkId::new("maglev", n), |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for f in next_batch(&flows, &mut cursor) {
                    acc =
                        acc.wrapping_add(table.lookup(dests, f, false).map_or(0, |id| id.index()));
                }
                black_box(acc)
            })
        });

        // The stateless Katran-style lookup: slot owner only, no availability check.
        let mut cursor = 0;
        group.bench_function(BenchmarkId::new("maglev_owner", n), |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for f in next_batch(&flows, &mut cursor) {
                    acc = acc.wrapping_add(table.owner(f).map_or(0, |id| id.index()));
                }
                black_box(acc)
            })
        });

        let mut cursor = 0;
        let mut out = vec![None; BATCH];
        group.bench_function(BenchmarkId::new("maglev_owner_batch", n), |b| {
            b.iter(|| {
                table.owner_batch(next_batch(&flows, &mut cursor), &mut out);
                black_box(&out);
            })
        });

        let mut cursor = 0;
        group.bench_function(BenchmarkId::new("maglev_batch", n), |b| {
            b.iter(|| {
                table.lookup_batch(dests, next_batch(&flows, &mut cursor), false, &mut out);
                black_box(&out);
            })
        });

        let table = MhTable::build(dests, MhTableSize::default()).expect("mh");
        let mut cursor = 0;
        group.bench_function(BenchmarkId::new("mh", n), |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for f in next_batch(&flows, &mut cursor) {
                    acc = acc.wrapping_add(
                        table
                            .lookup(dests, &f.src, 0, false)
                            .map_or(0, |id| id.index()),
                    );
                }
                black_box(acc)
            })
        });

        let names = node_names(n);
        let m = maglev::Maglev::with_capacity(names.iter(), MAGLEV_M as usize);
        assert_eq!(m.capacity(), MAGLEV_M as usize);
        let mut cursor = 0;
        group.bench_function(BenchmarkId::new("maglev_crate", n), |b| {
            b.iter(|| {
                let mut acc = 0usize;
                for k in next_batch(&keys, &mut cursor) {
                    acc = acc.wrapping_add(m.get(k).map_or(0, |n| n.len()));
                }
                black_box(acc)
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_pick, bench_table_build, bench_lookup
}
criterion_main!(benches);
