//! The `sync` fuzz harness, shared by `fuzz/fuzz_targets/sync.rs` (libFuzzer) and
//! `tests/fuzz_corpus.rs` (corpus replay in `cargo test`).
//!
//! Two modes, chosen by the first byte:
//! - raw (bit 7 clear): the input is a sync datagram as it comes off the wire;
//! - structured (bit 7 set): the rest of the input describes records (addresses and ports
//!   mostly picked from the harness's services, so that they bind to real servers), which the
//!   [`Encoder`] packs into a datagram; what it packs must decode to what was pushed.
//!
//! Either way the datagram then goes through the same checks:
//! - `Message::parse` never panics, and its errors point inside the datagram; on success the
//!   records iterator yields exactly `count()` items, every persistence-engine slice lies
//!   inside the datagram, and every good record re-encodes (alone, and with the others in one
//!   message no longer than the datagram) to bytes that parse back to the same record (less
//!   `HASHED`, which the encoder drops);
//! - a director configured with NAT, DR and TUN services, a persistent port-0 service, a
//!   persistent netmask service and firewall-mark services over IPv4 and IPv6 applies it:
//!   never a panic; with another sync id configured it refuses exactly the well-formed
//!   datagrams of other ids and changes nothing; with sync id 0 it succeeds iff the datagram
//!   parses; the report accounts for every record, the skip counters by reason agree with the
//!   codec's verdicts, the cumulated `sync_stats` agree with the reports; every entry the
//!   table holds comes from a record, carries `SYNC`, and the real servers' active, inactive and
//!   persistent counters are exactly what the table's entries hold; the datagram applied again
//!   keeps all of this;
//! - frames that use the synced entries (client packets, NAT replies, new connections under
//!   synced templates) get one counted verdict each, in the buffer's bounds, and keep the
//!   accounting exact;
//! - once every timeout has passed, `expire` empties the table (templates re-armed while they
//!   controlled connections included) and every real-server counter is back to zero.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use lvs::Instant;
use lvs::config::Command;
use lvs::conn::{ConnConfig, ConnFlags, DestRef, MAX_TIMEOUT_MS};
use lvs::director::{
    Director, DirectorConfig, Rx, Side, SyncBackupConfig, SyncError, SyncReport, Verdict,
};
use lvs::flow::Protocol;
use lvs::sched::{MhTableSize, SchedConfig};
use lvs::sync::codec::protocol_states;
use lvs::sync::{Encoder, Message, MessageError, RecordError, Seq, SeqData, SyncConn, Version};

pub const RULES: &str = "\
-A -t 10.0.0.1:80 -s rr\n\
-a -t 10.0.0.1:80 -r 192.168.10.1:8080 -m\n\
-a -t 10.0.0.1:80 -r 192.168.10.2:8080 -m -w 0\n\
-A -u 10.0.0.1:53 -s sh\n\
-a -u 10.0.0.1:53 -r 192.168.10.3 -g\n\
-A -t 10.0.0.2:0 -s wlc -p 60\n\
-a -t 10.0.0.2:0 -r 192.168.20.1 -g\n\
-a -t 10.0.0.2:0 -r 192.168.20.2 -i --tun-type gue --tun-port 6080\n\
-A --sctp-service 10.0.0.3:9 -s mh\n\
-a --sctp-service 10.0.0.3:9 -r 192.168.30.1 -m\n\
-A -t 10.0.0.4:443 -s rr -p 300 -M 255.255.255.0\n\
-a -t 10.0.0.4:443 -r 192.168.50.1 -m\n\
-a -t 10.0.0.4:443 -r 192.168.50.2 -i\n\
-A -f 5 -s rr -p 120\n\
-a -f 5 -r 192.168.40.1 -i --tun-type gre --tun-csum\n\
-a -f 5 -r 192.168.40.2:25 -m\n\
-A -f 6 -6 -s rr\n\
-a -f 6 -6 -r [fd00::41] -g\n\
-A -t [2001:db8::1]:80 -s rr\n\
-a -t [2001:db8::1]:80 -r [fd00::11]:8080 -m\n\
-a -t [2001:db8::1]:80 -r [fd00::12] -i\n\
-A -u [2001:db8::1]:53 -s wlc\n\
-a -u [2001:db8::1]:53 -r [fd00::13] -g\n\
-A -t [2001:db8::2]:0 -s rr -p 60\n\
-a -t [2001:db8::2]:0 -r [fd00::21] -g\n\
-a -t [2001:db8::2]:0 -r [fd00::22]:8443 -m\n";

/// Client addresses (structured mode, and the seeds).
pub const CLIENTS_V4: [&str; 4] = ["203.0.113.7", "203.0.113.8", "203.0.113.0", "198.18.0.1"];
/// Virtual addresses, and the addresses fwmark templates carry (the mark in the first word).
pub const VIPS_V4: [&str; 7] = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.4",
    "0.0.0.5",
    "0.0.0.6",
    "10.0.0.77",
];
/// Real servers.
pub const RIPS_V4: [&str; 10] = [
    "192.168.10.1",
    "192.168.10.2",
    "192.168.10.3",
    "192.168.20.1",
    "192.168.20.2",
    "192.168.30.1",
    "192.168.40.1",
    "192.168.40.2",
    "192.168.50.1",
    "192.168.50.2",
];
pub const CLIENTS_V6: [&str; 3] = ["2001:db8:ff::7", "2001:db8:ff::8", "2001:db8:ff::"];
pub const VIPS_V6: [&str; 5] = [
    "2001:db8::1",
    "2001:db8::2",
    "0:0:5::",
    "0:0:6::",
    "2001:db8::77",
];
pub const RIPS_V6: [&str; 6] = [
    "fd00::11", "fd00::12", "fd00::13", "fd00::21", "fd00::22", "fd00::41",
];
const PORTS: [u16; 11] = [0, 80, 53, 443, 8080, 9, 25, 8443, 40000, 40001, 6080];
const PROTOCOLS: [u8; 8] = [6, 17, 132, 0, 51, 50, 1, 58];

const HASHED: u32 = 0x0040;
const SEQ_FLAGS: u32 = 0x0600;
const TEMPLATE: u32 = 0x1000;

pub fn director() -> Director {
    let cfg = DirectorConfig {
        client_gateway: Some([2, 0, 0, 0, 0, 9]),
        addr_v4: Some("192.168.0.254".parse().unwrap()),
        addr_v6: Some("fd00::fe".parse().unwrap()),
        mtu: 1400,
        gue_port: Some(6080),
        ..DirectorConfig::default()
    };
    // Small tables: a datagram of 255 records fills one, so the full policy is exercised.
    let conn = ConnConfig {
        capacity_v4: 64,
        capacity_v6: 64,
        ..ConnConfig::default()
    };
    let sched = SchedConfig {
        mh_table_size: MhTableSize::from_index(8).unwrap(),
        ..SchedConfig::default()
    };
    let mut d = Director::new(cfg, conn, sched, Instant::ZERO);
    // Parsed once: parsing and checking the rules for every input would take half the time.
    static COMMANDS: OnceLock<Vec<Command>> = OnceLock::new();
    let cmds = COMMANDS.get_or_init(|| {
        let rules = lvs::config::parse(RULES).unwrap();
        rules.into_iter().map(|r| r.command).collect()
    });
    for c in cmds {
        d.apply(c).unwrap();
    }
    for (i, a) in RIPS_V4.iter().chain(RIPS_V6.iter()).enumerate() {
        d.set_neighbour(a.parse().unwrap(), [2, 0, 0, 0, 1, i as u8]);
    }
    d
}

/// A reader of fuzz bytes that yields zeros once they run out.
struct Bytes<'a> {
    d: &'a [u8],
    i: usize,
}

impl<'a> Bytes<'a> {
    fn done(&self) -> bool {
        self.i >= self.d.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.d.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = self.i.min(self.d.len());
        let e = (s + n).min(self.d.len());
        self.i = e;
        &self.d[s..e]
    }
    fn addr(&mut self, v6: bool, v4s: &[&str], v6s: &[&str]) -> IpAddr {
        let sel = self.u8();
        match (v6, sel >= 0xf0) {
            (false, false) => v4s[sel as usize % v4s.len()].parse().unwrap(),
            (true, false) => v6s[sel as usize % v6s.len()].parse().unwrap(),
            (false, true) => IpAddr::V4(Ipv4Addr::from(self.u32())),
            (true, true) => {
                let mut a = [0u8; 16];
                for b in &mut a {
                    *b = self.u8();
                }
                IpAddr::V6(Ipv6Addr::from(a))
            }
        }
    }
    fn port(&mut self) -> u16 {
        let sel = self.u8();
        PORTS.get(sel as usize).copied().unwrap_or_else(|| {
            if sel >= 0xf0 {
                self.u16()
            } else {
                PORTS[sel as usize % PORTS.len()]
            }
        })
    }
    fn seq(&mut self) -> Seq {
        Seq {
            init_seq: self.u32(),
            delta: self.u32(),
            previous_delta: self.u32(),
        }
    }
}

/// One record from fuzz bytes; `prev` lets a record repeat the key of the one before it with
/// another real server or other flags (the replace, update and stale paths of `apply_sync`).
fn record<'a>(r: &mut Bytes<'a>, prev: Option<&SyncConn<'a>>) -> SyncConn<'a> {
    let ctl = r.u8();
    if ctl & 0x10 != 0
        && let Some(p) = prev
    {
        let mut c = *p;
        let v6 = c.is_ipv6();
        if ctl & 0x20 != 0 {
            c.daddr = r.addr(v6, &RIPS_V4, &RIPS_V6);
            c.dport = r.port();
        }
        c.flags ^= r.u16() as u32;
        c.state = r.u8() as u16;
        return c;
    }
    let v6 = ctl & 1 != 0;
    let protocol = match r.u8() {
        p @ 0xf8.. => r.u8() ^ p,
        p => PROTOCOLS[p as usize % PROTOCOLS.len()],
    };
    let flags = r.u32();
    let state = match r.u8() {
        0xff => r.u16(),
        s => s as u16 % 16,
    };
    let caddr = r.addr(v6, &CLIENTS_V4, &CLIENTS_V6);
    let cport = r.port();
    let vaddr = r.addr(v6, &VIPS_V4, &VIPS_V6);
    let vport = r.port();
    let daddr = r.addr(v6, &RIPS_V4, &RIPS_V6);
    let dport = r.port();
    let fwmark = match r.u8() {
        0 => 0,
        1 => 5,
        2 => 6,
        0xff => r.u32(),
        m => m as u32,
    };
    let timeout = match r.u8() {
        0 => 0,
        1 => 1,
        2 => 60,
        3 => 900,
        4 => u32::MAX,
        0xff => r.u32(),
        t => t as u32,
    };
    let seq = (ctl & 2 != 0).then(|| SeqData {
        in_seq: r.seq(),
        out_seq: r.seq(),
    });
    let pe_data = (ctl & 4 != 0)
        .then(|| {
            let n = r.u8() as usize;
            r.take(n)
        })
        .filter(|d| !d.is_empty());
    let pe_name = (ctl & 8 != 0)
        .then(|| {
            let n = (r.u8() % 17) as usize;
            r.take(n)
        })
        .filter(|d| !d.is_empty());
    SyncConn {
        protocol,
        flags,
        state,
        caddr,
        cport,
        vaddr,
        vport,
        daddr,
        dport,
        fwmark,
        timeout,
        seq,
        pe_data,
        pe_name,
    }
}

/// What a record pushed to an encoder of `version` decodes to: version 0 carries the low 16
/// flag bits, no mark, timeout or persistence data, and sequence data iff the flags ask for it;
/// neither version carries `HASHED`.
fn as_encoded<'a>(version: Version, c: &SyncConn<'a>) -> SyncConn<'a> {
    match version {
        Version::V1 => SyncConn {
            flags: c.flags & !HASHED,
            ..*c
        },
        Version::V0 => {
            let flags = c.flags & 0xffff & !HASHED;
            SyncConn {
                flags,
                fwmark: 0,
                timeout: 0,
                seq: (flags & SEQ_FLAGS != 0).then(|| c.seq.unwrap_or_default()),
                pe_data: None,
                pe_name: None,
                ..*c
            }
        }
    }
}

/// The codec's per-record verdict on a record as it decodes.
fn verdict<'a>(c: SyncConn<'a>) -> Result<SyncConn<'a>, RecordError> {
    if c.flags & TEMPLATE == 0 {
        match protocol_states(c.protocol) {
            None => return Err(RecordError::Protocol(c.protocol)),
            Some(n) if c.state >= n => {
                return Err(RecordError::State {
                    protocol: c.protocol,
                    state: c.state,
                });
            }
            Some(_) => {}
        }
    }
    if c.pe_data.is_some() && c.pe_name.is_none() {
        return Err(RecordError::PeDataWithoutName);
    }
    Ok(c)
}

/// Structured mode: a datagram packed by the encoder from fuzz bytes, checked to decode to
/// what was pushed.
fn structured(data: &[u8]) -> Vec<u8> {
    let mut r = Bytes { d: data, i: 0 };
    let head = r.u8();
    let version = if head & 1 != 0 {
        Version::V0
    } else {
        Version::V1
    };
    let syncid = r.u8();
    let maxlen = if head & 2 != 0 {
        8 + 4 * r.u8() as usize
    } else {
        lvs::sync::DEFAULT_MAXLEN_V4
    };
    let mut buf = vec![0u8; maxlen];
    let mut enc = Encoder::new(&mut buf, version, syncid).unwrap();
    let mut pushed: Vec<SyncConn<'_>> = Vec::new();
    let mut prev: Option<SyncConn<'_>> = None;
    while !r.done() {
        let c = record(&mut r, prev.as_ref());
        prev = Some(c);
        let before = (enc.len(), enc.count());
        match enc.push(&c) {
            Ok(()) => {
                let n = Encoder::record_len(version, &c).unwrap();
                assert!(enc.len() >= before.0 + n && enc.len() <= before.0 + n + 3);
                assert_eq!(enc.count(), before.1 + 1);
                pushed.push(c);
            }
            Err(lvs::sync::EncodeError::Full) => {
                assert_eq!((enc.len(), enc.count()), before);
                break;
            }
            Err(lvs::sync::EncodeError::Ipv6InV0) => {
                assert!(version == Version::V0 && c.is_ipv6());
                assert_eq!((enc.len(), enc.count()), before);
            }
            Err(e) => panic!("{e:?} pushing {c:?}"),
        }
    }
    let bytes = enc.as_bytes().to_vec();
    assert!(bytes.len() <= maxlen);
    let m = Message::parse(&bytes).unwrap_or_else(|e| panic!("encoder output refused: {e}"));
    assert_eq!((m.version(), m.syncid()), (version, syncid));
    assert_eq!(m.count() as usize, pushed.len());
    let got: Vec<_> = m.records().collect();
    let want: Vec<_> = pushed
        .iter()
        .map(|c| verdict(as_encoded(version, c)))
        .collect();
    assert_eq!(got, want);
    bytes
}

/// The codec checks of a datagram; returns the records if it parses.
fn codec(data: &[u8]) -> Option<(Message<'_>, Vec<Result<SyncConn<'_>, RecordError>>)> {
    let m = match Message::parse(data) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            let at = match e {
                MessageError::TooShort { len } | MessageError::SizeMismatch { len, .. } => len,
                MessageError::Truncated { offset, .. }
                | MessageError::Overrun { offset, .. }
                | MessageError::RecordVersion { offset, .. }
                | MessageError::RecordType { offset, .. }
                | MessageError::RecordTooShort { offset, .. }
                | MessageError::Option { offset, .. } => offset,
                _ => 0,
            };
            assert!(
                at <= data.len(),
                "{e:?} points outside {} bytes",
                data.len()
            );
            return None;
        }
    };
    assert_eq!(m.bytes(), data);
    if m.version() == Version::V1 {
        assert!(data.len() >= 8 && data[0] == 0 && data[5] == 1 && data[6] == 0 && data[7] == 0);
    }
    let it = m.records();
    assert_eq!(
        it.size_hint(),
        (m.count() as usize, Some(m.count() as usize))
    );
    let recs: Vec<_> = it.collect();
    assert_eq!(recs.len(), m.count() as usize);
    let range = data.as_ptr_range();
    let inside = |s: &[u8]| {
        let r = s.as_ptr_range();
        range.start <= r.start && r.end <= range.end
    };
    let mut all = vec![0u8; data.len()];
    let mut enc_all = Encoder::new(&mut all, m.version(), m.syncid()).unwrap();
    let mut want_all = Vec::new();
    for rec in &recs {
        let c = match rec {
            Ok(c) => c,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        assert!(c.caddr.is_ipv6() == c.vaddr.is_ipv6() && c.caddr.is_ipv6() == c.daddr.is_ipv6());
        for s in [c.pe_data, c.pe_name].into_iter().flatten() {
            assert!(inside(s), "option data outside the datagram");
            assert!(!s.is_empty());
        }
        assert!(c.pe_name.is_none_or(|n| n.len() <= 16));
        if m.version() == Version::V0 {
            assert!(c.flags <= 0xffff && c.fwmark == 0 && c.timeout == 0);
            assert_eq!(c.seq.is_some(), c.flags & SEQ_FLAGS != 0);
            assert!(!c.is_ipv6() && c.pe_data.is_none() && c.pe_name.is_none());
        }
        // Round trip, alone in a fresh message.
        let want = as_encoded(m.version(), c);
        let mut buf = [0u8; 512];
        let mut enc = Encoder::new(&mut buf, m.version(), m.syncid()).unwrap();
        enc.push(c)
            .unwrap_or_else(|e| panic!("{e:?} re-encoding {c:?}"));
        let again = enc.as_bytes();
        let m2 = Message::parse(again).unwrap_or_else(|e| panic!("re-encoding refused: {e}"));
        assert_eq!(m2.version(), m.version());
        let r2: Vec<_> = m2.records().collect();
        assert_eq!(r2, vec![Ok(want)], "round trip of {c:?}");
        // And with the other good records: never longer than the datagram they came from.
        enc_all
            .push(c)
            .unwrap_or_else(|e| panic!("{e:?}: good records do not fit where they came from"));
        want_all.push(Ok(want));
    }
    let m_all = Message::parse(enc_all.as_bytes()).unwrap();
    assert_eq!(m_all.records().collect::<Vec<_>>(), want_all);
    Some((m, recs))
}

fn skip_index(e: &RecordError) -> usize {
    match e {
        RecordError::UnknownOption(_) => 0,
        RecordError::Protocol(_) => 1,
        RecordError::State { .. } => 2,
        RecordError::PeDataWithoutName => 3,
        _ => 4,
    }
}

/// The skips by reason the director should count for these records.
fn expected_skips(recs: &[Result<SyncConn<'_>, RecordError>]) -> [u64; 5] {
    let mut s = [0u64; 5];
    for r in recs {
        match r {
            Err(e) => s[skip_index(e)] += 1,
            Ok(c) if c.pe_data.is_some() => s[4] += 1,
            Ok(c) if !c.is_template() && Protocol::from_number(c.protocol).is_none() => s[1] += 1,
            Ok(_) => {}
        }
    }
    s
}

/// The table's invariants: its length is what its counters say, and every real server's
/// counters are exactly the entries bound to it.
fn accounting(d: &Director) {
    let cs = d.conns().stats();
    assert_eq!(
        d.conns().len() as u64,
        cs.inserted - cs.expired - cs.evicted - cs.expired_now,
        "{cs:?}"
    );
    let mut held: HashMap<DestRef, (u32, u32, u32)> = HashMap::new();
    for c in d.conns().iter() {
        if let Some(r) = c.dest {
            let h = held.entry(r).or_default();
            if c.flags.has(ConnFlags::TEMPLATE) {
                h.2 += 1;
            } else if c.flags.has(ConnFlags::INACTIVE) {
                h.1 += 1;
            } else {
                h.0 += 1;
            }
        }
    }
    for (n, svc) in d.services().numbered() {
        let dests = svc.pool().dests();
        for i in 0..dests.slot_count() {
            let Some(x) = dests.id_at(i).and_then(|id| dests.get(id)) else {
                continue;
            };
            let r = DestRef::new(n, i as u16);
            let want = held.remove(&r).unwrap_or_default();
            let got = (x.active_conns(), x.inactive_conns(), x.persistent_conns());
            assert_eq!(
                got,
                want,
                "real server {} of {:?}: counters (active, inactive, persistent)",
                x.addr(),
                svc.key()
            );
        }
    }
    assert!(
        held.is_empty(),
        "entries bound to unknown real servers: {held:?}"
    );
}

fn report_total(r: &SyncReport) -> u32 {
    r.created + r.updated + r.replaced + r.stale + r.skipped + r.refused
}

/// The table protocol code of a record: unknown protocols are stored as 0 (fwmark templates).
fn stored_protocol(p: u8) -> u8 {
    match Protocol::from_number(p) {
        Some(_) => p,
        None => 0,
    }
}

fn apply(
    d: &mut Director,
    data: &[u8],
    parsed: Option<&[Result<SyncConn<'_>, RecordError>]>,
    now: Instant,
) {
    let before = *d.sync_stats();
    let len_before = d.conns().len();
    // A backup of another sync id refuses the well-formed datagrams of other ids whole.
    d.set_sync_backup(SyncBackupConfig {
        syncid: 7,
        threshold: 3,
    });
    let other = d.apply_sync(data, now);
    let syncid = data.get(1).copied();
    match (&other, parsed) {
        (Err(SyncError::Message(_)), None) => {}
        (Err(SyncError::SyncId { expected: 7, got }), Some(_)) => {
            assert_ne!(Some(*got), Some(7));
            assert_eq!(Some(*got), syncid);
        }
        (Ok(r), Some(recs)) => {
            assert_eq!(syncid, Some(7));
            assert_eq!(report_total(r) as usize, recs.len());
        }
        (r, p) => panic!("syncid 7 backup: {r:?} but parse ok: {}", p.is_some()),
    }
    if other.is_err() {
        assert_eq!(d.conns().len(), len_before);
    }
    d.set_sync_backup(SyncBackupConfig::default());
    let res = d.apply_sync(data, now);
    let s = *d.sync_stats();
    assert_eq!(s.datagrams, before.datagrams + 2);
    let mut reports = Vec::new();
    if let Ok(r) = other {
        reports.push(r);
    }
    match (&res, parsed) {
        (Err(SyncError::Message(_)), None) => {
            assert_eq!(s.malformed, before.malformed + 2);
            assert_eq!(s.other_syncid, before.other_syncid);
        }
        (Ok(r), Some(recs)) => {
            assert_eq!(s.malformed, before.malformed);
            let others = (syncid != Some(7)) as u64;
            assert_eq!(s.other_syncid, before.other_syncid + others);
            assert_eq!(report_total(r) as usize, recs.len(), "{r:?}");
            // Counted before the table has its say: a refused or stale record may be unbound too.
            assert!(r.unbound <= report_total(r) - r.skipped, "{r:?}");
            let skips = expected_skips(recs);
            assert_eq!(r.skipped as u64, skips.iter().sum::<u64>(), "{r:?}");
            let mut want = before.skipped;
            for (w, k) in want.iter_mut().zip(skips) {
                *w += k * (1 + reports.len() as u64);
            }
            assert_eq!(s.skipped, want);
            reports.push(*r);
        }
        (r, p) => panic!("apply_sync: {r:?} but parse ok: {}", p.is_some()),
    }
    let sum = |f: fn(&SyncReport) -> u32| reports.iter().map(|r| f(r) as u64).sum::<u64>();
    assert_eq!(s.created, before.created + sum(|r| r.created));
    assert_eq!(s.updated, before.updated + sum(|r| r.updated));
    assert_eq!(s.replaced, before.replaced + sum(|r| r.replaced));
    assert_eq!(s.stale, before.stale + sum(|r| r.stale));
    assert_eq!(s.refused, before.refused + sum(|r| r.refused));
    assert_eq!(s.unbound, before.unbound + sum(|r| r.unbound));
    assert_eq!(s.sent_records, before.sent_records);
    accounting(d);
}

/// Every entry of a table that only sync fed comes from one of the records.
fn entries_from_records(d: &Director, recs: &[Result<SyncConn<'_>, RecordError>]) {
    for e in d.conns().iter() {
        assert!(e.flags.has(ConnFlags::SYNC), "{e:?}");
        let template = e.flags.has(ConnFlags::TEMPLATE);
        let found = recs.iter().flatten().any(|c| {
            c.is_template() == template
                && c.caddr == e.caddr
                && c.vaddr == e.vaddr
                && c.vport == e.vport
                && if template {
                    stored_protocol(c.protocol) == e.protocol
                } else {
                    c.protocol == e.protocol
                        && c.daddr == e.daddr
                        && c.dport == e.dport
                        && (c.cport == e.cport || e.flags.has(ConnFlags::NO_CPORT))
                }
        });
        assert!(found, "entry from no record: {e:?}");
    }
}

fn frame(src: IpAddr, sp: u16, dst: IpAddr, dp: u16, kind: u8) -> Option<Vec<u8>> {
    use etherparse::PacketBuilder;
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
        _ => return None,
    };
    let mut out = Vec::new();
    match kind {
        // UDP
        0 => b.udp(sp, dp).write(&mut out, b"sync").ok()?,
        // TCP: SYN, ACK with data, FIN, RST
        k => {
            let t = b.tcp(sp, dp, 1000, 4096);
            let (t, payload): (_, &[u8]) = match k {
                1 => (t.syn(), &[]),
                2 => (t.ack(1).psh(), b"GET / HTTP/1.0\r\n\r\n"),
                3 => (t.ack(1).fin(), &[]),
                _ => (t.rst(), &[]),
            };
            t.write(&mut out, payload).ok()?
        }
    }
    Some(out)
}

fn check(v: &Verdict, len: usize) {
    match *v {
        Verdict::Forward(f) => assert!(f.start <= f.end && f.end <= len, "{v:?}"),
        Verdict::Reply(r) => assert!(r.start <= r.end && r.end <= len, "{v:?}"),
        Verdict::Pass(_) | Verdict::Drop(_) => {}
    }
}

/// Frames that use what the records made: the client's next packet and the real server's
/// reply on a synced connection, a new connection under a synced template.
fn traffic(d: &mut Director, recs: &[Result<SyncConn<'_>, RecordError>], now: Instant) -> u64 {
    let mut n = 0;
    let mut send = |d: &mut Director, f: Option<Vec<u8>>, side: Side, fwmark: u32| {
        let Some(f) = f else { return };
        let head = 64;
        let mut buf = vec![0u8; head + f.len() + 1600];
        buf[head..head + f.len()].copy_from_slice(&f);
        let rx = Rx {
            fwmark,
            ..Rx::new(side)
        };
        let len = buf.len();
        let v = d.process_at(&mut buf, head, head + f.len(), &rx, now);
        check(&v, len);
        n += 1;
    };
    for (i, c) in recs.iter().flatten().take(12).enumerate() {
        let tcp = c.protocol == 6;
        if c.is_template() {
            // A new connection from the template's client (network) to its service.
            let (dst, mark) = match (c.protocol, c.vaddr) {
                (0, IpAddr::V4(a)) => ("10.0.0.77".parse().unwrap(), u32::from(a)),
                (0, IpAddr::V6(a)) => (
                    "2001:db8::77".parse().unwrap(),
                    (u128::from(a) >> 96) as u32,
                ),
                _ => (c.vaddr, c.fwmark),
            };
            let dport = if c.vport == 0 { 443 } else { c.vport };
            let kind = if c.protocol == 17 { 0 } else { 1 };
            send(
                d,
                frame(c.caddr, 50000 + i as u16, dst, dport, kind),
                Side::Client,
                mark,
            );
            continue;
        }
        if !tcp && c.protocol != 17 {
            continue;
        }
        let kind = if tcp {
            2 + (c.state as u8 + i as u8) % 3
        } else {
            0
        };
        send(
            d,
            frame(c.caddr, c.cport, c.vaddr, c.vport, kind),
            Side::Client,
            c.fwmark,
        );
        let reply = if tcp { 2 } else { 0 };
        send(
            d,
            frame(c.daddr, c.dport, c.caddr, c.cport, reply),
            Side::Server,
            0,
        );
    }
    n
}

fn expire_all(d: &mut Director, now: Instant) {
    for _ in 0..10_000 {
        if d.expire(now, 1 << 16).done {
            return;
        }
    }
    panic!("expire never catches up");
}

pub fn sync(data: &[u8]) {
    let owned;
    let datagram = match data.first() {
        Some(b) if b & 0x80 != 0 => {
            owned = structured(&data[1..]);
            &owned[..]
        }
        _ => data,
    };
    let parsed = codec(datagram);
    let recs = parsed.as_ref().map(|(_, r)| &r[..]);
    let mut d = director();
    let t0 = Instant::from_secs(1_000);
    apply(&mut d, datagram, recs, t0);
    if let Some(recs) = recs {
        entries_from_records(&d, recs);
    }
    // Again, a moment later: updates, replacements of what the first pass replaced.
    apply(&mut d, datagram, recs, Instant::from_millis(1_000_001));
    let t1 = Instant::from_secs(1_002);
    let frames = match recs {
        Some(recs) => traffic(&mut d, recs, t1),
        None => 0,
    };
    let st = d.stats();
    let total = st.forwarded_in
        + st.forwarded_out
        + st.replies.iter().sum::<u64>()
        + st.passed.iter().sum::<u64>()
        + st.dropped.iter().sum::<u64>();
    assert_eq!(total, frames);
    accounting(&d);
    // Every deadline lies at most MAX_TIMEOUT_MS after the last packet; a template still
    // controlling connections then is re-armed by 60 s.
    let end = Instant::from_millis(1_002_000 + MAX_TIMEOUT_MS as u64);
    expire_all(&mut d, end);
    accounting(&d);
    expire_all(
        &mut d,
        Instant::from_millis(1_002_000 + MAX_TIMEOUT_MS as u64 + 61_000),
    );
    accounting(&d);
    assert_eq!(
        d.conns().len(),
        0,
        "entries left: {:?}",
        d.conns().iter().collect::<Vec<_>>()
    );
}
