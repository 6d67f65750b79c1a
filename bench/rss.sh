#!/usr/bin/env bash
# bench/rss.sh - agenthub memory: idle RSS with 2 workers, then RSS after
# REQUESTS (1,000,000) GET /healthz over keep-alive, once wrk has closed its
# connections. Targets (issue): idle VmRSS < 15 MB; after the load VmRSS back
# within 10 % of idle (no growth). All from /proc/PID/status (VmRSS, VmHWM =
# peak RSS), where PID is the agenthub process (workers are its threads).
#
# The request count is exact: wrk_report.lua makes wrk stop after its share
# of responses (WRK_MAX_REQUESTS); the script polls the server's own
# agenthub_http_requests_total{route="/healthz",status="200"} every 0.2 s,
# samples VmRSS every 100k requests, and ends wrk (SIGINT) once the share is
# reached (wrk would otherwise sit out its -d bound).
#
# ROUNDS=1 sends all requests over the same CONNS keep-alive connections.
# ROUNDS=N splits them over N wrk runs, i.e. N x CONNS connections opened and
# closed: that also exercises per-connection allocation (and heap
# fragmentation), which a single run does not.
#
# Environment knobs [defaults]:
#   REQUESTS=1000000   /healthz requests to send
#   CONNS=32           wrk -c
#   ROUNDS=1           wrk runs the requests are split over (new connections each)
#   ACCESS_LOG=true    server.access_log (stderr goes to AH_LOG_SINK)
#   LOG_LEVEL=info     log.level
#   WORKERS=2          server.workers
#   SETTLE_S=2         pause after the load before the final reading
#   AH_LOG_SINK        agenthub stderr [/dev/null: 1e6 access-log lines are ~250 MB]
#   AGENTHUB_BIN, RUN_DIR, KEEP_RUN_DIR: see bench/lib.sh
#
# Usage: bash bench/rss.sh
#        ACCESS_LOG=false LOG_LEVEL=warn bash bench/rss.sh
BENCH_NAME=rss
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${REQUESTS:-1000000}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-1}
ACCESS_LOG=${ACCESS_LOG:-true}
LOG_LEVEL=${LOG_LEVEL:-info}
WORKERS=${WORKERS:-2}
SETTLE_S=${SETTLE_S:-2}
STEP=100000
bench_need wrk curl ss awk timeout

CONF="$RUN_DIR/rss.yaml"
ah_write_config "$CONF" "127.0.0.1:0" "$RUN_DIR/rss.db" "$ACCESS_LOG" "$LOG_LEVEL" "$WORKERS"
AH_STDERR=${AH_LOG_SINK:-/dev/null} ah_start "$CONF" "$RUN_DIR/logs/agenthub"
URL="http://127.0.0.1:$AH_PORT/healthz"
mib() { awk -v k="$1" 'BEGIN { printf "%.2f", k / 1024 }'; }
# "anon X + file Y + shmem Z MiB": file = mapped binary and libraries (shared
# with other processes), anon = heap, stacks, malloc arenas.
rss_split() {
    awk '$1 == "RssAnon:" { a = $2 } $1 == "RssFile:" { f = $2 } $1 == "RssShmem:" { s = $2 }
         END { printf "anon %.2f + file %.2f + shmem %.2f MiB", a / 1024, f / 1024, s / 1024 }' "/proc/$1/status"
}

sleep 1 # let start-up allocations and the first key-cache refresh settle
IDLE_KIB=$(bench_rss_kib "$AH_PID")
IDLE_SPLIT=$(rss_split "$AH_PID")
THREADS=$(awk '$1 == "Threads:" { print $2 }' "/proc/$AH_PID/status")
bench_log "idle: VmRSS $(mib "$IDLE_KIB") MiB, $THREADS threads"
# The one-off checks above (readyz by curl) are requests too; count from here.
BASE=$(ah_counter "$AH_PORT" /healthz)

TREND="$RUN_DIR/rss_trend.txt"
echo "requests VmRSS_MiB" >"$TREND"
echo "0 $(mib "$IDLE_KIB")" >>"$TREND"
exec {IDLE_FD}<> <(:) # read -t on it = a sleep without a fork
done_n=0 next_mark=$STEP t_start=$EPOCHREALTIME
for round in $(seq 1 "$ROUNDS"); do
    goal=$((REQUESTS * round / ROUNDS))
    share=$((goal - done_n))
    ((share > 0)) || continue
    # -d is only an upper bound: 900 s covers 1e6 requests at >= 1.2k rps.
    WRK_MAX_REQUESTS=$share wrk -t1 -c"$CONNS" -d900s --timeout 10s -s "$BENCH_DIR/wrk_report.lua" \
        "$URL" >"$RUN_DIR/wrk/round$round.txt" 2>&1 &
    wrk_pid=$!
    BENCH_PIDS+=("$wrk_pid")
    while :; do
        read -r -t 0.2 -u "$IDLE_FD" _ || true
        done_n=$(($(ah_counter "$AH_PORT" /healthz) - BASE))
        while ((done_n >= next_mark && next_mark <= REQUESTS)); do
            echo "$done_n $(mib "$(bench_rss_kib "$AH_PID")")" >>"$TREND"
            bench_log "$done_n requests: VmRSS $(mib "$(bench_rss_kib "$AH_PID")") MiB"
            next_mark=$((next_mark + STEP))
        done
        ((done_n >= goal)) && break
        kill -0 "$AH_PID" 2>/dev/null || bench_die "agenthub died under load"
        kill -0 "$wrk_pid" 2>/dev/null || bench_die "wrk ended early at $done_n requests; see $RUN_DIR/wrk/round$round.txt"
    done
    kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" || true
    bench_forget_pid "$wrk_pid"
done
LOAD_S=$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
sleep "$SETTLE_S"
AFTER_KIB=$(bench_rss_kib "$AH_PID")
AFTER_SPLIT=$(rss_split "$AH_PID")
PEAK_KIB=$(bench_rss_kib "$AH_PID" VmHWM)
FINAL=$(($(ah_counter "$AH_PORT" /healthz) - BASE))
ah_stop "$AH_PID"

{
    echo "# agenthub RSS, $WORKERS workers, access_log $ACCESS_LOG, log.level $LOG_LEVEL, wrk -t1 -c$CONNS keep-alive, $ROUNDS wrk run(s), load ${LOAD_S}s"
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), $("$AGENTHUB_BIN" --version 2>/dev/null | head -1 || true)"
    awk -v i="$IDLE_KIB" -v a="$AFTER_KIB" -v split_idle="$IDLE_SPLIT" -v split_after="$AFTER_SPLIT" -v p="$PEAK_KIB" -v n="$FINAL" -v s="$SETTLE_S" 'BEGIN {
        printf "%-34s %10.2f MiB  (%s)\n", "idle VmRSS", i / 1024, split_idle
        printf "%-34s %10.2f MiB\n", "peak VmRSS (VmHWM) during the load", p / 1024
        printf "%-34s %10.2f MiB  (%+.1f %% vs idle; %s)\n", "VmRSS " s " s after " n " requests", a / 1024, 100 * (a - i) / i, split_after
        printf "\ntarget idle < 15 MB (15e6 bytes): %s\n", (i * 1024 < 15e6) ? "MET" : "NOT MET"
        printf "target after-load within 10 %% of idle: %s\n", (a <= i * 1.10) ? "MET" : "NOT MET"
    }'
    echo
    echo "# VmRSS every $STEP requests"
    cat "$TREND"
} | tee "$RUN_DIR/report.txt"
bench_log "logs: $RUN_DIR"
