#!/usr/bin/env python3
"""The `maglev` scheduler's documented hash ("lvs maglev hash v1"), from the rustdoc of
src/sched/maglev.rs alone, to pin its values in the Rust tests independently of the Rust code."""
import ipaddress

M = (1 << 64) - 1
P0, P1, P2, P3 = 0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89
OFFSET_SEED = 0x4F46465345540001


def fold(a, b):
    r = (a & M) * (b & M)
    return (r & M) ^ (r >> 64)


def v4(s):
    return int(ipaddress.IPv4Address(s))


def v6(s):
    x = int(ipaddress.IPv6Address(s))
    return x >> 64, x & M


def flow4(src, sport, dst, dport, proto, seed=0):
    t = (sport << 48) | (dport << 32) | (proto << 8)
    return fold(((v4(src) << 32) | v4(dst)) ^ P0 ^ seed, (t | 4) ^ P1)


def flow4_source_addr(src, seed=0):
    return fold((v4(src) << 32) ^ P0 ^ seed, 4 ^ P1)


def flow6(src, sport, dst, dport, proto, seed=0):
    t = (sport << 48) | (dport << 32) | (proto << 8)
    sh, sl = v6(src)
    dh, dl = v6(dst)
    return fold(fold(sh ^ P0 ^ seed, sl ^ P1) ^ t ^ 6, fold(dh ^ P2, dl ^ P3))


def server(blocks, seed):
    h = seed
    for x, y in blocks:
        h = fold(x ^ h ^ P0, y ^ P1)
    return fold(h ^ P2, (len(blocks) * 16) ^ P3)


if __name__ == "__main__":
    print("tcp 203.0.113.7:40000 -> 10.0.0.1:80", hex(flow4("203.0.113.7", 40000, "10.0.0.1", 80, 6)))
    print("source 203.0.113.7", hex(flow4_source_addr("203.0.113.7")))
    print("udp [2001:db8::7]:5353 -> [2001:db8::1]:53", hex(flow6("2001:db8::7", 5353, "2001:db8::1", 53, 17)))
    print("server 192.168.1.1:80 offset", hex(server([(v4("192.168.1.1"), (80 << 8) | 4)], OFFSET_SEED)))
