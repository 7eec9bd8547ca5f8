#!/usr/bin/env bash
# Shared by tests/e2e/run.sh and tests/e2e/bench.sh: checks, cleanup, helpers, and the
# topology (client, director, two real servers on one bridge). Source it; it sets
# `set -euo pipefail`, cds to the repository root and installs the cleanup trap.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP e2e: needs root (network namespaces)"; exit 0
fi
if ! ip netns list >/dev/null 2>&1 || ! ip netns add lvse-probe 2>/dev/null; then
    echo "SKIP e2e: 'ip netns' is not available here"; exit 0
fi
ip netns del lvse-probe
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "FAIL e2e: $tool is missing (install it: .ci/run does)"; exit 1; }
    done
}


WORK=$(mktemp -d /tmp/lvs-e2e.XXXXXX)
NSES=()
PIDS=()
FAILED=0
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    local ns
    for ns in "${NSES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

VIP=10.99.1.100
VIP6=fd99:1::100
CLIENT=10.99.1.10
RS=(10.99.2.11 10.99.2.12)
RS6=(fd99:2::11 fd99:2::12)

x() { local ns=$1; shift; ip netns exec "lvse-$ns" "$@"; }
bg() { # bg NS LOG CMD...: start CMD in namespace NS, remember its pid
    local ns=$1 log=$2; shift 2
    ip netns exec "lvse-$ns" "$@" >"$log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}
pass() { printf '  ok   %s\n' "$*"; }
fail() { printf '  FAIL %s\n' "$*"; FAILED=$((FAILED + 1)); }
step() { printf '\n== %s\n' "$*"; }


# --- topology -----------------------------------------------------------------------------
topology() {
    for ns in sw client dir rs1 rs2; do
        ip netns del "lvse-$ns" 2>/dev/null || true
        ip netns add "lvse-$ns"
        NSES+=("lvse-$ns")
        x "$ns" ip link set lo up
    done
    x sw ip link add br0 type bridge
    x sw ip link set br0 type bridge mcast_snooping 0
    x sw ip link set br0 up
    for h in client dir rs1 rs2; do
        ip link add eth0 netns "lvse-$h" type veth peer name "p-$h" netns lvse-sw
        x sw ip link set "p-$h" master br0 up
        # The director forwards frames as received: no coalescing, no partial checksums.
        x sw ethtool -K "p-$h" tx off tso off gso off gro off >/dev/null 2>&1 || true
        x "$h" ethtool -K eth0 tx off tso off gso off gro off >/dev/null 2>&1 || true
        x "$h" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.eth0.accept_dad=0
        x "$h" ip link set eth0 up
    done
    x client ip addr add $CLIENT/24 dev eth0
    x client ip addr add fd99:1::10/64 dev eth0 nodad
    x dir ip addr add 10.99.1.1/24 dev eth0
    x dir ip addr add 10.99.2.1/24 dev eth0
    x dir ip addr add fd99:1::1/64 dev eth0 nodad
    x dir ip addr add fd99:2::1/64 dev eth0 nodad
    # The director's kernel must not forward VIP traffic (or NAT replies) itself.
    x dir sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
    x dir nft -f - <<EOF
table inet lvs_e2e {
    chain pre { type filter hook prerouting priority -300; ip daddr $VIP drop; ip6 daddr $VIP6 drop; }
}
EOF
    for i in 0 1; do
        h=rs$((i + 1))
        x $h ip addr add "${RS[$i]}/24" dev eth0
        x $h ip addr add "${RS6[$i]}/64" dev eth0 nodad
        x $h sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
            net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0
        # Tunnel packets go to tun_decap; the kernel must not answer them with protocol unreachable.
        x $h nft -f - <<'EOF'
table inet lvs_e2e {
    chain in { type filter hook input priority 0; meta l4proto { 4, 41, 47 } drop; udp dport 6080 drop; }
}
EOF
        x $h ip tuntap add dev tun0 mode tun
        x $h ip link set tun0 up
        x $h sysctl -qw net.ipv4.conf.tun0.rp_filter=0
        mkdir -p "$WORK/$h"
        echo "$h" >"$WORK/$h/whoami"
    done
}
