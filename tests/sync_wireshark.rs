//! Wireshark's `ipvs` dissector as an independent reader of the sync codec: datagrams written by
//! `lvs::sync::Encoder` (versions 0 and 1, IPv4 and IPv6 records, TCP, UDP, SCTP, templates,
//! sequence data, options and alignment padding) go into a pcap as Ethernet/IPv4/UDP to port
//! 8848, and every field tshark decodes of every datagram, and of every record it reads where
//! the record is, must be the value the test encoded (each record is so read in at least one
//! datagram); tshark must report no malformed packet or expert info. The expected values come
//! from the test's inputs and the kernel's layout (`net/netfilter/ipvs/ip_vs_sync.c`), never
//! from the codec's own decoder. Skipped, saying so, when tshark is not installed.
//!
//! Where Wireshark (4.0; later releases read the records the same way) and the kernel disagree,
//! the kernel is right and the test asserts what Wireshark does get right:
//! - Version 0 sequence data: the kernel copies `struct ip_vs_seq` as it is in the sender's
//!   memory (`memcpy(opt, &cp->sync_conn_opt, ...)`, host byte order: little-endian on x86 and
//!   arm64, as the codec writes it); Wireshark reads the six words big-endian. The test expects
//!   each word byte-swapped.
//! - Version 1 records: Wireshark reads each record's fixed part (36 bytes when the type is 0,
//!   72 otherwise) and starts the next record right after it. The kernel's next record starts
//!   at the record's size (`ver_size & 0x0fff`), rounded up to 4: after a record with options
//!   (`SEQ_DATA`, `PE_DATA`, `PE_NAME`) and its padding, Wireshark reads the options as the
//!   next record. The test compares the records Wireshark reads at their real offset (it walks
//!   the datagram as Wireshark does to know which), and checks the header's size, which
//!   includes every option and pad byte; it does not read Wireshark's values of a record it
//!   reads at the wrong offset.
//! - Version 1 `ver_size`: Wireshark splits it 3 bits of version (`ipvs.ver`, mask 0xe000) and
//!   13 of size (`ipvs.size.v1`, 0x1fff); the kernel 4 and 12 (`SVER_SHIFT` 12, `SVER_MASK`
//!   0x0fff). Both read version 0 and the same size for every record of at most 4095 bytes,
//!   which all are.
//! - Version 1 type: Wireshark names type 2 "IPv6"; the kernel's IPv6 bit is bit 0
//!   (`STYPE_F_INET6`), so an IPv6 record's type is 1, which Wireshark does decode as IPv6 (any
//!   non-zero type) but shows as "Unknown (1)". Only the label is wrong; the test checks 1.
//! - Display only: protocol names are TCP and UDP only (SCTP shows as 0x84), the state names
//!   ("Input", "Output", "Input Only") are not IPVS's states, and the v0 connection-type
//!   subfield masks 0x000f where the kernel's method mask is 0x0007. The raw values tested are
//!   right.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use etherparse::PacketBuilder;
use lvs::sync::{Encoder, Seq, SeqData, SyncConn, Version};

const SYNC_PORT: u16 = 8848;

/// Connection flags used below (`IP_VS_CONN_F_*`).
const MASQ: u32 = 0x0000;
const TUNNEL: u32 = 0x0002;
const DROUTE: u32 = 0x0003;
const HASHED: u32 = 0x0040;
const NOOUTPUT: u32 = 0x0080;
const INACTIVE: u32 = 0x0100;
const OUT_SEQ: u32 = 0x0200;
const IN_SEQ: u32 = 0x0400;
const NO_CPORT: u32 = 0x0800;
const TEMPLATE: u32 = 0x1000;
const ONE_PACKET: u32 = 0x2000;
const NFCT: u32 = 0x1_0000;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

/// The fields tshark prints, in this order, every occurrence of each.
const FIELDS: &[&str] = &[
    "frame.number",
    "frame.protocols",
    "udp.length",
    "ipvs.conncount",
    "ipvs.syncid",
    "ipvs.size",
    "ipvs.version",
    "ipvs.resv",
    "ipvs.type",
    "ipvs.proto",
    "ipvs.ver",
    "ipvs.size.v1",
    "ipvs.flags",
    "ipvs.flags.conn_type",
    "ipvs.flags.hashed_entry",
    "ipvs.flags.no_output_packets",
    "ipvs.flags.conn_not_established",
    "ipvs.flags.adjust_output_seq",
    "ipvs.flags.adjust_input_seq",
    "ipvs.flags.no_client_port_set",
    "ipvs.flags.v1",
    "ipvs.state",
    "ipvs.cport",
    "ipvs.vport",
    "ipvs.dport",
    "ipvs.fwmark",
    "ipvs.timeout",
    "ipvs.caddr",
    "ipvs.vaddr",
    "ipvs.daddr",
    "ipvs.caddr6",
    "ipvs.vaddr6",
    "ipvs.daddr6",
    "ipvs.in_seq.initial",
    "ipvs.in_seq.delta",
    "ipvs.in_seq.pdelta",
    "ipvs.out_seq.initial",
    "ipvs.out_seq.delta",
    "ipvs.out_seq.pdelta",
    "_ws.malformed",
    "_ws.expert",
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A record with no firewall mark, timeout, sequence data or persistence data.
fn rec(
    protocol: u8,
    flags: u32,
    state: u16,
    (c, cport): (&str, u16),
    (v, vport): (&str, u16),
    (d, dport): (&str, u16),
) -> SyncConn<'static> {
    SyncConn {
        protocol,
        flags,
        state,
        caddr: ip(c),
        cport,
        vaddr: ip(v),
        vport,
        daddr: ip(d),
        dport,
        fwmark: 0,
        timeout: 0,
        seq: None,
        pe_data: None,
        pe_name: None,
    }
}

/// The version 1 extras of a record.
trait With: Sized {
    fn mark(self, fwmark: u32, timeout: u32) -> Self;
    /// in_seq's init_seq, delta, previous_delta, then out_seq's.
    fn seq(self, words: [u32; 6]) -> Self;
    fn pe(self, data: &'static [u8], name: &'static [u8]) -> Self;
}

impl With for SyncConn<'static> {
    fn mark(self, fwmark: u32, timeout: u32) -> Self {
        SyncConn {
            fwmark,
            timeout,
            ..self
        }
    }

    fn seq(self, w: [u32; 6]) -> Self {
        let s = |i: usize| Seq {
            init_seq: w[i],
            delta: w[i + 1],
            previous_delta: w[i + 2],
        };
        SyncConn {
            seq: Some(SeqData {
                in_seq: s(0),
                out_seq: s(3),
            }),
            ..self
        }
    }

    fn pe(self, data: &'static [u8], name: &'static [u8]) -> Self {
        SyncConn {
            pe_data: Some(data),
            pe_name: Some(name),
            ..self
        }
    }
}

/// One datagram: what was encoded, and its bytes.
struct Datagram {
    version: Version,
    syncid: u8,
    recs: Vec<SyncConn<'static>>,
    bytes: Vec<u8>,
}

fn datagram(version: Version, syncid: u8, recs: Vec<SyncConn<'static>>) -> Datagram {
    let mut buf = vec![0u8; 1472];
    let mut e = Encoder::new(&mut buf, version, syncid).unwrap();
    for r in &recs {
        e.push(r).unwrap();
    }
    let bytes = e.as_bytes().to_vec();
    Datagram {
        version,
        syncid,
        recs,
        bytes,
    }
}

/// The datagrams, with distinct values in every field of every record so that a swap of two
/// fields, or of two records, shows.
#[rustfmt::skip]
fn corpus() -> Vec<Datagram> {
    use Version::{V0, V1};
    let after_padding = vec![
        rec(UDP, MASQ, 0, ("192.0.2.62", 40062), ("198.51.100.62", 5060), ("10.0.4.62", 8062))
            .mark(0, 306),
        rec(UDP, TEMPLATE | MASQ, 0, ("192.0.2.63", 0), ("198.51.100.63", 5060), ("10.0.4.63", 5060))
            .mark(0, 1800)
            .pe(b"a84b4c76e66710", b"sip"),
    ];
    vec![
        // Version 0: TCP and UDP; NAT, TUN and DR; IN_SEQ with sequence data; a template;
        // NO_CPORT. HASHED is not sent and bit 16 does not travel.
        datagram(V0, 3, vec![
            rec(TCP, DROUTE | NOOUTPUT | HASHED, 1, ("192.0.2.10", 40001), ("198.51.100.1", 80), ("10.0.0.2", 8080)),
            rec(UDP, MASQ, 0, ("192.0.2.11", 53001), ("198.51.100.2", 53), ("10.0.0.3", 5353)),
            rec(TCP, MASQ | IN_SEQ | INACTIVE, 3, ("192.0.2.12", 40123), ("198.51.100.3", 21), ("10.0.0.4", 2121))
                .seq([0x0102_0304, 0x10, 0xffff_fff0, 0xa1b2_c3d4, 5, 7]),
            rec(TCP, TEMPLATE | TUNNEL | NFCT, 0, ("203.0.113.0", 0), ("198.51.100.4", 443), ("10.0.0.5", 8443)),
            rec(TCP, TUNNEL | NO_CPORT, 5, ("192.0.2.13", 0), ("198.51.100.5", 25), ("10.0.0.6", 2525)),
        ]),
        // Version 0: OUT_SEQ alone, both sequence flags, then a record without.
        datagram(V0, 200, vec![
            rec(TCP, MASQ | OUT_SEQ, 7, ("192.0.2.20", 50020), ("198.51.100.20", 21), ("10.0.1.20", 2100))
                .seq([0x1122_3344, 0x100, 0x80, 0x5566_7788, 0xffff_ff00, 1]),
            rec(TCP, MASQ | IN_SEQ | OUT_SEQ, 4, ("192.0.2.21", 50021), ("198.51.100.21", 21), ("10.0.1.21", 2101))
                .seq([0x99aa_bbcc, 3, 2, 0xddee_ff00, 0x40, 0x20]),
            rec(UDP, DROUTE, 0, ("192.0.2.22", 50022), ("198.51.100.22", 123), ("10.0.1.22", 1123)),
        ]),
        // Version 1, IPv4: TCP, UDP, SCTP; firewall marks and timeouts; DR | NOOUTPUT, TUN,
        // NAT, INACTIVE; 32-bit flags; a firewall-mark template (protocol 0, mark in vaddr).
        datagram(V1, 1, vec![
            rec(TCP, DROUTE | NOOUTPUT, 1, ("192.0.2.30", 40030), ("198.51.100.30", 80), ("10.0.2.30", 8030))
                .mark(0, 900),
            rec(UDP, TUNNEL, 0, ("192.0.2.31", 40031), ("198.51.100.31", 53), ("10.0.2.31", 8031))
                .mark(0x2a, 300),
            rec(SCTP, MASQ, 8, ("192.0.2.32", 40032), ("198.51.100.32", 3868), ("10.0.2.32", 8032))
                .mark(0x00c0_ffee, 120),
            rec(TCP, MASQ | INACTIVE, 3, ("192.0.2.33", 40033), ("198.51.100.33", 443), ("10.0.2.33", 8033))
                .mark(7, 60),
            rec(0, TEMPLATE | DROUTE, 1, ("192.0.2.0", 0), ("0.0.0.77", 0), ("10.0.2.34", 0))
                .mark(77, 360),
            rec(TCP, DROUTE | NOOUTPUT | INACTIVE | ONE_PACKET | NFCT | HASHED, 2,
                ("192.0.2.35", 65535), ("198.51.100.35", 1), ("10.0.2.35", 65534))
                .mark(0xffff_fffe, 86_400),
        ]),
        // Version 1, IPv6 records only.
        datagram(V1, 255, vec![
            rec(TCP, DROUTE | NOOUTPUT, 1, ("2001:db8::40", 40040), ("2001:db8:100::1", 80), ("fd00::2:40", 8040))
                .mark(0, 901),
            rec(UDP, TUNNEL, 0, ("2001:db8::41", 40041), ("2001:db8:100::2", 53), ("fd00::2:41", 8041))
                .mark(0x100, 301),
            rec(SCTP, MASQ | INACTIVE, 1, ("2001:db8:ffff:ffff:ffff:ffff:ffff:42", 40042),
                ("2001:db8:100::3", 9899), ("fd00::2:42", 8042))
                .mark(0, 121),
        ]),
        // Version 1, both families in one message, and a SEQ_DATA option on the last record
        // (Wireshark reads its fixed part; the option is in the record's and message's size).
        datagram(V1, 9, vec![
            rec(TCP, MASQ, 1, ("192.0.2.50", 40050), ("198.51.100.50", 80), ("10.0.3.50", 8050))
                .mark(0, 902),
            rec(TCP, TUNNEL | NOOUTPUT, 7, ("2001:db8::51", 40051), ("2001:db8:100::51", 443), ("fd00::3:51", 8051))
                .mark(5, 302),
            rec(TCP, MASQ | IN_SEQ | OUT_SEQ, 1, ("192.0.2.52", 40052), ("198.51.100.52", 21), ("10.0.3.52", 8052))
                .mark(0, 903)
                .seq([0xdead_beef, 0x11, 0x22, 0x0bad_f00d, 0x33, 0x44]),
        ]),
        // Version 1, alignment: an IPv6 record with SEQ_DATA (98 bytes) is padded to 100
        // before the next record; the last record has PE_DATA and PE_NAME (57 bytes, not
        // padded). Wireshark reads the records after the first option at the wrong offset.
        datagram(V1, 42, [vec![
            rec(TCP, DROUTE, 1, ("192.0.2.60", 40060), ("198.51.100.60", 80), ("10.0.4.60", 8060))
                .mark(1, 904),
            rec(TCP, MASQ | IN_SEQ, 1, ("2001:db8::61", 40061), ("2001:db8:100::61", 21), ("fd00::4:61", 8061))
                .mark(0, 905)
                .seq([0x0a0b_0c0d, 0x100, 0x200, 0x1a1b_1c1d, 0x300, 0x400]),
        ], after_padding.clone()].concat()),
        // The records Wireshark misreads above, on their own: it reads them where they are.
        datagram(V1, 43, after_padding),
    ]
}

/// A record's size in the kernel's layout (without the padding before the next record).
fn record_len(version: Version, c: &SyncConn<'_>) -> usize {
    match version {
        Version::V0 if c.flags & (IN_SEQ | OUT_SEQ) != 0 => 24 + 24,
        Version::V0 => 24,
        Version::V1 => {
            let fixed = if c.caddr.is_ipv6() { 72 } else { 36 };
            let seq = if c.seq.is_some() { 2 + 24 } else { 0 };
            let data = c.pe_data.map_or(0, |d| 2 + d.len());
            let name = c.pe_name.map_or(0, |n| 2 + n.len());
            fixed + seq + data + name
        }
    }
}

/// Each record's offset in the datagram, and the datagram's size, in the kernel's layout:
/// version 1 records start 4-byte aligned, the padding put before a record, never after the
/// last.
fn layout(d: &Datagram) -> (Vec<usize>, usize) {
    let mut at = match d.version {
        Version::V0 => 4,
        Version::V1 => 8,
    };
    let mut offsets = Vec::new();
    for r in &d.recs {
        if d.version == Version::V1 {
            at = (at + 3) & !3;
        }
        offsets.push(at);
        at += record_len(d.version, r);
    }
    (offsets, at)
}

/// Where Wireshark's dissector reads each version 1 record: right after the previous one's
/// fixed part, 36 bytes when its type byte is 0, else 72.
fn wireshark_offsets(d: &Datagram) -> Vec<usize> {
    let mut at = 8;
    let mut offsets = Vec::new();
    for _ in &d.recs {
        offsets.push(at);
        at += if d.bytes.get(at) == Some(&0) { 36 } else { 72 };
    }
    offsets
}

/// The Ethernet/IPv4/UDP frame carrying a datagram (etherparse computes the IPv4 header
/// checksum and the UDP checksum).
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [0x01, 0x00, 0x5e, 0, 0, 0x51])
        .ipv4([192, 0, 2, 254], [224, 0, 0, 81], 1)
        .udp(SYNC_PORT, SYNC_PORT)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = pcap_file::pcap::PcapWriter::new(file).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            std::time::Duration::from_millis(1_000 + i as u64),
            f.len() as u32,
            f,
        ))
        .unwrap();
    }
}

/// One frame's fields as tshark printed them, each field's occurrences in tree order, read
/// one after another.
struct Fields {
    values: HashMap<&'static str, Vec<String>>,
    next: HashMap<&'static str, usize>,
}

impl Fields {
    fn parse(line: &str) -> Fields {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), FIELDS.len(), "tshark line: {line:?}");
        let values = FIELDS
            .iter()
            .zip(cols)
            .map(|(&f, c)| {
                let v = if c.is_empty() {
                    Vec::new()
                } else {
                    c.split(',').map(str::to_owned).collect()
                };
                (f, v)
            })
            .collect();
        Fields {
            values,
            next: HashMap::new(),
        }
    }

    fn all(&self, field: &str) -> &[String] {
        &self.values[field]
    }

    /// The next occurrence of a field.
    fn take(&mut self, field: &'static str) -> Option<String> {
        let i = self.next.entry(field).or_insert(0);
        let v = self.values[field].get(*i).cloned();
        *i += 1;
        v
    }

    /// Fields with occurrences no record read.
    fn leftovers(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|(f, v)| {
                f.starts_with("ipvs.") && self.next.get(*f).copied().unwrap_or(0) < v.len()
            })
            .map(|(f, v)| format!("{f}={v:?}"))
            .collect()
    }
}

/// A decimal or 0x-prefixed hexadecimal number, or a boolean (1/0, True/False).
fn num(s: &str) -> Option<u64> {
    match s {
        "True" | "true" => return Some(1),
        "False" | "false" => return Some(0),
        _ => {}
    }
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The comparisons of one run: how many, and what differed.
#[derive(Default)]
struct Checks {
    compared: usize,
    failures: Vec<String>,
}

impl Checks {
    fn num(&mut self, at: &str, field: &str, got: Option<String>, want: u64) {
        self.compared += 1;
        let ok = got.as_deref().and_then(num) == Some(want);
        if !ok {
            self.failures
                .push(format!("{at}: {field} = {got:?}, want {want} ({want:#x})"));
        }
    }

    fn addr(&mut self, at: &str, field: &str, got: Option<String>, want: IpAddr) {
        self.compared += 1;
        let ok = got.as_deref().and_then(|s| s.parse::<IpAddr>().ok()) == Some(want);
        if !ok {
            self.failures
                .push(format!("{at}: {field} = {got:?}, want {want}"));
        }
    }

    fn zeros(&mut self, at: &str, field: &str, got: Option<String>, len: usize) {
        self.compared += 1;
        let hex: Option<String> = got.as_deref().map(|s| s.replace(':', ""));
        let ok = hex
            .as_deref()
            .is_some_and(|h| h.len() == 2 * len && h.bytes().all(|b| b == b'0'));
        if !ok {
            self.failures
                .push(format!("{at}: {field} = {got:?}, want {len} zero byte(s)"));
        }
    }
}

/// Reads one version 0 record from Wireshark's fields and compares it.
fn check_v0(f: &mut Fields, ck: &mut Checks, at: &str, r: &SyncConn<'_>) {
    // The kernel sends the low 16 bits of the flags without HASHED.
    let flags = u64::from((r.flags & !HASHED) as u16);
    ck.zeros(at, "resv", f.take("ipvs.resv"), 1);
    ck.num(at, "proto", f.take("ipvs.proto"), r.protocol.into());
    ck.num(at, "cport", f.take("ipvs.cport"), r.cport.into());
    ck.num(at, "vport", f.take("ipvs.vport"), r.vport.into());
    ck.num(at, "dport", f.take("ipvs.dport"), r.dport.into());
    ck.addr(at, "caddr", f.take("ipvs.caddr"), r.caddr);
    ck.addr(at, "vaddr", f.take("ipvs.vaddr"), r.vaddr);
    ck.addr(at, "daddr", f.take("ipvs.daddr"), r.daddr);
    ck.num(at, "flags", f.take("ipvs.flags"), flags);
    ck.num(
        at,
        "flags.conn_type",
        f.take("ipvs.flags.conn_type"),
        flags & 0x000f,
    );
    let bits: [(&'static str, u32); 6] = [
        ("ipvs.flags.hashed_entry", HASHED),
        ("ipvs.flags.no_output_packets", NOOUTPUT),
        ("ipvs.flags.conn_not_established", INACTIVE),
        ("ipvs.flags.adjust_output_seq", OUT_SEQ),
        ("ipvs.flags.adjust_input_seq", IN_SEQ),
        ("ipvs.flags.no_client_port_set", NO_CPORT),
    ];
    for (field, bit) in bits {
        ck.num(
            at,
            field,
            f.take(field),
            u64::from(flags & u64::from(bit) != 0),
        );
    }
    ck.num(at, "state", f.take("ipvs.state"), r.state.into());
    if flags & u64::from(IN_SEQ | OUT_SEQ) != 0 {
        let s = r.seq.unwrap_or_default();
        let words = [
            ("ipvs.in_seq.initial", s.in_seq.init_seq),
            ("ipvs.in_seq.delta", s.in_seq.delta),
            ("ipvs.in_seq.pdelta", s.in_seq.previous_delta),
            ("ipvs.out_seq.initial", s.out_seq.init_seq),
            ("ipvs.out_seq.delta", s.out_seq.delta),
            ("ipvs.out_seq.pdelta", s.out_seq.previous_delta),
        ];
        for (field, w) in words {
            // Host (little-endian) order on the wire, read big-endian by Wireshark.
            ck.num(at, field, f.take(field), w.swap_bytes().into());
        }
    }
}

/// Reads one version 1 record from Wireshark's fields and, if Wireshark read it at its real
/// offset (`in_step`), compares it. Returns whether it was compared.
fn check_v1(f: &mut Fields, ck: &mut Checks, at: &str, r: &SyncConn<'_>, in_step: bool) -> bool {
    let ty = f.take("ipvs.type");
    // Wireshark's own choice of address fields, so that its fields stay in step with its
    // records even where it reads a record at the wrong offset.
    let six = ty.as_deref().and_then(num) != Some(0);
    let (c, v, d) = if six {
        ("ipvs.caddr6", "ipvs.vaddr6", "ipvs.daddr6")
    } else {
        ("ipvs.caddr", "ipvs.vaddr", "ipvs.daddr")
    };
    let got: Vec<Option<String>> = [
        "ipvs.proto",
        "ipvs.ver",
        "ipvs.size.v1",
        "ipvs.flags.v1",
        "ipvs.state",
        "ipvs.cport",
        "ipvs.vport",
        "ipvs.dport",
        "ipvs.fwmark",
        "ipvs.timeout",
        c,
        v,
        d,
    ]
    .into_iter()
    .map(|field| f.take(field))
    .collect();
    if !in_step {
        return false;
    }
    let [
        proto,
        ver,
        size,
        flags,
        state,
        cport,
        vport,
        dport,
        fwmark,
        timeout,
        caddr,
        vaddr,
        daddr,
    ] = <[Option<String>; 13]>::try_from(got).unwrap();
    ck.num(at, "type", ty, u64::from(r.caddr.is_ipv6()));
    ck.num(at, "proto", proto, r.protocol.into());
    ck.num(at, "ver", ver, 0);
    ck.num(at, "size.v1", size, record_len(Version::V1, r) as u64);
    ck.num(at, "flags.v1", flags, (r.flags & !HASHED).into());
    ck.num(at, "state", state, r.state.into());
    ck.num(at, "cport", cport, r.cport.into());
    ck.num(at, "vport", vport, r.vport.into());
    ck.num(at, "dport", dport, r.dport.into());
    ck.num(at, "fwmark", fwmark, r.fwmark.into());
    ck.num(at, "timeout", timeout, r.timeout.into());
    ck.addr(at, c, caddr, r.caddr);
    ck.addr(at, v, vaddr, r.vaddr);
    ck.addr(at, d, daddr, r.daddr);
    true
}

#[test]
fn wireshark_reads_what_the_encoder_wrote() {
    let version = match Command::new("tshark").arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("tshark")
            .trim_end_matches('.')
            .to_owned(),
        _ => {
            eprintln!("SKIP: tshark not installed");
            return;
        }
    };
    let corpus = corpus();
    let frames: Vec<Vec<u8>> = corpus.iter().map(|d| frame(&d.bytes)).collect();
    // The encoder's sizes are the kernel's layout's.
    for (i, d) in corpus.iter().enumerate() {
        assert_eq!(d.bytes.len(), layout(d).1, "datagram {i}");
    }
    let path = std::env::temp_dir().join(format!(
        "lvs-sync-wireshark-{}-{}.pcap",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    write_pcap(&path, &frames);
    let mut cmd = Command::new("tshark");
    cmd.arg("-n")
        .arg("-r")
        .arg(&path)
        .args(["-d", "udp.port==8848,ipvs"])
        .args(["-T", "fields"])
        .args(["-E", "header=n", "-E", "separator=/t", "-E", "occurrence=a"])
        .args(["-E", "aggregator=,", "-E", "quote=n"]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Kept for a look with Wireshark when something below fails.
    eprintln!("capture: {}", path.display());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), corpus.len(), "tshark output:\n{stdout}");

    let mut ck = Checks::default();
    let (mut records, mut compared, mut misread) = (0, 0, 0);
    for (i, (d, line)) in corpus.iter().zip(&lines).enumerate() {
        let mut f = Fields::parse(line);
        let at = format!("datagram {i} (v{})", d.version as u8);
        ck.num(&at, "frame.number", f.take("frame.number"), i as u64 + 1);
        let protocols = f.all("frame.protocols").join(",");
        assert!(protocols.ends_with(":udp:ipvs"), "{at}: {protocols}");
        assert!(f.all("_ws.malformed").is_empty(), "{at}: malformed: {line}");
        assert!(f.all("_ws.expert").is_empty(), "{at}: expert info: {line}");
        let len = d.bytes.len() as u64;
        let n = d.recs.len() as u64;
        ck.num(&at, "udp.length", f.take("udp.length"), len + 8);
        ck.num(&at, "syncid", f.take("ipvs.syncid"), d.syncid.into());
        ck.num(&at, "size", f.take("ipvs.size"), len);
        ck.num(&at, "conncount", f.take("ipvs.conncount"), n);
        let (offsets, _) = layout(d);
        match d.version {
            Version::V0 => {
                for (j, r) in d.recs.iter().enumerate() {
                    check_v0(&mut f, &mut ck, &format!("{at} record {j}"), r);
                    compared += 1;
                }
            }
            Version::V1 => {
                ck.zeros(&at, "resv (byte 0)", f.take("ipvs.resv"), 1);
                ck.num(&at, "version", f.take("ipvs.version"), 1);
                ck.zeros(&at, "resv (bytes 6-7)", f.take("ipvs.resv"), 2);
                let ws = wireshark_offsets(d);
                for (j, r) in d.recs.iter().enumerate() {
                    let in_step = ws[j] == offsets[j];
                    let at = format!("{at} record {j} at {}", offsets[j]);
                    if check_v1(&mut f, &mut ck, &at, r, in_step) {
                        compared += 1;
                    } else {
                        misread += 1;
                        eprintln!(
                            "{at}: not compared, Wireshark reads it at offset {} (it skips no \
                             options or padding)",
                            ws[j]
                        );
                    }
                }
            }
        }
        records += d.recs.len();
        let left = f.leftovers();
        assert!(left.is_empty(), "{at}: fields no record read: {left:?}");
    }
    assert!(
        ck.failures.is_empty(),
        "Wireshark disagrees with the encoder:\n{}",
        ck.failures.join("\n")
    );
    eprintln!(
        "{version}: {} datagrams, {records} records ({compared} compared, {misread} read by \
         Wireshark at a wrong offset), {} field values compared, all equal",
        corpus.len(),
        ck.compared
    );
    // Only the two records after the padding of datagram 5 are not compared there; datagram 6
    // holds the same two, and they are compared there.
    assert_eq!(misread, 2);
    let _ = std::fs::remove_file(&path);
}
