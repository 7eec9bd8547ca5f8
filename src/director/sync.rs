//! The director in a cluster: a sync master feeding a [`Sender`], a backup applying received
//! datagrams to its connection table (ipvs.md §8).

use alloc::vec::Vec;
use core::fmt;

use super::Director;
use crate::config::ServiceKey;
use crate::conn::{ConnFlags, ConnId, DestRef, SyncOutcome, SyncUpdate, state_number};
use crate::flow::Protocol;
use crate::sync::{
    BACKUP_MASK, Message, MessageError, RecordError, SYNC_FLAG, Sender, SenderConfig, SyncConn,
};
use crate::time::Instant;

/// How a backup takes sync datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SyncBackupConfig {
    /// Only messages of this sync id are applied; 0 (the default) takes every id, as the
    /// kernel's backup does.
    pub syncid: u8,
    /// The packet count given to learnt connections (the kernel gives `sync_threshold`, 3 by
    /// default), so that a backup turned master syncs them on the same schedule.
    pub threshold: u32,
}

impl Default for SyncBackupConfig {
    fn default() -> Self {
        SyncBackupConfig {
            syncid: 0,
            threshold: 3,
        }
    }
}

/// Why a whole sync datagram was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncError {
    /// It is malformed (see [`MessageError`]).
    Message(MessageError),
    /// Its sync id is not the backup's.
    SyncId {
        /// The backup's.
        expected: u8,
        /// The message's.
        got: u8,
    },
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Message(e) => fmt::Display::fmt(e, f),
            SyncError::SyncId { expected, got } => {
                write!(f, "sync id {got}, this backup takes {expected}")
            }
        }
    }
}

impl core::error::Error for SyncError {}

/// What one datagram did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Entries created.
    pub created: u32,
    /// Entries updated.
    pub updated: u32,
    /// Entries replaced (same key, another real server).
    pub replaced: u32,
    /// Stale expiry records ignored.
    pub stale: u32,
    /// Records skipped (see [`SyncStats::skipped`]).
    pub skipped: u32,
    /// Records the table refused (full, bucket full).
    pub refused: u32,
    /// Entries made or updated without a local real server.
    pub unbound: u32,
}

/// Counters of the sync traffic of a director, both roles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Datagrams received.
    pub datagrams: u64,
    /// Datagrams refused as malformed.
    pub malformed: u64,
    /// Datagrams of another sync id.
    pub other_syncid: u64,
    /// Entries created, updated, replaced; stale records ignored; records the table refused;
    /// entries without a local real server.
    pub created: u64,
    /// See `created`.
    pub updated: u64,
    /// See `created`.
    pub replaced: u64,
    /// See `created`.
    pub stale: u64,
    /// See `created`.
    pub refused: u64,
    /// See `created`.
    pub unbound: u64,
    /// Records skipped, by reason: unknown mandatory option, unsupported protocol, bad state,
    /// persistence data without a name, unknown persistence engine.
    pub skipped: [u64; 5],
    /// Records the master queued (its [`Sender`] counts more).
    pub sent_records: u64,
}

impl SyncStats {
    /// Records skipped for `e`.
    pub fn skipped(&self, e: RecordError) -> u64 {
        self.skipped[skip_index(e)]
    }
}

fn skip_index(e: RecordError) -> usize {
    match e {
        RecordError::UnknownOption(_) => 0,
        RecordError::Protocol(_) => 1,
        RecordError::State { .. } => 2,
        RecordError::PeDataWithoutName => 3,
        _ => 4,
    }
}

impl Director {
    /// Makes this director a sync master: from now on, connections are offered to the
    /// [`Sender`] after each client packet by the kernel's rules (ipvs.md §8.4), their
    /// templates after them. Take the datagrams with [`Director::poll_sync`].
    pub fn enable_sync_master(&mut self, cfg: SenderConfig) {
        self.sync = Some(Sender::new(cfg));
    }

    /// Stops being a sync master.
    pub fn disable_sync_master(&mut self) {
        self.sync = None;
    }

    /// The master's sender, if enabled.
    pub fn sync_sender(&self) -> Option<&Sender> {
        self.sync.as_ref()
    }

    /// The master's sender, to flush or recycle datagrams.
    pub fn sync_sender_mut(&mut self) -> Option<&mut Sender> {
        self.sync.as_mut()
    }

    /// The next sync datagram to send, if any (see [`Sender::poll`]).
    pub fn poll_sync(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.sync.as_mut()?.poll(now)
    }

    /// How this director applies received datagrams.
    pub fn set_sync_backup(&mut self, cfg: SyncBackupConfig) {
        self.sync_backup = cfg;
    }

    /// Sync counters.
    pub fn sync_stats(&self) -> &SyncStats {
        &self.sync_stats
    }

    /// The sync step after a client packet of connection `id` (the kernel's `ip_vs_sync_conn`
    /// called from `ip_vs_in`): the connection if the rules say so, then its template.
    pub(super) fn sync_conn(&mut self, id: ConnId, now: Instant) {
        let Some(policy) = self.sync.as_ref().map(|s| s.config().policy) else {
            return;
        };
        let mut id = id;
        let mut pkts = None;
        // A connection, then its template (which has none): two rounds at most.
        for _ in 0..2 {
            let Some(c) = self.conns.get(id) else { return };
            let template = c.flags.has(ConnFlags::TEMPLATE);
            let pkts_now = pkts.unwrap_or(c.in_packets);
            let svc = c.dest.and_then(|d| self.services.by_number(d.service()));
            let fwmark = match svc.map(|s| s.key()) {
                Some(ServiceKey::Fwmark { mark, .. }) => mark,
                _ => 0,
            };
            let timeout_ms = match svc.and_then(|s| s.options().persistence) {
                Some(p) if template => p.timeout.saturating_mul(1000),
                _ => self.conns.state_timeout_ms(c.state),
            };
            if self
                .conns
                .sync_needed(&c, pkts_now, &policy, timeout_ms, now)
            {
                let rec = SyncConn {
                    protocol: c.protocol,
                    flags: c.flags.0 as u32,
                    state: state_number(c.state),
                    caddr: c.caddr,
                    cport: c.cport,
                    vaddr: c.vaddr,
                    vport: c.vport,
                    daddr: c.daddr,
                    dport: c.dport,
                    fwmark,
                    timeout: timeout_ms / 1000,
                    seq: None,
                    pe_data: None,
                    pe_name: None,
                };
                if let Some(s) = self.sync.as_mut()
                    && s.push(&rec, now).is_ok()
                {
                    self.sync_stats.sent_records += 1;
                }
            }
            let Some(tid) = c.template else { return };
            pkts = self.conns.bump_template_packets(tid);
            id = tid;
        }
    }

    /// Applies a received sync datagram (ipvs.md §8.3): a malformed one, or one of another
    /// sync id, is refused whole; then each record creates or updates a connection or template,
    /// bound to the local real server the record names (found by its service: firewall mark,
    /// then protocol, virtual address and port, then the port-0 service; then the real server
    /// by address and port) or, if there is none, left unbound and forwarded by the record's
    /// method. Records the kernel would skip are skipped and counted. Everything is counted in
    /// [`Director::sync_stats`].
    pub fn apply_sync(&mut self, datagram: &[u8], now: Instant) -> Result<SyncReport, SyncError> {
        self.sync_stats.datagrams += 1;
        let msg = Message::parse(datagram).map_err(|e| {
            self.sync_stats.malformed += 1;
            SyncError::Message(e)
        })?;
        let want = self.sync_backup.syncid;
        if want != 0 && msg.syncid() != want {
            self.sync_stats.other_syncid += 1;
            return Err(SyncError::SyncId {
                expected: want,
                got: msg.syncid(),
            });
        }
        let mut r = SyncReport::default();
        for rec in msg.records() {
            let c = match rec {
                Ok(c) if c.pe_data.is_some() => Err(RecordError::UnknownEngine),
                Ok(c) if !c.is_template() && Protocol::from_number(c.protocol).is_none() => {
                    // AH and ESP: IPVS syncs them, the crate does not balance them.
                    Err(RecordError::Protocol(c.protocol))
                }
                other => other,
            };
            let c = match c {
                Ok(c) => c,
                Err(e) => {
                    self.sync_stats.skipped[skip_index(e)] += 1;
                    r.skipped += 1;
                    continue;
                }
            };
            let flags = (c.flags & BACKUP_MASK) | SYNC_FLAG;
            let dest = self.sync_dest(&c, flags);
            if dest.is_none() {
                r.unbound += 1;
            }
            let u = SyncUpdate {
                protocol: c.protocol,
                caddr: c.caddr,
                cport: c.cport,
                vaddr: c.vaddr,
                vport: c.vport,
                daddr: c.daddr,
                dport: c.dport,
                flags: flags as u16,
                state: c.state,
                timeout_s: c.timeout,
                in_pkts: self.sync_backup.threshold,
                dest,
            };
            match self.conns.apply_sync(&mut self.services, &u, now) {
                Ok(SyncOutcome::Created(_)) => r.created += 1,
                Ok(SyncOutcome::Updated(_)) => r.updated += 1,
                Ok(SyncOutcome::Replaced(_)) => r.replaced += 1,
                Ok(SyncOutcome::Stale) => r.stale += 1,
                Err(_) => r.refused += 1,
            }
        }
        let s = &mut self.sync_stats;
        s.created += r.created as u64;
        s.updated += r.updated as u64;
        s.replaced += r.replaced as u64;
        s.stale += r.stale as u64;
        s.refused += r.refused as u64;
        s.unbound += r.unbound as u64;
        Ok(r)
    }

    /// The kernel's `ip_vs_find_dest` for a record: the service, then the real server by
    /// address and port (port 0 first for a non-NAT firewall-mark service), then with the
    /// other port.
    fn sync_dest(&self, c: &SyncConn<'_>, flags: u32) -> Option<(DestRef, ConnFlags)> {
        let by_mark = (c.fwmark != 0)
            .then(|| {
                self.services.number(&ServiceKey::Fwmark {
                    mark: c.fwmark,
                    ipv6: c.vaddr.is_ipv6(),
                })
            })
            .flatten();
        let n = by_mark.or_else(|| {
            let p = Protocol::from_number(c.protocol)?;
            self.services.lookup_number(None, p, c.vaddr, c.vport)
        })?;
        let svc = self.services.by_number(n)?;
        let port = if c.fwmark != 0 && flags & ConnFlags::FWD_MASK as u32 != 0 {
            0
        } else {
            c.dport
        };
        let dests = svc.pool().dests();
        let id = dests
            .find(c.daddr, port)
            .or_else(|| dests.find(c.daddr, port ^ c.dport))?;
        let d = dests.get(id)?;
        let index = u16::try_from(id.index()).ok()?;
        Some((DestRef::new(n, index), ConnFlags::for_method(d.method())))
    }
}
