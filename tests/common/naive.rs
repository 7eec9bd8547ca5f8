//! IPVS's own O(n) scans (ipvs.md §3.3–§3.8), written as literally as the reference states them:
//! the oracle for the O(log n) schedulers and the baseline of the benchmarks.

use lvs::dest::{Dest, DestId, DestSet};

/// `ip_vs_lc_schedule`: skip overloaded and weight 0; least overhead; strict `<`.
pub fn lc(dests: &DestSet) -> Option<DestId> {
    let mut least: Option<(DestId, u64)> = None;
    for (id, d) in dests.iter() {
        if d.is_overloaded() || d.weight() == 0 {
            continue;
        }
        let doh = d.overhead();
        if least.is_none_or(|(_, loh)| doh < loh) {
            least = Some((id, doh));
        }
    }
    least.map(|(id, _)| id)
}

fn weighted_scan(dests: &DestSet, overhead: impl Fn(&Dest) -> u64) -> Option<DestId> {
    let mut it = dests.iter();
    let mut least = None;
    for (id, d) in it.by_ref() {
        if !d.is_overloaded() && d.weight() > 0 {
            least = Some((id, d, overhead(d)));
            break;
        }
    }
    let (mut lid, mut ld, mut loh) = least?;
    for (id, d) in it {
        if d.is_overloaded() {
            continue;
        }
        let doh = overhead(d);
        if loh * d.weight() as u64 > doh * ld.weight() as u64 {
            (lid, ld, loh) = (id, d, doh);
        }
    }
    Some(lid)
}

/// `ip_vs_wlc_schedule`.
pub fn wlc(dests: &DestSet) -> Option<DestId> {
    weighted_scan(dests, |d| d.overhead())
}

/// `ip_vs_sed_schedule`: overhead `active + 1`.
pub fn sed(dests: &DestSet) -> Option<DestId> {
    weighted_scan(dests, |d| d.active_conns() as u64 + 1)
}

/// `ip_vs_nq_schedule`: first idle server, else the sed rule.
pub fn nq(dests: &DestSet) -> Option<DestId> {
    let mut least: Option<(DestId, &Dest, u64)> = None;
    for (id, d) in dests.iter() {
        if d.is_overloaded() || d.weight() == 0 {
            continue;
        }
        let doh = d.active_conns() as u64 + 1;
        if d.active_conns() == 0 {
            return Some(id);
        }
        match least {
            None => least = Some((id, d, doh)),
            Some((_, ld, loh)) => {
                if loh * d.weight() as u64 > doh * ld.weight() as u64 {
                    least = Some((id, d, doh));
                }
            }
        }
    }
    least.map(|(id, ..)| id)
}

/// `ip_vs_fo_schedule`: highest weight not overloaded, first in list on ties.
pub fn fo(dests: &DestSet) -> Option<DestId> {
    let mut best: Option<(DestId, u32)> = None;
    for (id, d) in dests.iter() {
        if !d.is_overloaded() && d.weight() > best.map_or(0, |b| b.1) {
            best = Some((id, d.weight()));
        }
    }
    best.map(|b| b.0)
}

/// `ip_vs_ovf_schedule`: highest weight with `active <= weight`.
pub fn ovf(dests: &DestSet) -> Option<DestId> {
    let mut best: Option<(DestId, u32)> = None;
    for (id, d) in dests.iter() {
        let w = d.weight();
        if d.is_overloaded() || d.active_conns() > w || w == 0 {
            continue;
        }
        if best.is_none_or(|b| w > b.1) {
            best = Some((id, w));
        }
    }
    best.map(|b| b.0)
}

/// The oracle for a scheduler name.
pub fn by_name(name: &str) -> fn(&DestSet) -> Option<DestId> {
    match name {
        "lc" => lc,
        "wlc" => wlc,
        "sed" => sed,
        "nq" => nq,
        "fo" => fo,
        "ovf" => ovf,
        _ => panic!("no naive model for {name}"),
    }
}
