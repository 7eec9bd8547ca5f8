//! The `director` fuzz harness, shared by `fuzz/fuzz_targets/director.rs` (libFuzzer) and
//! `tests/fuzz_corpus.rs` (corpus replay in `cargo test`).
//!
//! The input is a sequence of frames, each `[side|mark byte][length: u16 BE][bytes]`, fed
//! in order to one director configured with NAT, DR and TUN services over IPv4 and IPv6 (so a
//! SYN can open a connection that later frames use). Never a panic; every verdict's bounds lie
//! in the buffer; every frame gets exactly one counted verdict.

use lvs::Instant;
use lvs::conn::ConnConfig;
use lvs::director::{Director, DirectorConfig, FrameMut, Rx, Side, Verdict};
use lvs::sched::{MhTableSize, SchedConfig};

pub const RULES: &str = "\
-A -t 10.0.0.1:80 -s rr\n\
-a -t 10.0.0.1:80 -r 192.168.10.1:8080 -m\n\
-a -t 10.0.0.1:80 -r 192.168.10.2:8080 -m -w 0\n\
-A -u 10.0.0.1:53 -s sh -o\n\
-a -u 10.0.0.1:53 -r 192.168.10.3 -g\n\
-A -t 10.0.0.2:0 -s wlc -p 60\n\
-a -t 10.0.0.2:0 -r 192.168.20.1 -g\n\
-a -t 10.0.0.2:0 -r 192.168.20.2 -i --tun-type gue --tun-port 6080\n\
-A --sctp-service 10.0.0.3:9 -s mh\n\
-a --sctp-service 10.0.0.3:9 -r 192.168.30.1 -m\n\
-A -f 5 -s rr\n\
-a -f 5 -r 192.168.40.1 -i --tun-type gre --tun-csum\n\
-A -t [2001:db8::1]:80 -s rr\n\
-a -t [2001:db8::1]:80 -r [fd00::11]:8080 -m\n\
-a -t [2001:db8::1]:80 -r [fd00::12] -i\n\
-A -u [2001:db8::1]:53 -s wlc\n\
-a -u [2001:db8::1]:53 -r [fd00::13] -g\n";

pub fn director() -> Director {
    let cfg = DirectorConfig {
        client_gateway: Some([2, 0, 0, 0, 0, 9]),
        addr_v4: Some("192.168.0.254".parse().unwrap()),
        addr_v6: Some("fd00::fe".parse().unwrap()),
        mtu: 1400,
        gue_port: Some(6080),
        ..DirectorConfig::default()
    };
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
    d.apply_rules(RULES).unwrap();
    for (i, a) in [
        "192.168.10.1",
        "192.168.10.2",
        "192.168.10.3",
        "192.168.20.1",
        "192.168.20.2",
        "192.168.30.1",
        "192.168.40.1",
        "fd00::11",
        "fd00::12",
        "fd00::13",
    ]
    .iter()
    .enumerate()
    {
        d.set_neighbour(a.parse().unwrap(), [2, 0, 0, 0, 1, i as u8]);
    }
    d
}

/// Splits the input into `(control byte, frame)` records.
pub fn frames(data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 3 {
        let ctl = rest[0];
        let len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        let body = &rest[3..];
        let n = len.min(body.len());
        out.push((ctl, &body[..n]));
        rest = &body[n..];
    }
    out
}

/// Encodes frames for this harness (seed writers).
#[allow(dead_code)]
pub fn encode(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ctl, f) in records {
        out.push(*ctl);
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn check(v: &Verdict, len: usize) {
    match *v {
        Verdict::Forward(f) => assert!(f.start <= f.end && f.end <= len, "{v:?}"),
        Verdict::Reply(r) => assert!(r.start <= r.end && r.end <= len, "{v:?}"),
        Verdict::Pass(_) | Verdict::Drop(_) => {}
    }
}

pub fn director_any(data: &[u8]) {
    let mut d = director();
    let recs = frames(data);
    let mut t = 0u64;
    for (i, (ctl, f)) in recs.iter().enumerate() {
        // bit 0: side; bit 1: fwmark 5; bits 2..: time steps of 100 ms.
        let side = if ctl & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        };
        let rx = Rx {
            fwmark: if ctl & 2 != 0 { 5 } else { 0 },
            ..Rx::new(side)
        };
        t += (ctl >> 2) as u64 * 100;
        let now = Instant::from_millis(t);
        let head = 64;
        let mut buf = vec![0u8; head + f.len() + 1600];
        buf[head..head + f.len()].copy_from_slice(f);
        let len = buf.len();
        let v = if i % 2 == 0 {
            d.process_at(&mut buf, head, head + f.len(), &rx, now)
        } else {
            let mut fm = [FrameMut {
                buf: &mut buf,
                start: head,
                end: head + f.len(),
            }];
            let mut out = [Verdict::Pass(lvs::director::PassReason::NotIp)];
            d.process_batch(&mut fm, &rx, now, &mut out);
            out[0]
        };
        check(&v, len);
        // The same frame without headroom or tailroom must not panic either.
        let mut tight = f.to_vec();
        let v = d.process(&mut tight, side, now);
        check(&v, tight.len());
        d.expire(now, 64);
    }
    let s = d.stats();
    let total = s.forwarded_in
        + s.forwarded_out
        + s.replies.iter().sum::<u64>()
        + s.passed.iter().sum::<u64>()
        + s.dropped.iter().sum::<u64>();
    assert_eq!(total, 2 * recs.len() as u64);
}
