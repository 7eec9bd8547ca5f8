//! Storage of one address family: a slab of fixed-size entries, a bucketised cuckoo index and a
//! timer wheel, all allocated once at construction.
//!
//! - **Entries** live in a slab indexed by a 24-bit id. An IPv4 entry is 56 bytes: the three
//!   addresses and ports, IPVS flags, protocol state, expiry, real server, the wheel links, the
//!   template link (or a template's count of controlled connections) and packet and byte
//!   counters both ways (bytes as 40-bit saturating counters, 1 TiB).
//! - **Index.** One 32-bit slot per entry (8-bit tag, 24-bit id) in 64-byte buckets of 16, two
//!   candidate buckets per key (partial-key cuckoo hashing: the second bucket is derived from
//!   the first and the tag, so entries move without re-reading them), sized for 90 % load at
//!   capacity. As in IPVS (ipvs.md §5.2) a connection is hashed by its client side only
//!   (protocol, client address, client port), so one slot serves both the in lookup (client to
//!   VIP) and the out lookup of NAT replies (real server to client). Templates hash their
//!   client network together with the virtual address and port. The hash is keyed
//!   (folded 64x64->128 multiplies with a caller-chosen 128-bit seed): an attacker who does not
//!   know the seed cannot aim keys at one bucket, and a bucket pair holds at most 32 entries,
//!   so no lookup ever scans more than two cache lines of slots.
//! - **Timer wheel.** One slot per millisecond tick, a power of two between 1024 and 65536
//!   slots, doubly linked lists through the entries. Refreshing a connection on each packet only
//!   stores the new expiry (lazy re-arming); an entry whose expiry moved later is re-linked when
//!   the wheel reaches it, and one whose expiry moved earlier is re-linked at once, so each
//!   entry is visited at or before its expiry and at most once per wheel revolution after.

use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Largest number of entries per address family (ids are 24-bit; the top 65536 values mark
/// wheel-list ends).
pub const MAX_CAPACITY: u32 = MARK;

const MARK: u32 = 0xFF_0000;
const LINK: u32 = 0xFF_FFFF;
pub(crate) const NONE: u32 = u32::MAX;
const SLOTS: usize = 16;
/// Slots of a bucket that hold entries; the last word is the bucket's metadata.
const USABLE: usize = 15;
/// The metadata word: bits 0..15 say which slots hold a key whose *other* bucket is its
/// primary (it was pushed here), bits 16..32 count the keys whose primary is this bucket but
/// that live in their other bucket (saturating at 0xFFFF, then sticky). A lookup that misses in
/// its primary bucket reads the other one only when that count is not 0, so most misses (and
/// the duplicate check of every insert) read one cache line.
const META: usize = 15;
const OVERFLOW_ONE: u32 = 1 << 16;
const OVERFLOW_STICKY: u32 = 0xFFFF << 16;
const MAX_KICKS: usize = 64;

/// IPVS connection flag values (ipvs.md §1.2) and two of our own in the spare bits.
pub(crate) mod flag {
    pub const NOOUTPUT: u16 = 0x0080;
    pub const INACTIVE: u16 = 0x0100;
    pub const NO_CPORT: u16 = 0x0800;
    pub const TEMPLATE: u16 = 0x1000;
    /// Ours: the slab slot holds an entry.
    pub const IN_USE: u16 = 0x8000;
    /// Ours: a template that was invalidated and can never match again.
    pub const INVALID: u16 = 0x4000;
    /// Bits a caller may set (the IPVS ones, excluding HASHED).
    pub const USER: u16 = 0x3fbf;
}

/// An address family's address, as stored in entries.
pub(crate) trait Addr: Copy + Eq + Default + core::fmt::Debug {
    const V6: bool;
    fn from_ip(ip: IpAddr) -> Option<Self>;
    fn to_ip(self) -> IpAddr;
    /// Two words for hashing.
    fn words(self) -> (u64, u64);
    /// The first `prefix` bits (IPv4 netmask as prefix length; IPv6 prefix).
    fn masked(self, prefix: u8) -> Self;
    /// A firewall mark in the address slot of a fwmark template (IPVS puts it in the first
    /// 32-bit word).
    fn from_mark(mark: u32) -> Self;
}

impl Addr for u32 {
    const V6: bool = false;
    #[inline(always)]
    fn from_ip(ip: IpAddr) -> Option<u32> {
        match ip {
            IpAddr::V4(a) => Some(u32::from(a)),
            IpAddr::V6(_) => None,
        }
    }
    fn to_ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
    #[inline(always)]
    fn words(self) -> (u64, u64) {
        (self as u64, 0)
    }
    fn masked(self, prefix: u8) -> u32 {
        match prefix {
            0 => 0,
            p if p >= 32 => self,
            p => self & !(u32::MAX >> p),
        }
    }
    fn from_mark(mark: u32) -> u32 {
        mark
    }
}

impl Addr for u128 {
    const V6: bool = true;
    #[inline(always)]
    fn from_ip(ip: IpAddr) -> Option<u128> {
        match ip {
            IpAddr::V6(a) => Some(u128::from(a)),
            IpAddr::V4(_) => None,
        }
    }
    fn to_ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }
    #[inline(always)]
    fn words(self) -> (u64, u64) {
        ((self >> 64) as u64, self as u64)
    }
    fn masked(self, prefix: u8) -> u128 {
        match prefix {
            0 => 0,
            p if p >= 128 => self,
            p => self & !(u128::MAX >> p),
        }
    }
    fn from_mark(mark: u32) -> u128 {
        (mark as u128) << 96
    }
}

/// One entry. Field packing (high byte of three link words) keeps an IPv4 entry at 56 bytes;
/// `repr(C)` keeps what an in lookup compares (client and virtual address and port, flags,
/// expiry, protocol) in the first 24 bytes, so it rarely straddles two cache lines.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Entry<A> {
    pub caddr: A,
    pub vaddr: A,
    pub cport: u16,
    pub vport: u16,
    pub flags: u16,
    pub dport: u16,
    /// Expiry tick (milliseconds, modulo 2^32).
    pub deadline: u32,
    /// Wheel prev link (24) | state (4) << 24 | protocol code (3) << 28.
    pub prev: u32,
    pub daddr: A,
    /// Caller's destination handle, `NONE` if unknown.
    pub dest: u32,
    /// Wheel next link (24) | in_bytes bits 32..40 << 24.
    pub next: u32,
    /// Template id + 1 for a connection (0 = none), controlled count for a template (24) |
    /// out_bytes bits 32..40 << 24.
    pub ctl: u32,
    pub in_pkts: u32,
    pub out_pkts: u32,
    pub in_bytes: u32,
    pub out_bytes: u32,
}

impl<A: Addr> Entry<A> {
    #[inline(always)]
    pub fn state(&self) -> u8 {
        ((self.prev >> 24) & 0xf) as u8
    }
    #[inline(always)]
    pub fn set_state(&mut self, s: u8) {
        self.prev = (self.prev & !0x0f00_0000) | ((s as u32 & 0xf) << 24);
    }
    #[inline(always)]
    pub fn proto(&self) -> u8 {
        ((self.prev >> 28) & 0x7) as u8
    }
    pub fn set_proto(&mut self, p: u8) {
        self.prev = (self.prev & !0x7000_0000) | ((p as u32 & 0x7) << 28);
    }
    #[inline(always)]
    fn prev_link(&self) -> u32 {
        self.prev & LINK
    }
    #[inline(always)]
    fn set_prev_link(&mut self, l: u32) {
        self.prev = (self.prev & !LINK) | l;
    }
    #[inline(always)]
    fn next_link(&self) -> u32 {
        self.next & LINK
    }
    #[inline(always)]
    fn set_next_link(&mut self, l: u32) {
        self.next = (self.next & !LINK) | l;
    }
    #[inline(always)]
    pub fn ctl(&self) -> u32 {
        self.ctl & LINK
    }
    #[inline(always)]
    pub fn set_ctl(&mut self, v: u32) {
        self.ctl = (self.ctl & !LINK) | (v & LINK);
    }
    pub fn in_bytes(&self) -> u64 {
        ((self.next >> 24) as u64) << 32 | self.in_bytes as u64
    }
    pub fn out_bytes(&self) -> u64 {
        ((self.ctl >> 24) as u64) << 32 | self.out_bytes as u64
    }
    /// Counts one packet of `len` bytes; the byte counters saturate at 2^40 - 1.
    #[inline(always)]
    pub fn count(&mut self, output: bool, len: u32) {
        const MAX: u64 = (1 << 40) - 1;
        if output {
            self.out_pkts = self.out_pkts.saturating_add(1);
            let b = (self.out_bytes() + len as u64).min(MAX);
            self.out_bytes = b as u32;
            self.ctl = (self.ctl & LINK) | ((b >> 32) as u32) << 24;
        } else {
            self.in_pkts = self.in_pkts.saturating_add(1);
            let b = (self.in_bytes() + len as u64).min(MAX);
            self.in_bytes = b as u32;
            self.next = (self.next & LINK) | ((b >> 32) as u32) << 24;
        }
    }
    #[inline(always)]
    pub fn is(&self, f: u16) -> bool {
        self.flags & f != 0
    }
}

#[derive(Clone, Copy, Debug, Default)]
#[repr(align(64))]
struct Bucket([u32; SLOTS]);

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let r = a as u128 * b as u128;
    (r as u64) ^ ((r >> 64) as u64)
}

/// Where a key lives in the index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    b1: u32,
    b2: u32,
    tag: u32,
}

impl Probe {
    /// The first candidate bucket.
    #[inline(always)]
    pub fn first(&self) -> u32 {
        self.b1
    }
    /// The 8-bit tag.
    #[inline(always)]
    pub fn tag(&self) -> u32 {
        self.tag
    }
}

/// Wrapping comparison of ticks: whether `a` is at or after `b`.
#[inline(always)]
pub(crate) fn at_or_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// One address family's table.
#[derive(Clone, Debug)]
pub(crate) struct Table<A> {
    entries: Vec<Entry<A>>,
    free: u32,
    len: u32,
    buckets: Vec<Bucket>,
    alt: [u32; 256],
    seed: [u64; 4],
    heads: Vec<u32>,
    tails: Vec<u32>,
    mask: u32,
    /// Next tick the wheel processes.
    pub cursor: u32,
    kick: u32,
    /// Ring of ids that recently entered a half-open state, oldest first, for the drop-entry
    /// policy (a burst of SYNs all sits a few seconds ahead of the wheel's cursor).
    recent: Vec<u32>,
    recent_head: u32,
    recent_len: u32,
}

impl<A: Addr> Table<A> {
    pub fn new(capacity: u32, seed: [u64; 2], start_tick: u32) -> Self {
        let capacity = capacity.min(MAX_CAPACITY);
        let mut entries = vec![Entry::default(); capacity as usize];
        for (i, e) in entries.iter_mut().enumerate() {
            e.next = if i + 1 < capacity as usize {
                i as u32 + 1
            } else {
                LINK
            };
        }
        // 90 % load at capacity, at least two buckets.
        let nb = ((capacity as u64 * 10).div_ceil(9 * USABLE as u64)).max(2) as u32;
        let mut alt = [0u32; 256];
        for (t, a) in alt.iter_mut().enumerate() {
            let h = fold(
                (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                seed[1] | 1,
            );
            *a = ((h as u32 as u64 * nb as u64) >> 32) as u32;
        }
        let slots = (capacity / 8).next_power_of_two().clamp(1024, 65536);
        let s = [
            seed[0] ^ 0x243f_6a88_85a3_08d3,
            seed[1] ^ 0x1319_8a2e_0370_7344,
            seed[0].rotate_left(32) ^ 0xa409_3822_299f_31d0,
            seed[1].rotate_left(32) ^ 0x082e_fa98_ec4e_6c89,
        ];
        Table {
            entries,
            free: if capacity == 0 { LINK } else { 0 },
            len: 0,
            buckets: vec![Bucket::default(); nb as usize],
            alt,
            seed: s,
            heads: vec![NONE; slots as usize],
            tails: vec![NONE; slots as usize],
            mask: slots - 1,
            cursor: start_tick,
            kick: 0,
            recent: vec![NONE; (capacity / 8).clamp(64, 4096) as usize],
            recent_head: 0,
            recent_len: 0,
        }
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn capacity(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Bytes allocated: entries, index and wheel.
    pub fn memory_bytes(&self) -> usize {
        self.entries.len() * core::mem::size_of::<Entry<A>>()
            + self.buckets.len() * core::mem::size_of::<Bucket>()
            + (self.heads.len() + self.tails.len() + self.recent.len()) * 4
    }

    /// Remembers that `id` entered a half-open state; the oldest memory is overwritten.
    pub fn push_recent(&mut self, id: u32) {
        let n = self.recent.len() as u32;
        let at = (self.recent_head + self.recent_len) % n;
        self.recent[at as usize] = id;
        if self.recent_len < n {
            self.recent_len += 1;
        } else {
            self.recent_head = (self.recent_head + 1) % n;
        }
    }

    /// The oldest remembered half-open id (it may have moved on since).
    pub fn pop_recent(&mut self) -> Option<u32> {
        if self.recent_len == 0 {
            return None;
        }
        let id = self.recent[self.recent_head as usize];
        self.recent_head = (self.recent_head + 1) % self.recent.len() as u32;
        self.recent_len -= 1;
        Some(id)
    }

    pub fn wheel_slots(&self) -> u32 {
        self.mask + 1
    }

    #[inline(always)]
    pub fn entry(&self, id: u32) -> Option<&Entry<A>> {
        self.entries.get(id as usize).filter(|e| e.is(flag::IN_USE))
    }

    #[inline(always)]
    pub fn entry_mut(&mut self, id: u32) -> Option<&mut Entry<A>> {
        self.entries
            .get_mut(id as usize)
            .filter(|e| e.is(flag::IN_USE))
    }

    /// Hash of a connection's client side (both lookup directions use it).
    #[inline(always)]
    pub fn hash_conn(&self, proto: u8, caddr: A, cport: u16) -> u64 {
        let (x, y) = caddr.words();
        let t = (cport as u64) << 16 | (proto as u64) << 8;
        fold(fold(x ^ self.seed[0], y ^ t ^ self.seed[1]), self.seed[2])
    }

    /// Hash of a template: client network, virtual address and port.
    pub fn hash_template(&self, proto: u8, snet: A, vaddr: A, vport: u16) -> u64 {
        let (x, y) = snet.words();
        let (v, w) = vaddr.words();
        let t = (vport as u64) << 16 | (proto as u64) << 8 | 0x80;
        let h = fold(x ^ self.seed[0], y ^ t ^ self.seed[1]);
        fold(h ^ v ^ self.seed[2], w ^ self.seed[3])
    }

    #[inline(always)]
    pub fn probe(&self, h: u64) -> Probe {
        let nb = self.buckets.len() as u64;
        let b1 = ((h as u32 as u64 * nb) >> 32) as u32;
        let tag = (h >> 56) as u32;
        Probe {
            b1,
            b2: self.alt_bucket(b1, tag),
            tag,
        }
    }

    #[inline(always)]
    fn alt_bucket(&self, b: u32, tag: u32) -> u32 {
        // (f - b) mod nb is an involution: alt(alt(b)) = b.
        let f = self.alt[tag as usize];
        if f >= b {
            f - b
        } else {
            f + self.buckets.len() as u32 - b
        }
    }

    /// Touches bucket `b` so a batch of lookups overlaps its cache misses; returns a value to
    /// keep the load alive.
    #[inline(always)]
    pub fn touch_bucket_at(&self, b: u32) -> u32 {
        self.buckets.get(b as usize).map_or(0, |x| x.0[0])
    }

    /// The probe of a key whose first bucket and tag are known.
    #[inline(always)]
    pub fn probe_of(&self, b1: u32, tag: u32) -> Probe {
        Probe {
            b1,
            b2: self.alt_bucket(b1, tag),
            tag,
        }
    }

    /// Touches an entry (a load whose miss overlaps others'): its first and last words, since
    /// a 56-byte entry straddles two cache lines more often than not and the per-packet update
    /// writes the counters at its end.
    #[inline(always)]
    pub fn touch_entry(&self, id: u32) -> u32 {
        self.entries
            .get(id as usize)
            .map_or(0, |e| e.caddr.words().0 as u32 ^ e.prev ^ e.out_bytes)
    }

    /// Candidate ids in the first bucket as a bit mask (branch-free), for batched lookups.
    #[inline(always)]
    pub fn candidates(&self, b: u32, tag: u32) -> u32 {
        // All 16 words compared at once (the compiler vectorises a fixed-size loop), then the
        // metadata word masked off.
        let bucket = &self.buckets[b as usize].0;
        let mut m = 0u32;
        for (i, &v) in bucket.iter().enumerate() {
            m |= (((v >> 24) == tag && v != 0) as u32) << i;
        }
        m & ((1 << USABLE) - 1)
    }

    #[inline(always)]
    pub fn slot_id(&self, b: u32, i: u32) -> u32 {
        (self.buckets[b as usize].0[i as usize] & LINK) - 1
    }

    /// Whether keys whose primary bucket is `b` live in their other bucket too.
    #[inline(always)]
    fn overflowed(&self, b: u32) -> bool {
        self.buckets[b as usize].0[META] >> 16 != 0
    }

    /// The first id in the key's buckets whose entry satisfies `hit`. The second bucket is read
    /// only if some key of the first overflowed into its other bucket.
    #[inline(always)]
    pub fn find(&self, p: &Probe, hit: impl FnMut(&Entry<A>) -> bool) -> Option<u32> {
        let m = self.candidates(p.b1, p.tag);
        self.find_from(p, m, hit)
    }

    /// Like [`Table::find`] but starting from a precomputed first-bucket mask.
    #[inline(always)]
    pub fn find_from(
        &self,
        p: &Probe,
        mut m: u32,
        mut hit: impl FnMut(&Entry<A>) -> bool,
    ) -> Option<u32> {
        while m != 0 {
            let i = m.trailing_zeros();
            m &= m - 1;
            let id = self.slot_id(p.b1, i);
            if let Some(e) = self.entries.get(id as usize)
                && hit(e)
            {
                return Some(id);
            }
        }
        if p.b2 == p.b1 || !self.overflowed(p.b1) {
            return None;
        }
        let mut m = self.candidates(p.b2, p.tag);
        while m != 0 {
            let i = m.trailing_zeros();
            m &= m - 1;
            let id = self.slot_id(p.b2, i);
            if let Some(e) = self.entries.get(id as usize)
                && hit(e)
            {
                return Some(id);
            }
        }
        None
    }

    fn empty_slot(&self, b: u32) -> Option<usize> {
        self.buckets[b as usize].0[..USABLE]
            .iter()
            .position(|&v| v == 0)
    }

    /// Writes `val` (whose primary bucket is `primary`) into slot `s` of bucket `b`, keeping
    /// the metadata: the slot's "pushed here" bit, and the primary's overflow count.
    fn place(&mut self, b: u32, s: usize, val: u32, primary: u32, mut log: Option<&mut UndoLog>) {
        let pushed = b != primary;
        if let Some(l) = log.as_deref_mut() {
            l.save(self, b, s);
            l.save(self, b, META);
        }
        let bucket = &mut self.buckets[b as usize].0;
        bucket[s] = val;
        bucket[META] = (bucket[META] & !(1 << s)) | ((pushed as u32) << s);
        if pushed {
            if let Some(l) = log {
                l.save(self, primary, META);
            }
            let m = &mut self.buckets[primary as usize].0[META];
            if *m & OVERFLOW_STICKY != OVERFLOW_STICKY {
                *m += OVERFLOW_ONE;
            }
        }
    }

    /// Clears slot `s` of bucket `b`, keeping the metadata; returns the value and its primary
    /// bucket.
    fn take(&mut self, b: u32, s: usize, mut log: Option<&mut UndoLog>) -> (u32, u32) {
        if let Some(l) = log.as_deref_mut() {
            l.save(self, b, s);
            l.save(self, b, META);
        }
        let bucket = &mut self.buckets[b as usize].0;
        let val = bucket[s];
        let pushed = bucket[META] & (1 << s) != 0;
        bucket[s] = 0;
        bucket[META] &= !(1 << s);
        if !pushed {
            return (val, b);
        }
        let primary = self.alt_bucket(b, val >> 24);
        if let Some(l) = log {
            l.save(self, primary, META);
        }
        let m = &mut self.buckets[primary as usize].0[META];
        if *m & OVERFLOW_STICKY != OVERFLOW_STICKY {
            *m -= OVERFLOW_ONE;
        }
        (val, primary)
    }

    /// Puts `id` in the index; false if both buckets and a bounded cuckoo walk found no room
    /// (then the index is as it was).
    fn index_insert(&mut self, p: &Probe, id: u32) -> bool {
        let val = p.tag << 24 | (id + 1);
        for b in [p.b1, p.b2] {
            if let Some(s) = self.empty_slot(b) {
                self.place(b, s, val, p.b1, None);
                return true;
            }
        }
        let mut log = UndoLog::new();
        let (mut cur, mut primary) = (val, p.b1);
        let mut b = if self.kick & 1 == 0 { p.b1 } else { p.b2 };
        for _ in 0..MAX_KICKS {
            // A small LCG picks the victim slot: deterministic, and never stuck on a few slots.
            self.kick = self
                .kick
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            let s = (self.kick >> 28) as usize % USABLE;
            let (victim, victim_primary) = self.take(b, s, Some(&mut log));
            self.place(b, s, cur, primary, Some(&mut log));
            cur = victim;
            primary = victim_primary;
            b = self.alt_bucket(b, victim >> 24);
            if let Some(e) = self.empty_slot(b) {
                self.place(b, e, cur, primary, Some(&mut log));
                return true;
            }
        }
        log.undo(self);
        false
    }

    fn index_remove(&mut self, p: &Probe, id: u32) {
        let val = p.tag << 24 | (id + 1);
        for b in [p.b1, p.b2] {
            if let Some(s) = self.buckets[b as usize].0[..USABLE]
                .iter()
                .position(|&v| v == val)
            {
                self.take(b, s, None);
                return;
            }
        }
        debug_assert!(false, "entry {id} missing from the index");
    }

    /// Allocates an entry, indexes it under `h` and links it in the wheel. `None` when the
    /// slab is full or the index has no room for this key.
    pub fn insert(&mut self, mut e: Entry<A>, proto: u8, h: u64) -> Result<u32, InsertFail> {
        let id = self.free;
        if id == LINK {
            return Err(InsertFail::Full);
        }
        let p = self.probe(h);
        if !self.index_insert(&p, id) {
            return Err(InsertFail::Bucket);
        }
        self.free = self.entries[id as usize].next_link();
        let state = e.state();
        e.flags |= flag::IN_USE;
        e.prev = 0;
        e.next = 0;
        e.ctl &= LINK;
        e.set_proto(proto);
        e.set_state(state);
        let deadline = e.deadline;
        self.entries[id as usize] = e;
        self.link(id, deadline);
        self.len += 1;
        Ok(id)
    }

    /// Re-indexes an entry under a new hash (a NO_CPORT connection learning its port).
    pub fn rehash(&mut self, id: u32, old: u64, new: u64) -> bool {
        let p_old = self.probe(old);
        self.index_remove(&p_old, id);
        let p_new = self.probe(new);
        if self.index_insert(&p_new, id) {
            true
        } else {
            let ok = self.index_insert(&p_old, id);
            debug_assert!(ok);
            false
        }
    }

    /// Unindexes, unlinks and frees an entry, returning it.
    pub fn remove(&mut self, id: u32, h: u64) -> Option<Entry<A>> {
        let e = *self.entry(id)?;
        let p = self.probe(h);
        self.index_remove(&p, id);
        self.unlink(id);
        let slot = &mut self.entries[id as usize];
        slot.flags = 0;
        slot.next = self.free;
        self.free = id;
        self.len -= 1;
        Some(e)
    }

    /// After the clock jumped further than any timeout (the table saw no call for weeks):
    /// every entry is past its deadline, but deadlines are 32-bit milliseconds compared with
    /// wrapping arithmetic, so they are moved to `tick - 1` before they could read as future
    /// times. They stay until `expire` frees them, with their accounting. O(capacity), once per
    /// such jump.
    pub fn rebase(&mut self, tick: u32) {
        let dead = tick.wrapping_sub(1);
        self.heads.fill(NONE);
        self.tails.fill(NONE);
        self.cursor = dead;
        for id in 0..self.entries.len() as u32 {
            if self.entries[id as usize].is(flag::IN_USE) {
                self.entries[id as usize].deadline = dead;
                self.link(id, dead);
            }
        }
    }

    /// Sets a new expiry; re-links at once only if it moved earlier (lazy re-arming).
    #[inline(always)]
    pub fn set_deadline(&mut self, id: u32, deadline: u32) {
        let old = self.entries[id as usize].deadline;
        self.entries[id as usize].deadline = deadline;
        if !at_or_after(deadline, old) {
            self.unlink(id);
            self.link(id, deadline);
        }
    }

    fn link(&mut self, id: u32, deadline: u32) {
        // Never behind the cursor: that slot was processed already.
        let tick = if at_or_after(deadline, self.cursor) {
            deadline
        } else {
            self.cursor
        };
        let slot = tick & self.mask;
        let tail = self.tails[slot as usize];
        let e = &mut self.entries[id as usize];
        e.set_next_link(MARK + slot);
        if tail == NONE {
            e.set_prev_link(MARK + slot);
            self.heads[slot as usize] = id;
        } else {
            e.set_prev_link(tail);
            self.entries[tail as usize].set_next_link(id);
        }
        self.tails[slot as usize] = id;
    }

    fn unlink(&mut self, id: u32) {
        let e = &self.entries[id as usize];
        let (p, n) = (e.prev_link(), e.next_link());
        if p >= MARK {
            self.heads[(p - MARK) as usize] = if n >= MARK { NONE } else { n };
        } else {
            self.entries[p as usize].set_next_link(n);
        }
        if n >= MARK {
            self.tails[(n - MARK) as usize] = if p >= MARK { NONE } else { p };
        } else {
            self.entries[n as usize].set_prev_link(p);
        }
    }

    /// The head of the wheel slot of `tick`, and that slot's tail.
    pub fn slot_ends(&self, tick: u32) -> (u32, u32) {
        let s = (tick & self.mask) as usize;
        (self.heads[s], self.tails[s])
    }

    /// The entry after `id` in its wheel slot, if any.
    pub fn wheel_next(&self, id: u32) -> Option<u32> {
        let n = self.entries[id as usize].next_link();
        (n < MARK).then_some(n)
    }

    /// Moves an entry to the end of the wheel slot of its current expiry (or of the cursor).
    pub fn relink(&mut self, id: u32) {
        self.unlink(id);
        let d = self.entries[id as usize].deadline;
        self.link(id, d);
    }

    /// Iterates the ids of entries in use (slab order).
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is(flag::IN_USE))
            .map(|(i, _)| i as u32)
    }
}

/// Words saved per kick: `take` and `place` each save a slot, its bucket's metadata and a
/// primary bucket's metadata.
const UNDO_PER_KICK: usize = 6;

/// The words a failed cuckoo walk changed, to put them back.
struct UndoLog {
    len: usize,
    words: [(u32, u8, u32); UNDO_PER_KICK * (MAX_KICKS + 1)],
}

impl UndoLog {
    fn new() -> Self {
        UndoLog {
            len: 0,
            words: [(0, 0, 0); UNDO_PER_KICK * (MAX_KICKS + 1)],
        }
    }

    #[inline(always)]
    fn save<A>(&mut self, t: &Table<A>, b: u32, i: usize) {
        // Sized for the longest walk, so this never drops a word.
        if let Some(w) = self.words.get_mut(self.len) {
            *w = (b, i as u8, t.buckets[b as usize].0[i]);
            self.len += 1;
        }
    }

    fn undo<A>(&self, t: &mut Table<A>) {
        for &(b, i, v) in self.words[..self.len].iter().rev() {
            t.buckets[b as usize].0[i as usize] = v;
        }
    }
}

/// Why an entry could not be inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InsertFail {
    Full,
    Bucket,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_sizes() {
        assert_eq!(core::mem::size_of::<Entry<u32>>(), 56);
        assert!(core::mem::size_of::<Entry<u128>>() <= 96);
        assert_eq!(core::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn counters_pack_and_saturate() {
        let mut e = Entry::<u32>::default();
        e.set_ctl(77);
        e.set_state(5);
        e.set_proto(3);
        e.count(false, u32::MAX);
        e.count(false, u32::MAX);
        e.count(true, 1500);
        assert_eq!(e.in_bytes(), 2 * u32::MAX as u64);
        assert_eq!((e.in_pkts, e.out_pkts, e.out_bytes()), (2, 1, 1500));
        assert_eq!((e.ctl(), e.state(), e.proto()), (77, 5, 3));
        for _ in 0..300 {
            e.count(false, u32::MAX);
        }
        assert_eq!(e.in_bytes(), (1 << 40) - 1);
        assert_eq!((e.ctl(), e.state(), e.proto()), (77, 5, 3));
    }

    #[test]
    fn alternate_bucket_is_an_involution() {
        for cap in [1u32, 7, 100, 1000, 12_345] {
            let t = Table::<u32>::new(cap, [1, 2], 0);
            let nb = t.buckets.len() as u32;
            for tag in 0..256 {
                for b in 0..nb {
                    let a = t.alt_bucket(b, tag);
                    assert!(a < nb);
                    assert_eq!(t.alt_bucket(a, tag), b);
                }
            }
        }
    }

    #[test]
    fn fills_to_capacity_with_random_keys() {
        let cap = 50_000;
        let mut t = Table::<u32>::new(cap, [3, 4], 0);
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut ok = 0;
        for _ in 0..cap {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let e = Entry::<u32> {
                caddr: x as u32,
                cport: (x >> 32) as u16,
                deadline: 5,
                ..Entry::default()
            };
            let h = t.hash_conn(1, e.caddr, e.cport);
            if t.insert(e, 1, h).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, cap, "cuckoo index refused an insert below capacity");
        // Most misses read one bucket: few buckets have keys pushed out.
        let overflowed = t.buckets.iter().filter(|b| b.0[META] >> 16 != 0).count();
        assert!(
            overflowed * 2 < t.buckets.len(),
            "{overflowed} of {} overflowed",
            t.buckets.len()
        );
        assert_eq!(t.len(), cap);
        let e = Entry::<u32>::default();
        assert_eq!(t.insert(e, 1, 0), Err(InsertFail::Full));
    }
}

#[cfg(test)]
mod churn_tests {
    use super::*;

    /// The index invariants: every overflow count is the number of keys pushed out of that
    /// bucket, every live entry is found from its hash, nothing else is indexed.
    fn check_index<A: Addr>(t: &Table<A>, live: &[(u32, u64)]) {
        let nb = t.buckets.len();
        let mut want = vec![0u32; nb];
        let mut indexed = 0;
        for (x, b) in t.buckets.iter().enumerate() {
            for s in 0..USABLE {
                let v = b.0[s];
                if v == 0 {
                    assert_eq!(b.0[META] & (1 << s), 0, "empty slot marked pushed");
                    continue;
                }
                indexed += 1;
                if b.0[META] & (1 << s) != 0 {
                    want[t.alt_bucket(x as u32, v >> 24) as usize] += 1;
                }
            }
        }
        for (b, w) in want.iter().enumerate() {
            let have = t.buckets[b].0[META] >> 16;
            assert!(
                have == *w || have == 0xFFFF,
                "bucket {b}: count {have}, pushed keys {w}"
            );
        }
        assert_eq!(indexed, live.len());
        for &(id, h) in live {
            let p = t.probe(h);
            assert_eq!(
                t.find(&p, |e| core::ptr::eq(e, &t.entries[id as usize])),
                Some(id)
            );
        }
    }

    #[test]
    fn a_failed_cuckoo_walk_leaves_the_index_as_it_was() {
        let mut t = Table::<u32>::new(4096, [7, 8], 0);
        let mut live = Vec::new();
        // Unrelated keys first, so the walk has neighbours to disturb.
        for i in 0..2000u32 {
            let e = Entry::<u32> {
                caddr: 0x0a00_0000 + i,
                cport: 1000,
                deadline: 5,
                ..Entry::default()
            };
            let h = t.hash_conn(1, e.caddr, e.cport);
            live.push((t.insert(e, 1, h).unwrap(), h));
        }
        // One client address and port: one hash, two buckets, 30 slots.
        let mut refused = 0;
        for vport in 0..40u16 {
            let e = Entry::<u32> {
                caddr: 0xc000_0201,
                cport: 5555,
                vport,
                deadline: 5,
                ..Entry::default()
            };
            let h = t.hash_conn(1, e.caddr, e.cport);
            match t.insert(e, 1, h) {
                Ok(id) => live.push((id, h)),
                Err(InsertFail::Bucket) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
            check_index(&t, &live);
        }
        assert!(refused >= 10, "{refused}");
    }

    #[test]
    fn churn_at_capacity_never_runs_out_of_index_room() {
        let cap = 20_000u32;
        let mut t = Table::<u32>::new(cap, [5, 6], 0);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut live: Vec<(u32, u64)> = Vec::new();
        let mut fails = 0;
        for round in 0..(10 * cap) {
            if live.len() as u32 == cap {
                let i = (next() % cap as u64) as usize;
                let (id, h) = live.swap_remove(i);
                t.remove(id, h).unwrap();
            }
            let r = next();
            let e = Entry::<u32> {
                caddr: (0x0b00_0000 + round / 60_000),
                cport: (1024 + round % 60_000) as u16,
                deadline: r as u32,
                ..Entry::default()
            };
            let h = t.hash_conn(1, e.caddr, e.cport);
            match t.insert(e, 1, h) {
                Ok(id) => live.push((id, h)),
                Err(_) => fails += 1,
            }
            if round % 50_000 == 0 {
                check_index(&t, &live);
            }
        }
        assert_eq!(fails, 0);
        check_index(&t, &live);
    }
}
