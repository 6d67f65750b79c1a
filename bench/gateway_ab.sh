#!/usr/bin/env bash
# bench/gateway_ab.sh - two agenthub binaries side by side on the gateway path,
# interleaved: one nginx upstream (bench/nginx/gw_upstream.conf), and behind it
# nginx proxy_pass (gw_proxy.conf), agenthub A and agenthub B, all up at once
# (an idle server costs nothing). ROUNDS x (c=1, c=32) x (direct, proxy, A, B),
# DURATION each, so slow drift in the machine's load hits every target alike.
# For every run it also prints the measured server's CPU time, run-queue wait
# and time slices per request (/proc/PID/task/*/schedstat, all threads) and
# how busy the whole machine was (/proc/stat; 100 = one core): a run with
# machine_busy well above the targets' own share was disturbed by others.
#
# Usage: A=/path/old/agenthub B=build/agenthub bash bench/gateway_ab.sh
#        ROUNDS=3 DURATION=5 CONNS="1 32" (defaults); KEEP_RUN_DIR=1 keeps configs and logs
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bench/gw_config.sh
source "$here/gw_config.sh"
A=${A:?A=agenthub binary A}
B=${B:?B=agenthub binary B}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-"1 32"}
for t in wrk nginx curl; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done
D=$(mktemp -d /tmp/ahbench-ab.XXXXXX)
mkdir -p "$D/logs" "$D/tmp"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port) PX=$(free_port) PA=$(free_port) PB=$(free_port)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    [[ "${KEEP_RUN_DIR:-0}" == 1 ]] && echo "# run dir kept: $D" || rm -rf "$D"
}
trap cleanup EXIT
sed "s|@PORT@|$UP|g" "$here/nginx/gw_upstream.conf" >"$D/up.conf"
nginx -p "$D/" -c "$D/up.conf" -e "$D/logs/up_error.log" -g "daemon off; worker_processes 1; pid logs/up.pid;" \
    >"$D/logs/up.out" 2>&1 &
UPPID=$!
pids+=("$UPPID")
sed -e "s|@PORT@|$PX|g" -e "s|@UPSTREAM_PORT@|$UP|g" "$here/nginx/gw_proxy.conf" >"$D/px.conf"
nginx -p "$D/" -c "$D/px.conf" -e "$D/logs/px_error.log" -g "daemon off; worker_processes 1; pid logs/px.pid;" \
    >"$D/logs/px.out" 2>&1 &
PXPID=$!
pids+=("$PXPID")
gw() { # name port binary: the same config as bench/gateway.sh's agenthub target
    cp "$3" "$D/agenthub-$1" # a rebuild cannot swap it mid-run
    gw_write_config "$D/$1.yaml" "127.0.0.1:$2" "$D/$1.db" false warn "$UP" gpt-4o-mini 2
    AGENTHUB_ADMIN_KEY=sk-test "$D/agenthub-$1" serve -c "$D/$1.yaml" >"$D/logs/$1.out" 2>"$D/logs/$1.err" &
}
gw a "$PA" "$A"
APID=$!
pids+=("$APID")
gw b "$PB" "$B"
BPID=$!
pids+=("$BPID")
sleep 1.5
url() { echo "http://127.0.0.1:$1/v1/chat/completions"; }
for p in $UP $PX $PA $PB; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        -H 'Authorization: Bearer sk-test' -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' "$(url $p)")
    [[ "$code" == 200 ]] || { echo "port $p answered $code; logs in $D/logs" >&2; exit 1; }
    wrk -t1 -c32 -d2s -s "$here/gw_chat.lua" "$(url $p)" >/dev/null # warm-up
done
echo "# gateway A/B $(date -u '+%F %H:%M UTC'), A=$A ($(sha256sum "$A" | cut -c1-12)), B=$B ($(sha256sum "$B" | cut -c1-12))"
echo "# wrk -t1 --latency -d${DURATION}s, bench/gw_chat.lua; per-request figures are of the measured server (upstream nginx for direct)"
snap() { local p th; for p in $1 $(pgrep -P "$1" || true); do for th in /proc/$p/task/*; do echo "$(basename "$th") $(cat "$th/schedstat")"; done; done; }
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
for r in $(seq 1 "$ROUNDS"); do
    for c in $CONNS; do
        for t in direct proxy A B; do
            case $t in direct) port=$UP pid=$UPPID ;; proxy) port=$PX pid=$PXPID ;; A) port=$PA pid=$APID ;; B) port=$PB pid=$BPID ;; esac
            while pgrep -x wrk >/dev/null; do sleep 1; done # someone else's benchmark
            snap "$pid" >"$D/tmp/s0"
            b0=$(busy)
            wrk -t1 -c"$c" -d"${DURATION}s" --latency -s "$here/gw_chat.lua" "$(url $port)" >"$D/wrk.txt"
            b1=$(busy)
            snap "$pid" >"$D/tmp/s1"
            res=$(grep WRK_RESULT "$D/wrk.txt" | sed 's/WRK_RESULT //; s/ body_bytes=[0-9]*//')
            req=$(grep -o 'requests=[0-9]*' <<<"$res" | cut -d= -f2)
            per=$(join <(sort "$D/tmp/s0") <(sort "$D/tmp/s1") | awk -v r="$req" \
                '{ c += $5-$2; w += $6-$3; s += $7-$4 } END { printf "cpu_us/req=%.1f runq_wait_us/req=%.1f slices/req=%.2f", c/1e3/r, w/1e3/r, s/r }')
            echo "round=$r c=$c target=$t $res $per machine_busy=$(((b1 - b0) / DURATION))"
        done
    done
done
