//! `maglev`: Maglev consistent hashing with Katran's table size, exact weights and a documented,
//! stable hash. Not an IPVS scheduler; IPVS's own Maglev is [`Mh`](super::Mh).
//!
//! What users of Katran, Envoy and Cilium ask for in those projects' issue trackers, kept here:
//!
//! - **Table size** M = 65537 by default (Katran's and Envoy's choice); any prime up to
//!   [`MAX_TABLE_SIZE`] (655373) on request. More servers than slots is an error, never a
//!   silent server with no slot.
//! - **Weights that behave.** Each server with a non-zero weight gets a slot quota by the
//!   largest-remainder method: `floor(M * w / W)` plus one for the largest remainders, so its
//!   share of the table is within one slot of `M * w / W` (and at least one slot). Quotas are
//!   claimed in Bresenham-interleaved rounds (a server with quota q claims in round
//!   `ceil((k + 1) * Q / q) - 1` for its k-th slot, Q the largest quota), each claim taking the
//!   next free slot of the server's own permutation, as in the Maglev paper.
//! - **Order independence.** Servers are sorted by `(address, port)` before population, so the
//!   table depends only on the set of servers and weights, never on the order they were added.
//! - **Quiescing does not reshuffle.** Like `mh`, the table is built from each server's last
//!   non-zero weight; a weight-0 or overloaded server's slots are unavailable at lookup. With the
//!   fallback flag a flow whose slot is unavailable takes the next slot (`slot + 1, + 2, ...`)
//!   with an available owner; without it, none.
//! - **Stable hash** ("lvs maglev hash v1", pinned by test vectors; a change is a breaking
//!   change). With `fold(a, b) = lo64(a * b) ^ hi64(a * b)` (128-bit product) and constants
//!   `P0..P3` = the first four 64-bit words of the fraction of pi
//!   (`0x243f6a8885a308d3, 0x13198a2e03707344, 0xa4093822299f31d0, 0x082efa98ec4e6c89`):
//!   a flow (per packet, so one multiply for IPv4) with `t = sport << 48 | dport << 32 |
//!   proto << 8`:
//!   IPv4 `h = fold(src << 32 | dst ^ P0 ^ seed, t | 4 ^ P1)`;
//!   IPv6, addresses as big-endian `(hi, lo)` pairs,
//!   `h = fold(fold(src_hi ^ P0 ^ seed, src_lo ^ P1) ^ t ^ 6, fold(dst_hi ^ P2, dst_lo ^ P3))`.
//!   [`MaglevKey`] zeroes the fields it leaves out. A server (at build time) hashes its address
//!   in 16-byte blocks `(x, y)`: `h = seed; h = fold(x ^ h ^ P0, y ^ P1)` per block, then
//!   `h = fold(h ^ P2, len ^ P3)`; IPv4 is one block `[addr, port << 8 | 4]`, IPv6 two,
//!   `[hi, lo]`, `[port << 8 | 6, 0]`; seed `OFFSET_SEED` gives the offset and `SKIP_SEED` the
//!   skip. Reductions to `0..n` use the high half of `h * n`.

use alloc::collections::BinaryHeap;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::net::IpAddr;

use crate::dest::{DestError, DestEvent, DestId, DestSet};
use crate::flow::FlowKey;
use crate::sched::fill::{Filler, WORDS_LARGE, WORDS_SMALL};
use crate::sched::{SchedError, SchedFlags, Scheduler};
use crate::time::Instant;

/// Default table size: 65537, Katran's and Envoy's.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// Largest table size accepted.
pub const MAX_TABLE_SIZE: u32 = 655_373;

const P0: u64 = 0x243f_6a88_85a3_08d3;
const P1: u64 = 0x1319_8a2e_0370_7344;
const P2: u64 = 0xa409_3822_299f_31d0;
const P3: u64 = 0x082e_fa98_ec4e_6c89;
/// Seed of the per-server offset hash.
pub const OFFSET_SEED: u64 = 0x4f46_4653_4554_0001; // "OFFSET" + 1
/// Seed of the per-server skip hash.
pub const SKIP_SEED: u64 = 0x534b_4950_0000_0002; // "SKIP" + 2
const EMPTY: u32 = u32::MAX;

/// Which fields of a flow `maglev` hashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MaglevKey {
    /// Protocol, both addresses and both ports (the default).
    #[default]
    FiveTuple,
    /// Client address and port only (Katran's default: the VIP has its own table).
    SourceAddrPort,
    /// Client address only: every connection of a client lands on one server, like `sh`.
    SourceAddr,
}

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let r = a as u128 * b as u128;
    (r as u64) ^ ((r >> 64) as u64)
}

/// "lvs maglev hash v1" of a server address, over 16-byte blocks (see the module docs).
#[inline(always)]
pub fn hash_blocks(blocks: &[(u64, u64)], seed: u64) -> u64 {
    let mut h = seed;
    for &(x, y) in blocks {
        h = fold(x ^ h ^ P0, y ^ P1);
    }
    fold(h ^ P2, (blocks.len() as u64 * 16) ^ P3)
}

/// Reduces a hash to `0..n` with the high half of the product (Lemire).
#[inline(always)]
pub fn reduce(h: u64, n: u32) -> u32 {
    ((h as u128 * n as u128) >> 64) as u32
}

fn v6_words(a: &core::net::Ipv6Addr) -> (u64, u64) {
    let o = a.octets();
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&o[..8]);
    lo.copy_from_slice(&o[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

/// The stable hash of a flow for `key`, with `seed` (0 by default).
#[inline(always)]
pub fn flow_hash(flow: &FlowKey, key: MaglevKey, seed: u64) -> u64 {
    let (dst, sport, dport, proto) = match key {
        MaglevKey::FiveTuple => (Some(&flow.dst), flow.sport, flow.dport, flow.proto.number()),
        MaglevKey::SourceAddrPort => (None, flow.sport, 0, 0),
        MaglevKey::SourceAddr => (None, 0, 0, 0),
    };
    let tail = ((sport as u64) << 48) | ((dport as u64) << 32) | ((proto as u64) << 8);
    match flow.src {
        IpAddr::V4(s) => {
            let d = match dst {
                Some(IpAddr::V4(d)) => u32::from(*d),
                Some(IpAddr::V6(d)) => super::hash::fold(&IpAddr::V6(*d)),
                None => 0,
            };
            let a = ((u32::from(s) as u64) << 32) | d as u64;
            fold(a ^ P0 ^ seed, (tail | 4) ^ P1)
        }
        IpAddr::V6(s) => {
            let (d_hi, d_lo) = match dst {
                Some(IpAddr::V6(d)) => v6_words(d),
                Some(IpAddr::V4(d)) => (0, u32::from(*d) as u64),
                None => (0, 0),
            };
            let (s_hi, s_lo) = v6_words(&s);
            fold(
                fold(s_hi ^ P0 ^ seed, s_lo ^ P1) ^ tail ^ 6,
                fold(d_hi ^ P2, d_lo ^ P3),
            )
        }
    }
}

fn server_hash(addr: &IpAddr, port: u16, seed: u64) -> u64 {
    match addr {
        IpAddr::V4(a) => hash_blocks(&[(u32::from(*a) as u64, ((port as u64) << 8) | 4)], seed),
        IpAddr::V6(a) => {
            let (hi, lo) = v6_words(a);
            hash_blocks(&[(hi, lo), (((port as u64) << 8) | 6, 0)], seed)
        }
    }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Checks a requested table size: a prime in `3..=655373`.
pub fn check_table_size(m: u32) -> Result<u32, SchedError> {
    if (3..=MAX_TABLE_SIZE).contains(&m) && is_prime(m) {
        Ok(m)
    } else {
        Err(SchedError::InvalidTableSize(m))
    }
}

/// Largest-remainder quotas summing to `m`, each positive weight getting at least one slot.
/// `weights.len() <= m` is required.
fn quotas(weights: &[u32], m: u32) -> Vec<u32> {
    let total: u64 = weights.iter().map(|&w| w as u64).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let m64 = m as u64;
    let mut q: Vec<u32> = weights
        .iter()
        .map(|&w| (m64 * w as u64 / total) as u32)
        .collect();
    let assigned: u64 = q.iter().map(|&x| x as u64).sum();
    // Largest remainder first; ties to the earlier server in sorted order. The keys are
    // distinct, so the first `extra` of them are one set, found without sorting the rest.
    let mut by_remainder: Vec<(Reverse<u64>, usize)> = (0..weights.len())
        .filter(|&i| weights[i] > 0)
        .map(|i| (Reverse(m64 * weights[i] as u64 % total), i))
        .collect();
    let extra = (m64 - assigned) as usize;
    if extra > 0 && extra < by_remainder.len() {
        by_remainder.select_nth_unstable(extra - 1);
    }
    for &(_, i) in by_remainder.iter().take(extra) {
        q[i] += 1;
    }
    // A positive weight always gets a slot: take it from the largest quota.
    let zeros: Vec<usize> = (0..weights.len())
        .filter(|&i| weights[i] > 0 && q[i] == 0)
        .collect();
    if !zeros.is_empty() {
        let mut heap: BinaryHeap<(u32, Reverse<usize>)> = q
            .iter()
            .enumerate()
            .filter(|&(_, &x)| x > 1)
            .map(|(i, &x)| (x, Reverse(i)))
            .collect();
        for z in zeros {
            if let Some((x, Reverse(i))) = heap.pop() {
                q[i] = x - 1;
                q[z] = 1;
                if x - 1 > 1 {
                    heap.push((x - 1, Reverse(i)));
                }
            }
        }
    }
    q
}

/// Slot owners as indexes into the table's server list: 16 bits while there are fewer than
/// 65535 servers, so a 65537-slot table is 128 KiB and lookups miss cache less.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slots {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

/// A slot entry type: `u16` or `u32`, all ones meaning empty.
trait SlotIndex: Copy {
    const EMPTY: Self;
    fn from_index(i: u32) -> Self;
    fn index(self) -> usize;
}

impl SlotIndex for u16 {
    const EMPTY: u16 = u16::MAX;
    fn from_index(i: u32) -> u16 {
        i as u16
    }
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

impl SlotIndex for u32 {
    const EMPTY: u32 = EMPTY;
    fn from_index(i: u32) -> u32 {
        i
    }
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

impl Slots {
    /// Populated slots for `servers` with quotas `q` (largest `max_q`).
    fn populate(m: u32, servers: &[(IpAddr, u16, u32, DestId)], q: &[u32], max_q: u32) -> Slots {
        fn fill<T: SlotIndex>(
            m: u32,
            servers: &[(IpAddr, u16, u32, DestId)],
            q: &[u32],
            max_q: u32,
        ) -> Vec<T> {
            let mut slots = vec![T::EMPTY; m as usize];
            if max_q > 0 {
                if m as usize <= 64 * WORDS_SMALL {
                    populate::<T, WORDS_SMALL>(&mut slots, servers, q, max_q);
                } else {
                    populate::<T, WORDS_LARGE>(&mut slots, servers, q, max_q);
                }
            }
            slots
        }
        if servers.len() < u16::MAX as usize {
            Slots::Narrow(fill(m, servers, q, max_q))
        } else {
            Slots::Wide(fill(m, servers, q, max_q))
        }
    }

    /// Owner index of slot `i`, or `EMPTY`.
    #[inline(always)]
    fn get(&self, i: usize) -> u32 {
        match self {
            Slots::Narrow(v) => match v[i] {
                u16::MAX => EMPTY,
                s => s as u32,
            },
            Slots::Wide(v) => v[i],
        }
    }

    fn len(&self) -> usize {
        match self {
            Slots::Narrow(v) => v.len(),
            Slots::Wide(v) => v.len(),
        }
    }
}

/// An immutable `maglev` lookup table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    size: u32,
    key: MaglevKey,
    seed: u64,
    slots: Slots,
    ids: Vec<DestId>,
    servers: Vec<(IpAddr, u16)>,
    counts: Vec<u32>,
}

impl MaglevTable {
    /// Builds the table of size `m` (a prime, see [`check_table_size`]) for the linked servers
    /// of `dests`, from their last non-zero weights.
    pub fn build(
        dests: &DestSet,
        m: u32,
        key: MaglevKey,
        seed: u64,
    ) -> Result<MaglevTable, SchedError> {
        let m = check_table_size(m)?;
        if dests.len() > m as usize {
            return Err(DestError::TooMany { limit: m as usize }.into());
        }
        let mut servers: Vec<(IpAddr, u16, u32, DestId)> = dests
            .iter()
            .map(|(id, d)| (d.addr(), d.port(), d.last_weight(), id))
            .collect();
        servers.sort_unstable_by_key(|s| (s.0, s.1));
        let weights: Vec<u32> = servers.iter().map(|s| s.2).collect();
        let q = quotas(&weights, m);
        let max_q = q.iter().copied().max().unwrap_or(0);
        let slots = Slots::populate(m, &servers, &q, max_q);
        Ok(MaglevTable {
            size: m,
            key,
            seed,
            slots,
            ids: servers.iter().map(|s| s.3).collect(),
            servers: servers.iter().map(|s| (s.0, s.1)).collect(),
            counts: q,
        })
    }

    /// The table size M.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Owner of each slot.
    pub fn owners(&self) -> impl ExactSizeIterator<Item = Option<DestId>> + '_ {
        (0..self.slots.len()).map(|i| self.owner_of_slot(i))
    }

    #[inline(always)]
    fn owner_of_slot(&self, i: usize) -> Option<DestId> {
        match self.slots.get(i) {
            EMPTY => None,
            s => Some(self.ids[s as usize]),
        }
    }

    /// Slots owned by each server, as `(address, port, slots)` sorted by address and port.
    pub fn slot_counts(&self) -> impl Iterator<Item = (IpAddr, u16, u32)> + '_ {
        self.servers
            .iter()
            .zip(&self.counts)
            .map(|(&(a, p), &c)| (a, p, c))
    }

    /// A 64-bit digest of the table (size, key, seed and every slot's owner address and port):
    /// equal on two directors iff they build the same table.
    pub fn fingerprint(&self) -> u64 {
        let server_h: Vec<u64> = self
            .servers
            .iter()
            .map(|(a, p)| server_hash(a, *p, 0))
            .collect();
        let mut h = hash_blocks(&[(self.size as u64, self.seed ^ self.key as u64)], 0);
        let w = |i: usize| match self.slots.get(i) {
            EMPTY => 0,
            s => server_h[s as usize],
        };
        let n = self.slots.len();
        for i in (0..n).step_by(2) {
            let y = if i + 1 < n { w(i + 1) } else { 0 };
            h = fold(w(i) ^ h ^ P0, y ^ P1);
        }
        h
    }

    /// The slot of `flow`.
    #[inline(always)]
    pub fn slot_of(&self, flow: &FlowKey) -> usize {
        reduce(flow_hash(flow, self.key, self.seed), self.size) as usize
    }

    /// The owner of `flow`'s slot, whether or not it takes new connections: the stateless
    /// Katran-style lookup, for callers that check availability themselves.
    #[inline]
    pub fn owner(&self, flow: &FlowKey) -> Option<DestId> {
        self.owner_of_slot(self.slot_of(flow))
    }

    /// [`owner`](Self::owner) for a burst: `out[i]` is the owner of `flows[i]`'s slot, for
    /// `i` below the shorter length. The per-table choices (hashed fields, slot width) are made
    /// once per burst rather than once per flow, which is what a stateless dataplane wants.
    pub fn owner_batch(&self, flows: &[FlowKey], out: &mut [Option<DestId>]) {
        self.batch(flows, out, |_| true);
    }

    /// [`lookup`](Self::lookup) for a burst: `out[i]` is the server for `flows[i]`, for `i`
    /// below the shorter length.
    pub fn lookup_batch(
        &self,
        dests: &DestSet,
        flows: &[FlowKey],
        fallback: bool,
        out: &mut [Option<DestId>],
    ) {
        self.batch(flows, out, |id| dests.accepts_new(id));
        if fallback {
            for (f, o) in flows.iter().zip(out.iter_mut()) {
                if o.is_none() {
                    *o = self.lookup(dests, f, true);
                }
            }
        }
    }

    /// The owner of each flow's slot if `ok`, else `None`, with the hash and slot width fixed
    /// outside the loop.
    #[inline(always)]
    fn batch(&self, flows: &[FlowKey], out: &mut [Option<DestId>], ok: impl Fn(DestId) -> bool) {
        #[inline(always)]
        fn run<T: SlotIndex>(
            slots: &[T],
            ids: &[DestId],
            flows: &[FlowKey],
            out: &mut [Option<DestId>],
            hash: impl Fn(&FlowKey) -> u64,
            ok: impl Fn(DestId) -> bool,
        ) {
            let m = slots.len() as u32;
            const CHUNK: usize = 32;
            let n = flows.len().min(out.len());
            let (flows, out) = (&flows[..n], &mut out[..n]);
            let mut at = [0u32; CHUNK];
            for (fc, oc) in flows.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
                // Hash the chunk first, so its slot loads then issue back to back.
                for (a, f) in at.iter_mut().zip(fc) {
                    *a = reduce(hash(f), m);
                }
                for (&a, o) in at.iter().zip(oc) {
                    let s = slots[a as usize];
                    // An empty slot's index (all ones) is past every server's.
                    *o = ids.get(s.index()).copied().filter(|&id| ok(id));
                }
            }
        }
        #[inline(always)]
        fn with_key<T: SlotIndex>(
            t: &MaglevTable,
            slots: &[T],
            flows: &[FlowKey],
            out: &mut [Option<DestId>],
            ok: impl Fn(DestId) -> bool,
        ) {
            // One arm per key, each with its key a constant that the inlined hash folds.
            let seed = t.seed;
            let keyed = |key| move |f: &FlowKey| flow_hash(f, key, seed);
            match t.key {
                k @ MaglevKey::FiveTuple => run(slots, &t.ids, flows, out, keyed(k), ok),
                k @ MaglevKey::SourceAddrPort => run(slots, &t.ids, flows, out, keyed(k), ok),
                k @ MaglevKey::SourceAddr => run(slots, &t.ids, flows, out, keyed(k), ok),
            }
        }
        match &self.slots {
            Slots::Narrow(v) => with_key(self, v, flows, out, ok),
            Slots::Wide(v) => with_key(self, v, flows, out, ok),
        }
    }

    /// The server for `flow` if it takes new connections; with `fallback`, otherwise the owner
    /// of the next slot (`+1, +2, ...`) that does.
    #[inline]
    pub fn lookup(&self, dests: &DestSet, flow: &FlowKey, fallback: bool) -> Option<DestId> {
        let first = self.slot_of(flow);
        let id = self.owner_of_slot(first)?;
        if dests.accepts_new(id) {
            return Some(id);
        }
        if !fallback {
            return None;
        }
        let n = self.slots.len();
        (1..n)
            .filter_map(|k| self.owner_of_slot((first + k) % n))
            .find(|&id| dests.accepts_new(id))
    }
}

/// A server's place in the calendar of rounds.
#[derive(Clone, Copy)]
struct Due {
    /// Remainder e with (k + 1) Q - 1 = q r + e.
    rem: u32,
    /// Q / q and Q % q.
    step: u32,
    step_rem: u32,
    quota: u32,
}

/// The order of claims: server indexes, `sum(q)` of them, in Bresenham-interleaved rounds.
///
/// A calendar of rounds: intrusive singly linked lists of servers due in each round. A server
/// with quota q claims its k-th slot in round r_k = floor(((k + 1) Q - 1) / q), stepped
/// without division: r_{k+1} = r_k + Q / q, plus one when the remainder carries. Each claim
/// pushes its server on the list of its next round, so a round lists its servers latest push
/// first (round 0's, and every server's first round, in index order). After its last claim a
/// server moves on to round r_q = Q + floor((Q - 1) / q) < 2Q, never reached: no count of
/// claims left. The order depends on the quotas only, not on the slots claimed, so it is
/// computed first, in one pass without the table, and the claims follow it in a second (the
/// calendar's list walk is a chain of dependent loads, which slowed the claims it was fused
/// with).
fn claim_order<T: SlotIndex>(q: &[u32], max_q: u32) -> Vec<T> {
    let mut due: Vec<Due> = q
        .iter()
        .map(|&quota| {
            let qi = quota.max(1);
            Due {
                rem: (max_q - 1) % qi,
                step: max_q / qi,
                step_rem: max_q % qi,
                quota: qi,
            }
        })
        .collect();
    // `link[i]`: the server after `i` in its round's list, or `EMPTY`.
    let mut link = vec![EMPTY; q.len()];
    let mut head = vec![EMPTY; 2 * max_q as usize];
    for (i, d) in due.iter().enumerate().rev() {
        if q[i] > 0 {
            let round = ((max_q - 1) / d.quota) as usize;
            link[i] = head[round];
            head[round] = i as u32;
        }
    }
    let mut order = Vec::with_capacity(q.iter().map(|&x| x as usize).sum());
    for r in 0..max_q {
        let mut i = head[r as usize];
        while i != EMPTY {
            order.push(T::from_index(i));
            let after = link[i as usize];
            let d = &mut due[i as usize];
            d.rem += d.step_rem;
            let carry = d.rem >= d.quota;
            d.rem -= if carry { d.quota } else { 0 };
            let round = (r + d.step + carry as u32) as usize;
            link[i as usize] = head[round];
            head[round] = i;
            i = after;
        }
    }
    order
}

/// Claims the table's slots in [`claim_order`]; each claim takes the next free slot of the
/// server's permutation.
fn populate<T: SlotIndex, const W: usize>(
    slots: &mut [T],
    servers: &[(IpAddr, u16, u32, DestId)],
    q: &[u32],
    max_q: u32,
) {
    let m = slots.len() as u32;
    let order: Vec<T> = claim_order(q, max_q);
    // Each server's next slot to try and its skip, side by side.
    let mut perm: Vec<(u32, u32)> = servers
        .iter()
        .map(|s| {
            (
                reduce(server_hash(&s.0, s.1, OFFSET_SEED), m),
                reduce(server_hash(&s.0, s.1, SKIP_SEED), m - 1) + 1,
            )
        })
        .collect();
    let mut filler = Filler::<W>::new(m);
    // While at least one slot in eight is free, claims go six at a time, in lockstep
    // (`Filler::claim_batch`); with fewer, the wasted steps of the lanes that finish first cost
    // more than the mispredicts they save (measured at N = 1000, M = 65537: 6 lanes 5% faster
    // than 4, and than 5 or 8; 2 or 3 lanes slower; lockstep down to 1/16 slower).
    // A server twice in a batch (at a round's end and the next's start) passes the same start
    // twice: its second claim finds its first slot taken at commit and probes on from there,
    // past slots all taken, so it claims what it would have claimed after the first.
    const K: usize = 6;
    let lockstep_min = (m / 8).max(K as u32);
    let mut done = 0;
    for batch in order.chunks_exact(K) {
        if filler.budget() < lockstep_min {
            break;
        }
        done += K;
        let pos: [u32; K] = core::array::from_fn(|j| perm[batch[j].index()].0);
        let skip: [u32; K] = core::array::from_fn(|j| perm[batch[j].index()].1);
        let cs = filler.claim_batch(pos, skip);
        for j in 0..K {
            commit(&mut perm, slots, m, batch[j], cs[j]);
        }
    }
    for &i in &order[done..] {
        let (next, skip) = perm[i.index()];
        let c = filler.claim(next, skip);
        commit(&mut perm, slots, m, i, c);
    }
}

/// Server `i` took slot `c`: its next claim may start one step further (`c` is taken).
#[inline(always)]
fn commit<T: SlotIndex>(perm: &mut [(u32, u32)], slots: &mut [T], m: u32, i: T, c: u32) {
    let p = &mut perm[i.index()];
    slots[c as usize] = i;
    p.0 = if c + p.1 >= m { c + p.1 - m } else { c + p.1 };
}

/// Maglev scheduler (this crate's own, see the module docs).
#[derive(Clone, Debug)]
pub struct Maglev {
    flags: SchedFlags,
    table: Arc<MaglevTable>,
}

impl Maglev {
    /// A `maglev` scheduler with table size `m` (a prime up to 655373), hashing `key`, with the
    /// fallback flag from `flags`.
    pub fn new(flags: SchedFlags, m: u32, key: MaglevKey) -> Result<Self, SchedError> {
        Self::with_seed(flags, m, key, 0)
    }

    /// The same with a hash seed: directors that must agree need the same seed.
    pub fn with_seed(
        flags: SchedFlags,
        m: u32,
        key: MaglevKey,
        seed: u64,
    ) -> Result<Self, SchedError> {
        let table = MaglevTable::build(&DestSet::new(), m, key, seed)?;
        Ok(Maglev {
            flags,
            table: Arc::new(table),
        })
    }

    /// The current table, shareable with other threads.
    pub fn table(&self) -> &Arc<MaglevTable> {
        &self.table
    }

    fn build(&self, dests: &DestSet) -> Result<MaglevTable, SchedError> {
        MaglevTable::build(dests, self.table.size, self.table.key, self.table.seed)
    }
}

impl Scheduler for Maglev {
    fn name(&self) -> &'static str {
        "maglev"
    }

    fn init(&mut self, dests: &DestSet) {
        if let Ok(t) = self.build(dests) {
            self.table = Arc::new(t);
        }
    }

    fn update(&mut self, dests: &DestSet, event: DestEvent) {
        if !matches!(event, DestEvent::Load(_)) {
            self.init(dests);
        }
    }

    #[inline]
    fn schedule(&mut self, dests: &DestSet, flow: &FlowKey, _: Instant) -> Option<DestId> {
        self.table
            .lookup(dests, flow, self.flags.contains(SchedFlags::FALLBACK))
    }

    fn max_dests(&self) -> Option<usize> {
        Some(self.table.size as usize)
    }

    fn table_for(&self, dests: &DestSet) -> Option<Vec<Option<DestId>>> {
        self.build(dests).ok().map(|t| t.owners().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::DestConfig;
    use crate::flow::Protocol;
    use crate::sched::Pool;
    use crate::sched::testutil::*;
    use alloc::boxed::Box;

    #[test]
    fn hash_v1_is_pinned() {
        // Changing these values changes every director's choices: a breaking change. They are
        // computed from the documented formulas by tests/oracle/maglev_hash.py, not by this code.
        let f = FlowKey::new(
            Protocol::Tcp,
            "203.0.113.7".parse().unwrap(),
            40000,
            "10.0.0.1".parse().unwrap(),
            80,
        );
        assert_eq!(
            flow_hash(&f, MaglevKey::FiveTuple, 0),
            0xdd29_2290_32ec_e2b4
        );
        assert_eq!(
            flow_hash(&f, MaglevKey::SourceAddr, 0),
            0x43f5_9c19_a650_b0cb
        );
        let g = FlowKey::new(
            Protocol::Udp,
            "2001:db8::7".parse().unwrap(),
            5353,
            "2001:db8::1".parse().unwrap(),
            53,
        );
        assert_eq!(
            flow_hash(&g, MaglevKey::FiveTuple, 0),
            0x062e_c9df_ab3c_39e2
        );
        assert_eq!(
            server_hash(&"192.168.1.1".parse().unwrap(), 80, OFFSET_SEED),
            0xca64_e69b_b258_1958
        );
        assert_eq!(reduce(u64::MAX, 65537), 65536);
        assert_eq!(reduce(0, 65537), 0);
    }

    #[test]
    fn flows_spread_evenly_even_when_sequential() {
        // 10 equal servers; clients and ports in dense sequential ranges, the worst case for a
        // weak hash. Every server must get 10% +- 0.6% of 120000 flows.
        let p = typed_pool(
            Maglev::new(SchedFlags::NONE, DEFAULT_TABLE_SIZE, MaglevKey::default()).unwrap(),
            &[
                (1, 1),
                (2, 1),
                (3, 1),
                (4, 1),
                (5, 1),
                (6, 1),
                (7, 1),
                (8, 1),
                (9, 1),
                (10, 1),
            ],
        );
        for key in [
            MaglevKey::FiveTuple,
            MaglevKey::SourceAddrPort,
            MaglevKey::SourceAddr,
        ] {
            let t = MaglevTable::build(p.dests(), DEFAULT_TABLE_SIZE, key, 0).unwrap();
            let mut counts = std::collections::BTreeMap::new();
            let n = 120_000u32;
            for i in 0..n {
                let (a, port) = match key {
                    MaglevKey::SourceAddr => (0x0a00_0000 + i, 1000),
                    _ => (0x0a00_0000 + i / 400, 1024 + (i % 400) as u16),
                };
                let mut f = flow([0; 4], port);
                f.src = IpAddr::V4(core::net::Ipv4Addr::from(a));
                *counts.entry(t.owner(&f)).or_insert(0u32) += 1;
            }
            assert_eq!(counts.len(), 10);
            for (&o, &c) in &counts {
                let share = c as f64 / n as f64;
                assert!((0.094..0.106).contains(&share), "{key:?} {o:?}: {share}");
            }
        }
    }

    #[test]
    fn table_sizes_are_checked() {
        assert!(check_table_size(65537).is_ok());
        assert!(check_table_size(655_373).is_ok());
        assert!(check_table_size(65536).is_err());
        assert!(check_table_size(655_379).is_err()); // prime, but above the limit
        assert!(check_table_size(1).is_err());
        assert!(Maglev::new(SchedFlags::NONE, 100, MaglevKey::default()).is_err());
    }

    #[test]
    fn quotas_are_largest_remainder_with_a_floor_of_one() {
        assert_eq!(quotas(&[1, 1, 1], 7), vec![3, 2, 2]);
        assert_eq!(quotas(&[1, 2, 0], 7), vec![2, 5, 0]);
        assert_eq!(quotas(&[1, 65535], 11), vec![1, 10]);
        assert_eq!(quotas(&[0, 0], 11), vec![0, 0]);
        let q = quotas(&[3, 5, 7, 11], 65537);
        assert_eq!(q.iter().sum::<u32>(), 65537);
    }

    #[test]
    fn more_servers_than_slots_is_an_error() {
        let mut p: Pool = Pool::new(Box::new(
            Maglev::new(SchedFlags::NONE, 5, MaglevKey::default()).unwrap(),
        ));
        for n in 1..=5 {
            p.add_dest(&DestConfig::new(ip(n), 80)).unwrap();
        }
        assert!(p.add_dest(&DestConfig::new(ip(6), 80)).is_err());
        let t = MaglevTable::build(p.dests(), 5, MaglevKey::default(), 0).unwrap();
        assert!(t.owners().all(|o| o.is_some()));
        assert!(t.slot_counts().all(|(_, _, c)| c == 1));
    }

    #[test]
    fn order_independent_and_fingerprinted() {
        let a = typed_pool(
            Maglev::new(SchedFlags::NONE, 1021, MaglevKey::default()).unwrap(),
            &[(1, 1), (2, 2), (3, 3)],
        );
        let b = typed_pool(
            Maglev::new(SchedFlags::NONE, 1021, MaglevKey::default()).unwrap(),
            &[(3, 3), (1, 1), (2, 2)],
        );
        let owners = |p: &Pool<Maglev>| -> Vec<Option<(IpAddr, u16)>> {
            p.scheduler()
                .table()
                .owners()
                .map(|o| o.map(|id| (p.dests().get(id).unwrap().addr(), 80)))
                .collect()
        };
        assert_eq!(owners(&a), owners(&b));
        assert_eq!(
            a.scheduler().table().fingerprint(),
            b.scheduler().table().fingerprint()
        );
        let c = typed_pool(
            Maglev::new(SchedFlags::NONE, 1021, MaglevKey::default()).unwrap(),
            &[(3, 3), (1, 1), (2, 3)],
        );
        assert_ne!(
            a.scheduler().table().fingerprint(),
            c.scheduler().table().fingerprint()
        );
    }

    #[test]
    fn quiesced_slots_fall_back_to_the_next_available() {
        let mut p = typed_pool(
            Maglev::new(SchedFlags::FALLBACK, 1021, MaglevKey::default()).unwrap(),
            &[(1, 1), (2, 1), (3, 1)],
        );
        let before = p.scheduler().table().clone();
        let two = p.dests().find(ip(2), 80).unwrap();
        let on_two: Vec<_> = (0..200u8)
            .map(|i| flow([172, 16, 1, i], 1000))
            .filter(|f| p.schedule(f, Instant::ZERO) == Some(two))
            .collect();
        assert!(!on_two.is_empty());
        p.set_weight(two, 0).unwrap();
        assert_eq!(**p.scheduler().table(), *before);
        for f in &on_two {
            let id = p.schedule(f, Instant::ZERO).unwrap();
            assert_ne!(id, two);
        }
        let mut q = typed_pool(
            Maglev::new(SchedFlags::NONE, 1021, MaglevKey::default()).unwrap(),
            &[(1, 1), (2, 1), (3, 1)],
        );
        let two = q.dests().find(ip(2), 80).unwrap();
        q.set_weight(two, 0).unwrap();
        for f in &on_two {
            assert_eq!(q.schedule(f, Instant::ZERO), None);
        }
    }

    /// The burst forms answer what the one-flow forms answer, for every hashed-field choice,
    /// with a quiesced server, with and without fallback, and stop at the shorter slice.
    #[test]
    fn batch_lookups_equal_single_lookups() {
        for key in [
            MaglevKey::FiveTuple,
            MaglevKey::SourceAddrPort,
            MaglevKey::SourceAddr,
        ] {
            let mut p = typed_pool(
                Maglev::with_seed(SchedFlags::NONE, 1021, key, 7).unwrap(),
                &[(1, 1), (2, 3), (3, 1)],
            );
            let two = p.dests().find(ip(2), 80).unwrap();
            p.set_weight(two, 0).unwrap();
            let table = p.scheduler().table().clone();
            let flows: Vec<FlowKey> = (0..300u16)
                .map(|i| flow([172, 16, (i >> 8) as u8, i as u8], 1000 + i))
                .collect();
            let mut out = vec![Some(two); flows.len() + 1];
            table.owner_batch(&flows, &mut out);
            for (f, o) in flows.iter().zip(&out) {
                assert_eq!(*o, table.owner(f));
            }
            assert_eq!(out[flows.len()], Some(two), "past the flows: untouched");
            assert!(out.contains(&Some(two)));
            for fallback in [false, true] {
                table.lookup_batch(p.dests(), &flows, fallback, &mut out[..100]);
                for (f, o) in flows.iter().zip(&out[..100]) {
                    assert_eq!(*o, table.lookup(p.dests(), f, fallback));
                }
                assert!(!out[..100].contains(&Some(two)));
                assert_eq!(out[..100].contains(&None), !fallback);
            }
        }
    }
}

#[cfg(test)]
mod stability {
    use super::*;
    use crate::sched::testutil::typed_pool;

    /// Table contents are part of the contract (several directors must agree, and upgrades
    /// must not move flows): the fingerprint of a fixed configuration is pinned.
    #[test]
    fn table_fingerprint_is_pinned() {
        let mut p = typed_pool(
            Maglev::new(SchedFlags::NONE, DEFAULT_TABLE_SIZE, MaglevKey::default()).unwrap(),
            &[],
        );
        for i in 0..200u32 {
            let a = IpAddr::V4(core::net::Ipv4Addr::from(0x0a00_0001 + i));
            p.add_dest(&crate::dest::DestConfig::new(a, 80).weight(1 + i * 37 % 100))
                .unwrap();
        }
        assert_eq!(p.scheduler().table().fingerprint(), 0x369c_0167_c2f1_470c);
    }

    /// The population, one probe at a time: the claim order's servers each take the first
    /// free slot of their own permutation.
    fn textbook(m: u32, servers: &[(IpAddr, u16, u32, DestId)], q: &[u32]) -> Vec<u32> {
        let max_q = q.iter().copied().max().unwrap_or(0);
        let mut slots = vec![EMPTY; m as usize];
        if max_q == 0 {
            return slots;
        }
        let mut next: Vec<(u32, u32)> = servers
            .iter()
            .map(|s| {
                (
                    reduce(server_hash(&s.0, s.1, OFFSET_SEED), m),
                    reduce(server_hash(&s.0, s.1, SKIP_SEED), m - 1) + 1,
                )
            })
            .collect();
        for i in claim_order::<u32>(q, max_q) {
            let (c, skip) = &mut next[i as usize];
            while slots[*c as usize] != EMPTY {
                *c = (*c + *skip) % m;
            }
            slots[*c as usize] = i;
            *c = (*c + *skip) % m;
        }
        slots
    }

    /// Lockstep batches (a server may be in one twice), single claims and the tail list give
    /// the textbook table, for equal, varied and extreme weights.
    #[test]
    fn population_is_the_textbook_one() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (m, n, max_w) in [
            (65_537u32, 1000usize, 100u64),
            (65_537, 7, 1),
            (65_537, 300, 1),
            (4093, 50, 65_535),
            (251, 250, 3),
            (131, 2, 1000),
        ] {
            let mut dests = DestSet::new();
            let servers: Vec<(IpAddr, u16, u32, DestId)> = (0..n)
                .map(|i| {
                    let a = IpAddr::V4(core::net::Ipv4Addr::from(0x0a00_0001 + i as u32));
                    let w = 1 + (rand() % max_w) as u32;
                    let (id, _) = dests
                        .add(&crate::dest::DestConfig::new(a, 80).weight(w))
                        .unwrap();
                    (a, 80, w, id)
                })
                .collect();
            let weights: Vec<u32> = servers.iter().map(|s| s.2).collect();
            let q = quotas(&weights, m);
            let max_q = q.iter().copied().max().unwrap_or(0);
            let Slots::Narrow(got) = Slots::populate(m, &servers, &q, max_q) else {
                panic!("narrow slots for {n} servers");
            };
            let want = textbook(m, &servers, &q);
            let got: Vec<u32> = got
                .iter()
                .map(|&s| if s == u16::MAX { EMPTY } else { s as u32 })
                .collect();
            assert_eq!(got, want, "m={m} n={n} max_w={max_w}");
        }
    }
}
