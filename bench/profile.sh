#!/usr/bin/env bash
# bench/profile.sh - where agenthub spends its CPU under the bench/http.sh
# load (GET /healthz, wrk -t1 -c32): perf record of the agenthub process only
# (user + kernel, software cpu-clock event, since this VM exposes no hardware
# counters), then the top symbols, the split by DSO and, with CALLGRAPH=dwarf,
# callers of the hot spots.
#
# Environment knobs [defaults]:
#   CONNS=32  DURATION=10s  WARMUP=3s  WORKERS=2
#   ACCESS_LOG=true  LOG_LEVEL=info   (run again with false / warn to compare)
#   CALLGRAPH=dwarf   perf --call-graph mode (dwarf, fp, lbr, none); dwarf works
#                     without frame pointers but writes big files
#   FREQ=1999         samples per second
#   TOP=30            rows in the symbol table
#   AGENTHUB_BIN, RUN_DIR, KEEP_RUN_DIR: see bench/lib.sh
#
# Usage: bash bench/profile.sh
#        ACCESS_LOG=false LOG_LEVEL=warn bash bench/profile.sh
BENCH_NAME=profile
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS=${CONNS:-32}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
WORKERS=${WORKERS:-2}
ACCESS_LOG=${ACCESS_LOG:-true}
LOG_LEVEL=${LOG_LEVEL:-info}
CALLGRAPH=${CALLGRAPH:-dwarf}
FREQ=${FREQ:-1999}
TOP=${TOP:-30}
bench_need perf wrk curl ss timeout
perf stat -e cpu-clock true >/dev/null 2>&1 || bench_die "perf cannot count cpu-clock here (perf_event_paranoid?)"

CONF="$RUN_DIR/profile.yaml"
ah_write_config "$CONF" "127.0.0.1:0" "$RUN_DIR/profile.db" "$ACCESS_LOG" "$LOG_LEVEL" "$WORKERS"
AH_STDERR=/dev/null ah_start "$CONF" "$RUN_DIR/logs/agenthub"
URL="http://127.0.0.1:$AH_PORT/healthz"

[[ "$WARMUP" == 0 ]] || bench_wrk warmup "$CONNS" "$WARMUP" "$URL" >/dev/null
if declare -F bench_wait_no_wrk >/dev/null; then bench_wait_no_wrk "${WRK_WAIT_MAX:-1800}"; fi
bench_wait_quiet
cg=()
[[ "$CALLGRAPH" == none ]] || cg=(--call-graph "$CALLGRAPH")
DATA="$RUN_DIR/perf.data"
secs=$(bench_secs "$DURATION")
# perf stops by itself after the sleep; wrk runs a second longer so the whole
# sampled window is under load.
perf record -e cpu-clock -F "$FREQ" "${cg[@]}" -p "$AH_PID" -o "$DATA" -- sleep "$secs" \
    >"$RUN_DIR/logs/perf_record.txt" 2>&1 &
perf_pid=$!
BENCH_PIDS+=("$perf_pid")
RES=$(bench_wrk profiled "$CONNS" "$((secs + 1))s" "$URL" "$AH_PID")
wait "$perf_pid" || bench_log "perf record exited non-zero; see $RUN_DIR/logs/perf_record.txt"
bench_forget_pid "$perf_pid"
ah_stop "$AH_PID"

{
    echo "# perf profile of agenthub: GET /healthz, wrk -t1 -c$CONNS, $DURATION, $WORKERS workers,"
    echo "# access_log $ACCESS_LOG, log.level $LOG_LEVEL, cpu-clock @ ${FREQ} Hz, call graph $CALLGRAPH"
    echo "# load during the profile: rps=$(kv "$RES" rps) p50_ms=$(kv "$RES" p50_ms) p99_ms=$(kv "$RES" p99_ms) server cpu%=$(kv "$RES" cpu) other%=$(kv "$RES" other)"
    echo
    echo "## by DSO (self)"
    perf report -i "$DATA" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
    echo
    echo "## top $TOP symbols (self)"
    perf report -i "$DATA" --no-children --sort sym --stdio -g none --percent-limit 0.3 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -"$TOP"
    if [[ "$CALLGRAPH" != none ]]; then
        echo
        echo "## agenthub's own functions, inclusive (children), top 25"
        perf report -i "$DATA" --children --sort sym --stdio -g none --dsos "$(basename "$AGENTHUB_BIN")" 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -25
    fi
} | tee "$RUN_DIR/report.txt"
bench_log "perf data: $DATA (perf report -i $DATA)"
