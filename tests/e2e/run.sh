#!/usr/bin/env bash
# End-to-end tests of examples/afpacket_director.rs (and examples/tun_decap.rs) in network
# namespaces: a client, a director and two real servers on one Ethernet segment (a bridge),
# with real HTTP servers (python3 -m http.server), curl, and a UDP echo server.
#
#   client 10.99.1.10 ─┐                ┌─ rs1 10.99.2.11 (http :80, udp echo :5353)
#                      ├── bridge br0 ──┤
#   director 10.99.1.1 ┘  10.99.2.1     └─ rs2 10.99.2.12
#   VIP 10.99.1.100 / fd99:1::100, answered to ARP and ND by the director (--answer-arp)
#
# For each of DR, NAT and TUN (IPIP, decapsulated by tun_decap on the real servers):
# connections spread over both real servers; a 3 MB download arrives byte-identical; a real
# server set to weight 0 takes no new connections while a slow transfer to it completes;
# removing a real server moves new connections away; UDP echo works; and for DR and NAT the
# same over IPv6. Every namespace and process it made is removed (processes by pid) on any
# exit. Needs root, iproute2, nftables, ethtool, curl and python3 (.ci/run installs them).
#
# Usage: tests/e2e/run.sh [dr|nat|tun|gue|gue-remcsum|gre ...]   (default: all; tun is IPIP,
# gue and gre are TUN mode with those tunnel types, gue-remcsum GUE with --tun-remcsum: every
# packet with its outer UDP checksum, which tun_decap verifies)
# Environment: LVS_E2E_BIN=dir with the example binaries (default: builds them, debug).
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
need_tools nft ethtool curl python3

MODES=("$@")
[[ ${#MODES[@]} -eq 0 ]] && MODES=(dr nat tun gue gue-remcsum gre)

if [[ -z ${LVS_E2E_BIN:-} ]]; then
    cargo build -q --example afpacket_director --example tun_decap
    LVS_E2E_BIN=$ROOT/target/debug/examples
fi
DIRECTOR=$LVS_E2E_BIN/afpacket_director
DECAP=$LVS_E2E_BIN/tun_decap


step "topology"
topology
head -c 3145728 /dev/urandom >"$WORK/big"
cp "$WORK/big" "$WORK/rs1/big"
cp "$WORK/big" "$WORK/rs2/big"
BIG_SUM=$(sha256sum <"$WORK/big" | cut -d' ' -f1)
for i in 0 1; do
    h=rs$((i + 1))
    bg $h "$WORK/$h.http.log" python3 -u -m http.server 80 --bind :: --directory "$WORK/$h"
done
for h in rs1 rs2; do
    for _ in $(seq 50); do x $h ss -ltn | grep -q ':80 ' && break; sleep 0.1; done
done
# The director's kernel learns the real servers' MACs (the director reads its table).
for a in "${RS[@]}" "[${RS6[0]}]" "[${RS6[1]}]"; do
    x dir curl -s --max-time 5 "http://$a/whoami" >/dev/null || { echo "FAIL: no route to $a"; exit 1; }
done
pass "namespaces sw client dir rs1 rs2, bridge, HTTP servers up"

# --- helpers ------------------------------------------------------------------------------
rules() { # rules MODE-FLAG SCHED [v6]: the director's rules file
    local m=$1 s=$2
    echo "-A -t $VIP:80 -s $s"
    echo "-a -t $VIP:80 -r ${RS[0]}:80 $m -w 1"
    echo "-a -t $VIP:80 -r ${RS[1]}:80 $m -w 1"
    echo "-A -u $VIP:5353 -s rr"
    echo "-a -u $VIP:5353 -r ${RS[0]}:5353 $m -w 1"
    echo "-a -u $VIP:5353 -r ${RS[1]}:5353 $m -w 1"
    if [[ ${3:-} == v6 ]]; then
        echo "-A -t [$VIP6]:80 -s $s"
        echo "-a -t [$VIP6]:80 -r [${RS6[0]}]:80 $m -w 1"
        echo "-a -t [$VIP6]:80 -r [${RS6[1]}]:80 $m -w 1"
        echo "-A -u [$VIP6]:5353 -s rr"
        echo "-a -u [$VIP6]:5353 -r [${RS6[0]}]:5353 $m -w 1"
        echo "-a -u [$VIP6]:5353 -r [${RS6[1]}]:5353 $m -w 1"
    fi
}

ctl() { echo "$*" >"$WORK/ctl"; sleep 0.3; }

# who N HOST: N requests for /whoami; prints "rs1=A rs2=B other=C"
who() {
    local n=$1 host=$2 r1=0 r2=0 other=0 r
    for _ in $(seq "$n"); do
        r=$(x client curl -s --max-time 5 "http://$host/whoami" || true)
        case $r in rs1) r1=$((r1 + 1)) ;; rs2) r2=$((r2 + 1)) ;; *) other=$((other + 1)) ;; esac
    done
    echo "rs1=$r1 rs2=$r2 other=$other"
}

download() { # download HOST [curl options]: sha256 of /big
    local host=$1; shift
    x client curl -s --max-time 60 "$@" "http://$host/big" | sha256sum | cut -d' ' -f1
}

udp_check() { # udp_check VIP: echo through the director from 6 source ports; prints names seen
    x client python3 - "$1" <<'EOF'
import socket, sys
vip = sys.argv[1]
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
seen = []
for i in range(6):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.connect((vip, 5353))
    got = None
    for _ in range(3):
        s.send(b"ping %d" % i)
        try:
            got = s.recv(100)
            break
        except socket.timeout:
            pass
        except ConnectionRefusedError:
            got = b"refused"
            break
    s.close()
    seen.append(got.decode() if got else "timeout")
print(" ".join(seen))
EOF
}

start_udp_echo() { # start_udp_echo HOST ADDR...: echo "HOST:payload" from each address
    local h=$1; shift
    bg "$h" "$WORK/$h.udp.log" python3 -u "$ROOT/tests/e2e/udp_echo.py" "$h" "$@"
    local pid=$LAST_PID
    for _ in $(seq 50); do grep -q ready "$WORK/$h.udp.log" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$WORK/$h.udp.log" || { echo "  UDP echo on $h did not start:"; cat "$WORK/$h.udp.log"; }
    UDP_PIDS+=("$pid")
}

# --- one mode -----------------------------------------------------------------------------
run_mode() {
    local mode=$1 flag sched v6=""
    case $mode in
        dr) flag=-g; sched=rr; v6=v6 ;;
        nat) flag=-m; sched=wlc; v6=v6 ;;
        tun) flag=-i; sched="mh -b mh-fallback,mh-port" ;;
        gue) flag="-i --tun-type gue --tun-port 6080"; sched="sh -b sh-fallback,sh-port" ;;
        gue-remcsum) flag="-i --tun-type gue --tun-port 6080 --tun-remcsum"; sched=rr ;;
        gre) flag="-i --tun-type gre --tun-csum"; sched=wrr ;;
    esac
    step "$mode"
    UDP_PIDS=()
    local i h
    for i in 0 1; do
        h=rs$((i + 1))
        if [[ $mode == nat ]]; then
            # Replies go back through the director.
            x $h ip addr del $VIP/32 dev lo 2>/dev/null || true
            x $h ip addr del $VIP6/128 dev lo 2>/dev/null || true
            x $h ip route replace 10.99.1.0/24 via 10.99.2.1
            x $h ip -6 route replace fd99:1::/64 via fd99:2::1
            start_udp_echo $h 0.0.0.0 ::
        else
            # The VIP on lo (not answered to ARP), replies straight to the client.
            x $h ip addr replace $VIP/32 dev lo
            x $h ip addr replace $VIP6/128 dev lo
            x $h ip route replace 10.99.1.0/24 dev eth0
            x $h ip -6 route replace fd99:1::/64 dev eth0
            start_udp_echo $h $VIP $VIP6
        fi
        if [[ $mode == tun || $mode == gue* || $mode == gre ]]; then
            bg $h "$WORK/$h.decap.log" "$DECAP" --if eth0 --tun tun0
            UDP_PIDS+=("$LAST_PID")
        fi
    done
    x client ip neigh flush all
    rules "$flag" "$sched" $v6 >"$WORK/rules"
    rm -f "$WORK/ctl"
    bg dir "$WORK/director.$mode.log" "$DIRECTOR" --rules "$WORK/rules" --client-if eth0 \
        --answer-arp --control "$WORK/ctl" --tunnel-src-v4 10.99.2.1
    local dpid=$LAST_PID
    for _ in $(seq 100); do [[ -p $WORK/ctl ]] && grep -q "worker" "$WORK/director.$mode.log" && break; sleep 0.1; done
    kill -0 "$dpid" 2>/dev/null || { fail "$mode: the director did not start"; cat "$WORK/director.$mode.log"; return; }

    local r
    r=$(who 20 $VIP)
    [[ $r =~ rs1=([0-9]+)\ rs2=([0-9]+)\ other=0 ]] && ((BASH_REMATCH[1] > 0 && BASH_REMATCH[2] > 0)) \
        && pass "$mode: 20 connections spread: $r" || fail "$mode: spread: $r"

    [[ $(download $VIP) == "$BIG_SUM" ]] && pass "$mode: 3 MB download byte-identical" \
        || fail "$mode: 3 MB download differs"

    # Weight 0 while a slow transfer runs on that server.
    : >"$WORK/rs1.http.log.mark"
    local before1 before2 slow_pid slow_rs
    before1=$(grep -c 'GET /big' "$WORK/rs1.http.log" || true)
    before2=$(grep -c 'GET /big' "$WORK/rs2.http.log" || true)
    (download $VIP --limit-rate 1000k >"$WORK/slow.sum") &
    slow_pid=$!
    PIDS+=("$slow_pid")
    slow_rs=""
    for _ in $(seq 50); do
        (( $(grep -c 'GET /big' "$WORK/rs1.http.log" || true) > before1 )) && slow_rs=1 && break
        (( $(grep -c 'GET /big' "$WORK/rs2.http.log" || true) > before2 )) && slow_rs=2 && break
        sleep 0.1
    done
    if [[ -z $slow_rs ]]; then
        fail "$mode: the slow transfer did not start"
    else
        local idx=$((slow_rs - 1))
        ctl "-e -t $VIP:80 -r ${RS[$idx]}:80 $flag -w 0"
        r=$(who 10 $VIP)
        local other=$((3 - slow_rs))
        [[ $r == *"rs$slow_rs=0 "* && $r == *"rs$other=10 "* ]] \
            && pass "$mode: rs$slow_rs at weight 0 takes no new connections: $r" \
            || fail "$mode: weight 0: $r"
        wait "$slow_pid" || true
        [[ $(cat "$WORK/slow.sum") == "$BIG_SUM" ]] \
            && pass "$mode: the slow transfer to rs$slow_rs completed byte-identical" \
            || fail "$mode: the slow transfer to rs$slow_rs broke"
        ctl "-e -t $VIP:80 -r ${RS[$idx]}:80 $flag -w 1"
    fi

    # Removal.
    ctl "-d -t $VIP:80 -r ${RS[1]}:80"
    r=$(who 10 $VIP)
    [[ $r == "rs1=10 rs2=0 other=0" ]] && pass "$mode: rs2 removed, new connections go to rs1: $r" \
        || fail "$mode: removal: $r"
    ctl "-a -t $VIP:80 -r ${RS[1]}:80 $flag -w 1"

    r=$(udp_check $VIP)
    [[ $r == *rs1:ping* && $r == *rs2:ping* && $r != *timeout* ]] && pass "$mode: UDP echo: $r" \
        || fail "$mode: UDP echo: $r"

    if [[ -n $v6 ]]; then
        r=$(who 10 "[$VIP6]")
        [[ $r =~ rs1=([0-9]+)\ rs2=([0-9]+)\ other=0 ]] && ((BASH_REMATCH[1] > 0 && BASH_REMATCH[2] > 0)) \
            && pass "$mode: IPv6: 10 connections spread: $r" || fail "$mode: IPv6 spread: $r"
        [[ $(download "[$VIP6]") == "$BIG_SUM" ]] && pass "$mode: IPv6: 3 MB download byte-identical" \
            || fail "$mode: IPv6: 3 MB download differs"
        r=$(udp_check $VIP6)
        [[ $r == *rs1:ping* && $r == *rs2:ping* && $r != *timeout* ]] && pass "$mode: IPv6: UDP echo: $r" \
            || fail "$mode: IPv6 UDP echo: $r"
    fi

    kill -USR1 "$dpid" 2>/dev/null || true
    sleep 0.3
    kill "$dpid" 2>/dev/null || true
    local code=0
    wait "$dpid" || code=$?
    [[ $code -eq 0 ]] && pass "$mode: director exited cleanly on SIGTERM" || fail "$mode: director exit code $code"
    for pid in "${UDP_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    if [[ $FAILED -gt 0 || -n ${LVS_E2E_VERBOSE:-} ]]; then
        echo "  --- director log ($mode)"; sed 's/^/  | /' "$WORK/director.$mode.log" | tail -60
    fi
}

START=$SECONDS
for m in "${MODES[@]}"; do run_mode "$m"; done
step "done in $((SECONDS - START)) s: $FAILED failure(s)"
[[ $FAILED -eq 0 ]]
