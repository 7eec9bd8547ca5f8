#!/usr/bin/env python3
"""Independent oracle for the Linux IPVS hashing schedulers dh, sh and mh.

Written from the behaviour reference ../shared/reference/ipvs.md (lvs repository layout)
(section 1.3 list order, 3.10 dh, 3.11 sh, 3.12 mh) for a 64-bit kernel.
Standard library only.  Running it writes vectors.json next to this file
(or to the path given as the first argument).

Conventions used throughout:
  * "list order" = order of svc->destinations = REVERSE order of addition
    (new destinations are inserted at the head).  Every destination list in
    this file and in the JSON output is given in list order, head first, and
    every "dest_index" is an index into that list.
  * An empty table slot / "no destination" is None in Python, null in JSON.
"""

import hashlib
import ipaddress
import json
import math
import os
import struct
import sys

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF


# --------------------------------------------------------------------------
# Address folding and the kernel golden-ratio hash
# --------------------------------------------------------------------------

def fold(addr: str) -> int:
    """ntohl(fold(addr)) as a host u32.

    IPv4: the address as a big-endian u32.
    IPv6: XOR of the four 32-bit big-endian words.  (XOR commutes with the
    byte swap, so XOR-ing network-order words and then ntohl is the same.)
    """
    ip = ipaddress.ip_address(addr)
    raw = ip.packed
    if ip.version == 4:
        return struct.unpack(">I", raw)[0]
    w = struct.unpack(">4I", raw)
    return w[0] ^ w[1] ^ w[2] ^ w[3]


GOLDEN_RATIO_32 = 0x61C88647


def hash_32(x: int, bits: int) -> int:
    """Top `bits` bits of (x * GOLDEN_RATIO_32) mod 2^32."""
    return ((x * GOLDEN_RATIO_32) & MASK32) >> (32 - bits)


# --------------------------------------------------------------------------
# SipHash-c-d (implemented from the SipHash paper), used as hsiphash on
# 64-bit kernels with c=1, d=3.
# --------------------------------------------------------------------------

def _rotl64(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & MASK64


def _sipround(v0, v1, v2, v3):
    v0 = (v0 + v1) & MASK64; v1 = _rotl64(v1, 13); v1 ^= v0; v0 = _rotl64(v0, 32)
    v2 = (v2 + v3) & MASK64; v3 = _rotl64(v3, 16); v3 ^= v2
    v0 = (v0 + v3) & MASK64; v3 = _rotl64(v3, 21); v3 ^= v0
    v2 = (v2 + v1) & MASK64; v1 = _rotl64(v1, 17); v1 ^= v2; v2 = _rotl64(v2, 32)
    return v0, v1, v2, v3


def siphash(k0: int, k1: int, msg: bytes, c_rounds: int, d_rounds: int) -> int:
    """SipHash-c-d of msg with 64-bit key words k0, k1; returns a u64."""
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1
    n = len(msg)
    full = n - (n % 8)
    for i in range(0, full, 8):
        m = struct.unpack("<Q", msg[i:i + 8])[0]
        v3 ^= m
        for _ in range(c_rounds):
            v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
    # last block: length byte in the top byte, remaining bytes little-endian
    b = (n & 0xFF) << 56
    for j, byte in enumerate(msg[full:]):
        b |= byte << (8 * j)
    v3 ^= b
    for _ in range(c_rounds):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(d_rounds):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def _self_check_siphash24():
    """Official SipHash-2-4 vectors (key 00..0f) to validate the round function."""
    key = bytes(range(16))
    k0 = struct.unpack("<Q", key[0:8])[0]
    k1 = struct.unpack("<Q", key[8:16])[0]
    assert siphash(k0, k1, b"", 2, 4) == 0x726FDB47DD0E0E31, "SipHash-2-4 empty"
    assert siphash(k0, k1, b"\x00", 2, 4) == 0x74F839C593DC67FD, "SipHash-2-4 00"
    # Further vectors from the reference vector table (messages 00..n-1),
    # covering full 8-byte blocks and tails.
    more = {
        7: 0xAB0200F58B01D137,
        8: 0x93F5F5799A932462,
        15: 0xA129CA6149BE45E5,
    }
    for n, want in more.items():
        got = siphash(k0, k1, bytes(range(n)), 2, 4)
        assert got == want, "SipHash-2-4 len %d: %#x != %#x" % (n, got, want)


HASH1 = (2654435761, 2654435761)   # 0x9E3779B1
HASH2 = (2654446892, 2654446892)   # 0x9E37A52C


def hsiphash_u32(v: int, key) -> int:
    """64-bit kernel hsiphash of a u32 value (4 little-endian bytes):
    SipHash-1-3, low 32 bits of the 64-bit result."""
    msg = struct.pack("<I", v & MASK32)
    return siphash(key[0], key[1], msg, 1, 3) & MASK32


# --------------------------------------------------------------------------
# Destination model
# --------------------------------------------------------------------------

class Dest:
    def __init__(self, addr, port, weight, last_weight=None, overloaded=False):
        self.addr = addr
        self.port = port
        self.weight = weight
        # last_weight = last non-zero configured weight (MH uses it)
        self.last_weight = weight if last_weight is None else last_weight
        self.overloaded = overloaded

    def unavailable(self) -> bool:
        return self.weight <= 0 or self.overloaded

    def label(self) -> str:
        return "%s:%d" % (self.addr, self.port)

    def to_json(self):
        return {"addr": self.addr, "port": self.port, "weight": self.weight,
                "last_weight": self.last_weight, "overloaded": self.overloaded}


def _dest_label(dests, idx):
    return None if idx is None else dests[idx].label()


# --------------------------------------------------------------------------
# dh (§3.10)
# --------------------------------------------------------------------------

DH_TAB_BITS = 8
DH_TAB_SIZE = 1 << DH_TAB_BITS


def dh_build(dests):
    """Bucket i gets dests round-robin in list order, weights ignored."""
    if not dests:
        return [None] * DH_TAB_SIZE
    return [i % len(dests) for i in range(DH_TAB_SIZE)]


def dh_hashkey(daddr):
    return hash_32(fold(daddr), DH_TAB_BITS)


def dh_lookup(table, dests, daddr):
    b = dh_hashkey(daddr)
    idx = table[b]
    if idx is None or dests[idx].unavailable():
        return b, None
    return b, idx


# --------------------------------------------------------------------------
# sh (§3.11)
# --------------------------------------------------------------------------

SH_TAB_BITS = 8
SH_TAB_SIZE = 1 << SH_TAB_BITS
SH_TAB_MASK = SH_TAB_SIZE - 1


def sh_build(dests, size=SH_TAB_SIZE):
    """Walk the list cyclically; each dest fills max(w,1) consecutive buckets
    (counter test ++count >= w, so w <= 0 still takes one bucket per round).
    Uses the CURRENT weight."""
    if not dests:
        return [None] * size
    table = []
    p = 0
    count = 0
    for _ in range(size):
        table.append(p)
        count += 1
        if count >= dests[p].weight:
            p = (p + 1) % len(dests)
            count = 0
    return table


def sh_hashkey(addr, port, off, bits=SH_TAB_BITS):
    return (off + hash_32((port + fold(addr)) & MASK32, bits)) & ((1 << bits) - 1)


def sh_lookup(table, dests, saddr, port=0, fallback=False):
    """Returns (first-choice bucket, dest index or None)."""
    size = len(table)
    ihash = sh_hashkey(saddr, port, 0)
    idx = table[ihash]
    if idx is None:
        return ihash, None
    if not dests[idx].unavailable():
        return ihash, idx
    if not fallback:
        return ihash, None
    for offset in range(size):
        roff = (offset + ihash) % size
        h = sh_hashkey(saddr, port, roff)
        idx = table[h]
        if idx is None:
            return ihash, None
        if not dests[idx].unavailable():
            return ihash, idx
    return ihash, None


# --------------------------------------------------------------------------
# mh (§3.12)
# --------------------------------------------------------------------------

MH_PRIMES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071]


def mh_params(tab_index):
    assert 8 <= tab_index <= 17
    return MH_PRIMES[tab_index - 8], tab_index // 2


def mh_hashkey(addr, port, key, off):
    v = (off + port + fold(addr)) & MASK32
    return hsiphash_u32(v, key)


def fls(x):
    return x.bit_length()


def mh_gcd(dests):
    g = 0
    for d in dests:
        if d.last_weight > 0:
            g = math.gcd(g, d.last_weight) if g > 0 else d.last_weight
    return g


def mh_shift(dests, g, tab_bits):
    if g < 1:
        return 0
    mw = max(d.last_weight for d in dests) // g
    return max(0, fls(mw) - tab_bits)


def mh_build(dests, tab_index):
    """Returns (table, info) where info holds gcd, shift and per-dest setup."""
    M, tab_bits = mh_params(tab_index)
    if len(dests) > M:
        raise ValueError("EINVAL: num_dests > M")
    g = mh_gcd(dests)
    shift = mh_shift(dests, g, tab_bits)
    setup = []
    for d in dests:
        offset = mh_hashkey(d.addr, d.port, HASH1, 0) % M
        skip = mh_hashkey(d.addr, d.port, HASH2, 0) % (M - 1) + 1
        if g >= 1:
            t = (d.last_weight // g) >> shift
            turns = t if t else (1 if d.last_weight != 0 else 0)
        else:
            turns = 0
        setup.append({"offset": offset, "skip": skip, "perm": offset, "turns": turns})

    table = [None] * M
    if g < 1:
        return table, _mh_info(M, tab_bits, g, shift, setup, table, len(dests))

    filled = [False] * M
    n = 0
    dt_count = 0          # NOT reset at the start of each pass
    while n < M:
        i = 0
        while i < len(dests):
            ds = setup[i]
            if ds["turns"] < 1:       # dest added with weight 0: never in table
                i += 1
                continue
            c = ds["perm"]
            while filled[c]:
                ds["perm"] = (ds["perm"] + ds["skip"]) % M
                c = ds["perm"]
            filled[c] = True
            table[c] = i
            n += 1
            if n == M:
                break
            dt_count += 1
            if dt_count >= ds["turns"]:
                dt_count = 0
                i += 1
        if n == M:
            break
    return table, _mh_info(M, tab_bits, g, shift, setup, table, len(dests))


def _mh_info(M, tab_bits, g, shift, setup, table, ndests):
    counts = [0] * ndests
    for idx in table:
        if idx is not None:
            counts[idx] += 1
    return {
        "M": M, "tab_bits": tab_bits, "gcd": g, "shift": shift,
        "per_dest": [{"offset": s["offset"], "skip": s["skip"], "turns": s["turns"],
                      "slots_owned": counts[i]} for i, s in enumerate(setup)],
        "slot_counts": counts,
    }


def mh_build_textbook(dests, tab_index):
    """Cross-check: Maglev population written in the paper's form, with an
    explicit preference index j per dest (perm_j = (offset + j*skip) mod M)."""
    M, _ = mh_params(tab_index)
    _, info = mh_build(dests, tab_index)   # reuse offset/skip/turns only
    pd = info["per_dest"]
    nxt = [0] * len(dests)
    table = [None] * M
    n = 0
    if info["gcd"] < 1:
        return table
    while True:
        for i in range(len(dests)):
            for _ in range(pd[i]["turns"]):
                while True:
                    c = (pd[i]["offset"] + nxt[i] * pd[i]["skip"]) % M
                    if table[c] is None:
                        break
                    nxt[i] += 1
                table[c] = i
                n += 1
                if n == M:
                    return table


def mh_lookup(table, dests, saddr, port=0, fallback=False):
    """Returns (first-choice slot, dest index or None)."""
    M = len(table)
    ihash = mh_hashkey(saddr, port, HASH1, 0) % M
    idx = table[ihash]
    if idx is None:
        return ihash, None
    if not dests[idx].unavailable():
        return ihash, idx
    if not fallback:
        return ihash, None
    for offset in range(M):
        roff = (offset + ihash) % M
        h = mh_hashkey(saddr, port, HASH1, roff) % M
        idx = table[h]
        if idx is None:
            return ihash, None
        if not dests[idx].unavailable():
            return ihash, idx
    return ihash, None


def table_sha256(table):
    s = ",".join("-1" if x is None else str(x) for x in table)
    return hashlib.sha256(s.encode("ascii")).hexdigest()


# --------------------------------------------------------------------------
# Vector generation
# --------------------------------------------------------------------------

def ipv4_range(prefix, lo, hi):
    return ["%s%d" % (prefix, i) for i in range(lo, hi + 1)]


def ipv6_range(prefix, lo, hi):
    # hex suffix, e.g. 2001:db8:1::1 .. 2001:db8:1::10 (0x10 = 16 addresses)
    return [str(ipaddress.ip_address("%s%x" % (prefix, i))) for i in range(lo, hi + 1)]


CLIENTS_V4 = ipv4_range("172.16.0.", 1, 20)
CLIENTS_V6 = ipv6_range("2001:db8:1::", 0x1, 0x10)
PORTS = list(range(1000, 1010))


def gen_siphash():
    out = []
    for name, key in (("hash1", HASH1), ("hash2", HASH2)):
        for v in [0, 1, 80, 0x0A000001, 0xC0A80001 + 80, 0xFFFFFFFF]:
            out.append({"key_name": name, "key": list(key), "v": v,
                        "result": hsiphash_u32(v, key)})
    return out


def gen_dh():
    dests = [Dest(a, 80, 1) for a in ["192.168.1.3", "192.168.1.2", "192.168.1.1"]]
    table = dh_build(dests)
    lookups = []
    for daddr in ipv4_range("10.0.0.", 1, 8) + ["2001:db8::1", "2001:db8::2"]:
        b, idx = dh_lookup(table, dests, daddr)
        lookups.append({"daddr": daddr, "fold": fold(daddr), "bucket": b,
                        "dest_index": idx, "dest": _dest_label(dests, idx)})
    return {"dests": [d.to_json() for d in dests], "table": table, "lookups": lookups}


def _sh_case(dests, clients, port_clients=None, fallback_too=False):
    table = sh_build(dests)
    counts = [table.count(i) for i in range(len(dests))]

    def one(saddr, port):
        b, idx = sh_lookup(table, dests, saddr, port, fallback=False)
        rec = {"saddr": saddr, "port": port, "bucket": b, "owner_index": table[b],
               "dest_index": idx, "dest": _dest_label(dests, idx)}
        if fallback_too:
            _, fidx = sh_lookup(table, dests, saddr, port, fallback=True)
            rec["fallback_dest_index"] = fidx
            rec["fallback_dest"] = _dest_label(dests, fidx)
        return rec

    case = {"dests": [d.to_json() for d in dests], "table": table,
            "slot_counts": counts,
            "lookups": [one(c, 0) for c in clients]}
    if port_clients:
        case["lookups_sh_port"] = [one(c, p) for c, p in port_clients]
    return case


def gen_sh():
    v4 = [Dest("192.168.1.3", 80, 1), Dest("192.168.1.2", 80, 2), Dest("192.168.1.1", 80, 3)]
    v6 = [Dest(a, 443, 1) for a in ["2001:db8::3", "2001:db8::2", "2001:db8::1"]]
    # Extra: sh-fallback.  Quiescing .2 (weight 0) REBUILDS the sh table
    # (upd_dest), where a weight-0 dest still takes one bucket per round.
    fb = [Dest("192.168.1.3", 80, 1), Dest("192.168.1.2", 80, 0, last_weight=2),
          Dest("192.168.1.1", 80, 3)]
    return {
        "ipv4_weighted": _sh_case(v4, CLIENTS_V4, [("172.16.0.1", p) for p in PORTS]),
        "ipv6_equal": _sh_case(v6, CLIENTS_V6),
        "fallback_quiesced": _sh_case(fb, CLIENTS_V4, fallback_too=True),
    }


def _mh_case(dests, tab_index, clients, port_clients=None, fallback_too=False,
             with_full_table=None):
    table, info = mh_build(dests, tab_index)
    assert table == mh_build_textbook(dests, tab_index), "mh populate cross-check"
    M = info["M"]
    if with_full_table is None:
        with_full_table = True  # the Rust test compares whole tables

    def one(saddr, port):
        slot, idx = mh_lookup(table, dests, saddr, port, fallback=False)
        rec = {"saddr": saddr, "port": port, "slot": slot, "owner_index": table[slot],
               "dest_index": idx, "dest": _dest_label(dests, idx)}
        if fallback_too:
            _, fidx = mh_lookup(table, dests, saddr, port, fallback=True)
            rec["fallback_dest_index"] = fidx
            rec["fallback_dest"] = _dest_label(dests, fidx)
        return rec

    case = {"tab_index": tab_index, "dests": [d.to_json() for d in dests]}
    case.update(info)
    case["table_sha256"] = table_sha256(table)
    case["table_head32"] = table[:32]
    if with_full_table:
        case["table"] = table
    if clients:
        case["lookups"] = [one(c, 0) for c in clients]
    if port_clients:
        case["lookups_mh_port"] = [one(c, p) for c, p in port_clients]
    return case


def gen_mh():
    def v4(lws):
        addrs = ["192.168.1.3", "192.168.1.2", "192.168.1.1"]
        return [Dest(a, 80, w) for a, w in zip(addrs, lws)]

    port_clients = [("172.16.0.1", p) for p in PORTS]
    out = {}
    for tab_index in (8, 12):
        M, _ = mh_params(tab_index)
        out["equal_M%d" % M] = _mh_case(v4([1, 1, 1]), tab_index, CLIENTS_V4, port_clients)
        out["weighted_M%d" % M] = _mh_case(v4([3, 2, 1]), tab_index, CLIENTS_V4, port_clients)
    out["ipv6_equal_M4093"] = _mh_case(
        [Dest(a, 443, 1) for a in ["2001:db8::3", "2001:db8::2", "2001:db8::1"]],
        12, CLIENTS_V6)
    out["shift_M251"] = _mh_case(
        [Dest(a, 80, w) for a, w in zip(["192.168.2.1", "192.168.2.2", "192.168.2.3"],
                                         [1000, 1, 300])],
        8, None)
    # Fallback: .2 quiesced (weight 0, last_weight 1) -> table unchanged
    fb = [Dest("192.168.1.3", 80, 1), Dest("192.168.1.2", 80, 0, last_weight=1),
          Dest("192.168.1.1", 80, 1)]
    fb_case = _mh_case(fb, 8, CLIENTS_V4, fallback_too=True)
    # sanity: table identical to the all-available equal-weight M=251 table
    assert fb_case["table"] == out["equal_M251"]["table"]
    out["fallback_M251"] = fb_case
    return out


def self_checks():
    _self_check_siphash24()
    assert fold("10.0.0.1") == 0x0A000001
    assert fold("2001:db8::1") == 0x20010DB8 ^ 0 ^ 0 ^ 1
    assert hash_32(1, 8) == 0x61
    # sh weighted table: weights (1,2,3) in list order -> pattern 0,1,1,2,2,2
    t = sh_build([Dest("a", 0, 1), Dest("b", 0, 2), Dest("c", 0, 3)])
    assert t[:12] == [0, 1, 1, 2, 2, 2] * 2
    # weight-0 dest takes one bucket per round
    t = sh_build([Dest("a", 0, 2), Dest("b", 0, 0)])
    assert t[:6] == [0, 0, 1, 0, 0, 1]


def main():
    self_checks()
    vectors = {
        "meta": {
            "source": "independent oracle from ipvs.md §1.3, §3.10, §3.11, §3.12 (64-bit kernel)",
            "list_order": "dests are given in list order (head first = most recently added); "
                          "dest_index indexes that list",
            "hsiphash": "SipHash-1-3 over the 4 little-endian bytes of u32 v, low 32 bits",
            "hash1_key": list(HASH1), "hash2_key": list(HASH2),
            "table_sha256_format": "sha256 of ASCII comma-joined dest indices (-1 for empty), no trailing newline",
            "owner_index": "raw table entry at the first-choice bucket/slot; dest_index is the "
                           "scheduler result without fallback (null if owner unavailable)",
            "ipv6_client_range": "2001:db8:1::1 .. 2001:db8:1::10 in hex (16 addresses)",
        },
        "siphash13": gen_siphash(),
        "dh": gen_dh(),
        "sh": gen_sh(),
        "mh": gen_mh(),
    }
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "ipvs_hash_vectors.json")
    with open(path, "w") as f:
        json.dump(vectors, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
