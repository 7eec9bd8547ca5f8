//! Rewrite benchmarks: nanoseconds per packet for classification and each rewrite, each group
//! with the baseline a user would write today with etherparse: parse the frame, edit the
//! header structs, and serialise them again with checksums computed from scratch.
//!
//! Our side rewrites a burst of 32 cache-resident frames in place per iteration, each with the
//! layout `classify` gave it (computed once, as a dataplane classifies once per packet); the
//! baselines process 32 frames per iteration too. Times are per burst: divide by 32. Each iteration first
//! restores the byte(s) the previous iteration's rewrite would otherwise exhaust: the TTL (one
//! 2-byte store) and, for encapsulation, the 14-byte Ethernet header the outer headers overwrite.
//!
//! `cargo bench --bench rewrite`

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{
    Icmpv4Type, IpNumber, NetHeaders, PacketBuilder, PacketHeaders, SlicedPacket, TransportHeader,
    TransportSlice, icmpv4::DestUnreachableHeader,
};
use lvs::rewrite::{
    DrParams, GueChecksum, NatOptions, TunnelKind, TunnelParams, decap, dr, encap, icmp_error_info,
    nat_icmp_in, nat_in, nat_out, tunnel_overhead,
};
use lvs::wire::{Classified, ClassifyOptions, Layout, LinkType, classify};

/// Frames per iteration: a receive burst (DPDK's default), each frame its own buffer, so
/// consecutive rewrites are independent as in a dataplane (one frame rewritten over and over
/// would time the latency of its checksum's read-modify-write chain instead).
const BURST: usize = 32;

const CLIENT4: [u8; 4] = [192, 0, 2, 7];
const VIP4: [u8; 4] = [198, 51, 100, 1];
const RS4: [u8; 4] = [10, 0, 0, 2];

fn tcp_frame(v6: bool, len: usize) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let hdrs = if v6 { 14 + 40 + 20 } else { 14 + 20 + 20 };
    let payload = vec![0x5a; len.saturating_sub(hdrs)];
    let mut out = Vec::new();
    if v6 {
        let mut c = [0u8; 16];
        c[0] = 0x20;
        c[15] = 7;
        let mut v = [0u8; 16];
        v[0] = 0x20;
        v[15] = 1;
        eth.ipv6(c, v, 64)
            .tcp(40000, 80, 1, 65535)
            .ack(1)
            .write(&mut out, &payload)
            .unwrap();
    } else {
        eth.ipv4(CLIENT4, VIP4, 64)
            .tcp(40000, 80, 1, 65535)
            .ack(1)
            .write(&mut out, &payload)
            .unwrap();
    }
    out
}

fn layout(f: &[u8]) -> Layout {
    match classify(
        f,
        LinkType::Ethernet,
        &ClassifyOptions {
            gue_port: Some(6080),
        },
    ) {
        Ok(Classified::Ip(l)) => l,
        other => panic!("{other:?}"),
    }
}

fn ttl_at(l: &Layout) -> usize {
    l.l3_offset as usize + if l.ip_version == 4 { 8 } else { 7 }
}

/// Puts the TTL back for the next iteration with a store as wide as the rewrite's load of it
/// (IPv4 reads TTL and protocol as one checksum word): a 1-byte store followed by a 2-byte
/// load would add a store-forwarding stall no received frame has.
#[inline(always)]
fn restore_ttl(f: &mut [u8], t: usize, word: [u8; 2]) {
    f[t..t + 2].copy_from_slice(&word);
}

/// The etherparse baseline for NAT: parse, set the address, port and TTL, recompute the IP and
/// TCP checksums over the whole segment, serialise into `out`.
fn etherparse_nat(frame: &[u8], out: &mut Vec<u8>, to: IpAddr, port: u16, dst: bool) {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let payload = h.payload.slice();
    let Some(TransportHeader::Tcp(mut tcp)) = h.transport else {
        unreachable!()
    };
    out.clear();
    h.link.unwrap().write(out).unwrap();
    match (h.net.unwrap(), to) {
        (NetHeaders::Ipv4(mut ip, _), IpAddr::V4(a)) => {
            if dst {
                ip.destination = a.octets();
                tcp.destination_port = port;
            } else {
                ip.source = a.octets();
                tcp.source_port = port;
            }
            ip.time_to_live -= 1;
            ip.header_checksum = ip.calc_header_checksum();
            tcp.checksum = tcp.calc_checksum_ipv4(&ip, payload).unwrap();
            ip.write(out).unwrap();
        }
        (NetHeaders::Ipv6(mut ip, _), IpAddr::V6(a)) => {
            if dst {
                ip.destination = a.octets();
                tcp.destination_port = port;
            } else {
                ip.source = a.octets();
                tcp.source_port = port;
            }
            ip.hop_limit -= 1;
            tcp.checksum = tcp.calc_checksum_ipv6(&ip, payload).unwrap();
            ip.write(out).unwrap();
        }
        _ => unreachable!(),
    }
    tcp.write(out).unwrap();
    out.extend_from_slice(payload);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(BURST as u64));
    let f = tcp_frame(false, 64);
    g.bench_function("lvs/ipv4_tcp", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                // By reference, as a dataplane reads the layout where classify wrote it
                // (returning it by value through black_box would time a 100-byte copy).
                let r = classify(
                    black_box(&f),
                    LinkType::Ethernet,
                    &ClassifyOptions::default(),
                );
                black_box(&r);
            }
        })
    });
    g.bench_function("etherparse/ipv4_tcp", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                let p = SlicedPacket::from_ethernet(black_box(&f)).unwrap();
                let Some(TransportSlice::Tcp(t)) = p.transport else {
                    unreachable!()
                };
                let r = (p.net.is_some(), t.source_port(), t.destination_port());
                black_box(&r);
            }
        })
    });
    g.finish();
}

fn bench_nat(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(BURST as u64));
    let cases = [
        ("in_ipv4_tcp", false, 64, true),
        ("in_ipv4_tcp", false, 1500, true),
        ("in_ipv6_tcp", true, 1500, true),
        ("out_ipv4_tcp", false, 1500, false),
    ];
    for (name, v6, size, inbound) in cases {
        let frame = tcp_frame(v6, size);
        let l = layout(&frame);
        let to: IpAddr = if v6 {
            "fd00::2".parse().unwrap()
        } else {
            IpAddr::from(if inbound { RS4 } else { VIP4 })
        };
        let opts = NatOptions::default();
        let t = ttl_at(&l);
        let word = [frame[t], frame[t + 1]];
        let mut burst = vec![frame.clone(); BURST];
        g.bench_function(BenchmarkId::new(format!("lvs/{name}"), size), |b| {
            b.iter(|| {
                for f in burst.iter_mut() {
                    restore_ttl(f, t, word);
                    let r = if inbound {
                        nat_in(black_box(f), &l, to, 8080, &opts)
                    } else {
                        nat_out(black_box(f), &l, to, 80, &opts)
                    };
                    black_box(&r);
                }
            })
        });
        let mut out = Vec::with_capacity(2048);
        g.bench_function(BenchmarkId::new(format!("etherparse/{name}"), size), |b| {
            b.iter(|| {
                for _ in 0..BURST {
                    etherparse_nat(black_box(&frame), &mut out, to, 8080, inbound);
                    black_box(out.len());
                }
            })
        });
    }
    g.finish();
}

fn bench_dr(c: &mut Criterion) {
    let mut g = c.benchmark_group("dr");
    g.throughput(Throughput::Elements(BURST as u64));
    let frame = tcp_frame(false, 64);
    let l = layout(&frame);
    let t = ttl_at(&l);
    let word = [frame[t], frame[t + 1]];
    let p = DrParams::new([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 8]);
    let mut burst = vec![frame.clone(); BURST];
    g.bench_function("lvs/ipv4_tcp", |b| {
        b.iter(|| {
            for f in burst.iter_mut() {
                restore_ttl(f, t, word);
                black_box(&dr(black_box(f), &l, &p));
            }
        })
    });
    let mut out = Vec::with_capacity(2048);
    g.bench_function("etherparse/ipv4_tcp", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                let h = PacketHeaders::from_ethernet_slice(black_box(&frame)).unwrap();
                let mut eth = h.link.unwrap().ethernet2().unwrap();
                eth.destination = p.dst_mac;
                eth.source = p.src_mac;
                let Some(NetHeaders::Ipv4(mut ip, _)) = h.net else {
                    unreachable!()
                };
                ip.time_to_live -= 1;
                ip.header_checksum = ip.calc_header_checksum();
                out.clear();
                eth.write(&mut out).unwrap();
                ip.write(&mut out).unwrap();
                out.extend_from_slice(&frame[34..]);
                black_box(out.len());
            }
        })
    });
    g.finish();
}

fn bench_tun(c: &mut Criterion) {
    let mut g = c.benchmark_group("tun");
    g.throughput(Throughput::Elements(BURST as u64));
    let frame = tcp_frame(false, 1500);
    let l = layout(&frame);
    let src: IpAddr = "10.0.0.1".parse().unwrap();
    for (name, kind) in [
        ("ipip", TunnelKind::Ipip),
        (
            "gue",
            TunnelKind::Gue {
                port: 6080,
                checksum: GueChecksum::None,
            },
        ),
    ] {
        let p = TunnelParams::new(kind, src, IpAddr::from(RS4));
        let room = tunnel_overhead(kind, false);
        let mut buf = vec![0u8; room];
        buf.extend_from_slice(&frame);
        let t = room + ttl_at(&l);
        let word = [buf[t], buf[t + 1]];
        let mut burst = vec![buf; BURST];
        g.bench_function(format!("lvs/encap_{name}"), |b| {
            b.iter(|| {
                for buf in burst.iter_mut() {
                    buf[room..room + 14].copy_from_slice(&frame[..14]);
                    restore_ttl(buf, t, word);
                    black_box(&encap(black_box(buf), room, &l, &p));
                }
            })
        });
        let mut out = Vec::with_capacity(2048);
        g.bench_function(format!("etherparse/encap_{name}"), |b| {
            b.iter(|| {
                for _ in 0..BURST {
                    let h = SlicedPacket::from_ethernet(black_box(&frame)).unwrap();
                    let Some(etherparse::NetSlice::Ipv4(ip)) = h.net else {
                        unreachable!()
                    };
                    let inner = &frame[14..14 + ip.header().total_len() as usize];
                    out.clear();
                    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                        .ipv4([10, 0, 0, 1], RS4, ip.header().ttl() - 1);
                    match kind {
                        TunnelKind::Ipip => eth.write(&mut out, IpNumber::IPV4, inner).unwrap(),
                        _ => {
                            let mut gue = [0u8, 4, 0, 0].to_vec();
                            gue.extend_from_slice(inner);
                            eth.udp(40000, 6080).write(&mut out, &gue).unwrap()
                        }
                    }
                    black_box(out.len());
                }
            })
        });
    }
    // Decapsulation of our own IPIP packet.
    let p = TunnelParams::new(TunnelKind::Ipip, src, IpAddr::from(RS4));
    let mut buf = vec![0u8; 20];
    buf.extend_from_slice(&frame);
    let e = encap(&mut buf, 20, &l, &p).unwrap();
    let tunnelled = buf[e.start..e.end].to_vec();
    let lt = layout(&tunnelled);
    g.bench_function("lvs/decap_ipip", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                black_box(&decap(black_box(&tunnelled), &lt));
            }
        })
    });
    g.bench_function("etherparse/decap_ipip", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                let h = SlicedPacket::from_ethernet(black_box(&tunnelled)).unwrap();
                let Some(etherparse::NetSlice::Ipv4(ip)) = h.net else {
                    unreachable!()
                };
                let inner = SlicedPacket::from_ip(ip.payload().payload).unwrap();
                black_box(inner.net.is_some());
            }
        })
    });
    g.finish();
}

fn bench_icmp(c: &mut Criterion) {
    let mut g = c.benchmark_group("icmp");
    g.throughput(Throughput::Elements(BURST as u64));
    // Fragmentation needed from a router on the client side, about a reply VIP -> client.
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(VIP4, CLIENT4, 60)
        .tcp(80, 40000, 1, 65535)
        .write(&mut quoted, &[0; 40])
        .unwrap();
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([203, 0, 113, 1], VIP4, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut frame, &quoted)
        .unwrap();
    let l = layout(&frame);
    let t = ttl_at(&l);
    let word = [frame[t], frame[t + 1]];
    let rs = IpAddr::from(RS4);
    let mut burst = vec![frame.clone(); BURST];
    g.bench_function("lvs/nat_icmp_in", |b| {
        b.iter(|| {
            for f in burst.iter_mut() {
                restore_ttl(f, t, word);
                let info = icmp_error_info(black_box(f), &l).unwrap();
                black_box(&nat_icmp_in(f, &l, &info, rs, 8080, true));
            }
        })
    });
    let mut out = Vec::with_capacity(2048);
    g.bench_function("etherparse/nat_icmp_in", |b| {
        b.iter(|| {
            for _ in 0..BURST {
                let h = PacketHeaders::from_ethernet_slice(black_box(&frame)).unwrap();
                let Some(NetHeaders::Ipv4(mut ip, _)) = h.net else {
                    unreachable!()
                };
                let Some(TransportHeader::Icmpv4(mut icmp)) = h.transport else {
                    unreachable!()
                };
                let mut q = h.payload.slice().to_vec();
                let mut qip = etherparse::Ipv4Header::from_slice(&q).unwrap().0;
                qip.source = RS4;
                qip.header_checksum = qip.calc_header_checksum();
                q[..20].copy_from_slice(&qip.to_bytes());
                q[20..22].copy_from_slice(&8080u16.to_be_bytes());
                icmp.update_checksum(&q);
                ip.destination = RS4;
                ip.time_to_live -= 1;
                ip.header_checksum = ip.calc_header_checksum();
                out.clear();
                h.link.unwrap().write(&mut out).unwrap();
                ip.write(&mut out).unwrap();
                icmp.write(&mut out).unwrap();
                out.extend_from_slice(&q);
                black_box(out.len());
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_classify, bench_nat, bench_dr, bench_tun, bench_icmp
}
criterion_main!(benches);
