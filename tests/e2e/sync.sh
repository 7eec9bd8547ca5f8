#!/usr/bin/env bash
# End-to-end test of examples/sync_daemon between two network namespaces joined by a veth
# pair: a master replays the bundled sample capture through a director and multicasts the
# sync messages (224.0.0.81:8848, as the kernel's daemon) on its interface; a backup joined to
# the group on the other end applies them and prints what it learnt. Also: version 0 with a
# sync id, a backup of another sync id, and bad datagrams (counted, never fatal), unicast.
source "$(dirname "$0")/lib.sh"
need_tools ip python3

step "build examples/sync_daemon"
cargo build -q --example sync_daemon
BIN=$ROOT/target/debug/examples/sync_daemon
DATA=$ROOT/examples/data

step "two namespaces, one veth"
for ns in lvse-sm lvse-sb; do ip netns add $ns; NSES+=($ns); done
ip link add veth-sm netns lvse-sm type veth peer name veth-sb netns lvse-sb
ip -n lvse-sm addr add 10.98.0.1/24 dev veth-sm
ip -n lvse-sb addr add 10.98.0.2/24 dev veth-sb
for ns in sm sb; do ip -n lvse-$ns link set lo up; ip -n lvse-$ns link set veth-$ns up; done

master() { # master NS ARGS...: replay the sample, print the master's summary line
    local ns=$1; shift
    x "$ns" "$BIN" --master --rules "$DATA/sample.rules" --replay "$DATA/sample.pcap" \
        --neigh "$DATA/sample.neigh" "$@"
}
field() { # field LOG WORD: the number before WORD in the backup's final line
    grep '^backup: [0-9]* datagrams' "$1" | grep -o "[0-9]* $2" | grep -o '^[0-9]*'
}

check_run() { # check_run NAME MASTER_ARGS -- BACKUP_ARGS
    local name=$1; shift
    local margs=() bargs=()
    while [[ $1 != -- ]]; do margs+=("$1"); shift; done; shift
    bargs=("$@")
    local log=$WORK/backup.$name.log
    bg sb "$log" "$BIN" --backup --rules "$DATA/sample.rules" --idle 2 "${bargs[@]}"
    local bpid=$LAST_PID
    for _ in $(seq 50); do grep -q listening "$log" 2>/dev/null && break; sleep 0.1; done
    local mline
    mline=$(master sm "${margs[@]}")
    echo "  $mline"
    local code=0
    wait "$bpid" || code=$?
    tail -1 "$log" | sed 's/^/  /'
    SENT=$(grep -o 'sent [0-9]* records' <<<"$mline" | grep -o '[0-9]*')
    DGRAMS=$(grep -o 'in [0-9]* datagrams' <<<"$mline" | grep -o '[0-9]*')
    LOG=$log
    [[ $code -eq 0 ]] || fail "$name: backup exit code $code"
}

step "multicast, version 1 (the defaults: 224.0.0.81:8848)"
check_run v1 --interface veth-sm -- --interface veth-sb
got=$(( $(field "$LOG" created) + $(field "$LOG" updated) ))
[[ $SENT -gt 100 && $got -eq $SENT ]] && pass "v1: every record sent ($SENT) was applied ($got)" \
    || fail "v1: sent $SENT records, applied $got"
[[ $(field "$LOG" malformed) -eq 0 && $(field "$LOG" unbound) -eq 0 ]] \
    && pass "v1: no malformed datagram, every connection bound to a real server of the backup" \
    || fail "v1: malformed or unbound records"
grep -q 'ESTABLISHED\|TIME_WAIT' "$LOG" && grep -q '\[2001:db8' "$LOG" \
    && pass "v1: the backup's table holds IPv4 and IPv6 connections" \
    || fail "v1: the backup's table misses connections"

step "multicast, version 0, sync id 5"
check_run v0 --interface veth-sm --version 0 --syncid 5 -- --interface veth-sb --syncid 5
got=$(( $(field "$LOG" created) + $(field "$LOG" updated) ))
[[ $SENT -gt 50 && $got -eq $SENT ]] && pass "v0: every IPv4 record sent ($SENT) was applied" \
    || fail "v0: sent $SENT records, applied $got"
grep -q '\[2001:db8' "$LOG" && fail "v0: IPv6 connections learnt" || pass "v0: IPv4 only, as version 0"

step "a backup of another sync id ignores the messages"
check_run syncid --interface veth-sm --syncid 5 -- --interface veth-sb --syncid 9
[[ $(field "$LOG" "of another") -eq $DGRAMS && $(field "$LOG" connections) -eq 0 ]] \
    && pass "syncid: $DGRAMS datagrams of sync id 5 ignored by a backup of 9" \
    || fail "syncid: $(tail -1 "$LOG")"

step "unicast, with bad datagrams in between"
log=$WORK/backup.bad.log
bg sb "$log" "$BIN" --backup --listen 10.98.0.2:9000 --count 4
bpid=$LAST_PID
for _ in $(seq 50); do grep -q listening "$log" 2>/dev/null && break; sleep 0.1; done
x sm python3 - <<'PY'
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
good = bytes([0, 0, 0, 44, 1, 1, 0, 0, 0, 6, 0, 36, 0, 0, 0, 0x83, 0, 1, 0x9c, 0x40, 0, 80, 0, 80,
              0, 0, 0, 0, 0, 0, 3, 0x84, 192, 0, 2, 1, 10, 0, 0, 1, 10, 1, 0, 2])
for d in [b"\x00\x01", good[:-1], good[:10] + b"\x10" + good[11:], good]:
    s.sendto(d, ("10.98.0.2", 9000))
PY
code=0; wait "$bpid" || code=$?
tail -1 "$log" | sed 's/^/  /'
[[ $code -eq 0 && $(field "$log" malformed) -eq 3 && $(field "$log" created) -eq 1 ]] \
    && pass "bad datagrams: 3 counted as malformed, the good one applied, exit 0" \
    || fail "bad datagrams: exit $code, $(tail -1 "$log")"

step "done: $FAILED failure(s)"
[[ $FAILED -eq 0 ]]
