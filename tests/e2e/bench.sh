#!/usr/bin/env bash
# Throughput through examples/afpacket_director.rs (NAT, one worker) side by side with the
# kernel doing the same job in the same topology (nftables DNAT in the director namespace,
# the NAT mode of the classic LVS guides), with the same load generators, in one run.
#
#   requests/s   wrk -t2 -c64 against nginx on both real servers (keep-alive)
#   conns/s      wrk -t2 -c32 with "Connection: close" (a new connection per request)
#   packets/s    iperf3 -u -l 64 -b 0 to one real server; packets delivered per second
#
# Rounds alternate kernel and director; medians are reported with their ratio. Not part of
# .ci/run (it takes about two minutes and wants a quiet machine).
#
# Usage: tests/e2e/bench.sh [ROUNDS] [SECONDS]      (default 3 rounds of 8 s per test)
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-3}
SECS=${2:-8}
for t in wrk nginx iperf3 nft ethtool curl; do
    command -v "$t" >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light iperf3 nftables ethtool curl
        break
    }
done
need_tools wrk nginx iperf3 nft ethtool curl
cargo build -q --release --example afpacket_director
DIRECTOR=$ROOT/target/release/examples/afpacket_director

topology
for i in 0 1; do
    h=rs$((i + 1))
    mkdir -p "$WORK/$h/tmp"
    cat >"$WORK/$h/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $WORK/$h/nginx.pid;
error_log $WORK/$h/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $WORK/$h/tmp; proxy_temp_path $WORK/$h/tmp;
    fastcgi_temp_path $WORK/$h/tmp; uwsgi_temp_path $WORK/$h/tmp; scgi_temp_path $WORK/$h/tmp;
    server { listen 80 reuseport; root $WORK/$h; }
}
EOF
    bg $h "$WORK/$h.nginx.log" nginx -c "$WORK/$h/nginx.conf"
    x $h ip route replace 10.99.1.0/24 via 10.99.2.1
done
bg rs1 "$WORK/iperf.log" iperf3 -s -p 5201
sleep 0.5
for h in rs1 rs2; do
    x dir curl -sf --max-time 5 "http://${RS[${h#rs} - 1]}/whoami" >/dev/null || { echo "nginx on $h is not up"; cat "$WORK/$h/nginx.err"; exit 1; }
done

cat >"$WORK/rules" <<EOF
-A -t $VIP:80 -s rr
-a -t $VIP:80 -r ${RS[0]}:80 -m -w 1
-a -t $VIP:80 -r ${RS[1]}:80 -m -w 1
-A -t $VIP:5201 -s rr
-a -t $VIP:5201 -r ${RS[0]}:5201 -m -w 1
-A -u $VIP:5201 -s rr
-a -u $VIP:5201 -r ${RS[0]}:5201 -m -w 1
EOF

kernel_on() {
    x dir nft delete table inet lvs_e2e
    x dir ip addr add $VIP/32 dev eth0
    x dir sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0
    x dir nft -f - <<EOF
table ip lvs_kernel {
    chain pre {
        type nat hook prerouting priority -100;
        ip daddr $VIP tcp dport 80 dnat to numgen inc mod 2 map { 0 : ${RS[0]}, 1 : ${RS[1]} }
        ip daddr $VIP tcp dport 5201 dnat to ${RS[0]}
        ip daddr $VIP udp dport 5201 dnat to ${RS[0]}
    }
}
EOF
    x client ip neigh flush all
}
kernel_off() {
    x dir nft delete table ip lvs_kernel
    x dir ip addr del $VIP/32 dev eth0
    x dir sysctl -qw net.ipv4.ip_forward=0
    x dir nft -f - <<EOF
table inet lvs_e2e {
    chain pre { type filter hook prerouting priority -300; ip daddr $VIP drop; ip6 daddr $VIP6 drop; }
}
EOF
    x client ip neigh flush all
    x dir conntrack -F >/dev/null 2>&1 || true
}
ours_on() {
    bg dir "$WORK/director.log" "$DIRECTOR" --rules "$WORK/rules" --client-if eth0 --answer-arp ${LVS_BENCH_DIRECTOR_ARGS:-}
    OURS=$LAST_PID
    for _ in $(seq 50); do grep -q worker "$WORK/director.log" && break; sleep 0.1; done
    x client ip neigh flush all
}
ours_off() {
    kill "$OURS"
    wait "$OURS" || true
    tail -n 25 "$WORK/director.log" >"$WORK/director.last"
}

wrk_rps() { # wrk_rps CONNS [header]: requests per second
    local c=$1; shift
    x client wrk -t2 -c"$c" -d"${SECS}s" "$@" "http://$VIP/whoami" 2>&1 | awk '/^Requests\/sec:/ {printf "%d", $2}'
}
udp_pps() { # packets per second delivered to the iperf3 server
    x client iperf3 -c $VIP -p 5201 -u -l 64 -b 0 -t "$SECS" -J 2>/dev/null | python3 -c '
import json, sys
e = json.load(sys.stdin)["end"]["sum"]
print(int((e["packets"] - e["lost_packets"]) / e["seconds"]))'
}
measure() { # measure NAME: one round of the three tests, appended to $WORK/NAME.*
    local name=$1
    x client curl -sf --max-time 5 "http://$VIP/whoami" >/dev/null || { echo "$name: no path to the VIP"; return 1; }
    wrk_rps 64 >>"$WORK/$name.rps"; echo >>"$WORK/$name.rps"
    wrk_rps 32 -H "Connection: close" >>"$WORK/$name.cps"; echo >>"$WORK/$name.cps"
    # LVS_BENCH_PERF=FILE: a system-wide profile of the director's UDP test, for `perf report`.
    local perf=""
    if [[ -n ${LVS_BENCH_PERF:-} && $name == ours ]]; then
        perf record -q -a -g -o "$LVS_BENCH_PERF" >/dev/null 2>&1 &
        perf=$!
    fi
    udp_pps >>"$WORK/$name.pps"
    if [[ -n $perf ]]; then kill -INT "$perf"; wait "$perf" || true; fi
}
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

step "$ROUNDS rounds of ${SECS} s per test, kernel and director alternating"
for r in $(seq "$ROUNDS"); do
    kernel_on; measure kernel; kernel_off
    ours_on; measure ours; ours_off
    printf '  round %d: kernel %s rps %s cps %s pps | director %s rps %s cps %s pps\n' "$r" \
        "$(tail -n1 "$WORK/kernel.rps")" "$(tail -n1 "$WORK/kernel.cps")" "$(tail -n1 "$WORK/kernel.pps")" \
        "$(tail -n1 "$WORK/ours.rps")" "$(tail -n1 "$WORK/ours.cps")" "$(tail -n1 "$WORK/ours.pps")"
done

step "medians ($(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
printf '  %-34s %12s %12s %8s\n' "" "kernel" "director" "ratio"
for t in rps:"requests/s (keep-alive, 64 conns)" cps:"connections/s (close, 32 conns)" pps:"UDP packets/s (64 B)"; do
    k=$(median "$WORK/kernel.${t%%:*}"); o=$(median "$WORK/ours.${t%%:*}")
    printf '  %-34s %12s %12s %8s\n' "${t#*:}" "$k" "$o" "$(python3 -c "print(f'{$o / max($k, 1):.2f}')")"
done
echo "  director counters (last round):"
sed 's/^/  | /' "$WORK/director.last"
