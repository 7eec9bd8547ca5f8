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

/// `ip_vs_twos_schedule` with its two draws `r1, r2` in `[0, total]` already made: walk the
/// eligible servers in list order subtracting weights; each draw stops where it reaches 0.
pub fn twos(dests: &DestSet, mut draw: impl FnMut(u32) -> u32) -> Option<DestId> {
    let eligible = || {
        dests
            .iter()
            .filter(|(_, d)| !d.is_overloaded() && d.weight() > 0)
    };
    let total: u64 = eligible().map(|(_, d)| d.weight() as u64).sum();
    if total == 0 {
        return None;
    }
    let bound = u32::try_from(total + 1).unwrap_or(u32::MAX);
    let (mut r1, mut r2) = (draw(bound) as i64, draw(bound) as i64);
    let (mut c1, mut c2) = (None, None);
    for (id, d) in eligible() {
        r1 -= d.weight() as i64;
        r2 -= d.weight() as i64;
        if r1 <= 0 && c1.is_none() {
            c1 = Some((id, d.weight() as u64, d.overhead()));
        }
        if r2 <= 0 && c2.is_none() {
            c2 = Some((id, d.weight() as u64, d.overhead()));
        }
    }
    let ((id1, w1, oh1), (id2, w2, oh2)) = (c1?, c2?);
    Some(if w2 * oh1 > w1 * oh2 { id2 } else { id1 })
}
