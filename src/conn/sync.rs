//! What the IPVS sync protocol needs of the connection table (ipvs.md §8.3, §8.4): the master's
//! "should this connection be synced now" rule, and the backup's application of a record.

use core::net::IpAddr;

use super::table::{NONE, flag};
use super::{
    Conn, ConnError, ConnFlags, ConnId, ConnState, ConnTable, DestAccounting, DestRef,
    MAX_TIMEOUT_MS, NewConn, SctpState, TcpState, TemplateKey, code_of, conn_kind, insert_template,
};
use crate::flow::{FlowKey, Protocol};
use crate::time::Instant;

/// Per-entry memory of the master's sync rule: the state last synced (`cp->old_state`) and the
/// expiry last reported (`cp->sync_endtime`, with the retry count in its low 2 bits).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SyncMemo {
    endtime: u32,
    old_state: u8,
}

/// The master's sync sysctls (ipvs.md §8.4, §9), with the kernel's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SyncPolicy {
    /// `sync_threshold` (first value, default 3): a connection is synced when it has seen this
    /// many packets from the client...
    pub threshold: u32,
    /// ... and again every `period` packets (second value, default 50). With `period` 0 and
    /// no refresh period, it is synced once at `threshold` and on state changes.
    pub period: u32,
    /// `sync_refresh_period` in milliseconds (default 0, off): skip a sync whose reported
    /// expiry moved by less than min(this, max(timeout / 2, 10 s)).
    pub refresh_period_ms: u32,
    /// `sync_retries` (0..=3, default 0): resend a suppressed sync up to this many times,
    /// `refresh_period / 8` apart.
    pub retries: u8,
    /// `sync_persist_mode` (default off): connections under a persistence template are not
    /// synced, only their templates.
    pub persist_mode: bool,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            threshold: 3,
            period: 50,
            refresh_period_ms: 0,
            retries: 0,
            persist_mode: false,
        }
    }
}

/// What a received sync record asks of the table, resolved by the caller (the director)
/// against its own services (ipvs.md §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncUpdate {
    /// IANA protocol number (0 for the template of a firewall-mark service).
    pub protocol: u8,
    /// Client address (a template: the client network).
    pub caddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address (a firewall-mark template: the mark in its first 32 bits).
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// The record's flags, already masked: `(flags & BACKUP_MASK) | SYNC`.
    pub flags: u16,
    /// The record's state (checked against the protocol's states by the codec).
    pub state: u16,
    /// The record's timeout in seconds; 0 takes the state's default timeout (templates 180 s).
    pub timeout_s: u32,
    /// The packet count to give the entry (the kernel sets `sync_threshold`).
    pub in_pkts: u32,
    /// The local real server the record names and its method flags (`FWD_MASK` and
    /// `NOOUTPUT` of [`ConnFlags::for_method`]), or `None` if it is not configured here: the
    /// entry is still created, unbound, and forwards by the record's method.
    pub dest: Option<(DestRef, ConnFlags)>,
}

/// What [`ConnTable::apply_sync`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// A new entry.
    Created(ConnId),
    /// An existing entry was updated (its `INACTIVE` and sequence flags, state and timer; a
    /// real server bound if it had none).
    Updated(ConnId),
    /// An entry with the same key but another real server was expired and a new one created.
    Replaced(ConnId),
    /// An inactive record for a connection that now has another real server: a stale expiry
    /// message, ignored as the kernel ignores it.
    Stale,
}

/// The flags a record may change on an existing entry (`IP_VS_CONN_F_BACKUP_UPD_MASK`).
const UPD_MASK: u16 = ConnFlags::INACTIVE | 0x0600;
const METHOD_MASK: u16 = ConnFlags::FWD_MASK | ConnFlags::NOOUTPUT;
/// Timeout of a template learnt without one (version 0 messages), as the kernel gives it.
const TEMPLATE_DEFAULT_MS: u32 = 180_000;

/// How the master's rule sees a TCP or SCTP state (UDP and the rest: `None`, the count rule
/// only).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SyncState {
    /// Not synced in this state (TCP: all but ES, FW, CL, CW, TW).
    Never,
    /// ESTABLISHED: the count rule decides.
    Established,
    /// A closing state that is synced, at once when entered.
    Closing,
}

fn sync_states(s: ConnState) -> Option<SyncState> {
    Some(match s {
        ConnState::Tcp(TcpState::Established) | ConnState::Sctp(SctpState::Established) => {
            SyncState::Established
        }
        ConnState::Tcp(
            TcpState::FinWait | TcpState::Close | TcpState::CloseWait | TcpState::TimeWait,
        )
        | ConnState::Sctp(
            SctpState::ShutdownSent
            | SctpState::ShutdownReceived
            | SctpState::ShutdownAckSent
            | SctpState::Closed,
        ) => SyncState::Closing,
        ConnState::Tcp(_) | ConnState::Sctp(_) => SyncState::Never,
        _ => return None,
    })
}

/// The kernel number of a connection state (what a sync record carries).
pub fn state_number(s: ConnState) -> u16 {
    match s {
        ConnState::Tcp(t) => t as u16,
        ConnState::Sctp(t) => t as u16,
        ConnState::Template { assured } => assured as u16,
        ConnState::Udp | ConnState::Other => 0,
    }
}

impl ConnTable {
    /// The timeout of a state under the table's timeouts, in milliseconds (templates: the
    /// kernel's 180 s default; their real timeout is their service's persistence).
    pub fn state_timeout_ms(&self, s: ConnState) -> u32 {
        let t = &self.sh.cfg.timeouts;
        let ms = match s {
            ConnState::Tcp(x) => t.tcp[x as usize],
            ConnState::Sctp(x) => t.sctp[x as usize],
            ConnState::Udp => t.udp,
            ConnState::Other => t.other,
            ConnState::Template { .. } => TEMPLATE_DEFAULT_MS,
        };
        ms.min(MAX_TIMEOUT_MS)
    }

    fn memo_mut(&mut self, id: ConnId) -> Option<&mut SyncMemo> {
        let (v6, i) = id.parts();
        let (memo, cap) = if v6 {
            (&mut self.memo6, self.v6.capacity())
        } else {
            (&mut self.memo4, self.v4.capacity())
        };
        if memo.len() != cap as usize {
            // First use: one allocation for the table's lifetime.
            memo.resize(cap as usize, SyncMemo::default());
        }
        memo.get_mut(i as usize)
    }

    /// Forgets the sync memory of a new entry (its slot may have served another).
    pub(super) fn reset_memo(&mut self, id: ConnId) {
        let (v6, i) = id.parts();
        let memo = if v6 { &mut self.memo6 } else { &mut self.memo4 };
        if let Some(m) = memo.get_mut(i as usize) {
            *m = SyncMemo::default();
        }
    }

    /// Counts one more packet on a template (the kernel counts a template's `in_pkts` each time
    /// a connection it controls is synced) and returns the count.
    pub fn bump_template_packets(&mut self, id: ConnId) -> Option<u32> {
        let (v6, i) = id.parts();
        family!(self, v6, |t, _sh| {
            let e = t.entry_mut(i)?;
            if !e.is(flag::TEMPLATE) {
                return None;
            }
            e.in_pkts = e.in_pkts.wrapping_add(1);
            Some(e.in_pkts)
        })
    }

    /// The master's rule (the kernel's `ip_vs_sync_conn_needed`, ipvs.md §8.4): whether the
    /// entry `c` (a snapshot from [`ConnTable::get`]), having seen `pkts` packets from the client and with `timeout_ms` as its
    /// current timeout, is to be synced now. Remembers the state and reported expiry when it
    /// says yes. TCP is synced only in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT and TIME_WAIT,
    /// at once on a change into any of these but ESTABLISHED; SCTP likewise in ESTABLISHED,
    /// the SHUTDOWN states and CLOSED; then the packet-count and refresh rules of `policy`.
    /// One-packet connections are never synced (they have no entry).
    pub fn sync_needed(
        &mut self,
        c: &Conn,
        pkts: u32,
        policy: &SyncPolicy,
        timeout_ms: u32,
        now: Instant,
    ) -> bool {
        let id = c.id;
        let now_ms = super::ticks(now) as u32;
        let template = c.flags.has(ConnFlags::TEMPLATE);
        let state = state_number(c.state) as u8;
        let memo = match self.memo_mut(id) {
            Some(m) => *m,
            None => return false,
        };
        let mut n = now_ms.wrapping_add(timeout_ms) & !3;
        // The kernel also computes a "force" flag (state != old_state) that only matters when two
        // CPUs race to sync one connection; a table has one owner.
        if !template {
            if policy.persist_mode && c.template.is_some() {
                return false;
            }
            match sync_states(c.state) {
                Some(SyncState::Never) => return false,
                // A change into a synced state other than ESTABLISHED is synced at once.
                Some(SyncState::Closing) if state != memo.old_state => {
                    return self.set_memo(id, state, n);
                }
                _ => {}
            }
        }
        let refresh = policy.refresh_period_ms;
        if refresh > 0 {
            let orig = memo.endtime;
            let diff = (n.wrapping_sub(orig) as i32).unsigned_abs();
            let min_diff = (timeout_ms / 2).max(10_000);
            if diff < refresh.min(min_diff) {
                let retries = (orig & 3) as u8;
                if retries >= policy.retries.min(3) {
                    return false;
                }
                let resend_at = orig.wrapping_sub(timeout_ms).wrapping_add(refresh / 8);
                if (now_ms.wrapping_sub(resend_at) as i32) < 0 {
                    return false;
                }
                n |= retries as u32 + 1;
            }
        }
        if policy.period > 0 {
            if !template && pkts % policy.period != policy.threshold {
                return false;
            }
        } else if refresh == 0 && pkts != policy.threshold {
            return false;
        }
        self.set_memo(id, state, n)
    }

    fn set_memo(&mut self, id: ConnId, state: u8, endtime: u32) -> bool {
        if let Some(m) = self.memo_mut(id) {
            m.old_state = state;
            m.endtime = endtime;
        }
        true
    }

    /// Applies one received sync record as the kernel's backup does (`ip_vs_proc_conn`,
    /// ipvs.md §8.3):
    /// - an existing connection with the same in key but another real server is expired and
    ///   replaced, unless the record is `INACTIVE` (a stale expiry message: ignored);
    /// - an existing entry (templates: the live template of the same key) has its `INACTIVE`
    ///   and sequence flags replaced, moving it between its real server's active and inactive
    ///   counters, and gets a real server bound if it had none;
    /// - otherwise a new entry is made, bound to the local real server if there is one (its
    ///   forwarding method then comes from the local real server, not the record);
    /// - then the state, the packet count and the timer (the record's timeout, or the state's
    ///   default) are set.
    pub fn apply_sync(
        &mut self,
        acct: &mut (impl DestAccounting + ?Sized),
        u: &SyncUpdate,
        now: Instant,
    ) -> Result<SyncOutcome, ConnError> {
        let v6 = u.caddr.is_ipv6();
        if u.vaddr.is_ipv6() != v6 || u.daddr.is_ipv6() != v6 {
            return Err(ConnError::FamilyMismatch);
        }
        let template = u.flags & ConnFlags::TEMPLATE != 0;
        let proto = Protocol::from_number(u.protocol);
        // Templates may be of protocol 0 (a firewall-mark service); any other protocol must be
        // one the table keeps, or its key would collide with a firewall-mark template's.
        if proto.is_none() && !(template && u.protocol == 0) {
            return Err(ConnError::ProtocolMismatch);
        }
        let tkey = TemplateKey {
            protocol: u.protocol,
            client_net: u.caddr,
            vaddr: u.vaddr,
            vport: u.vport,
        };
        let mut replaced = false;
        let existing = match proto {
            _ if template => self.lookup_template(&tkey, now),
            Some(p) => {
                let key = FlowKey::new(p, u.caddr, u.cport, u.vaddr, u.vport);
                match self.lookup_in(&key, now) {
                    Some(id) => {
                        let t = self.target(id).ok_or(ConnError::Unknown)?;
                        if t.daddr != u.daddr || t.dport != u.dport {
                            if u.flags & ConnFlags::INACTIVE != 0 {
                                return Ok(SyncOutcome::Stale);
                            }
                            self.expire_now(acct, id, now);
                            replaced = true;
                            None
                        } else {
                            Some(id)
                        }
                    }
                    None => None,
                }
            }
            None => None,
        };
        let tick = self.tick(now);
        let outcome = match existing {
            Some(id) => {
                let (_, i) = id.parts();
                family!(self, v6, |t, _sh| {
                    let e = t.entry_mut(i).ok_or(ConnError::Unknown)?;
                    if !template && e.dest != NONE && (e.flags ^ u.flags) & ConnFlags::INACTIVE != 0
                    {
                        acct.set_active(DestRef(e.dest), u.flags & ConnFlags::INACTIVE == 0);
                    }
                    e.flags = (e.flags & !UPD_MASK) | (u.flags & UPD_MASK);
                    if e.dest == NONE
                        && let Some((d, m)) = u.dest
                    {
                        e.dest = d.0;
                        e.flags = (e.flags & !METHOD_MASK) | (m.0 & METHOD_MASK);
                        acct.bind(d, conn_kind(e));
                    }
                });
                SyncOutcome::Updated(id)
            }
            None => {
                let mut flags = u.flags & flag::USER;
                if let Some((_, m)) = u.dest {
                    flags = (flags & !METHOD_MASK) | (m.0 & METHOD_MASK);
                }
                let id = match proto {
                    Some(p) if !template => {
                        let new = NewConn {
                            key: FlowKey::new(p, u.caddr, u.cport, u.vaddr, u.vport),
                            daddr: u.daddr,
                            dport: u.dport,
                            dest: u.dest.map(|(d, _)| d),
                            flags: ConnFlags(flags),
                            template: None,
                        };
                        self.insert(acct, &new, now)?
                    }
                    _ => {
                        // Templates count as persistent, never as inactive.
                        let flags = ConnFlags(flags & !ConnFlags::INACTIVE);
                        let dest = u.dest.map_or(NONE, |(d, _)| d.0);
                        let i = family!(self, v6, |t, sh| insert_template(
                            t, sh, acct, &tkey, u.daddr, u.dport, dest, flags, 0, tick
                        ))
                        .map_err(|e| match e {
                            super::ScheduleError::Table(e) => e,
                            _ => ConnError::Unknown,
                        })?;
                        let id = ConnId::new(v6, i);
                        self.reset_memo(id);
                        id
                    }
                };
                if replaced {
                    SyncOutcome::Replaced(id)
                } else {
                    SyncOutcome::Created(id)
                }
            }
        };
        let id = match outcome {
            SyncOutcome::Created(id) | SyncOutcome::Updated(id) | SyncOutcome::Replaced(id) => id,
            SyncOutcome::Stale => return Ok(outcome),
        };
        // State (templates: assured or not), packet count and timer.
        let state = if template {
            (u.state == 1) as u8
        } else {
            u.state.min(15) as u8
        };
        let code = proto.map_or(0, code_of);
        let timeout = if u.timeout_s != 0 {
            (u.timeout_s as u64 * 1000).min(MAX_TIMEOUT_MS as u64) as u32
        } else if template {
            TEMPLATE_DEFAULT_MS
        } else {
            self.sh.timeout(code, state)
        };
        let (_, i) = id.parts();
        family!(self, v6, |t, _sh| {
            let Some(e) = t.entry_mut(i) else {
                return Err(ConnError::Unknown);
            };
            e.set_state(state);
            e.in_pkts = u.in_pkts;
            let half_open = !template && super::state_of(e).is_half_open();
            t.set_deadline(i, tick.wrapping_add(timeout));
            if half_open {
                t.push_recent(i);
            }
            Ok(())
        })?;
        if let Some(m) = self.memo_mut(id) {
            m.old_state = state;
        }
        Ok(outcome)
    }
}
