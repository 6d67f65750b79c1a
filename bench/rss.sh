#!/usr/bin/env bash
# bench/rss.sh - agenthub memory: idle RSS with 2 workers, then RSS after
# REQUESTS (1,000,000) GET /healthz over keep-alive, once wrk has closed its
# connections. Targets (issue): idle VmRSS < 15 MB; after the load VmRSS back
# within 10 % of idle (no growth). All from /proc/PID/status (VmRSS, VmHWM =
# peak RSS), where PID is the agenthub process (workers are its threads).
#
# The request count is exact: wrk_report.lua stops wrk after the remaining
# number of responses (WRK_MAX_REQUESTS), in rounds sized from the measured
# rate, until the server's own agenthub_http_requests_total for /healthz 200
# reaches REQUESTS. RSS is sampled every 100k requests to show a trend.
#
# Environment knobs [defaults]:
#   REQUESTS=1000000   /healthz requests to send
#   CONNS=32           wrk -c
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
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS=${REQUESTS:-1000000}
CONNS=${CONNS:-32}
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

sleep 1 # let start-up allocations and the first key-cache refresh settle
IDLE_KIB=$(bench_rss_kib "$AH_PID")
THREADS=$(awk '$1 == "Threads:" { print $2 }' "/proc/$AH_PID/status")
bench_log "idle: VmRSS $(mib "$IDLE_KIB") MiB, $THREADS threads"
# The one-off checks above (readyz by curl) are requests too; count from here.
BASE=$(ah_counter "$AH_PORT" /healthz)

TREND="$RUN_DIR/rss_trend.txt"
echo "requests VmRSS_MiB" >"$TREND"
echo "0 $(mib "$IDLE_KIB")" >>"$TREND"
rate=50000 # first guess, requests/s; refined after each round
done_n=0 next_mark=$STEP t_start=$SECONDS round=0
while ((done_n < REQUESTS)); do
    target=$((next_mark < REQUESTS ? next_mark : REQUESTS))
    rem=$((target - done_n))
    secs=$((rem / rate + 2))
    ((secs > 120)) && secs=120
    round=$((round + 1))
    t0=$EPOCHREALTIME
    WRK_MAX_REQUESTS=$rem timeout $((secs + 30)) \
        wrk -t1 -c"$CONNS" -d"${secs}s" --timeout 10s -s "$BENCH_DIR/wrk_report.lua" "$URL" \
        >"$RUN_DIR/wrk/round$round.txt" 2>&1 || bench_die "wrk failed; see $RUN_DIR/wrk/round$round.txt"
    now=$(($(ah_counter "$AH_PORT" /healthz) - BASE))
    sent=$((now - done_n))
    # wrk waits out -d even after it stopped itself, so time the responses by count.
    if ((sent > 0)); then
        r=$(awk -v n="$sent" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", n / (b - a) }')
        ((r > rate)) && rate=$r
    fi
    done_n=$now
    if ((done_n >= next_mark || done_n >= REQUESTS)); then
        echo "$done_n $(mib "$(bench_rss_kib "$AH_PID")")" >>"$TREND"
        bench_log "$done_n requests: VmRSS $(mib "$(bench_rss_kib "$AH_PID")") MiB"
        next_mark=$((next_mark + STEP))
    fi
    kill -0 "$AH_PID" 2>/dev/null || bench_die "agenthub died under load"
    ((SECONDS - t_start < 900)) || bench_die "gave up after 900 s at $done_n requests"
done
sleep "$SETTLE_S"
AFTER_KIB=$(bench_rss_kib "$AH_PID")
PEAK_KIB=$(bench_rss_kib "$AH_PID" VmHWM)
FINAL=$(($(ah_counter "$AH_PORT" /healthz) - BASE))
ah_stop "$AH_PID"

{
    echo "# agenthub RSS, $WORKERS workers, access_log $ACCESS_LOG, log.level $LOG_LEVEL, wrk -t1 -c$CONNS keep-alive"
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), $("$AGENTHUB_BIN" --version 2>/dev/null | head -1 || true)"
    awk -v i="$IDLE_KIB" -v a="$AFTER_KIB" -v p="$PEAK_KIB" -v n="$FINAL" -v s="$SETTLE_S" 'BEGIN {
        printf "%-34s %10.2f MiB\n", "idle VmRSS", i / 1024
        printf "%-34s %10.2f MiB\n", "peak VmRSS (VmHWM) during the load", p / 1024
        printf "%-34s %10.2f MiB  (%+.1f %% vs idle)\n", "VmRSS " s " s after " n " requests", a / 1024, 100 * (a - i) / i
        printf "\ntarget idle < 15 MB (15e6 bytes): %s\n", (i * 1024 < 15e6) ? "MET" : "NOT MET"
        printf "target after-load within 10 %% of idle: %s\n", (a <= i * 1.10) ? "MET" : "NOT MET"
    }'
    echo
    echo "# VmRSS every $STEP requests"
    cat "$TREND"
} | tee "$RUN_DIR/report.txt"
bench_log "logs: $RUN_DIR"
