//! `sh`, `dh` and `mh` against vectors from an independent oracle.
//!
//! `tests/oracle/ipvs_hash_oracle.py` implements the kernel's formulas (ipvs.md §1.3, §3.10–
//! §3.12) in Python from the reference text alone, checks its SipHash against the SipHash
//! paper's vectors and its Maglev fill against a textbook formulation, and writes
//! `ipvs_hash_vectors.json`. Here the Rust schedulers must reproduce every table and lookup.

use std::net::IpAddr;

use lvs::dest::{ConnKind, DestConfig, DestId};
use lvs::flow::{FlowKey, Protocol};
use lvs::sched::hash::{MH_HASH1, MH_HASH2, SipKey, hsiphash_u32};
use lvs::sched::{Dh, DhTable, Mh, MhTableSize, Pool, SchedFlags, Scheduler, Sh};
use lvs::time::Instant;
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("oracle/ipvs_hash_vectors.json");
    serde_json::from_str(text).expect("vectors parse")
}

fn addr(v: &Value) -> IpAddr {
    v.as_str().unwrap().parse().unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

/// Builds a pool whose list order is the oracle's `dests` (head first): add in reverse, then
/// apply the current weight and the overloaded flag.
fn pool_from<S: Scheduler>(sched: S, dests: &Value) -> (Pool<S>, Vec<DestId>) {
    let mut p = Pool::new(Box::new(sched));
    let list = dests.as_array().unwrap();
    for d in list.iter().rev() {
        let cfg = DestConfig::new(addr(&d["addr"]), u(&d["port"]) as u16)
            .weight(u(&d["last_weight"]) as u32);
        p.add_dest(&cfg).unwrap();
        if u(&d["weight"]) != u(&d["last_weight"]) {
            p.edit_dest(&cfg.weight(u(&d["weight"]) as u32)).unwrap();
        }
    }
    let ids: Vec<DestId> = list
        .iter()
        .map(|d| {
            p.dests()
                .find(addr(&d["addr"]), u(&d["port"]) as u16)
                .unwrap()
        })
        .collect();
    assert_eq!(p.dests().ids().collect::<Vec<_>>(), ids, "list order");
    for (d, &id) in list.iter().zip(&ids) {
        if d["overloaded"].as_bool().unwrap() {
            let cfg = p.dests().get(id).unwrap().config().thresholds(1, 0);
            p.edit_dest(&cfg).unwrap();
            p.bind(id, ConnKind::Inactive).unwrap();
        }
    }
    (p, ids)
}

fn index_of(ids: &[DestId], id: Option<DestId>) -> Value {
    match id {
        None => Value::Null,
        Some(id) => ids.iter().position(|&x| x == id).unwrap().into(),
    }
}

fn owners_as_indices(ids: &[DestId], owners: impl Iterator<Item = Option<DestId>>) -> Vec<Value> {
    owners.map(|o| index_of(ids, o)).collect()
}

fn client(saddr: &Value, port: u16) -> FlowKey {
    let src = addr(saddr);
    let dst: IpAddr = if src.is_ipv6() {
        "2001:db8::100".parse().unwrap()
    } else {
        "10.0.0.100".parse().unwrap()
    };
    FlowKey::new(Protocol::Tcp, src, port, dst, 80)
}

/// The port `sh`/`mh` hash with these flags.
fn hashed_port(f: &FlowKey, flags: SchedFlags) -> u16 {
    if flags.contains(SchedFlags::PORT) {
        f.sport
    } else {
        0
    }
}

/// The oracle's answer for a lookup under these flags.
fn expected(l: &Value, flags: SchedFlags) -> &Value {
    match l.get("fallback_dest_index") {
        Some(w) if flags.contains(SchedFlags::FALLBACK) => w,
        _ => &l["dest_index"],
    }
}

#[test]
fn siphash13() {
    let v = vectors();
    for case in v["siphash13"].as_array().unwrap() {
        let key = match case["key_name"].as_str().unwrap() {
            "hash1" => MH_HASH1,
            "hash2" => MH_HASH2,
            other => {
                let k = case["key"].as_array().unwrap();
                eprintln!("key {other}");
                SipKey(u(&k[0]), u(&k[1]))
            }
        };
        assert_eq!(
            hsiphash_u32(u(&case["v"]) as u32, key) as u64,
            u(&case["result"]),
            "{case}"
        );
    }
}

#[test]
fn dh_table_and_lookups() {
    let v = vectors();
    let dh = &v["dh"];
    let (mut p, ids) = pool_from(Dh::new(), &dh["dests"]);
    let table = owners_as_indices(&ids, p.scheduler().table().buckets().iter().copied());
    assert_eq!(&Value::from(table), &dh["table"]);
    for l in dh["lookups"].as_array().unwrap() {
        let daddr = addr(&l["daddr"]);
        assert_eq!(DhTable::bucket_of(&daddr) as u64, u(&l["bucket"]), "{l}");
        let mut f = client(&"172.16.0.1".into(), 1000);
        if daddr.is_ipv6() {
            f.src = "2001:db8:1::1".parse().unwrap();
        }
        f.dst = daddr;
        let got = p.schedule(&f, Instant::ZERO);
        assert_eq!(index_of(&ids, got), l["dest_index"], "{l}");
    }
}

#[test]
fn sh_tables_and_lookups() {
    let v = vectors();
    for (name, case) in v["sh"].as_object().unwrap() {
        for (flags, key) in [
            (SchedFlags::NONE, "lookups"),
            (SchedFlags::PORT, "lookups_sh_port"),
            (SchedFlags::FALLBACK, "lookups"),
        ] {
            let Some(lookups) = case[key].as_array() else {
                continue;
            };
            let (mut p, ids) = pool_from(Sh::new(flags), &case["dests"]);
            let table = owners_as_indices(&ids, p.scheduler().table().buckets().iter().copied());
            assert_eq!(&Value::from(table), &case["table"], "{name}");
            for l in lookups {
                let f = client(&l["saddr"], u(&l["port"]) as u16);
                let port = hashed_port(&f, flags);
                let bucket = p.scheduler().table().bucket_of(&f.src, port, 0);
                assert_eq!(bucket as u64, u(&l["bucket"]), "{name} {l}");
                let got = index_of(&ids, p.schedule(&f, Instant::ZERO));
                let want = expected(l, flags);
                assert_eq!(&got, want, "{name} {key} {flags:?} {l}");
            }
        }
    }
}

#[test]
fn mh_tables_and_lookups() {
    let v = vectors();
    let mut checked = 0;
    for (name, case) in v["mh"].as_object().unwrap() {
        let size = MhTableSize::from_index(u(&case["tab_index"]) as u8).unwrap();
        assert_eq!(size.size() as u64, u(&case["M"]));
        assert_eq!(size.bits() as u64, u(&case["tab_bits"]));
        for (flags, key) in [
            (SchedFlags::NONE, "lookups"),
            (SchedFlags::PORT, "lookups_mh_port"),
            (SchedFlags::FALLBACK, "lookups"),
        ] {
            let (mut p, ids) = pool_from(Mh::new(flags, size), &case["dests"]);
            let table = p.scheduler().table().clone();
            assert_eq!(
                table.weight_scaling(),
                (u(&case["gcd"]) as u32, u(&case["shift"]) as u32),
                "{name}"
            );
            for (perm, want) in table
                .permutations()
                .iter()
                .zip(case["per_dest"].as_array().unwrap())
            {
                assert_eq!(perm.offset as u64, u(&want["offset"]), "{name}");
                assert_eq!(perm.skip as u64, u(&want["skip"]), "{name}");
                assert_eq!(perm.turns as u64, u(&want["turns"]), "{name}");
            }
            let owners = owners_as_indices(&ids, table.owners());
            assert_eq!(&Value::from(owners), &case["table"], "{name}");
            let Some(lookups) = case[key].as_array() else {
                continue;
            };
            for l in lookups {
                let f = client(&l["saddr"], u(&l["port"]) as u16);
                let port = hashed_port(&f, flags);
                assert_eq!(
                    table.slot_of(&f.src, port) as u64,
                    u(&l["slot"]),
                    "{name} {l}"
                );
                let got = index_of(&ids, p.schedule(&f, Instant::ZERO));
                let want = expected(l, flags);
                assert_eq!(&got, want, "{name} {key} {flags:?} {l}");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} lookups checked");
}
