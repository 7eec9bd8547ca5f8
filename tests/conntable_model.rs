//! Model-based test of the connection table: random packet sequences (SYN, ACK, FIN, RST, both
//! directions), time advances and real-server changes go to the table and to a naive model
//! written here (a `BTreeMap`, linear expiry, its own transcription of the IPVS TCP table);
//! state, real server, expiry, packet and byte counters and the real servers' active/inactive
//! counters must agree after every step.

use std::collections::BTreeMap;
use std::net::IpAddr;

use lvs::config::{ServiceKey, parse};
use lvs::conn::{
    ConnConfig, ConnState, ConnTable, Direction, Scheduled, Segment, TcpFlags, TcpState,
};
use lvs::dest::ConnKind;
use lvs::flow::{FlowKey, Protocol};
use lvs::service::Services;
use lvs::time::Instant;
use proptest::prelude::*;

const RULES: &str = "-A -t 10.0.0.1:80 -s wlc\n\
                     -a -t 10.0.0.1:80 -r 192.168.1.1:8080 -m -w 1\n\
                     -a -t 10.0.0.1:80 -r 192.168.1.2:8080 -m -w 2\n\
                     -a -t 10.0.0.1:80 -r 192.168.1.3:8080 -m -w 1\n";

#[derive(Clone, Debug)]
enum Op {
    /// Client `c` sends a segment (`inbound`) or its real server answers.
    Packet { c: u8, inbound: bool, flags: u8 },
    /// Time passes (milliseconds).
    Advance(u32),
    /// `ipvsadm -e ... -w W` on real server `rs`.
    Weight { rs: u8, w: u8 },
    /// `ipvsadm -d` on real server `rs` (or `-a` again if it was removed).
    Toggle { rs: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, any::<bool>(), prop::sample::select(vec![0x02u8, 0x10, 0x11, 0x04, 0x12, 0x00, 0x14]))
            .prop_map(|(c, inbound, flags)| Op::Packet { c, inbound, flags }),
        3 => prop_oneof![0u32..2_000, 2_000u32..200_000, 200_000u32..1_000_000].prop_map(Op::Advance),
        1 => (0u8..3, 0u8..3).prop_map(|(rs, w)| Op::Weight { rs, w }),
        1 => (0u8..3).prop_map(|rs| Op::Toggle { rs }),
    ]
}

fn rs_addr(rs: u8) -> IpAddr {
    IpAddr::from([192, 168, 1, rs + 1])
}

fn client_key(c: u8) -> FlowKey {
    FlowKey::new(
        Protocol::Tcp,
        IpAddr::from([203, 0, 113, c + 1]),
        40_000 + c as u16,
        IpAddr::from([10, 0, 0, 1]),
        80,
    )
}

/// The model's own copy of ipvs.md §6.1 (normal table), rows (direction, event).
const TABLE: &str = "\
IN syn SR ES ES SR SR SR SR SR SR SR SR
IN fin CL CW SS TW TW TW CL CW LA LI TW
IN ack ES ES SS ES FW TW CL CW CL LI ES
IN rst CL CL CL SR CL CL CL CL LA LI SR
OUT syn SS ES SS SR SS SS SS SS SS LI SR
OUT fin TW FW SS TW FW TW CL TW LA LI TW
OUT ack ES ES SS ES FW TW CL CW LA ES ES
OUT rst CL CL SS CL CL TW CL CL CL CL CL";
const NAMES: [&str; 11] = [
    "NO", "ES", "SS", "SR", "FW", "TW", "CL", "CW", "LA", "LI", "SA",
];
const TIMEOUT_S: [u64; 11] = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120];

fn model_next(state: usize, inbound: bool, flags: u8) -> usize {
    let ev = if flags & 0x04 != 0 {
        "rst"
    } else if flags & 0x02 != 0 {
        "syn"
    } else if flags & 0x01 != 0 {
        "fin"
    } else if flags & 0x10 != 0 {
        "ack"
    } else {
        return 6; // CLOSE
    };
    let dir = if inbound { "IN" } else { "OUT" };
    let row = TABLE
        .lines()
        .find(|l| l.starts_with(&format!("{dir} {ev} ")))
        .unwrap();
    let cell = row.split_whitespace().nth(2 + state).unwrap();
    NAMES.iter().position(|n| *n == cell).unwrap()
}

#[derive(Clone, Debug)]
struct MConn {
    rs: IpAddr,
    state: usize,
    deadline: u64,
    inactive: bool,
    pkts: (u32, u32),
    bytes: (u64, u64),
}

struct Model {
    svcs: Services,
    conns: BTreeMap<u8, MConn>,
    now: u64,
}

impl Model {
    fn pool(&mut self) -> &mut lvs::sched::Pool {
        let k = self.svcs.iter().next().unwrap().key();
        self.svcs.get_mut(&k).unwrap().pool_mut()
    }

    fn dest_id(&mut self, addr: IpAddr) -> lvs::dest::DestId {
        let d = self.pool().dests();
        (0..d.slot_count())
            .filter_map(|i| d.id_at(i))
            .find(|&id| d.get(id).unwrap().addr() == addr)
            .unwrap()
    }

    fn expire(&mut self) {
        let now = self.now;
        let dead: Vec<u8> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            let c = self.conns.remove(&k).unwrap();
            let id = self.dest_id(c.rs);
            let kind = if c.inactive {
                ConnKind::Inactive
            } else {
                ConnKind::Active
            };
            self.pool().unbind(id, kind).unwrap();
        }
    }

    fn packet(&mut self, c: u8, inbound: bool, flags: u8, len: u32) {
        let now = self.now;
        let new_conn = flags & 0x02 != 0 && flags & 0x04 == 0;
        if inbound && new_conn {
            // conn_reuse_mode 1: a SYN on a TIME_WAIT or CLOSE tuple expires the old connection.
            if self
                .conns
                .get(&c)
                .is_some_and(|m| m.state == 5 || m.state == 6)
            {
                self.conns.get_mut(&c).unwrap().deadline = now;
                self.expire();
            }
        }
        if !self.conns.contains_key(&c) {
            if !(inbound && new_conn) {
                return;
            }
            let k = self.svcs.iter().next().unwrap().key();
            let Some(id) = self
                .svcs
                .get_mut(&k)
                .unwrap()
                .pool_mut()
                .schedule(&client_key(c), Instant::from_millis(now))
            else {
                return;
            };
            self.pool().bind(id, ConnKind::Inactive).unwrap();
            let rs = self.pool().dests().get(id).unwrap().addr();
            self.conns.insert(
                c,
                MConn {
                    rs,
                    state: 0,
                    deadline: now + 3000,
                    inactive: true,
                    pkts: (0, 0),
                    bytes: (0, 0),
                },
            );
        }
        let rs = self.conns[&c].rs;
        let id = self.dest_id(rs);
        if inbound && !self.pool().dests().get(id).unwrap().is_available() {
            return; // dropped: real server removed
        }
        let m = self.conns.get_mut(&c).unwrap();
        let next = model_next(m.state, inbound, flags);
        if inbound {
            m.pkts.0 += 1;
            m.bytes.0 += len as u64;
        } else {
            m.pkts.1 += 1;
            m.bytes.1 += len as u64;
        }
        let active = [1usize, 2, 3, 10].contains(&next);
        let flip = next != m.state && active == m.inactive;
        m.state = next;
        m.deadline = now + TIMEOUT_S[next] * 1000;
        if flip {
            m.inactive = !active;
            self.pool().set_active(id, active).unwrap();
        }
    }
}

fn services() -> Services {
    let mut s = Services::default();
    for r in parse(RULES).unwrap() {
        s.apply(&r.command).unwrap();
    }
    s
}

fn apply(s: &mut Services, rule: &str) {
    for r in parse(rule).unwrap() {
        let _ = s.apply(&r.command);
    }
}

struct Real {
    svcs: Services,
    key: ServiceKey,
    table: ConnTable,
}

impl Real {
    fn packet(&mut self, c: u8, inbound: bool, flags: u8, len: u32, now: Instant) {
        let svc = self.svcs.get_mut(&self.key).unwrap();
        let t = &mut self.table;
        let seg = Segment::Tcp(TcpFlags(flags));
        if inbound {
            let k = client_key(c);
            let new_conn = TcpFlags(flags).is_new_conn();
            let id = match t.lookup_in_for_new(svc.pool_mut(), &k, new_conn, now) {
                Some(id) => {
                    if t.check_dest(svc.pool_mut(), id, now).is_err() {
                        return;
                    }
                    id
                }
                None if new_conn => match t.schedule(svc, 0, &k, now) {
                    Ok(Scheduled::Conn(id)) => id,
                    _ => return,
                },
                None => return,
            };
            t.packet(svc.pool_mut(), id, Direction::Input, seg, len, now)
                .unwrap();
        } else {
            // The reply of client c from whatever real server holds it.
            let k = client_key(c);
            let Some(id) = t.lookup_in(&k, now) else {
                return;
            };
            let conn = t.get(id).unwrap();
            let reply = FlowKey::new(Protocol::Tcp, conn.daddr, conn.dport, k.src, k.sport);
            let id = t.lookup_out(&reply, now).unwrap();
            t.packet(svc.pool_mut(), id, Direction::Output, seg, len, now)
                .unwrap();
        }
    }
}

fn compare(real: &Real, model: &mut Model, step: usize) -> Result<(), TestCaseError> {
    let now = Instant::from_millis(model.now);
    for c in 0..6u8 {
        let got = real.table.lookup_in(&client_key(c), now);
        let want = model.conns.get(&c);
        prop_assert_eq!(got.is_some(), want.is_some(), "step {} client {}", step, c);
        if let (Some(id), Some(m)) = (got, want) {
            let g = real.table.get(id).unwrap();
            prop_assert_eq!(
                g.state,
                ConnState::Tcp(TcpState::ALL[m.state]),
                "step {}",
                step
            );
            prop_assert_eq!(g.daddr, m.rs);
            prop_assert_eq!(g.expires, Instant::from_millis(m.deadline), "step {}", step);
            prop_assert_eq!((g.in_packets, g.out_packets), m.pkts);
            prop_assert_eq!((g.in_bytes, g.out_bytes), m.bytes);
        }
    }
    prop_assert_eq!(real.table.len(), model.conns.len(), "step {}", step);
    let rp = real.svcs.get(&real.key).unwrap().pool().dests();
    let mp = model.pool().dests().clone();
    for rs in 0..3u8 {
        let find = |d: &lvs::dest::DestSet| {
            (0..d.slot_count())
                .filter_map(|i| d.id_at(i))
                .map(|id| d.get(id).unwrap())
                .find(|x| x.addr() == rs_addr(rs))
                .map(|x| (x.active_conns(), x.inactive_conns(), x.is_available()))
        };
        prop_assert_eq!(find(rp), find(&mp), "step {} rs {}", step, rs);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn table_agrees_with_naive_model(ops in prop::collection::vec(op(), 1..80)) {
        let start = 1_000_000u64;
        let mut model = Model { svcs: services(), conns: BTreeMap::new(), now: start };
        let svcs = services();
        let key = svcs.iter().next().unwrap().key();
        let cfg = ConnConfig { capacity_v4: 64, ..ConnConfig::default() };
        let mut real = Real { svcs, key, table: ConnTable::new(cfg, Instant::from_millis(start)) };
        let mut removed = [false; 3];
        for (step, op) in ops.iter().enumerate() {
            let now = Instant::from_millis(model.now);
            match *op {
                Op::Packet { c, inbound, flags } => {
                    let len = 40 + c as u32 * 100;
                    real.packet(c, inbound, flags, len, now);
                    model.packet(c, inbound, flags, len);
                }
                Op::Advance(ms) => {
                    model.now += ms as u64;
                    model.expire();
                    let now = Instant::from_millis(model.now);
                    let pool = real.svcs.get_mut(&real.key).unwrap().pool_mut();
                    let r = real.table.expire(pool, now, u32::MAX);
                    prop_assert!(r.done);
                }
                Op::Weight { rs, w } => {
                    if !removed[rs as usize] {
                        let rule = format!("-e -t 10.0.0.1:80 -r {}:8080 -m -w {w}", rs_addr(rs));
                        apply(&mut real.svcs, &rule);
                        apply(&mut model.svcs, &rule);
                    }
                }
                Op::Toggle { rs } => {
                    let rule = if removed[rs as usize] {
                        format!("-a -t 10.0.0.1:80 -r {}:8080 -m", rs_addr(rs))
                    } else {
                        format!("-d -t 10.0.0.1:80 -r {}:8080", rs_addr(rs))
                    };
                    removed[rs as usize] = !removed[rs as usize];
                    apply(&mut real.svcs, &rule);
                    apply(&mut model.svcs, &rule);
                }
            }
            compare(&real, &mut model, step)?;
        }
    }
}
