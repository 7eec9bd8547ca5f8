//! Property tests of the schedulers against independent models and stated bounds.

mod common {
    pub mod naive;
}

use std::net::{IpAddr, Ipv4Addr};

use lvs::dest::{ConnKind, DestConfig, DestId};
use lvs::flow::{FlowKey, Protocol};
use lvs::sched::analysis::{PlannedChange, plan_change};
use lvs::sched::{
    Maglev, MaglevKey, MaglevTable, Mh, MhTableSize, Pool, RandomSource, SchedConfig, SchedFlags,
    Scheduler, SchedulerKind, SplitMix64, Twos, by_name,
};
use lvs::time::Instant;
use proptest::prelude::*;

fn addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn flow(i: u32) -> FlowKey {
    FlowKey::new(
        Protocol::Tcp,
        IpAddr::V4(Ipv4Addr::from(
            0xc633_6400u32.wrapping_add(i.wrapping_mul(2_654_435_761)),
        )),
        (i % 50_000) as u16 + 1024,
        "10.255.0.1".parse().unwrap(),
        80,
    )
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Operations on a pool, for model-based testing.
#[derive(Clone, Debug)]
enum Op {
    Add {
        server: u8,
        weight: u32,
        upper: u32,
        lower: u32,
    },
    Remove {
        server: u8,
    },
    Weight {
        server: u8,
        weight: u32,
    },
    Bind {
        server: u8,
        active: bool,
    },
    Unbind {
        server: u8,
        active: bool,
    },
    Activate {
        server: u8,
        active: bool,
    },
    Pick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..12, 0u32..6, 0u32..6, 0u32..4).prop_map(|(server, weight, upper, lower)| Op::Add {
            server,
            weight,
            upper,
            lower: lower.min(upper)
        }),
        (0u8..12).prop_map(|server| Op::Remove { server }),
        (0u8..12, 0u32..6).prop_map(|(server, weight)| Op::Weight { server, weight }),
        (0u8..12, any::<bool>()).prop_map(|(server, active)| Op::Bind { server, active }),
        (0u8..12, any::<bool>()).prop_map(|(server, active)| Op::Unbind { server, active }),
        (0u8..12, any::<bool>()).prop_map(|(server, active)| Op::Activate { server, active }),
        Just(Op::Pick),
        Just(Op::Pick),
        Just(Op::Pick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// lc, wlc, sed, nq, fo and ovf (O(log n) trees) and twos (a Fenwick tree) pick exactly what
    /// IPVS's O(n) scans pick, through any sequence of adds, removals, weight changes and
    /// connection accounting (twos with the same random draws).
    #[test]
    fn least_family_matches_the_linear_scan(ops in prop::collection::vec(op(), 1..120)) {
        for name in ["lc", "wlc", "sed", "nq", "fo", "ovf", "twos"] {
            let seed = 0x5eed;
            let mut pool = if name == "twos" {
                Pool::new(Box::new(Twos::new(Box::new(SplitMix64::new(seed)))) as Box<dyn Scheduler>)
            } else {
                Pool::new(by_name(name, SchedFlags::NONE).unwrap())
            };
            let mut model_rng = SplitMix64::new(seed);
            let mut naive = |d: &lvs::dest::DestSet| {
                if name == "twos" {
                    common::naive::twos(d, |bound| model_rng.below(bound))
                } else {
                    common::naive::by_name(name)(d)
                }
            };
            for op in &ops {
                let find = |p: &Pool, s: u8| p.dests().find(addr(s as u32), 80);
                match *op {
                    Op::Add { server, weight, upper, lower } => {
                        let cfg = DestConfig::new(addr(server as u32), 80)
                            .weight(weight)
                            .thresholds(upper, lower);
                        let _ = pool.add_dest(&cfg);
                    }
                    Op::Remove { server } => {
                        let _ = pool.remove_dest(addr(server as u32), 80);
                    }
                    Op::Weight { server, weight } => {
                        if let Some(id) = find(&pool, server) {
                            pool.set_weight(id, weight).unwrap();
                        }
                    }
                    Op::Bind { server, active } => {
                        if let Some(id) = find(&pool, server) {
                            let kind = if active { ConnKind::Active } else { ConnKind::Inactive };
                            pool.bind(id, kind).unwrap();
                        }
                    }
                    Op::Unbind { server, active } => {
                        if let Some(id) = find(&pool, server) {
                            let d = pool.dests().get(id).unwrap();
                            let has = if active { d.active_conns() } else { d.inactive_conns() } > 0;
                            if has {
                                let kind = if active { ConnKind::Active } else { ConnKind::Inactive };
                                pool.unbind(id, kind).unwrap();
                            }
                        }
                    }
                    Op::Activate { server, active } => {
                        if let Some(id) = find(&pool, server) {
                            let d = pool.dests().get(id).unwrap();
                            if (if active { d.inactive_conns() } else { d.active_conns() }) > 0 {
                                pool.set_active(id, active).unwrap();
                            }
                        }
                    }
                    Op::Pick => {}
                }
                // The compact availability array agrees with the destinations themselves.
                for s in 0..12u32 {
                    if let Some(id) = pool.dests().find(addr(s), 80) {
                        let d = pool.dests().get(id).unwrap();
                        prop_assert_eq!(pool.dests().accepts_new(id), d.accepts_new());
                    }
                }
                let want = naive(pool.dests());
                let got = pool.schedule(&flow(1), Instant::ZERO);
                prop_assert_eq!(got, want, "{} after {:?}", name, op);
                if let (Op::Pick, Some(id)) = (op, got) {
                    pool.bind(id, ConnKind::Inactive).unwrap();
                }
            }
        }
    }

    /// wrr: over one full cycle every destination gets exactly weight / gcd picks, both when
    /// the scheduler is bound to existing servers and when servers are added one by one.
    #[test]
    fn wrr_cycle_gives_weight_over_gcd(weights in prop::collection::vec(1u32..=12, 1..8), k in 1u32..4) {
        let weights: Vec<u32> = weights.iter().map(|w| w * k).collect();
        let g = weights.iter().fold(0, |a, &w| gcd(a, w));
        let cycle: usize = weights.iter().map(|w| (w / g) as usize).sum();
        // Bound after the servers exist: the sequence starts a cycle at once.
        let mut bound = Pool::new(by_name("rr", SchedFlags::NONE).unwrap());
        let mut filled = Pool::new(by_name("wrr", SchedFlags::NONE).unwrap());
        for (i, &w) in weights.iter().enumerate() {
            bound.add_dest(&DestConfig::new(addr(i as u32), 80).weight(w)).unwrap();
            filled.add_dest(&DestConfig::new(addr(i as u32), 80).weight(w)).unwrap();
        }
        bound.set_scheduler(by_name("wrr", SchedFlags::NONE).unwrap()).unwrap();
        let picks = |p: &mut Pool, n: usize| -> Vec<DestId> {
            (0..n).map(|_| p.schedule(&flow(0), Instant::ZERO).unwrap()).collect()
        };
        let count = |seq: &[DestId], p: &Pool| -> Vec<usize> {
            weights.iter().enumerate().map(|(i, _)| {
                let id = p.dests().find(addr(i as u32), 80).unwrap();
                seq.iter().filter(|&&x| x == id).count()
            }).collect()
        };
        let want: Vec<usize> = weights.iter().map(|w| (w / g) as usize).collect();
        let seq = picks(&mut bound, cycle);
        prop_assert_eq!(count(&seq, &bound), want.clone());
        // Filled one by one: a warm-up shorter than a cycle, then periodic cycles.
        let seq = picks(&mut filled, 3 * cycle);
        prop_assert_eq!(count(&seq[cycle..2 * cycle], &filled), want.clone());
        prop_assert_eq!(&seq[cycle..2 * cycle], &seq[2 * cycle..]);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// maglev: every server's slots are within one of M * w / W (largest remainder), so shares
    /// are within 1/M of weight shares; equal weights with M >= 100 N are within 1%.
    #[test]
    fn maglev_shares_follow_weights(weights in prop::collection::vec(1u32..=100, 1..40)) {
        let m = 65_537u32;
        let mut p = Pool::new(by_name("rr", SchedFlags::NONE).unwrap());
        for (i, &w) in weights.iter().enumerate() {
            p.add_dest(&DestConfig::new(addr(i as u32), 80).weight(w)).unwrap();
        }
        let t = MaglevTable::build(p.dests(), m, MaglevKey::default(), 0).unwrap();
        let total: u64 = weights.iter().map(|&w| w as u64).sum();
        let slots: u64 = t.slot_counts().map(|(.., c)| c as u64).sum();
        prop_assert_eq!(slots, m as u64);
        for (a, _, c) in t.slot_counts() {
            let IpAddr::V4(v4) = a else { unreachable!() };
            let i = (u32::from(v4) - 0x0a00_0000) as usize;
            let ideal = m as u64 * weights[i] as u64;
            let lo = ideal / total;
            let hi = ideal.div_ceil(total);
            prop_assert!((lo..=hi).contains(&(c as u64)), "server {} slots {} ideal {}..={}", i, c, lo, hi);
        }
        prop_assert!(t.owners().all(|o| o.is_some()));
    }

    /// mh: a server's slots are within one round (the largest turn count) of
    /// M * turns / sum(turns), as the kernel's round-robin fill gives.
    #[test]
    fn mh_shares_follow_turns(weights in prop::collection::vec(1u32..=50, 1..30), index in 8u8..=12) {
        let size = MhTableSize::from_index(index).unwrap();
        let mut p: Pool<Mh> = Pool::new(Box::new(Mh::new(SchedFlags::NONE, size)));
        for (i, &w) in weights.iter().enumerate() {
            p.add_dest(&DestConfig::new(addr(i as u32), 80).weight(w)).unwrap();
        }
        let t = p.scheduler().table().clone();
        let turns: Vec<u64> = t.permutations().iter().map(|x| x.turns as u64).collect();
        let sum: u64 = turns.iter().sum();
        let max_turn = *turns.iter().max().unwrap();
        let m = t.size() as u64;
        for (j, id) in p.dests().ids().enumerate() {
            let c = t.owners().filter(|&o| o == Some(id)).count() as u64;
            let ideal = m * turns[j];
            prop_assert!(c * sum + max_turn * sum >= ideal && c * sum <= ideal + max_turn * sum,
                "server {} slots {} ideal {}/{}", j, c, ideal, sum);
        }
    }

    /// Removing one of N servers moves that server's slots and at most 2% of the table
    /// besides (maglev, M = 65537, N < 100; measured worst about 0.7%) or 8% (mh, M = 4093,
    /// N <= 40 so that M >= 100 N; with unequal weights the kernel's turn-based fill moves
    /// more: the worst case seen, kept in the regressions file, is 6.0% at N = 38).
    #[test]
    fn removal_moves_little_else(n in 2u32..100, victim in any::<prop::sample::Index>(), w in prop::collection::vec(1u32..=10, 100)) {
        for (name, bound, max_n) in [("maglev", 0.02, 100), ("mh", 0.08, 40)] {
            if n > max_n {
                continue;
            }
            let mut p = Pool::new(by_name(name, SchedFlags::NONE).unwrap());
            for i in 0..n {
                p.add_dest(&DestConfig::new(addr(i * 3), 80).weight(w[i as usize])).unwrap();
            }
            let v = p.dests().nth(victim.index(n as usize)).unwrap();
            let (a, port) = (p.dests().get(v).unwrap().addr(), 80);
            let imp = plan_change(&p, &[PlannedChange::Remove(a, port)]).unwrap();
            let own = imp.per_server[&(a, port)].0;
            prop_assert_eq!(imp.per_server[&(a, port)].1, 0);
            let others = (imp.moved - own) as f64 / imp.slots as f64;
            prop_assert!(others <= bound, "{}: n={} other slots moved {:.4}", name, n, others);
        }
    }

    /// The hash schedulers are pure functions of (configuration, key): the same configuration
    /// gives the same choice whatever was asked before, and maglev also whatever the order the
    /// servers were added in.
    #[test]
    fn hash_schedulers_are_pure(
        weights in prop::collection::vec(1u32..=5, 1..20),
        order in any::<u64>(),
        keys in prop::collection::vec(any::<u32>(), 1..50),
    ) {
        for kind in [SchedulerKind::Sh, SchedulerKind::Dh, SchedulerKind::Mh, SchedulerKind::Maglev] {
            let cfg = SchedConfig { flags: SchedFlags::PORT, ..SchedConfig::default() };
            let build = |perm: &[usize]| {
                let mut p = Pool::new(kind.build(&cfg).unwrap());
                for &i in perm {
                    p.add_dest(&DestConfig::new(addr(i as u32), 80).weight(weights[i])).unwrap();
                }
                p
            };
            let ident: Vec<usize> = (0..weights.len()).collect();
            let mut shuffled = ident.clone();
            let mut x = order | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut a = build(&ident);
            let mut b = build(&ident);
            let mut c = build(&shuffled);
            let who = |p: &Pool, id: Option<DestId>| id.map(|id| p.dests().get(id).unwrap().addr());
            let forward: Vec<_> = keys.iter().map(|&k| { let r = a.schedule(&flow(k), Instant::ZERO); who(&a, r) }).collect();
            let backward: Vec<_> = keys.iter().rev().map(|&k| { let r = b.schedule(&flow(k), Instant::ZERO); who(&b, r) }).collect();
            let backward: Vec<_> = backward.into_iter().rev().collect();
            prop_assert_eq!(&forward, &backward, "{} depends on history", kind);
            if kind == SchedulerKind::Maglev {
                let other: Vec<_> = keys.iter().map(|&k| { let r = c.schedule(&flow(k), Instant::ZERO); who(&c, r) }).collect();
                prop_assert_eq!(&forward, &other, "maglev depends on insertion order");
            }
        }
    }
}

#[test]
fn maglev_tables_are_send_and_sync_and_shared() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MaglevTable>();
    assert_send_sync::<lvs::sched::MhTable>();
    assert_send_sync::<lvs::sched::ShTable>();
    assert_send_sync::<lvs::sched::DhTable>();
    let mut p: Pool<Maglev> = Pool::new(Box::new(
        Maglev::new(SchedFlags::NONE, 65_537, MaglevKey::default()).unwrap(),
    ));
    for i in 0..10 {
        p.add_dest(&DestConfig::new(addr(i), 80)).unwrap();
    }
    let table = p.scheduler().table().clone();
    let dests = p.dests().clone();
    let picks: Vec<Vec<Option<DestId>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (t, d) = (&table, &dests);
                s.spawn(move || (0..1000).map(|k| t.lookup(d, &flow(k), false)).collect())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(picks[0], picks[1]);
}
