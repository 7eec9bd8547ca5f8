//! The master's side: records packed into datagrams of at most `maxlen` bytes, handed out when
//! full or old (ipvs.md §8.4).

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use super::DEFAULT_MAXLEN_V4;
use super::codec::{EncodeError, Encoder, SyncConn, Version};
use crate::conn::SyncPolicy;
use crate::time::Instant;

/// How a [`Sender`] packs and paces datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SenderConfig {
    /// Message format (default 1).
    pub version: Version,
    /// Sync id written in every message (`--syncid`, default 0).
    pub syncid: u8,
    /// Largest datagram (`sync_maxlen`, default 1472: a 1500-byte MTU over IPv4), at least a
    /// header plus one record.
    pub maxlen: usize,
    /// A partly filled datagram is handed out once it is this old (the kernel: 2 s).
    pub flush_after_ms: u32,
    /// Most full datagrams waiting to be taken (`sync_qlen_max`); more are dropped and counted.
    pub queue_max: usize,
    /// Which connections to sync when.
    pub policy: SyncPolicy,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            version: Version::V1,
            syncid: 0,
            maxlen: DEFAULT_MAXLEN_V4,
            flush_after_ms: 2_000,
            queue_max: 1024,
            policy: SyncPolicy::default(),
        }
    }
}

/// What a [`Sender`] did and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Records packed.
    pub records: u64,
    /// Datagrams handed out.
    pub datagrams: u64,
    /// Records that cannot be encoded in the configured version (IPv6 in version 0, mixed
    /// families, bad persistence data).
    pub unencodable: u64,
    /// Datagrams dropped because the queue was full.
    pub queue_drops: u64,
}

/// Packs sync records into datagrams. No I/O: [`Sender::poll`] hands datagrams to the caller,
/// who sends them (multicast to 224.0.0.81:8848 as the kernel does, or unicast).
#[derive(Clone, Debug)]
pub struct Sender {
    cfg: SenderConfig,
    /// The datagram being filled: `cur[..cur_len]`, `cur_count` records.
    cur: Vec<u8>,
    cur_len: usize,
    cur_count: u8,
    cur_first: Option<Instant>,
    ready: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    stats: SenderStats,
}

impl Sender {
    /// A sender; `cfg.maxlen` is raised to fit one record of the largest kind if smaller.
    pub fn new(mut cfg: SenderConfig) -> Sender {
        cfg.maxlen = cfg.maxlen.clamp(8 + 72 + 26 + 257 + 18, 65_535);
        let mut s = Sender {
            cfg,
            cur: vec![0; cfg.maxlen],
            cur_len: 0,
            cur_count: 0,
            cur_first: None,
            ready: VecDeque::new(),
            spare: Vec::new(),
            stats: SenderStats::default(),
        };
        s.reset();
        s
    }

    /// The configuration.
    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    fn reset(&mut self) {
        // `new` clamps maxlen far above a header, so this cannot fail.
        self.cur_len =
            Encoder::new(&mut self.cur, self.cfg.version, self.cfg.syncid).map_or(0, |e| e.len());
        self.cur_count = 0;
        self.cur_first = None;
    }

    /// Adds a record to the datagram being filled; a full datagram is queued and a new one
    /// started. `now` starts the flush clock of a new datagram.
    pub fn push(&mut self, c: &SyncConn<'_>, now: Instant) -> Result<(), EncodeError> {
        Encoder::record_len(self.cfg.version, c).inspect_err(|_| self.stats.unencodable += 1)?;
        for _ in 0..2 {
            let (len, count) = (self.cur_len, self.cur_count);
            let mut e = Encoder::resume(&mut self.cur, self.cfg.version, len, count);
            let r = e.push(c).map(|()| (e.len(), e.count()));
            match r {
                Ok((len, count)) => {
                    self.cur_len = len;
                    self.cur_count = count;
                    self.cur_first.get_or_insert(now);
                    self.stats.records += 1;
                    return Ok(());
                }
                Err(EncodeError::Full) if self.cur_count > 0 => self.seal(),
                Err(err) => {
                    self.stats.unencodable += 1;
                    return Err(err);
                }
            }
        }
        Err(EncodeError::Full)
    }

    /// Moves the datagram being filled to the queue (dropping it if the queue is full).
    fn seal(&mut self) {
        if self.cur_count == 0 {
            return;
        }
        if self.ready.len() >= self.cfg.queue_max {
            self.stats.queue_drops += 1;
        } else {
            let mut d = self.spare.pop().unwrap_or_default();
            d.clear();
            d.extend_from_slice(&self.cur[..self.cur_len]);
            self.ready.push_back(d);
        }
        self.reset();
    }

    /// The next datagram to send: a full one, or the one being filled once it is
    /// `flush_after_ms` old. Give it back with [`Sender::recycle`] to reuse its memory.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.ready.is_empty()
            && let Some(first) = self.cur_first
            && now.saturating_duration_since(first).as_millis() >= self.cfg.flush_after_ms as u128
        {
            self.seal();
        }
        let d = self.ready.pop_front()?;
        self.stats.datagrams += 1;
        Some(d)
    }

    /// Seals the datagram being filled, whatever its age (at shutdown, or the end of a replay).
    pub fn flush(&mut self) {
        self.seal();
    }

    /// Returns a datagram's memory for reuse.
    pub fn recycle(&mut self, d: Vec<u8>) {
        if self.spare.len() < 8 {
            self.spare.push(d);
        }
    }

    /// Whether nothing is waiting or being filled.
    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.cur_count == 0
    }
}
