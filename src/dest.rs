//! Real servers (IPVS "destinations"), their load counters, and the ordered set a service keeps.
//!
//! This is `struct ip_vs_dest` and `svc->destinations` of ipvs.md §1.2–§2:
//!
//! - a [`Dest`] has an address and port, a weight in `0..=65535` (0 = quiesced: no new
//!   connections, existing ones continue), the last non-zero weight (used by `mh`), upper and
//!   lower connection thresholds, active / inactive / persistent connection counters, the
//!   `AVAILABLE` and `OVERLOAD` flags and a forwarding method;
//! - a [`DestSet`] keeps the destinations in **IPVS list order**: a new destination is inserted
//!   at the head of the list (`list_add`, ipvs.md §1.3), so the list is the reverse order of
//!   addition, and a destination revived from the trash goes back to the head. That order drives
//!   rr/wrr sequences, every tie-break and the fill order of the sh/dh/mh tables, which is why the
//!   kernel's choices can be reproduced exactly;
//! - a removed destination still referenced by connections or templates stays in the set's
//!   *trash* (unlinked, not `AVAILABLE`) so those connections can still be unbound; adding the
//!   same `addr:port` again revives it with its counters, as IPVS does. Once nothing references a
//!   trashed destination its slot is freed and its [`DestId`] becomes stale (IPVS keeps an
//!   unreferenced trash entry for a further grace period; here it goes at once).
//!
//! Mutation goes through [`crate::sched::Pool`], which tells the scheduler of every change, so
//! a scheduler's view can never go stale.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

use crate::flow::SocketDisplay;

/// The largest weight `ipvsadm` accepts.
pub const MAX_WEIGHT: u32 = 65_535;

/// Stable identifier of a destination within its [`DestSet`].
///
/// An id stays valid while the destination is linked or in the trash; once its slot is freed the
/// id is stale and [`DestSet::get`] returns `None` for it, even if the slot is reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestId {
    index: u32,
    generation: u32,
}

impl DestId {
    /// The slot index, dense from 0: suitable for indexing per-destination arrays.
    pub const fn index(self) -> usize {
        self.index as usize
    }
}

impl fmt::Debug for DestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DestId({}.{})", self.index, self.generation)
    }
}

/// Tunnel encapsulation of TUN-mode real servers (`--tun-type`, ipvs.md §7.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TunnelKind {
    /// IP-in-IP (protocol 4) or IPv6-in-IP (41): just an outer IP header. IPVS type 0.
    #[default]
    Ipip,
    /// Generic UDP Encapsulation to `port`. IPVS type 1.
    Gue,
    /// GRE (protocol 47). IPVS type 2.
    Gre,
}

impl TunnelKind {
    /// The `ipvsadm --tun-type` spelling.
    pub const fn name(self) -> &'static str {
        match self {
            TunnelKind::Ipip => "ipip",
            TunnelKind::Gue => "gue",
            TunnelKind::Gre => "gre",
        }
    }
}

/// Checksum option of GUE and GRE tunnels (`--tun-nocsum`, `--tun-csum`, `--tun-remcsum`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TunnelCsum {
    /// No outer checksum (IPVS default).
    #[default]
    None,
    /// Outer UDP (GUE) or GRE checksum.
    Csum,
    /// GUE remote checksum offload: the outer UDP checksum computed, and an inner checksum an
    /// offload left partial marked for the real server to complete (as IPVS does; see
    /// [`GueChecksum::RemCsum`](crate::rewrite::GueChecksum::RemCsum)).
    RemCsum,
}

/// Tunnel parameters of a TUN-mode destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tunnel {
    /// Encapsulation.
    pub kind: TunnelKind,
    /// UDP destination port for GUE (IPVS requires it to be non-zero for GUE).
    pub port: u16,
    /// Checksum option.
    pub csum: TunnelCsum,
}

/// How packets reach a real server (`ipvsadm -g | -m | -i`, ipvs.md §1.2, §7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardMethod {
    /// Direct routing (`-g`, gatewaying; ipvsadm's default): only the destination MAC changes.
    #[default]
    DirectRoute,
    /// NAT (`-m`, masquerading): destination rewritten in, source rewritten on the way back.
    Nat,
    /// IP tunnelling (`-i`): encapsulated towards the real server.
    Tunnel(Tunnel),
}

/// What a user configures for a real server (`ipvsadm -a/-e ... -r ADDR:PORT ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DestConfig {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port (0 = the port of the packet, as with IPVS port-0 destinations).
    pub port: u16,
    /// Weight, `0..=65535`; 0 quiesces the server.
    pub weight: u32,
    /// Upper connection threshold (`-x`); 0 = none.
    pub upper_threshold: u32,
    /// Lower connection threshold (`-y`); 0 = three quarters of the upper one.
    pub lower_threshold: u32,
    /// Forwarding method.
    pub method: ForwardMethod,
}

impl DestConfig {
    /// A destination with ipvsadm's defaults: weight 1, no thresholds, direct routing.
    pub const fn new(addr: IpAddr, port: u16) -> Self {
        DestConfig {
            addr,
            port,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            method: ForwardMethod::DirectRoute,
        }
    }

    /// The same with another weight.
    pub const fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The same with other thresholds (`-x upper -y lower`).
    pub const fn thresholds(mut self, upper: u32, lower: u32) -> Self {
        self.upper_threshold = upper;
        self.lower_threshold = lower;
        self
    }

    /// The same with another forwarding method.
    pub const fn method(mut self, method: ForwardMethod) -> Self {
        self.method = method;
        self
    }

    /// Checks what IPVS checks on add and edit (ipvs.md §1.4).
    pub fn validate(&self) -> Result<(), DestError> {
        if self.weight > MAX_WEIGHT {
            return Err(DestError::WeightOutOfRange(self.weight));
        }
        if self.lower_threshold > self.upper_threshold {
            return Err(DestError::ThresholdOrder {
                upper: self.upper_threshold,
                lower: self.lower_threshold,
            });
        }
        if let ForwardMethod::Tunnel(t) = self.method {
            if t.kind == TunnelKind::Gue && t.port == 0 {
                return Err(DestError::GuePortMissing);
            }
            if t.kind == TunnelKind::Ipip && t.csum != TunnelCsum::None {
                return Err(DestError::TunnelCsumUnsupported);
            }
            if t.kind == TunnelKind::Gre && t.csum == TunnelCsum::RemCsum {
                return Err(DestError::TunnelCsumUnsupported);
            }
        }
        Ok(())
    }
}

/// A configuration change to a destination set that IPVS refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestError {
    /// Weight above 65535.
    WeightOutOfRange(u32),
    /// Lower threshold above the upper one (IPVS `ERANGE`).
    ThresholdOrder {
        /// Upper threshold given.
        upper: u32,
        /// Lower threshold given.
        lower: u32,
    },
    /// GUE tunnel without a port.
    GuePortMissing,
    /// A checksum option the tunnel type cannot carry (IPIP has none; GRE has no remote csum).
    TunnelCsumUnsupported,
    /// The destination already exists in the service (IPVS `EEXIST`).
    Exists(IpAddr, u16),
    /// No such destination in the service (IPVS `ENOENT`).
    NotFound(IpAddr, u16),
    /// The destination id is stale or not linked.
    UnknownId(DestId),
    /// More destinations than the scheduler's table can hold (IPVS `mh`: `EINVAL`).
    TooMany {
        /// Most destinations the scheduler accepts.
        limit: usize,
    },
}

impl fmt::Display for DestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DestError::WeightOutOfRange(w) => write!(f, "weight {w} out of range 0..=65535"),
            DestError::ThresholdOrder { upper, lower } => write!(
                f,
                "lower threshold {lower} is above upper threshold {upper}"
            ),
            DestError::GuePortMissing => f.write_str("GUE tunnel needs a non-zero --tun-port"),
            DestError::TunnelCsumUnsupported => {
                f.write_str("checksum option not supported by this tunnel type")
            }
            DestError::Exists(a, p) => {
                write!(f, "destination {} already exists", SocketDisplay(a, p))
            }
            DestError::NotFound(a, p) => write!(f, "no destination {}", SocketDisplay(a, p)),
            DestError::UnknownId(id) => write!(f, "unknown destination id {id:?}"),
            DestError::TooMany { limit } => {
                write!(f, "scheduler table holds at most {limit} destinations")
            }
        }
    }
}

impl core::error::Error for DestError {}

/// One real server: configuration, counters and flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    addr: IpAddr,
    port: u16,
    weight: u32,
    last_weight: u32,
    upper_threshold: u32,
    lower_threshold: u32,
    method: ForwardMethod,
    active: u32,
    inactive: u32,
    persistent: u32,
    available: bool,
    overload: bool,
    /// Linked-at sequence: larger = nearer the list head.
    seq: u64,
    /// Index in `DestSet::rev` while linked.
    rev: u32,
}

impl Dest {
    /// Real server address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    /// Real server port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Current weight; 0 means quiesced.
    pub fn weight(&self) -> u32 {
        self.weight
    }
    /// The latest non-zero weight configured (IPVS `last_weight`; 0 only if the destination was
    /// added with weight 0 and never given another). `mh` builds its table from it, so quiescing
    /// a server does not reshuffle the table.
    pub fn last_weight(&self) -> u32 {
        self.last_weight
    }
    /// Upper connection threshold (0 = none).
    pub fn upper_threshold(&self) -> u32 {
        self.upper_threshold
    }
    /// Lower connection threshold (0 = derived from the upper one).
    pub fn lower_threshold(&self) -> u32 {
        self.lower_threshold
    }
    /// Forwarding method.
    pub fn method(&self) -> ForwardMethod {
        self.method
    }
    /// Active connections (`ActiveConn` of `ipvsadm -L`).
    pub fn active_conns(&self) -> u32 {
        self.active
    }
    /// Inactive connections (`InActConn`).
    pub fn inactive_conns(&self) -> u32 {
        self.inactive
    }
    /// Persistence templates pointing here.
    pub fn persistent_conns(&self) -> u32 {
        self.persistent
    }
    /// `AVAILABLE`: linked in its service (false while in the trash).
    pub fn is_available(&self) -> bool {
        self.available
    }
    /// `OVERLOAD`: the upper threshold was reached and the lower one not yet passed again.
    pub fn is_overloaded(&self) -> bool {
        self.overload
    }
    /// IPVS `ip_vs_dest_conn_overhead`: `(active << 8) + inactive`, an active connection
    /// counting as 256 inactive ones. 64-bit here, so it cannot overflow.
    pub fn overhead(&self) -> u64 {
        ((self.active as u64) << 8) + self.inactive as u64
    }
    /// The list-order key: among linked destinations, a larger value is nearer the head.
    pub fn list_seq(&self) -> u64 {
        self.seq
    }
    /// The common test of every IPVS scheduler for new connections: weight above 0 and not
    /// overloaded (and linked).
    pub fn accepts_new(&self) -> bool {
        self.available && self.weight > 0 && !self.overload
    }
    /// Connections and templates still referencing this destination.
    pub fn refs(&self) -> u64 {
        self.active as u64 + self.inactive as u64 + self.persistent as u64
    }
    /// The configuration this destination was last given.
    pub fn config(&self) -> DestConfig {
        DestConfig {
            addr: self.addr,
            port: self.port,
            weight: self.weight,
            upper_threshold: self.upper_threshold,
            lower_threshold: self.lower_threshold,
            method: self.method,
        }
    }

    fn apply(&mut self, cfg: &DestConfig, adding: bool) {
        // ipvs.md §1.4: last_weight keeps the latest non-zero weight (any weight when adding).
        if adding || cfg.weight != 0 {
            self.last_weight = cfg.weight;
        }
        self.weight = cfg.weight;
        self.method = cfg.method;
        self.available = true;
        if cfg.upper_threshold == 0 || cfg.upper_threshold > self.upper_threshold {
            self.overload = false;
        }
        self.upper_threshold = cfg.upper_threshold;
        self.lower_threshold = cfg.lower_threshold;
    }

    fn conns(&self) -> u64 {
        self.active as u64 + self.inactive as u64
    }

    /// ipvs.md §2.3, after binding.
    fn check_overload_on_bind(&mut self) {
        if self.upper_threshold != 0 && self.conns() >= self.upper_threshold as u64 {
            self.overload = true;
        }
    }

    /// ipvs.md §2.3, after unbinding.
    fn check_overload_on_unbind(&mut self) {
        let n = self.conns();
        if self.lower_threshold != 0 {
            if n < self.lower_threshold as u64 {
                self.overload = false;
            }
        } else if self.upper_threshold != 0 {
            if 4 * n < 3 * self.upper_threshold as u64 {
                self.overload = false;
            }
        } else {
            self.overload = false;
        }
    }
}

/// What changed in a [`DestSet`]; a scheduler observes every event (IPVS `add_dest`, `del_dest`,
/// `upd_dest`, plus load changes for schedulers that index connection counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestEvent {
    /// A destination was linked at the head of the list (new or revived from the trash).
    Added(DestId),
    /// A linked destination was edited (weight, thresholds, method); `OVERLOAD` may have cleared.
    Updated(DestId),
    /// A destination was unlinked. `prev` is the entry that preceded it in list order (`None`
    /// when it was the head), which rr needs to keep its cursor.
    Removed {
        /// The destination removed.
        id: DestId,
        /// Its predecessor in list order at removal.
        prev: Option<DestId>,
    },
    /// Connection counters or `OVERLOAD` changed.
    Load(DestId),
}

impl DestEvent {
    /// The destination the event is about.
    pub fn id(&self) -> DestId {
        match *self {
            DestEvent::Added(id) | DestEvent::Updated(id) | DestEvent::Load(id) => id,
            DestEvent::Removed { id, .. } => id,
        }
    }
}

#[derive(Clone, Debug)]
struct Slot {
    generation: u32,
    dest: Option<Dest>,
}

/// What the per-packet paths need of a slot, packed small: 8 bytes per destination, so the
/// check of every hash lookup touches one cache line per eight servers. The generation in the
/// low half, bit 32 set when the destination accepts new connections: one comparison with
/// [`Hot::accepting`] tests both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Hot(u64);

impl Hot {
    const ACCEPTS_NEW: u64 = 1 << 32;

    fn new(generation: u32, accepts_new: bool) -> Hot {
        Hot(generation as u64 | if accepts_new { Hot::ACCEPTS_NEW } else { 0 })
    }

    /// The value of a slot whose destination `id` accepts new connections.
    #[inline(always)]
    fn accepting(id: DestId) -> Hot {
        Hot(id.generation as u64 | Hot::ACCEPTS_NEW)
    }
}

/// The destinations of one service, in IPVS list order, with stable ids.
#[derive(Clone, Debug, Default)]
pub struct DestSet {
    slots: Vec<Slot>,
    hot: Vec<Hot>,
    free: Vec<u32>,
    /// Linked ids, tail first: the IPVS list head is the *last* element, so inserting at the
    /// head is a push.
    rev: Vec<DestId>,
    by_addr: BTreeMap<(IpAddr, u16), u32>,
    next_seq: u64,
}

impl DestSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of linked destinations (IPVS `num_dests`).
    pub fn len(&self) -> usize {
        self.rev.len()
    }

    /// Whether no destination is linked.
    pub fn is_empty(&self) -> bool {
        self.rev.is_empty()
    }

    /// One more than the largest slot index in use: the size of per-destination arrays indexed
    /// by [`DestId::index`].
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Slots holding a destination, linked or in the trash (the trash keeps a removed
    /// destination while connections reference it).
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The destination behind `id`, linked or in the trash; `None` for a stale id.
    #[inline]
    pub fn get(&self, id: DestId) -> Option<&Dest> {
        let slot = self.slots.get(id.index())?;
        if slot.generation != id.generation {
            return None;
        }
        slot.dest.as_ref()
    }

    /// Whether `id` is linked, has weight above 0 and is not overloaded: the test every
    /// scheduler applies to a new connection, from a compact array kept beside the slots.
    #[inline]
    pub fn accepts_new(&self, id: DestId) -> bool {
        self.hot.get(id.index()) == Some(&Hot::accepting(id))
    }

    fn sync_hot(&mut self, index: usize) {
        let slot = &self.slots[index];
        let h = Hot::new(
            slot.generation,
            slot.dest.as_ref().is_some_and(Dest::accepts_new),
        );
        if index >= self.hot.len() {
            self.hot.resize(index + 1, Hot::default());
        }
        self.hot[index] = h;
    }

    /// The linked destination `addr:port`.
    pub fn find(&self, addr: IpAddr, port: u16) -> Option<DestId> {
        let id = self.slot_id(*self.by_addr.get(&(addr, port))?);
        self.get(id).filter(|d| d.available).map(|_| id)
    }

    /// Linked destinations in IPVS list order (head first).
    pub fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (DestId, &Dest)> + ExactSizeIterator + '_ {
        self.rev.iter().rev().map(move |&id| (id, self.dest(id)))
    }

    /// Linked destination ids in IPVS list order.
    pub fn ids(&self) -> impl DoubleEndedIterator<Item = DestId> + ExactSizeIterator + '_ {
        self.rev.iter().rev().copied()
    }

    /// The destination at list position `pos` (0 = head).
    #[inline]
    pub fn nth(&self, pos: usize) -> Option<DestId> {
        let n = self.rev.len();
        if pos < n {
            Some(self.rev[n - 1 - pos])
        } else {
            None
        }
    }

    /// List position of a linked destination (0 = head).
    #[inline]
    pub fn position(&self, id: DestId) -> Option<usize> {
        let d = self.get(id)?;
        if !d.available {
            return None;
        }
        Some(self.rev.len() - 1 - d.rev as usize)
    }

    /// The id of the destination in slot `index` (linked or in the trash), if the slot is in
    /// use. A connection table that stores only slot indexes resolves them with this: a slot
    /// cannot be reused while a connection still references its destination.
    pub fn id_at(&self, index: usize) -> Option<DestId> {
        let slot = self.slots.get(index)?;
        slot.dest.as_ref()?;
        Some(DestId {
            index: index as u32,
            generation: slot.generation,
        })
    }

    fn slot_id(&self, index: u32) -> DestId {
        DestId {
            index,
            generation: self.slots[index as usize].generation,
        }
    }

    /// Internal accessor for ids known to be valid (taken from `rev`).
    fn dest(&self, id: DestId) -> &Dest {
        match self.slots[id.index()].dest.as_ref() {
            Some(d) => d,
            None => unreachable!("linked id without destination"),
        }
    }

    fn dest_mut(&mut self, id: DestId) -> Result<&mut Dest, DestError> {
        match self.slots.get_mut(id.index()) {
            Some(Slot {
                generation,
                dest: Some(d),
            }) if *generation == id.generation => Ok(d),
            _ => Err(DestError::UnknownId(id)),
        }
    }

    /// Adds a destination at the head of the list, or revives a trashed one with the same
    /// `addr:port` (keeping its counters), as `ipvsadm -a` does.
    pub(crate) fn add(&mut self, cfg: &DestConfig) -> Result<(DestId, DestEvent), DestError> {
        cfg.validate()?;
        let key = (cfg.addr, cfg.port);
        let seq = self.next_seq;
        let rev = self.rev.len() as u32;
        let id = if let Some(&index) = self.by_addr.get(&key) {
            let id = self.slot_id(index);
            let d = self.dest_mut(id)?;
            if d.available {
                return Err(DestError::Exists(cfg.addr, cfg.port));
            }
            d.apply(cfg, true);
            d.seq = seq;
            d.rev = rev;
            id
        } else {
            let mut d = Dest {
                addr: cfg.addr,
                port: cfg.port,
                weight: 0,
                last_weight: 0,
                upper_threshold: 0,
                lower_threshold: 0,
                method: cfg.method,
                active: 0,
                inactive: 0,
                persistent: 0,
                available: true,
                overload: false,
                seq,
                rev,
            };
            d.apply(cfg, true);
            let index = match self.free.pop() {
                Some(i) => {
                    self.slots[i as usize].dest = Some(d);
                    i
                }
                None => {
                    self.slots.push(Slot {
                        generation: 0,
                        dest: Some(d),
                    });
                    (self.slots.len() - 1) as u32
                }
            };
            self.by_addr.insert(key, index);
            self.slot_id(index)
        };
        self.next_seq += 1;
        self.rev.push(id);
        self.sync_hot(id.index());
        Ok((id, DestEvent::Added(id)))
    }

    /// Edits a linked destination in place (`ipvsadm -e`); its list position does not change.
    pub(crate) fn edit(&mut self, cfg: &DestConfig) -> Result<(DestId, DestEvent), DestError> {
        cfg.validate()?;
        let id = self
            .find(cfg.addr, cfg.port)
            .ok_or(DestError::NotFound(cfg.addr, cfg.port))?;
        self.dest_mut(id)?.apply(cfg, false);
        self.sync_hot(id.index());
        Ok((id, DestEvent::Updated(id)))
    }

    /// Unlinks a destination (`ipvsadm -d`). It stays in the trash while referenced.
    pub(crate) fn remove(&mut self, addr: IpAddr, port: u16) -> Result<DestEvent, DestError> {
        let id = self
            .find(addr, port)
            .ok_or(DestError::NotFound(addr, port))?;
        let r = self.dest(id).rev as usize;
        // The predecessor in list order is the next element of `rev`.
        let prev = self.rev.get(r + 1).copied();
        self.rev.remove(r);
        for (i, &moved) in self.rev.iter().enumerate().skip(r) {
            if let Some(Some(d)) = self.slots.get_mut(moved.index()).map(|s| s.dest.as_mut()) {
                d.rev = i as u32;
            }
        }
        let d = self.dest_mut(id)?;
        d.available = false;
        if d.refs() == 0 {
            self.free_slot(id);
        }
        self.sync_hot(id.index());
        Ok(DestEvent::Removed { id, prev })
    }

    fn free_slot(&mut self, id: DestId) {
        let slot = &mut self.slots[id.index()];
        if let Some(d) = slot.dest.take() {
            self.by_addr.remove(&(d.addr, d.port));
        }
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
    }

    /// Counts a new connection (`inactive` as IPVS binds every fresh local connection) or a new
    /// template, then applies the upper threshold (ipvs.md §2.2–§2.3).
    pub(crate) fn bind(&mut self, id: DestId, kind: ConnKind) -> Result<DestEvent, DestError> {
        let d = self.dest_mut(id)?;
        match kind {
            ConnKind::Active => d.active = d.active.saturating_add(1),
            ConnKind::Inactive => d.inactive = d.inactive.saturating_add(1),
            ConnKind::Template => {
                d.persistent = d.persistent.saturating_add(1);
                return Ok(DestEvent::Load(id));
            }
        }
        d.check_overload_on_bind();
        self.sync_hot(id.index());
        Ok(DestEvent::Load(id))
    }

    /// Releases a connection or template, applies the lower threshold, and frees a trashed
    /// destination nothing references any more.
    pub(crate) fn unbind(&mut self, id: DestId, kind: ConnKind) -> Result<DestEvent, DestError> {
        let d = self.dest_mut(id)?;
        match kind {
            ConnKind::Active => d.active = d.active.saturating_sub(1),
            ConnKind::Inactive => d.inactive = d.inactive.saturating_sub(1),
            ConnKind::Template => d.persistent = d.persistent.saturating_sub(1),
        }
        if kind != ConnKind::Template {
            d.check_overload_on_unbind();
        }
        if !d.available && d.refs() == 0 {
            self.free_slot(id);
        }
        self.sync_hot(id.index());
        Ok(DestEvent::Load(id))
    }

    /// Moves one connection between the active and inactive counters (a TCP connection entering
    /// or leaving ESTABLISHED/SYN states, ipvs.md §2.2). Thresholds count both, so `OVERLOAD`
    /// does not change.
    pub(crate) fn set_active(&mut self, id: DestId, active: bool) -> Result<DestEvent, DestError> {
        let d = self.dest_mut(id)?;
        if active {
            d.inactive = d.inactive.saturating_sub(1);
            d.active = d.active.saturating_add(1);
        } else {
            d.active = d.active.saturating_sub(1);
            d.inactive = d.inactive.saturating_add(1);
        }
        Ok(DestEvent::Load(id))
    }
}

/// Which counter a connection occupies on its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// Counted in `activeconns`.
    Active,
    /// Counted in `inactconns` (every fresh connection, and UDP for life).
    Inactive,
    /// A persistence template, counted in `persistconns`.
    Template,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use core::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn addrs(set: &DestSet) -> Vec<u8> {
        set.iter()
            .map(|(_, d)| match d.addr() {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect()
    }

    #[test]
    fn list_order_is_reverse_addition_and_revival_goes_to_head() {
        let mut s = DestSet::new();
        for i in 1..=4 {
            s.add(&DestConfig::new(ip(i), 80)).unwrap();
        }
        assert_eq!(addrs(&s), vec![4, 3, 2, 1]);
        let b = s.find(ip(2), 80).unwrap();
        s.bind(b, ConnKind::Inactive).unwrap();
        let ev = s.remove(ip(3), 80).unwrap();
        assert_eq!(
            ev,
            DestEvent::Removed {
                id: DestId {
                    index: 2,
                    generation: 0
                },
                prev: s.find(ip(4), 80)
            }
        );
        assert_eq!(addrs(&s), vec![4, 2, 1]);
        assert_eq!(s.position(s.find(ip(1), 80).unwrap()), Some(2));
        // Removing a referenced destination keeps it in the trash with its counters...
        s.remove(ip(2), 80).unwrap();
        assert_eq!(addrs(&s), vec![4, 1]);
        assert!(!s.get(b).unwrap().is_available());
        assert_eq!(s.find(ip(2), 80), None);
        // ...and re-adding revives it at the head, same id, same counters.
        let (again, _) = s.add(&DestConfig::new(ip(2), 80).weight(7)).unwrap();
        assert_eq!(again, b);
        assert_eq!(addrs(&s), vec![2, 4, 1]);
        assert_eq!(s.get(b).unwrap().inactive_conns(), 1);
        assert_eq!(s.get(b).unwrap().weight(), 7);
        // An unreferenced removal frees the slot; the old id goes stale.
        let one = s.find(ip(1), 80).unwrap();
        assert!(s.accepts_new(one));
        s.remove(ip(1), 80).unwrap();
        assert!(s.get(one).is_none());
        assert!(!s.accepts_new(one));
        let (new_one, _) = s.add(&DestConfig::new(ip(9), 80)).unwrap();
        assert_eq!(new_one.index(), one.index());
        assert_ne!(new_one, one);
        assert_eq!(addrs(&s), vec![9, 2, 4]);
    }

    #[test]
    fn trashed_destination_is_freed_when_last_connection_unbinds() {
        let mut s = DestSet::new();
        let (id, _) = s.add(&DestConfig::new(ip(1), 80)).unwrap();
        s.bind(id, ConnKind::Template).unwrap();
        s.bind(id, ConnKind::Inactive).unwrap();
        s.remove(ip(1), 80).unwrap();
        s.unbind(id, ConnKind::Inactive).unwrap();
        assert!(s.get(id).is_some());
        s.unbind(id, ConnKind::Template).unwrap();
        assert!(s.get(id).is_none());
        assert_eq!(
            s.unbind(id, ConnKind::Inactive),
            Err(DestError::UnknownId(id))
        );
    }

    #[test]
    fn validation_mirrors_ipvs() {
        let mut s = DestSet::new();
        let c = DestConfig::new(ip(1), 80);
        assert_eq!(
            s.add(&c.weight(65_536)),
            Err(DestError::WeightOutOfRange(65_536))
        );
        assert_eq!(
            s.add(&c.thresholds(0, 5)),
            Err(DestError::ThresholdOrder { upper: 0, lower: 5 })
        );
        let gue = ForwardMethod::Tunnel(Tunnel {
            kind: TunnelKind::Gue,
            port: 0,
            csum: TunnelCsum::None,
        });
        assert_eq!(s.add(&c.method(gue)), Err(DestError::GuePortMissing));
        s.add(&c).unwrap();
        assert_eq!(s.add(&c), Err(DestError::Exists(ip(1), 80)));
        assert_eq!(
            s.edit(&DestConfig::new(ip(2), 80)),
            Err(DestError::NotFound(ip(2), 80))
        );
        assert!(s.remove(ip(2), 80).is_err());
    }

    #[test]
    fn last_weight_keeps_latest_non_zero_weight() {
        let mut s = DestSet::new();
        let (id, _) = s.add(&DestConfig::new(ip(1), 80).weight(5)).unwrap();
        s.edit(&DestConfig::new(ip(1), 80).weight(0)).unwrap();
        let d = s.get(id).unwrap();
        assert_eq!((d.weight(), d.last_weight()), (0, 5));
        assert!(!d.accepts_new());
        s.edit(&DestConfig::new(ip(1), 80).weight(3)).unwrap();
        assert_eq!(s.get(id).unwrap().last_weight(), 3);
        // Added with weight 0: last_weight is 0 (mh gives it no slots).
        let (z, _) = s.add(&DestConfig::new(ip(2), 80).weight(0)).unwrap();
        assert_eq!(s.get(z).unwrap().last_weight(), 0);
    }

    #[test]
    fn overload_hysteresis_with_lower_threshold() {
        let mut s = DestSet::new();
        let (id, _) = s.add(&DestConfig::new(ip(1), 80).thresholds(4, 2)).unwrap();
        for _ in 0..3 {
            s.bind(id, ConnKind::Inactive).unwrap();
        }
        assert!(!s.get(id).unwrap().is_overloaded());
        s.bind(id, ConnKind::Active).unwrap(); // A+I = 4 >= 4
        assert!(s.get(id).unwrap().is_overloaded());
        assert!(!s.get(id).unwrap().accepts_new());
        s.unbind(id, ConnKind::Inactive).unwrap(); // 3, not < 2
        s.unbind(id, ConnKind::Inactive).unwrap(); // 2, not < 2
        assert!(s.get(id).unwrap().is_overloaded());
        s.unbind(id, ConnKind::Inactive).unwrap(); // 1 < 2
        assert!(!s.get(id).unwrap().is_overloaded());
        // Templates do not count towards thresholds.
        for _ in 0..10 {
            s.bind(id, ConnKind::Template).unwrap();
        }
        assert!(!s.get(id).unwrap().is_overloaded());
    }

    #[test]
    fn overload_hysteresis_three_quarters_of_upper() {
        let mut s = DestSet::new();
        let (id, _) = s.add(&DestConfig::new(ip(1), 80).thresholds(8, 0)).unwrap();
        for _ in 0..8 {
            s.bind(id, ConnKind::Inactive).unwrap();
        }
        assert!(s.get(id).unwrap().is_overloaded());
        s.unbind(id, ConnKind::Inactive).unwrap(); // 7: 28 < 24? no
        s.unbind(id, ConnKind::Inactive).unwrap(); // 6: 24 < 24? no
        assert!(s.get(id).unwrap().is_overloaded());
        s.unbind(id, ConnKind::Inactive).unwrap(); // 5: 20 < 24
        assert!(!s.get(id).unwrap().is_overloaded());
    }

    #[test]
    fn editing_thresholds_clears_overload_like_ipvs() {
        let mut s = DestSet::new();
        let (id, _) = s.add(&DestConfig::new(ip(1), 80).thresholds(2, 0)).unwrap();
        s.bind(id, ConnKind::Inactive).unwrap();
        s.bind(id, ConnKind::Inactive).unwrap();
        assert!(s.get(id).unwrap().is_overloaded());
        // Same upper threshold: OVERLOAD stays.
        s.edit(&DestConfig::new(ip(1), 80).thresholds(2, 0))
            .unwrap();
        assert!(s.get(id).unwrap().is_overloaded());
        // Lower upper threshold: stays as well (only a larger or zero one clears it).
        s.edit(&DestConfig::new(ip(1), 80).thresholds(1, 0))
            .unwrap();
        assert!(s.get(id).unwrap().is_overloaded());
        s.edit(&DestConfig::new(ip(1), 80).thresholds(3, 0))
            .unwrap();
        assert!(!s.get(id).unwrap().is_overloaded());
        s.edit(&DestConfig::new(ip(1), 80).thresholds(1, 0))
            .unwrap();
        s.bind(id, ConnKind::Inactive).unwrap();
        assert!(s.get(id).unwrap().is_overloaded());
        s.edit(&DestConfig::new(ip(1), 80).thresholds(0, 0))
            .unwrap();
        assert!(!s.get(id).unwrap().is_overloaded());
    }

    #[test]
    fn active_inactive_moves() {
        let mut s = DestSet::new();
        let (id, _) = s.add(&DestConfig::new(ip(1), 80)).unwrap();
        s.bind(id, ConnKind::Inactive).unwrap();
        s.set_active(id, true).unwrap();
        let d = s.get(id).unwrap();
        assert_eq!(
            (d.active_conns(), d.inactive_conns(), d.overhead()),
            (1, 0, 256)
        );
        s.set_active(id, false).unwrap();
        assert_eq!(s.get(id).unwrap().overhead(), 1);
    }
}
