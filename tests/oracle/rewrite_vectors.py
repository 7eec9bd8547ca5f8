#!/usr/bin/env python3
"""Byte vectors for the rewrites, built from first principles (RFC 791/8200 headers, RFC 1071
checksums computed in full, RFC 3309 CRC32c bitwise), independent of the crate's code.

Each case: an input frame, an operation with its parameters, and the frame the operation must
produce, every checksum in it computed from scratch. tests/rewrite_vectors.rs runs them; CI
regenerates this file's output and compares it with the committed JSON.

usage: rewrite_vectors.py OUT.json
"""
import ipaddress
import json
import struct
import sys


def ones(data, acc=0):
    if len(data) % 2:
        data = data + b"\0"
    for i in range(0, len(data), 2):
        acc += (data[i] << 8) | data[i + 1]
    while acc > 0xFFFF:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def csum(data, acc=0):
    return (~ones(data, acc)) & 0xFFFF


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF


def a(s):
    return ipaddress.ip_address(s).packed


def pseudo(src, dst, proto, length):
    if len(src) == 4:
        return ones(src + dst + struct.pack("!BBH", 0, proto, length))
    return ones(src + dst + struct.pack("!IxxxB", length, proto))


def ipv4(src, dst, proto, payload, ttl=64, tos=0, ident=0x1234, frag=0x4000, options=b""):
    ihl = 5 + len(options) // 4
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + len(payload), ident, frag,
                    ttl, proto, 0, src, dst) + options
    c = csum(h)
    return h[:10] + struct.pack("!H", c) + h[12:] + payload


def ipv6(src, dst, nh, payload, hop=64, tc=0, exts=b""):
    first = (6 << 28) | (tc << 20)
    return struct.pack("!IHBB", first, len(exts) + len(payload), nh, hop) + src + dst + exts + payload


def tcp(src, dst, sport, dport, flags=0x02, payload=b"", options=b"", final_dst=None):
    off = (20 + len(options)) // 4
    h = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, off << 4, flags, 65535, 0, 0) + options
    seg = h + payload
    c = csum(seg, pseudo(src, final_dst or dst, 6, len(seg)))
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(src, dst, sport, dport, payload, zero=False):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if zero:
        return seg
    c = csum(seg, pseudo(src, dst, 17, len(seg))) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def sctp(sport, dport, payload):
    p = struct.pack("!HHII", sport, dport, 0x01020304, 0) + payload
    return p[:8] + struct.pack("<I", crc32c(p)) + p[12:]


def icmp4(t, code, rest, body):
    m = struct.pack("!BBH", t, code, 0) + rest + body
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]


def icmp6(src, dst, t, code, rest, body):
    m = struct.pack("!BBH", t, code, 0) + rest + body
    c = csum(m, pseudo(src, dst, 58, len(m)))
    return m[:2] + struct.pack("!H", c) + m[4:]


def eth(payload, v6=False, vlan=None, dst=b"\x02\0\0\0\0\x01", src=b"\x02\0\0\0\0\x02"):
    et = struct.pack("!H", 0x86DD if v6 else 0x0800)
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return dst + src + tag + et + payload


C4, V4, R4 = a("192.0.2.7"), a("198.51.100.1"), a("10.0.0.2")
C6, V6, R6 = a("2001:db8::7"), a("2001:db8::1"), a("fd00::2")
D4, D6 = a("10.0.0.1"), a("fd00::1")
cases = []


def case(name, op, link, inp, out, **params):
    cases.append({"name": name, "op": op, "link": link, "input": inp.hex(),
                  "expected": out.hex() if isinstance(out, bytes) else out, "params": params})


# NAT in: IPv4 TCP SYN, Ethernet with a VLAN tag and IPv4 options.
opts = b"\x01\x01\x01\x00"
pay = b"hello"
inp = eth(ipv4(C4, V4, 6, tcp(C4, V4, 40000, 80, payload=pay), options=opts), vlan=0x200A)
out = eth(ipv4(C4, R4, 6, tcp(C4, R4, 40000, 8080, payload=pay), ttl=63, options=opts), vlan=0x200A)
case("nat_in ipv4 tcp vlan options", "nat_in", "eth", inp, out, addr="10.0.0.2", port=8080)

# NAT out: the reply from the real server becomes the VIP's.
inp = eth(ipv4(R4, C4, 6, tcp(R4, C4, 8080, 40000, flags=0x12)))
out = eth(ipv4(V4, C4, 6, tcp(V4, C4, 80, 40000, flags=0x12), ttl=63))
case("nat_out ipv4 tcp", "nat_out", "eth", inp, out, addr="198.51.100.1", port=80)

# UDP with checksum 0 ("none"): NAT computes it in full.
inp = ipv4(C4, V4, 17, udp(C4, V4, 5000, 53, b"query", zero=True))
out = ipv4(C4, R4, 17, udp(C4, R4, 5000, 5353, b"query"), ttl=63)
case("nat_in ipv4 udp zero checksum made real", "nat_in", "raw", inp, out, addr="10.0.0.2", port=5353)


def udp_payload_summing_to_ffff(src, dst, sport, dport):
    """Two bytes of payload that make the finished datagram's one's-complement sum 0xFFFF, so
    its checksum computes to 0 and must be sent as 0xFFFF."""
    base = struct.pack("!HHHH", sport, dport, 10, 0)
    s = ones(base, pseudo(src, dst, 17, 10))
    return struct.pack("!H", (0xFFFF - s) & 0xFFFF or 0xFFFF)


p = udp_payload_summing_to_ffff(C4, R4, 5000, 5353)
inp = ipv4(C4, V4, 17, udp(C4, V4, 5000, 53, p, zero=True))
exp_udp = struct.pack("!HHHH", 5000, 5353, 10, 0xFFFF) + p
out = ipv4(C4, R4, 17, exp_udp, ttl=63)
case("nat_in ipv4 udp computed 0 sent as ffff (full)", "nat_in", "raw", inp, out, addr="10.0.0.2", port=5353)
inp = ipv4(C4, V4, 17, udp(C4, V4, 5000, 53, p))
case("nat_in ipv4 udp computed 0 sent as ffff (incremental)", "nat_in", "raw", inp, out, addr="10.0.0.2", port=5353)

# SCTP: the CRC32c after the port change.
chunk = bytes([1, 0, 0, 20]) + bytes(range(16))
inp = ipv4(C4, V4, 132, sctp(40000, 80, chunk))
out = ipv4(C4, R4, 132, sctp(40000, 8080, chunk), ttl=63)
case("nat_in ipv4 sctp", "nat_in", "raw", inp, out, addr="10.0.0.2", port=8080)

# A later fragment: addresses only.
frag_payload = bytes(range(24))
inp = ipv4(C4, V4, 17, frag_payload, frag=0x0003)
out = ipv4(C4, R4, 17, frag_payload, frag=0x0003, ttl=63)
case("nat_in ipv4 non-first fragment", "nat_in", "raw", inp, out, addr="10.0.0.2", port=8080)

# IPv6 TCP.
inp = eth(ipv6(C6, V6, 6, tcp(C6, V6, 40000, 80, payload=pay)), v6=True)
out = eth(ipv6(C6, R6, 6, tcp(C6, R6, 40000, 8080, payload=pay), hop=63), v6=True)
case("nat_in ipv6 tcp", "nat_in", "eth", inp, out, addr="fd00::2", port=8080)

# IPv6 with a type 2 routing header, one segment left: the pseudo-header uses the final
# destination (the home address in the routing header), which NAT does not change.
home = a("2001:db8::99")
rh = struct.pack("!BBBB", 6, 2, 2, 1) + b"\0\0\0\0" + home
inp = ipv6(C6, V6, 43, tcp(C6, V6, 40000, 80, payload=pay, final_dst=home), exts=rh)
out = ipv6(C6, R6, 43, tcp(C6, R6, 40000, 8080, payload=pay, final_dst=home), exts=rh, hop=63)
case("nat_in ipv6 routing header", "nat_in", "raw", inp, out, addr="fd00::2", port=8080)

# TTL 1: refused, unchanged.
inp = ipv4(C4, V4, 6, tcp(C4, V4, 40000, 80), ttl=1)
case("nat_in ttl expired", "nat_in", "raw", inp, "TtlExpired", addr="10.0.0.2", port=8080)

# IPIP: DSCP copied, CE becomes ECT(0), DF copied (pmtu_disc), TTL after the decrement.
inner_in = ipv4(C4, V4, 6, tcp(C4, V4, 40000, 80), tos=0xB8 | 3)
inner_out = ipv4(C4, V4, 6, tcp(C4, V4, 40000, 80), tos=0xB8 | 3, ttl=63)
inp = eth(inner_in)
out = eth(ipv4(D4, R4, 4, inner_out, ttl=63, tos=0xB8 | 2, ident=7, frag=0x4000))
case("encap ipip", "encap_ipip", "eth", inp, out, src="10.0.0.1", dst="10.0.0.2", ip_id=7)

# GUE with a full UDP checksum over IPv4; flow hash 0 gives source port 32768.
gue = bytes([0, 4, 0, 0]) + inner_out
outer_udp = struct.pack("!HHHH", 32768, 6080, 8 + len(gue), 0) + gue
c = csum(outer_udp, pseudo(D4, R4, 17, len(outer_udp))) or 0xFFFF
outer_udp = outer_udp[:6] + struct.pack("!H", c) + outer_udp[8:]
out = eth(ipv4(D4, R4, 17, outer_udp, ttl=63, tos=0xB8 | 2, ident=7, frag=0x4000))
case("encap gue csum", "encap_gue", "eth", inp, out, src="10.0.0.1", dst="10.0.0.2", ip_id=7, port=6080)

# GRE with checksum, IPv4 inside IPv6.
g = struct.pack("!HH", 0x8000, 0x0800) + b"\0\0\0\0" + inner_out
g = g[:4] + struct.pack("!H", csum(g)) + g[6:]
out = eth(ipv6(D6, R6, 47, g, hop=63, tc=0xB8 | 2), v6=True)
case("encap gre csum ipv4 in ipv6", "encap_gre", "eth", inp, out, src="fd00::1", dst="fd00::2")

# ICMP fragmentation needed from the client side, about the reply VIP:80 -> client: to the
# real server, quoting the real server's address and port.
quoted_in = ipv4(V4, C4, 6, tcp(V4, C4, 80, 40000, flags=0x10))[:28]
quoted_out = ipv4(R4, C4, 6, tcp(R4, C4, 8080, 40000, flags=0x10))[:28]
router = a("203.0.113.1")
# The quoted TCP checksum is left as it was (IPVS does not touch it).
quoted_out = quoted_out[:20] + quoted_out[20:24] + quoted_in[24:28]
inp = eth(ipv4(router, V4, 1, icmp4(3, 4, struct.pack("!HH", 0, 1400), quoted_in)))
out = eth(ipv4(router, R4, 1, icmp4(3, 4, struct.pack("!HH", 0, 1400), quoted_out), ttl=63))
case("nat_icmp_in ipv4 frag needed", "nat_icmp_in", "eth", inp, out, addr="10.0.0.2", port=8080)

# The director's own time exceeded, IPv6: quote the whole (short) packet.
pkt = ipv6(C6, V6, 6, tcp(C6, V6, 40000, 80), hop=1)
me = a("2001:db8::fe")
out = eth(ipv6(me, C6, 58, icmp6(me, C6, 3, 0, b"\0\0\0\0", pkt)), v6=True,
          dst=b"\x02\0\0\0\0\x02", src=b"\x02\0\0\0\0\x01")
case("icmp reply ipv6 time exceeded", "icmp_time_exceeded", "eth", eth(pkt, v6=True), out, src="2001:db8::fe")

# IPv4 time exceeded: IP header TOS 0xC0, ID 0, no DF, TTL 64.
pkt = ipv4(C4, V4, 6, tcp(C4, V4, 40000, 80), ttl=1)
me4 = a("198.51.100.254")
out = ipv4(me4, C4, 1, icmp4(11, 0, b"\0\0\0\0", pkt), tos=0xC0, ident=0, frag=0)
case("icmp reply ipv4 time exceeded", "icmp_time_exceeded", "raw", pkt, out, src="198.51.100.254")

# MSS clamp at an odd offset (after one NOP): 1460 -> 1400.
o_in = b"\x01\x02\x04" + struct.pack("!H", 1460) + b"\x01\x01\x00"
o_out = b"\x01\x02\x04" + struct.pack("!H", 1400) + b"\x01\x01\x00"
inp = ipv4(C4, V4, 6, tcp(C4, V4, 40000, 80, options=o_in))
out = ipv4(C4, V4, 6, tcp(C4, V4, 40000, 80, options=o_out))
case("mss clamp odd offset", "clamp_mss", "raw", inp, out, max=1400)

with open(sys.argv[1], "w") as f:
    json.dump(cases, f, indent=1)
    f.write("\n")
print(f"{len(cases)} cases")
