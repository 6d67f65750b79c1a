#!/usr/bin/env bash
# bench/runtime.sh - agent runtime: per-turn overhead of sync runs, and many
# concurrent runs. Targets (issue "Agent runtime", Performance):
#   1. runtime overhead per turn, excluding model and tool time, p50 < 0.2 ms
#   2. 1,000 concurrent sync runs (mock model, 100 ms latency) complete
#      without errors; report runs/s and RSS per active run
# (3, sandboxed exec start, is bench/sandbox.sh.)
#
# One agenthub (WORKERS workers, SQLite store in RUN_DIR, access log off, log
# warn, rate limits off) with three agents from an agents_dir:
#   bench-echo  model mock (in-process mock provider, model "echo"), no tools
#   bench-tool  model mock, one http tool "ping" -> bench/rt_tool_server.mjs
#               (node, 127.0.0.1, answers {"ok":true}); input
#               'call_tool ping {"n":1}' makes each run 2 turns: tool call,
#               then "tool said: {"ok":true}"
#   bench-slow  model slow (mock "echo?latency_ms=SLOW_MS")
#
# Phase "overhead" (target 1): for bench-echo and bench-tool, for each CONNS
# value, one unmeasured WARMUP wrk run and one measured DURATION wrk run
# (wrk -t1 -cC, bench/rt_runs.lua: POST /v1/agents/NAME/runs {"mode":"sync"}).
# /metrics is read before and after each measured run, and the difference
# gives, for exactly the runs of that wrk run:
#   - runs by final status (agenthub_runs_total; every one must be completed),
#     turns, tool calls
#   - agenthub_run_overhead_seconds (per turn: run time minus model and tool
#     time): count, mean (sum/count), p50 and p99 as the bucket they fall in
#     plus a linear interpolation inside it (as Prometheus' histogram_quantile)
#   - agenthub_run_duration_seconds and agenthub_tool_call_duration_seconds
#   - store write batches (agenthub_store_batches_total: one COMMIT each) and
#     usage batches, per run
# plus wrk's client-side latency p50/p99, and CPU% of agenthub, the tool
# server, wrk and everything else (lib.sh bench_wrk_lua). A run disturbed by
# other load (other% > OTHER_MAX or a foreign wrk) is measured again, up to
# RETRIES times.
#
# Phase "profile": perf record -e cpu-clock -F FREQ --call-graph CALLGRAPH -p
# <agenthub> for PROFILE_S s during a bench-echo wrk run at PROFILE_CONNS
# connections (not one of the measured runs); by-thread, by-DSO, top symbols
# (self) and agenthub's functions (inclusive).
#
# Phase "concurrent" (target 2): a fresh agenthub (new store), WARM_RUNS runs
# of bench-slow to warm it, 1 s idle, then bench/rt_concurrent.mjs: BURSTS x
# (CONCURRENCY runs POSTed at once, all awaited), then CONCURRENCY closed-loop
# clients for SUSTAIN_S s; one connection per run in flight. Every run must
# answer 200, status "completed", output "echo: hello". VmRSS of agenthub is
# sampled every 20 ms by the client; RSS per active run = (peak - idle) /
# CONCURRENCY, idle = VmRSS after the warm runs.
#
# Environment knobs [defaults]:
#   PHASES="overhead profile concurrent"   which phases to run, in this order
#   WORKERS=2 DURATION=10s WARMUP=2s CONNS="1 8" AGENTS="echo tool"
#   RETRIES=2 OTHER_MAX=20
#   PROFILE_S=10 PROFILE_CONNS=1 FREQ=999 CALLGRAPH=dwarf (dwarf, fp, none)
#   CONCURRENCY=1000 SLOW_MS=100 BURSTS=2 SUSTAIN_S=10 TIMEOUT_S=60 WARM_RUNS=50
#   CONC_PROFILE=0  1 = perf record the sustained part of phase "concurrent"
#                   (-> RUN_DIR/perf_concurrent.data; its numbers are then disturbed)
#   STORE_DIR=""   put the SQLite databases there instead of RUN_DIR (e.g.
#                  /dev/shm, to see what the file system costs); removed at exit
#   AGENTHUB_BIN, RUN_DIR, KEEP_RUN_DIR, QUIET_MAX, QUIET_PCT, WRK_WAIT_MAX: see lib.sh
#
# Usage: bash bench/runtime.sh
#        PHASES=overhead CONNS=1 bash bench/runtime.sh
BENCH_NAME=runtime
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PHASES=${PHASES:-overhead profile concurrent}
WORKERS=${WORKERS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-1 8}
AGENTS=${AGENTS:-echo tool}
RETRIES=${RETRIES:-2}
OTHER_MAX=${OTHER_MAX:-20}
PROFILE_S=${PROFILE_S:-10}
PROFILE_CONNS=${PROFILE_CONNS:-1}
FREQ=${FREQ:-999}
CALLGRAPH=${CALLGRAPH:-dwarf}
CONCURRENCY=${CONCURRENCY:-1000}
SLOW_MS=${SLOW_MS:-100}
BURSTS=${BURSTS:-2}
SUSTAIN_S=${SUSTAIN_S:-10}
TIMEOUT_S=${TIMEOUT_S:-60}
WARM_RUNS=${WARM_RUNS:-50}
CONC_PROFILE=${CONC_PROFILE:-0}
STORE_DIR=${STORE_DIR:-}
STORE_FILES=()
# remove databases put in STORE_DIR (e.g. /dev/shm) when the script exits
trap 'bench_cleanup; rm -f "${STORE_FILES[@]+"${STORE_FILES[@]}"}"' EXIT

bench_need wrk node curl awk pgrep timeout
[[ " $PHASES " != *" profile "* ]] || bench_need perf

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= 2 * CONCURRENCY + 256)) ||
    bench_die "RLIMIT_NOFILE $(ulimit -n) is too low for $CONCURRENCY runs in flight (client + server sockets)"

bench_pin_binary
AGENTHUB_ADMIN_KEY="sk-bench-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export AGENTHUB_ADMIN_KEY
export RUN_KEY=$AGENTHUB_ADMIN_KEY
RESULTS="$RUN_DIR/runtime_results.txt"
: >"$RESULTS"

# ------------------------------------------------------------ metrics -------
# hub_diag: what agenthub looks like when it stopped answering (threads,
# fds, sockets) -> RUN_DIR/logs/diag.txt
hub_diag() {
    local t
    {
        date
        grep -E 'State|VmRSS|Threads' "/proc/$AH_PID/status" 2>/dev/null
        echo "fds: $(bench_proc_fds "$AH_PID")"
        for t in /proc/"$AH_PID"/task/*; do
            echo "$(cat "$t/comm" 2>/dev/null) state=$(sed 's/^.*) //' "$t/stat" 2>/dev/null | cut -d' ' -f1) wchan=$(cat "$t/wchan" 2>/dev/null)"
        done
        echo "sockets to :$AH_PORT by state:"
        ss -Htan "( sport = :$AH_PORT or dport = :$AH_PORT )" | awk '{print $1}' | sort | uniq -c
        echo "listen queue:"
        ss -Hltn "sport = :$AH_PORT"
        echo "time-wait total: $(ss -Htan state time-wait | wc -l)"
    } >>"$RUN_DIR/logs/diag.txt" 2>&1
}
metrics_snap() {
    curl -s -m 5 "http://127.0.0.1:$AH_PORT/metrics" >"$1" && return 0
    hub_diag
    bench_die "GET /metrics failed (agenthub pid $AH_PID alive: $(kill -0 "$AH_PID" 2>/dev/null && echo yes || echo no)); see $RUN_DIR/logs/diag.txt"
}

# cdiff BEFORE AFTER METRIC [SUBSTR [SUBSTR]]: sum over series of METRIC whose
# line holds every SUBSTR, after minus before
cdiff() {
    awk -v m="$3" -v f1="${4:-}" -v f2="${5:-}" '
        FNR == 1 { fi++ }
        /^#/ { next }
        { n = $1; sub(/\{.*/, "", n) }
        n == m && (f1 == "" || index($1, f1)) && (f2 == "" || index($1, f2)) { s += (fi == 1 ? -$2 : $2) }
        END { printf "%.9g\n", s }' "$1" "$2"
}

# hist BEFORE AFTER METRIC [SUBSTR]: the histogram's change between the two
# snapshots as "n=<count> mean_ms=<..> p50_ms=<lo>-<hi>~<est> p99_ms=<lo>-<hi>~<est>":
# the bucket (lo, hi] holding the quantile, and an estimate interpolated
# linearly inside it (Prometheus histogram_quantile).
hist() {
    awk -v m="$3" -v f="${4:-}" '
        FNR == 1 { fi++ }
        /^#/ { next }
        { n = $1; sub(/\{.*/, "", n) }
        (f != "" && !index($1, f)) { next }
        n == m "_bucket" {
            match($1, /le="[^"]*"/); le = substr($1, RSTART + 4, RLENGTH - 5)
            if (!(le in seen)) { seen[le] = 1; order[++nb] = le }
            cum[le] += (fi == 1 ? -$2 : $2)
        }
        n == m "_sum"   { s += (fi == 1 ? -$2 : $2) }
        n == m "_count" { c += (fi == 1 ? -$2 : $2) }
        function q(p,   i, t, lo, hi, plo) {
            t = p * c; plo = 0
            for (i = 1; i <= nb; i++) {
                if (cum[order[i]] >= t) {
                    lo = (i == 1 ? 0 : order[i - 1]); hi = order[i]
                    if (hi == "+Inf") return sprintf("%g-inf~%g", lo * 1000, lo * 1000)
                    return sprintf("%g-%g~%.3f", lo * 1000, hi * 1000,
                        (lo + (hi - lo) * (t - plo) / (cum[hi] - plo)) * 1000)
                }
                plo = cum[order[i]]
            }
            return "-"
        }
        END {
            if (c <= 0) { print "n=0"; exit }
            printf "n=%d mean_ms=%.4f p50_ms=%s p99_ms=%s\n", c, s / c * 1000, q(0.5), q(0.99)
        }' "$1" "$2"
}

# thread_ticks PID: "<thread name> <utime+stime ticks>" per thread, summed by name
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        [[ -r "$t/stat" ]] && printf '%s %s\n' "$(tr ' ' '_' <"$t/comm")" "$(sed 's/^.*) //' "$t/stat" | awk '{print $12 + $13}')"
    done | awk '{ s[$1] += $2 } END { for (k in s) print k, s[k] }'
}
# thread_cpu BEFORE AFTER WALL_S: "name=<cpu%> ..." per thread name (100 = one core)
thread_cpu() {
    awk -v w="$3" -v hz="$(getconf CLK_TCK)" 'FNR == 1 { fi++ } { d[$1] += (fi == 1 ? -$2 : $2) }
        END { for (k in d) printf "%s=%.0f ", k, 100 * d[k] / hz / w; print "" }' "$1" "$2"
}

wait_idle_server() { # until agenthub has no request in flight but ours (10 s max)
    local _ n
    for _ in $(seq 1 100); do
        kill -0 "$AH_PID" 2>/dev/null || bench_die "agenthub (pid $AH_PID) is gone; see $RUN_DIR/logs/ and dmesg"
        n=$(curl -s -m 2 "http://127.0.0.1:$AH_PORT/metrics" | awk '$1 == "agenthub_http_requests_in_flight" { print $2 }') || n=""
        [[ "${n:-1}" -le 1 ]] && return 0
        sleep 0.1
    done
    bench_log "WARNING: agenthub still has requests in flight"
}

# ------------------------------------------------------------ servers -------
TOOL_PID="" TOOL_PORT=""
tool_start() {
    : >"$RUN_DIR/logs/tool.out"
    node "$BENCH_DIR/rt_tool_server.mjs" 0 >"$RUN_DIR/logs/tool.out" 2>"$RUN_DIR/logs/tool.err" &
    TOOL_PID=$!
    BENCH_PIDS+=("$TOOL_PID")
    local _
    for _ in $(seq 1 100); do
        TOOL_PORT=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9]*\)$|\1|p' "$RUN_DIR/logs/tool.out")
        [[ -n "$TOOL_PORT" ]] && break
        kill -0 "$TOOL_PID" 2>/dev/null || bench_die "tool server exited; see $RUN_DIR/logs/tool.err"
        sleep 0.05
    done
    [[ -n "$TOOL_PORT" ]] || bench_die "tool server did not start"
    bench_log "tool server (node) pid $TOOL_PID on 127.0.0.1:$TOOL_PORT"
}

write_agents() { # dir
    mkdir -p "$1"
    cat >"$1/bench.yaml" <<EOF
apiVersion: agenthub/v1
kind: Agent
metadata: { name: bench-echo }
spec:
  model: mock
  instructions: "You are the runtime benchmark agent."
  limits: { concurrency: 0 }
---
apiVersion: agenthub/v1
kind: Agent
metadata: { name: bench-tool }
spec:
  model: mock
  instructions: "You are the runtime benchmark agent."
  tools:
    - type: http
      name: ping
      description: Answers ok.
      url: http://127.0.0.1:$TOOL_PORT/ping
      method: POST
      parameters: { type: object, properties: { n: { type: integer } } }
      timeout_s: 10
  limits: { concurrency: 0 }
---
apiVersion: agenthub/v1
kind: Agent
metadata: { name: bench-slow }
spec:
  model: slow
  instructions: "You are the runtime benchmark agent."
  limits: { concurrency: 0, timeout_s: 120 }
EOF
}

write_config() { # file db agents_dir
    cat >"$1" <<EOF
server: { listen: "127.0.0.1:0", workers: $WORKERS, access_log: false, max_connections: $((CONCURRENCY + 1000)) }
storage: { url: "sqlite://$2" }
log: { level: warn }
limits: { default_rpm: 0, default_tpm: 0, default_concurrency: 0 }
providers: [ { name: local, type: mock } ]
models:
  - { name: mock, targets: [ { provider: local, model: echo } ] }
  - { name: slow, targets: [ { provider: local, model: "echo?latency_ms=$SLOW_MS" } ] }
agents_dir: $3
EOF
}

input_for() { # agent -> run input
    case "$1" in
    tool) echo 'call_tool ping {"n":1}' ;;
    *) echo 'hello' ;;
    esac
}
output_for() { # agent -> the run output it must give
    case "$1" in
    tool) echo 'tool said: {"ok":true}' ;;
    *) echo 'echo: hello' ;;
    esac
}

check_run() { # agent: one run by curl, must complete with the expected output
    local a=$1 body out
    body=$(node -e 'process.stdout.write(JSON.stringify({input: process.argv[1], mode: "sync"}))' "$(input_for "$a")")
    out=$(curl -s -m 10 -H "Authorization: Bearer $AGENTHUB_ADMIN_KEY" -H 'Content-Type: application/json' \
        -d "$body" "http://127.0.0.1:$AH_PORT/v1/agents/bench-$a/runs") || bench_die "check run bench-$a: curl failed"
    node -e '
        const r = JSON.parse(process.argv[1]);
        if (r.status !== "completed" || r.output !== process.argv[2]) { console.error(process.argv[1]); process.exit(1); }' \
        "$out" "$(output_for "$a")" || bench_die "check run bench-$a failed: ${out:0:400}"
    bench_log "check bench-$a: completed, output '$(output_for "$a")'"
}

start_hub() { # name
    local dir="$RUN_DIR/$1"
    mkdir -p "$dir"
    write_agents "$dir/agents"
    local db="$dir/agenthub.db"
    if [[ -n "$STORE_DIR" ]]; then
        db="$STORE_DIR/agenthub_$1.db"
        rm -f "$db" "$db-wal" "$db-shm"
        STORE_FILES+=("$db" "$db-wal" "$db-shm")
    fi
    AH_DB=$db
    write_config "$dir/agenthub.yaml" "$db" "$dir/agents"
    ah_start "$dir/agenthub.yaml" "$RUN_DIR/logs/agenthub_$1"
}

# ------------------------------------------------------------ phase: overhead
measure() { # agent conns
    local a=$1 c=$2 url res try b="$RUN_DIR/tmp/m_before.txt" f="$RUN_DIR/tmp/m_after.txt" w0 w1
    url="http://127.0.0.1:$AH_PORT/v1/agents/bench-$a/runs"
    RUN_INPUT=$(input_for "$a")
    export RUN_INPUT
    if [[ "$WARMUP" != 0 ]]; then
        bench_wait_no_wrk
        bench_log "warm-up bench-$a c=$c $WARMUP"
        bench_wrk_lua "warmup_${a}" "$c" "$WARMUP" "$url" "$BENCH_DIR/rt_runs.lua" "" "" >/dev/null
        wait_idle_server
    fi
    for try in $(seq 0 "$RETRIES"); do
        bench_wait_no_wrk
        bench_wait_quiet
        metrics_snap "$b"
        thread_ticks "$AH_PID" >"$RUN_DIR/tmp/th0"
        w0=$EPOCHREALTIME
        bench_log "measure bench-$a c=$c $DURATION"
        res=$(bench_wrk_lua "${a}" "$c" "$DURATION" "$url" "$BENCH_DIR/rt_runs.lua" "$AH_PID" "$TOOL_PID") || exit 1
        w1=$EPOCHREALTIME
        thread_ticks "$AH_PID" >"$RUN_DIR/tmp/th1"
        (($(kv "$res" errors) == 0)) || {
            hub_diag
            bench_log "WARNING: wrk saw $(kv "$res" errors) socket errors (bench-$a c=$c); see $RUN_DIR/wrk/${a}_c${c}_$DURATION.txt and logs/diag.txt"
        }
        wait_idle_server
        metrics_snap "$f"
        (($(kv "$res" other) <= OTHER_MAX && $(kv "$res" foreign_wrk) == 0)) && break
        ((try < RETRIES)) && bench_log "disturbed (other $(kv "$res" other)%, foreign wrk $(kv "$res" foreign_wrk)); measuring again"
    done
    local runs done_ok turns tools terr batches ubatches
    runs=$(cdiff "$b" "$f" agenthub_runs_total "agent=\"bench-$a\"")
    done_ok=$(cdiff "$b" "$f" agenthub_runs_total "agent=\"bench-$a\"" 'status="completed"')
    turns=$(cdiff "$b" "$f" agenthub_run_turns_total "agent=\"bench-$a\"")
    tools=$(cdiff "$b" "$f" agenthub_tool_calls_total "agent=\"bench-$a\"" 'status="ok"')
    terr=$(cdiff "$b" "$f" agenthub_tool_calls_total "agent=\"bench-$a\"" 'status="error"')
    batches=$(cdiff "$b" "$f" agenthub_store_batches_total)
    ubatches=$(cdiff "$b" "$f" agenthub_usage_batches_total)
    {
        echo "ROW agent=bench-$a conns=$c $res runs=$runs completed=$done_ok not_completed=$((runs - done_ok)) turns=$turns tool_ok=$tools tool_error=$terr store_batches=$batches usage_batches=$ubatches"
        echo "  overhead_per_turn $(hist "$b" "$f" agenthub_run_overhead_seconds)"
        echo "  run_duration      $(hist "$b" "$f" agenthub_run_duration_seconds "agent=\"bench-$a\"")"
        echo "  thread_cpu_pct    $(thread_cpu "$RUN_DIR/tmp/th0" "$RUN_DIR/tmp/th1" "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')")"
        [[ "$a" != tool ]] || echo "  tool_call         $(hist "$b" "$f" agenthub_tool_call_duration_seconds 'tool="ping"')"
    } | tee -a "$RESULTS"
    cp "$b" "$RUN_DIR/wrk/metrics_${a}_c${c}_before.txt"
    cp "$f" "$RUN_DIR/wrk/metrics_${a}_c${c}_after.txt"
}

phase_overhead() {
    local a c m="$RUN_DIR/tmp/m_end.txt" runs events size
    for a in $AGENTS; do
        for c in $CONNS; do measure "$a" "$c"; done
    done
    # store growth: database + WAL bytes per run stored so far (all runs of this hub)
    metrics_snap "$m"
    runs=$(awk '$1 ~ /^agenthub_runs_total\{/ { s += $2 } END { printf "%d", s }' "$m")
    size=$(($(stat -c %s "$AH_DB") + $(stat -c %s "$AH_DB-wal" 2>/dev/null || echo 0)))
    events=$(command -v sqlite3 >/dev/null && sqlite3 -readonly "$AH_DB" 'SELECT count(*) FROM run_events' 2>/dev/null || echo "?")
    echo "STORE runs=$runs db_plus_wal_bytes=$size bytes_per_run=$((size / (runs > 0 ? runs : 1))) run_events_rows=$events" | tee -a "$RESULTS"
}

# ------------------------------------------------------------ phase: profile
phase_profile() {
    local url="http://127.0.0.1:$AH_PORT/v1/agents/bench-echo/runs" data="$RUN_DIR/perf.data" cg=() res
    perf stat -e cpu-clock true >/dev/null 2>&1 || bench_die "perf cannot count cpu-clock here (perf_event_paranoid?)"
    [[ "$CALLGRAPH" == none ]] || cg=(--call-graph "$CALLGRAPH")
    RUN_INPUT=$(input_for echo)
    export RUN_INPUT
    bench_wait_no_wrk
    bench_wait_quiet
    bench_log "profile: perf record ${PROFILE_S}s during bench-echo c=$PROFILE_CONNS"
    perf record -e cpu-clock -F "$FREQ" "${cg[@]}" -p "$AH_PID" -o "$data" -- sleep "$PROFILE_S" \
        >"$RUN_DIR/logs/perf_record.txt" 2>&1 &
    local perf_pid=$!
    BENCH_PIDS+=("$perf_pid")
    res=$(bench_wrk_lua profiled_echo "$PROFILE_CONNS" "$((PROFILE_S + 1))s" "$url" "$BENCH_DIR/rt_runs.lua" "$AH_PID" "") || exit 1
    wait "$perf_pid" || bench_log "perf record exited non-zero; see $RUN_DIR/logs/perf_record.txt"
    bench_forget_pid "$perf_pid"
    (
        set +o pipefail # head closes the pipe early
        echo "# perf: bench-echo sync runs, wrk -t1 -c$PROFILE_CONNS, ${PROFILE_S}s, $WORKERS workers, cpu-clock @ $FREQ Hz, call graph $CALLGRAPH"
        echo "# load while profiled: $res"
        echo "## by thread (self)"
        perf report -i "$data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -10
        echo "## by DSO (self)"
        perf report -i "$data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
        echo "## top symbols (self)"
        perf report -i "$data" --no-children --sort dso,sym --stdio -g none --percent-limit 0.4 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -45
        if [[ "$CALLGRAPH" != none ]]; then
            echo "## inclusive (children) >= 1.5 %, all DSOs, top 90"
            perf report -i "$data" --children --sort dso,sym --stdio -g none --percent-limit 1.5 2>/dev/null |
                grep -v '^#' | grep -v '^$' | head -90
        fi
    ) >"$RUN_DIR/profile.txt"
    bench_log "profile report: $RUN_DIR/profile.txt (perf report -i $data)"
}

# ------------------------------------------------------------ phase: concurrent
phase_concurrent() {
    local idle0 b="$RUN_DIR/tmp/c_before.txt" f="$RUN_DIR/tmp/c_after.txt" t0 t1 w0 w1 rc=0 out="$RUN_DIR/concurrent.txt"
    start_hub concurrent
    idle0=$(bench_rss_kib "$AH_PID")
    local url="http://127.0.0.1:$AH_PORT/v1/agents/bench-slow/runs"
    bench_log "warm-up: $WARM_RUNS bench-slow runs (10 at a time)"
    timeout $((TIMEOUT_S + 30)) node "$BENCH_DIR/rt_concurrent.mjs" --url "$url" --key "$AGENTHUB_ADMIN_KEY" \
        --pid "$AH_PID" --concurrency 10 --bursts $(((WARM_RUNS + 9) / 10)) --sustain-s 0 \
        >"$RUN_DIR/logs/concurrent_warmup.txt" 2>&1 || bench_die "warm-up runs failed; see $RUN_DIR/logs/concurrent_warmup.txt"
    sleep 1
    bench_wait_no_wrk
    bench_wait_quiet
    metrics_snap "$b"
    bench_log "concurrent: $BURSTS burst(s) of $CONCURRENCY runs, then $CONCURRENCY clients for ${SUSTAIN_S}s (model latency ${SLOW_MS} ms)"
    t0=$(bench_cpu_ticks "$AH_PID")
    thread_ticks "$AH_PID" >"$RUN_DIR/tmp/th0"
    w0=$EPOCHREALTIME
    timeout $((BURSTS * (TIMEOUT_S + 5) + SUSTAIN_S + TIMEOUT_S + 30)) node "$BENCH_DIR/rt_concurrent.mjs" \
        --url "$url" --key "$AGENTHUB_ADMIN_KEY" --pid "$AH_PID" --concurrency "$CONCURRENCY" \
        --bursts "$BURSTS" --sustain-s "$SUSTAIN_S" --timeout-s "$TIMEOUT_S" >"$out" 2>"$RUN_DIR/logs/concurrent.err" &
    local cpid=$!
    BENCH_PIDS+=("$cpid")
    if [[ "$CONC_PROFILE" == 1 ]]; then
        # the bursts take ~1 s; sample the sustained part
        sleep 2
        bench_log "profile: perf record $((SUSTAIN_S - 2))s of the sustained concurrent runs"
        perf record -e cpu-clock -F "$FREQ" --call-graph "$CALLGRAPH" -p "$AH_PID" -o "$RUN_DIR/perf_concurrent.data" \
            -- sleep $((SUSTAIN_S - 2)) >"$RUN_DIR/logs/perf_record_concurrent.txt" 2>&1 ||
            bench_log "perf record exited non-zero; see $RUN_DIR/logs/perf_record_concurrent.txt"
    fi
    wait "$cpid" || rc=$?
    bench_forget_pid "$cpid"
    w1=$EPOCHREALTIME
    t1=$(bench_cpu_ticks "$AH_PID")
    thread_ticks "$AH_PID" >"$RUN_DIR/tmp/th1"
    wait_idle_server
    metrics_snap "$f"
    local runs ok
    runs=$(cdiff "$b" "$f" agenthub_runs_total 'agent="bench-slow"')
    ok=$(cdiff "$b" "$f" agenthub_runs_total 'agent="bench-slow"' 'status="completed"')
    {
        echo "CONCURRENT concurrency=$CONCURRENCY model_latency_ms=$SLOW_MS workers=$WORKERS client_exit=$rc idle_rss_at_start_kib=$idle0 hwm_kib=$(bench_rss_kib "$AH_PID" VmHWM)"
        sed 's/^/  /' "$out"
        echo "  server: runs=$runs completed=$ok not_completed=$((runs - ok))" \
            "store_batches=$(cdiff "$b" "$f" agenthub_store_batches_total)" \
            "store_errors=$(cdiff "$b" "$f" agenthub_store_errors_total)" \
            "conn_rejected=$(cdiff "$b" "$f" agenthub_http_connections_rejected_total)" \
            "cpu_pct=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v a="$w0" -v b="$w1" 'BEGIN { printf "%.0f", 100 * t / hz / (b - a) }')"
        echo "  thread_cpu_pct $(thread_cpu "$RUN_DIR/tmp/th0" "$RUN_DIR/tmp/th1" "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')")"
        echo "  run_duration $(hist "$b" "$f" agenthub_run_duration_seconds 'agent="bench-slow"')"
        echo "  overhead_per_turn $(hist "$b" "$f" agenthub_run_overhead_seconds)"
    } | tee -a "$RESULTS"
    ((rc == 0)) || bench_log "WARNING: some concurrent runs failed; see $RUN_DIR/logs/concurrent.err"
    ah_stop "$AH_PID"
}

# ------------------------------------------------------------ main ----------
tool_start
bench_log "machine: $(nproc) cpus, $(uname -r); binary sha256 $(sha256sum "$AGENTHUB_BIN" | cut -c1-12)"
if [[ " $PHASES " == *" overhead "* || " $PHASES " == *" profile "* ]]; then
    start_hub overhead
    for a in echo tool slow; do check_run "$a"; done
    [[ " $PHASES " != *" overhead "* ]] || phase_overhead
    [[ " $PHASES " != *" profile "* ]] || phase_profile
    ah_stop "$AH_PID"
fi
[[ " $PHASES " != *" concurrent "* ]] || phase_concurrent
bench_log "results: $RESULTS"
cat "$RESULTS"
[[ ! -f "$RUN_DIR/profile.txt" ]] || bench_log "profile: $RUN_DIR/profile.txt"
