#!/usr/bin/env bash
# bench/queue.sh - durable runs: queue throughput and takeover. Targets (issue
# "Durable runs", Performance):
#   1. queue throughput (create + claim + complete of no-op runs) >= 5,000
#      runs/s on SQLite and >= 2,000 runs/s on PostgreSQL
#   2. after kill -9, orphaned runs resume within 2 x runs.lease_s
#
# Agents (agents_dir): q-noop = model mock (in-process mock provider, "echo",
# instant), no tools: one model turn, then completed. q-slow = model slow
# (mock "echo?latency_ms=SLOW_MS"). Hub config: WORKERS workers, access log
# off, log warn, rate limits off, runs { max_concurrent: 10000,
# claim_interval_s: CLAIM_S }.
#
# Phases (PHASES, in this order):
#   sqlite      one hub on a fresh SQLite store (RUN_DIR or STORE_DIR)
#   postgres    one hub on a throwaway PostgreSQL (initdb --auth=trust, run
#               as user PG_USER [postgres], 127.0.0.1 on a free port, socket in
#               its own /tmp dir); once per PG_FSYNC value ("off on":
#               -c fsync=off, then the defaults fsync=on synchronous_commit=on)
#   takeover    target 2, on SQLite (below)
#   profile     perf record of the SQLite hub during an async load (below)
#
# Throughput, per backend (target 1):
#   - warm-up: async POSTs for WARMUP, then drain (unmeasured)
#   - async: wrk -t1 -cCONNS -dDURATION, bench/queue_post.lua, POST
#     /v1/agents/q-noop/runs {"input":"x","mode":"async"} (202 queued), then
#     wait until GET /v1/runs?status=queued and ?status=running are both empty
#     (polled every 0.1 s). From the store itself (sqlite3 / psql, read after
#     the drain), for every q-noop async run created since the wrk start:
#     throughput = completed / (last finished_at - first created_at), and
#     queue wait (started - created), created -> finished p50/p99/max, "lag" =
#     last finished - last created (how far completion trailed creation).
#     Every run must be completed. Also: wrk's POST rate and latency, CPU of
#     the hub by thread (store writer vs the worker loops) over wrk start ->
#     drained, PostgreSQL's CPU (postmaster + backends), store batches
#     (COMMITs) per run, and queue depth / completions sampled every 0.5 s
#     (RUN_DIR/wrk/*_timeline.txt).
#   - sync: the same wrk run with {"mode":"sync"} (200 with the finished run):
#     runs/s = wrk rps; completed runs checked from agenthub_runs_total.
#   A run disturbed by other load (other% > OTHER_MAX or a foreign wrk) is
#   measured again, up to RETRIES times.
#
# Takeover (target 2), TAKEOVER_ROUNDS times, each on a fresh SQLite store:
# hub A (runs.lease_s LEASE_S), TAKEOVER_RUNS async q-slow runs POSTed to A,
# wait until all are running and owned by A (store: status, started_at,
# lease_owner), then start hub B on the same store, check the runs are still
# running and A's, kill -9 A and note the time. Then from the store: first
# and last run.resumed event (ts) after the kill, last finished_at, every run
# completed exactly once (one run.completed event) on B, attempt = 2.
# Target: kill -> last run.resumed <= 2 x LEASE_S. Completion adds the model
# call made again (SLOW_MS).
#
# Profile, per PROFILE_STORES: perf record -e cpu-clock -F FREQ --call-graph
# CALLGRAPH -p <hub>[,<its PostgreSQL backends>] for PROFILE_S s inside a
# (PROFILE_S + 2) s async wrk run on a fresh hub (PostgreSQL: fsync=off); by
# thread, by DSO, top symbols, inclusive; RUN_DIR/profile_<store>.txt.
#
# Environment knobs [defaults]:
#   PHASES="sqlite postgres takeover profile"
#   WORKERS=2 CONNS=32 DURATION=10s WARMUP=2s CLAIM_S=0.05 MAX_CONCURRENT=10000
#   MODES="async sync" DRAIN_MAX_S=300 RETRIES=1 OTHER_MAX=25
#   PG_FSYNC="off on" PG_BIN=/usr/lib/postgresql/15/bin PG_USER=postgres
#   PG_STATS=1  load pg_stat_statements; per measured run: statements per run
#               and server execution time (RUN_DIR/pg_statements_*.txt)
#   TAKEOVER_ROUNDS=3 TAKEOVER_RUNS=50 LEASE_S=2 SLOW_MS=2000
#   PROFILE_S=5 FREQ=999 CALLGRAPH=dwarf (dwarf, fp, none) PROFILE_STORES="sqlite postgres"
#   STORE_DIR=""  put the SQLite databases there (e.g. /dev/shm); removed at exit
#   AGENTHUB_BIN, RUN_DIR, KEEP_RUN_DIR, QUIET_MAX, QUIET_PCT, WRK_WAIT_MAX: see lib.sh
#
# Usage: bash bench/queue.sh
#        PHASES=takeover bash bench/queue.sh
#        PHASES="postgres" PG_FSYNC=off MODES=async bash bench/queue.sh
BENCH_NAME=queue
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PHASES=${PHASES:-sqlite postgres takeover profile}
WORKERS=${WORKERS:-2}
CONNS=${CONNS:-32}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CLAIM_S=${CLAIM_S:-0.05}
MAX_CONCURRENT=${MAX_CONCURRENT:-10000}
MODES=${MODES:-async sync}
DRAIN_MAX_S=${DRAIN_MAX_S:-300}
RETRIES=${RETRIES:-1}
OTHER_MAX=${OTHER_MAX:-25}
PG_FSYNC=${PG_FSYNC:-off on}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_USER=${PG_USER:-postgres}
PG_STATS=${PG_STATS:-1}
TAKEOVER_ROUNDS=${TAKEOVER_ROUNDS:-3}
TAKEOVER_RUNS=${TAKEOVER_RUNS:-50}
LEASE_S=${LEASE_S:-2}
SLOW_MS=${SLOW_MS:-2000}
PROFILE_S=${PROFILE_S:-5}
PROFILE_STORES=${PROFILE_STORES:-sqlite postgres}
FREQ=${FREQ:-999}
CALLGRAPH=${CALLGRAPH:-dwarf}
STORE_DIR=${STORE_DIR:-}
STORE_FILES=()
PG_DIRS=() # data directories of the PostgreSQL servers we started
PG_PID=""

pg_cleanup() {
    local d
    for d in "${PG_DIRS[@]+"${PG_DIRS[@]}"}"; do
        [[ -f "$d/data/postmaster.pid" ]] &&
            runuser -u "$PG_USER" -- "$PG_BIN/pg_ctl" stop -w -t 30 -m fast -D "$d/data" >/dev/null 2>&1
        rm -rf "$d"
    done
    PG_DIRS=()
}
trap 'bench_cleanup; pg_cleanup; rm -f "${STORE_FILES[@]+"${STORE_FILES[@]}"}"' EXIT

bench_need wrk curl awk pgrep timeout jq sqlite3
[[ " $PHASES " != *" profile "* ]] || bench_need perf
[[ " $PHASES " != *" postgres "* ]] || bench_need psql runuser

bench_pin_binary
AGENTHUB_ADMIN_KEY="sk-bench-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export AGENTHUB_ADMIN_KEY
export RUN_KEY=$AGENTHUB_ADMIN_KEY
AUTH=(-H "Authorization: Bearer $AGENTHUB_ADMIN_KEY")
RESULTS="$RUN_DIR/queue_results.txt"
: >"$RESULTS"

now_ms() { local t=$EPOCHREALTIME; echo "${t%.*}${t#*.}" | cut -c1-13; }

# ------------------------------------------------------------ store access --
# STORE_KIND sqlite|postgres, STORE_DB (sqlite path), PG_PORT (postgres)
sq() { # SQL -> rows, columns separated by one space
    if [[ "$STORE_KIND" == sqlite ]]; then
        sqlite3 -readonly -cmd '.timeout 10000' -separator ' ' "$STORE_DB" "$1"
    else
        psql -X -q -At -F ' ' -h 127.0.0.1 -p "$PG_PORT" -U agenthub -d agenthub -c "$1"
    fi
}

# pctl P: the P-th percentile (nearest rank) of the numbers on stdin
pctl() { sort -n | awk -v p="$1" '{ v[NR] = $1 } END { if (!NR) { print "-"; exit } i = int(p / 100 * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }'; }

# ------------------------------------------------------------ metrics -------
metrics_snap() { curl -s -m 5 "http://127.0.0.1:$AH_PORT/metrics" >"$1" || bench_die "GET /metrics failed"; }
# cdiff BEFORE AFTER METRIC [SUBSTR [SUBSTR]]: sum over matching series, after - before
cdiff() {
    awk -v m="$3" -v f1="${4:-}" -v f2="${5:-}" '
        FNR == 1 { fi++ }
        /^#/ { next }
        { n = $1; sub(/\{.*/, "", n) }
        n == m && (f1 == "" || index($1, f1)) && (f2 == "" || index($1, f2)) { s += (fi == 1 ? -$2 : $2) }
        END { printf "%.9g\n", s }' "$1" "$2"
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
        END { for (k in d) if (d[k] > 0) printf "%s=%.0f ", k, 100 * d[k] / hz / w; print "" }' "$1" "$2"
}

# ------------------------------------------------------------ hubs ----------
write_agents() { # dir
    mkdir -p "$1"
    cat >"$1/queue.yaml" <<EOF
apiVersion: agenthub/v1
kind: Agent
metadata: { name: q-noop }
spec:
  model: mock
  instructions: "You are the queue benchmark agent."
  limits: { concurrency: 0 }
---
apiVersion: agenthub/v1
kind: Agent
metadata: { name: q-slow }
spec:
  model: slow
  instructions: "You are the queue benchmark agent."
  limits: { concurrency: 0, timeout_s: 120 }
EOF
}

write_config() { # file storage_url agents_dir [lease_s]
    cat >"$1" <<EOF
server: { listen: "127.0.0.1:0", workers: $WORKERS, access_log: false }
storage: { url: "$2" }
log: { level: warn }
limits: { default_rpm: 0, default_tpm: 0, default_concurrency: 0 }
providers: [ { name: local, type: mock } ]
models:
  - { name: mock, targets: [ { provider: local, model: echo } ] }
  - { name: slow, targets: [ { provider: local, model: "echo?latency_ms=$SLOW_MS" } ] }
runs: { max_concurrent: $MAX_CONCURRENT, claim_interval_s: $CLAIM_S${4:+, lease_s: $4} }
agents_dir: $3
EOF
}

sqlite_path() { # name -> a fresh database path
    local db="$RUN_DIR/$1/agenthub.db"
    if [[ -n "$STORE_DIR" ]]; then
        db="$STORE_DIR/agenthub_queue_$1.db"
        STORE_FILES+=("$db" "$db-wal" "$db-shm")
    fi
    mkdir -p "$RUN_DIR/$1"
    rm -f "$db" "$db-wal" "$db-shm"
    echo "$db"
}

start_hub() { # name storage_url [lease_s]
    local dir="$RUN_DIR/$1"
    mkdir -p "$dir"
    write_agents "$dir/agents"
    write_config "$dir/agenthub.yaml" "$2" "$dir/agents" "${3:-}"
    ah_start "$dir/agenthub.yaml" "$RUN_DIR/logs/agenthub_$1"
}

check_run() { # one sync q-noop run must complete with "echo: x"
    local out
    out=$(curl -s -m 10 "${AUTH[@]}" -H 'Content-Type: application/json' -d '{"input":"x","mode":"sync"}' \
        "http://127.0.0.1:$AH_PORT/v1/agents/q-noop/runs") || bench_die "check run: curl failed"
    [[ $(jq -r '.status + "|" + .output' <<<"$out") == "completed|echo: x" ]] || bench_die "check run failed: ${out:0:300}"
}

runs_empty() { # status: true when GET /v1/runs?status=S has no run
    local out
    out=$(curl -s -m 5 "${AUTH[@]}" "http://127.0.0.1:$AH_PORT/v1/runs?status=$1&limit=1") || return 1
    [[ $(jq -r '.data | length' <<<"$out" 2>/dev/null) == 0 ]]
}

drain() { # until no run is queued or running (twice in a row); prints the seconds waited
    local t0=$SECONDS ok=0
    while ((SECONDS - t0 < DRAIN_MAX_S)); do
        kill -0 "$AH_PID" 2>/dev/null || bench_die "agenthub (pid $AH_PID) is gone; see $RUN_DIR/logs/"
        if runs_empty queued && runs_empty running; then
            ok=$((ok + 1))
            ((ok >= 2)) && return 0
        else
            ok=0
        fi
        sleep 0.1
    done
    bench_log "WARNING: runs still queued/running after ${DRAIN_MAX_S}s"
    return 1
}

sampler() { # file: "ms depth completed" every 0.5 s until killed
    while :; do
        curl -s -m 2 "http://127.0.0.1:$AH_PORT/metrics" | awk -v t="$(now_ms)" '
            $1 == "agenthub_queue_depth" { d = $2 }
            $1 ~ /^agenthub_runs_total\{/ && index($1, "agent=\"q-noop\"") && index($1, "status=\"completed\"") { c += $2 }
            END { print t, d, c + 0 }' >>"$1"
        sleep 0.5
    done
}

# ------------------------------------------------------------ throughput ----
pgss_on() { [[ "$STORE_KIND" == postgres && "$PG_STATS" == 1 ]]; }
# pgss_dump FILE RUNS: statements of the agenthub database since the reset ->
# FILE (top 30 by calls); prints one summary line
pgss_dump() {
    local dbq="dbid = (SELECT oid FROM pg_database WHERE datname = 'agenthub') AND query NOT LIKE '%pg_stat_statements%'"
    sq "SELECT calls, ROUND(total_exec_time::numeric, 1), ROUND(mean_exec_time::numeric, 4), LEFT(regexp_replace(query, '\s+', ' ', 'g'), 140) FROM pg_stat_statements WHERE $dbq ORDER BY calls DESC LIMIT 30" >"$1"
    sq "SELECT SUM(calls), ROUND(SUM(total_exec_time)::numeric, 1) FROM pg_stat_statements WHERE $dbq" |
        awk -v r="$2" -v f="$1" '{ printf "  pg_statements calls=%d per_run=%.1f server_exec_ms=%.1f exec_us_per_run=%.1f (top statements: %s)\n", $1, (r > 0 ? $1 / r : 0), $2, (r > 0 ? $2 * 1000 / r : 0), f }'
}

measure() { # label mode [up_pid]
    local label=$1 mode=$2 up=${3:-} url res try b="$RUN_DIR/tmp/m_before.txt" f="$RUN_DIR/tmp/m_after.txt"
    local t0 w0 w1 wend spid tl="$RUN_DIR/wrk/${label}_${mode}_timeline.txt"
    url="http://127.0.0.1:$AH_PORT/v1/agents/q-noop/runs"
    export RUN_MODE=$mode
    for try in $(seq 0 "$RETRIES"); do
        bench_wait_no_wrk
        bench_wait_quiet
        metrics_snap "$b"
        if pgss_on; then sq "SELECT pg_stat_statements_reset()" >/dev/null; fi
        thread_ticks "$AH_PID" >"$RUN_DIR/tmp/th0"
        local p0=0 p1=0
        [[ -n "$up" ]] && p0=$(bench_cpu_ticks "$up")
        : >"$tl"
        sampler "$tl" &
        spid=$!
        BENCH_PIDS+=("$spid")
        bench_log "measure $label $mode c=$CONNS $DURATION"
        t0=$(now_ms)
        w0=$EPOCHREALTIME
        res=$(bench_wrk_lua "${label}_${mode}" "$CONNS" "$DURATION" "$url" "$BENCH_DIR/queue_post.lua" "$AH_PID" "$up") || exit 1
        wend=$(now_ms)
        drain || true
        w1=$EPOCHREALTIME
        kill "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null || true
        bench_forget_pid "$spid"
        [[ -n "$up" ]] && p1=$(bench_cpu_ticks "$up")
        thread_ticks "$AH_PID" >"$RUN_DIR/tmp/th1"
        metrics_snap "$f"
        (($(kv "$res" other) <= OTHER_MAX && $(kv "$res" foreign_wrk) == 0)) && break
        ((try < RETRIES)) && bench_log "disturbed (other $(kv "$res" other)%, foreign wrk $(kv "$res" foreign_wrk)); measuring again"
    done
    local wall runs done_ok batches thr pgcpu
    wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", b - a }')
    runs=$(cdiff "$b" "$f" agenthub_runs_total 'agent="q-noop"')
    done_ok=$(cdiff "$b" "$f" agenthub_runs_total 'agent="q-noop"' 'status="completed"')
    batches=$(cdiff "$b" "$f" agenthub_store_batches_total)
    thr=$(thread_cpu "$RUN_DIR/tmp/th0" "$RUN_DIR/tmp/th1" "$wall")
    pgcpu="-"
    [[ -n "$up" ]] && pgcpu=$(awk -v t=$((p1 - p0)) -v hz="$(getconf CLK_TCK)" -v w="$wall" 'BEGIN { printf "%.0f", 100 * t / hz / w }')
    local row
    row="ROW store=$label mode=$mode conns=$CONNS $res finished_runs=$runs completed=$done_ok store_batches=$batches runs_per_batch=$(awk -v r="$runs" -v b="$batches" 'BEGIN { printf "%.1f", (b > 0 ? r / b : 0) }')"
    if [[ "$mode" == async ]]; then
        local w="agent = 'q-noop' AND mode = 'async' AND created_at >= $t0" s n ok c0 c1 f1 span
        s=$(sq "SELECT COUNT(*), SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), MIN(created_at), MAX(created_at), MAX(finished_at) FROM runs WHERE $w")
        read -r n ok c0 c1 f1 <<<"$s"
        span=$((f1 - c0))
        sq "SELECT started_at - created_at, finished_at - created_at FROM runs WHERE $w AND status = 'completed'" >"$RUN_DIR/tmp/lat.txt"
        row+=" store_runs=$n store_completed=$ok not_completed=$((n - ok)) span_ms=$span"
        row+=" throughput=$(awk -v n="$ok" -v s="$span" 'BEGIN { printf "%.0f", (s > 0 ? n * 1000 / s : 0) }')"
        row+=" create_rate=$(awk -v n="$n" -v s=$((c1 - c0)) 'BEGIN { printf "%.0f", (s > 0 ? n * 1000 / s : 0) }')"
        row+=" lag_ms=$((f1 - c1)) wrk_end_to_done_ms=$((f1 - wend))"
        row+=" wait_p50_ms=$(cut -d' ' -f1 "$RUN_DIR/tmp/lat.txt" | pctl 50) wait_p99_ms=$(cut -d' ' -f1 "$RUN_DIR/tmp/lat.txt" | pctl 99) wait_max_ms=$(cut -d' ' -f1 "$RUN_DIR/tmp/lat.txt" | pctl 100)"
        row+=" e2e_p50_ms=$(cut -d' ' -f2 "$RUN_DIR/tmp/lat.txt" | pctl 50) e2e_p99_ms=$(cut -d' ' -f2 "$RUN_DIR/tmp/lat.txt" | pctl 99)"
        row+=" depth_max=$(awk '$2 > m { m = $2 } END { print m + 0 }' "$tl")"
    fi
    {
        echo "$row"
        echo "  wall_s=$wall (wrk start -> drained)  pg_cpu_pct=$pgcpu  thread_cpu_pct $thr"
        if pgss_on; then pgss_dump "$RUN_DIR/pg_statements_${label}_${mode}.txt" "$runs"; fi
    } | tee -a "$RESULTS"
    cp "$b" "$RUN_DIR/wrk/metrics_${label}_${mode}_before.txt"
    cp "$f" "$RUN_DIR/wrk/metrics_${label}_${mode}_after.txt"
}

throughput() { # label [up_pid]
    local m
    check_run
    if [[ "$WARMUP" != 0 ]]; then
        bench_wait_no_wrk
        bench_log "warm-up $1 async $WARMUP"
        export RUN_MODE=async
        bench_wrk_lua "warmup_$1" "$CONNS" "$WARMUP" "http://127.0.0.1:$AH_PORT/v1/agents/q-noop/runs" \
            "$BENCH_DIR/queue_post.lua" "" "" >/dev/null
        drain || true
    fi
    for m in $MODES; do measure "$1" "$m" "${2:-}"; done
    echo "STORE $1 $(sq "SELECT COUNT(*) FROM runs") runs, $(sq "SELECT COUNT(*) FROM run_events") events" | tee -a "$RESULTS"
}

phase_sqlite() {
    STORE_KIND=sqlite
    STORE_DB=$(sqlite_path sqlite)
    start_hub sqlite "sqlite://$STORE_DB"
    throughput sqlite
    stat -c %s "$STORE_DB"* | awk '{ s += $1 } END { printf "STORE sqlite files %.1f MB\n", s / 1e6 }' | tee -a "$RESULTS"
    ah_stop "$AH_PID"
}

# ------------------------------------------------------------ postgres ------
PG_PORT="" PG_DIR=""
pg_start() { # fsync on|off
    [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] || bench_die "no PostgreSQL at $PG_BIN (apt-get install postgresql-15, or PG_BIN=)"
    id -u "$PG_USER" >/dev/null 2>&1 || bench_die "no user $PG_USER to run PostgreSQL as (PG_USER=)"
    PG_DIR=$(mktemp -d /tmp/ahbench-pg.XXXXXX)
    PG_DIRS+=("$PG_DIR")
    chown "$PG_USER:" "$PG_DIR"
    (cd "$PG_DIR" && runuser -u "$PG_USER" -- "$PG_BIN/initdb" -D "$PG_DIR/data" -U agenthub --auth=trust \
        --no-sync --no-locale -E UTF8 >"$PG_DIR/initdb.log" 2>&1) || bench_die "initdb failed; see $PG_DIR/initdb.log"
    PG_PORT=$(bench_free_port)
    local opts="-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=$1 -c max_connections=100"
    [[ "$PG_STATS" != 1 ]] || opts+=" -c shared_preload_libraries=pg_stat_statements"
    (cd "$PG_DIR" && runuser -u "$PG_USER" -- "$PG_BIN/pg_ctl" start -w -t 60 -D "$PG_DIR/data" -l "$PG_DIR/server.log" \
        -o "$opts" >"$PG_DIR/pg_ctl.log" 2>&1) || bench_die "PostgreSQL did not start; see $PG_DIR/server.log"
    PG_PID=$(head -1 "$PG_DIR/data/postmaster.pid")
    psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U agenthub -d postgres -c 'CREATE DATABASE agenthub' ||
        bench_die "CREATE DATABASE failed"
    [[ "$PG_STATS" != 1 ]] || psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U agenthub -d agenthub -c 'CREATE EXTENSION pg_stat_statements' ||
        bench_die "CREATE EXTENSION pg_stat_statements failed"
    bench_log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') pid $PG_PID on 127.0.0.1:$PG_PORT ($opts)"
    echo "PG fsync=$1: $(psql -X -At -h 127.0.0.1 -p "$PG_PORT" -U agenthub -d agenthub -c \
        "SELECT string_agg(name || '=' || setting, ' ') FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_level', 'shared_buffers')")" | tee -a "$RESULTS"
}
pg_stop() {
    runuser -u "$PG_USER" -- "$PG_BIN/pg_ctl" stop -w -t 60 -m fast -D "$PG_DIR/data" >/dev/null 2>&1 ||
        bench_log "WARNING: pg_ctl stop failed"
    rm -rf "$PG_DIR"
    local keep=() d
    for d in "${PG_DIRS[@]}"; do [[ "$d" == "$PG_DIR" ]] || keep+=("$d"); done
    PG_DIRS=("${keep[@]+"${keep[@]}"}")
    PG_PID=""
}

phase_postgres() {
    local fs
    STORE_KIND=postgres
    for fs in $PG_FSYNC; do
        pg_start "$fs"
        start_hub "pg_fsync_$fs" "postgres://agenthub@127.0.0.1:$PG_PORT/agenthub"
        throughput "pg_fsync_$fs" "$PG_PID"
        ah_stop "$AH_PID"
        pg_stop
    done
}

# ------------------------------------------------------------ takeover ------
takeover_round() { # round
    local r=$1 db a_pid a_port b_pid b_port i n owner nowner kill_ms exp_ms deadline
    STORE_KIND=sqlite
    db=$(sqlite_path "takeover_$r")
    STORE_DB=$db
    start_hub "takeover_${r}_a" "sqlite://$db" "$LEASE_S"
    a_pid=$AH_PID a_port=$AH_PORT
    for i in $(seq 1 "$TAKEOVER_RUNS"); do
        curl -s -m 10 -o /dev/null -w '%{http_code}\n' "${AUTH[@]}" -H 'Content-Type: application/json' \
            -d "{\"input\":\"slow $i\",\"mode\":\"async\"}" "http://127.0.0.1:$a_port/v1/agents/q-slow/runs"
    done | sort | uniq -c | awk '{ printf "%s x%s ", $2, $1 }' >"$RUN_DIR/tmp/codes"
    [[ $(<"$RUN_DIR/tmp/codes") == "202 x$TAKEOVER_RUNS " ]] || bench_die "takeover: POSTs answered $(<"$RUN_DIR/tmp/codes")"
    deadline=$((SECONDS + 10))
    while :; do
        read -r n nowner owner <<<"$(sq "SELECT COUNT(*), COUNT(DISTINCT lease_owner), MAX(lease_owner) FROM runs WHERE agent = 'q-slow' AND status = 'running' AND started_at IS NOT NULL")"
        ((n == TAKEOVER_RUNS)) && break
        ((SECONDS < deadline)) || bench_die "takeover: only $n of $TAKEOVER_RUNS runs started on hub A"
        sleep 0.02
    done
    ((nowner == 1)) || bench_die "takeover: runs owned by $nowner replicas before B started"
    start_hub "takeover_${r}_b" "sqlite://$db" "$LEASE_S"
    b_pid=$AH_PID b_port=$AH_PORT
    read -r n nowner exp_ms <<<"$(sq "SELECT COUNT(*), COUNT(DISTINCT lease_owner), MAX(lease_expires_at) FROM runs WHERE agent = 'q-slow' AND status = 'running' AND lease_owner = '$owner'")"
    ((n == TAKEOVER_RUNS)) || bench_die "takeover: only $n runs still running on A when B was ready (SLOW_MS too short?)"
    kill_ms=$(now_ms)
    kill -KILL "$a_pid"
    wait "$a_pid" 2>/dev/null || true
    bench_forget_pid "$a_pid"
    bench_log "round $r: killed hub A (pid $a_pid) at $kill_ms; $n runs were running on it, lease until +$((exp_ms - kill_ms)) ms"
    deadline=$((SECONDS + 60))
    while :; do
        n=$(sq "SELECT COUNT(*) FROM runs WHERE agent = 'q-slow' AND status IN ('completed', 'failed', 'cancelled', 'expired')")
        ((n == TAKEOVER_RUNS)) && break
        ((SECONDS < deadline)) || { bench_log "WARNING: takeover round $r: only $n runs finished 60 s after the kill"; break; }
        sleep 0.05
    done
    local first last fin ncomp att1 att2 done_evs resumed_on_b bnode
    read -r first last <<<"$(sq "SELECT MIN(ts), MAX(ts) FROM run_events WHERE type = 'run.resumed' AND ts >= $kill_ms")"
    read -r fin ncomp att1 att2 <<<"$(sq "SELECT MAX(finished_at), SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), MIN(attempt), MAX(attempt) FROM runs WHERE agent = 'q-slow'")"
    done_evs=$(sq "SELECT COUNT(*) FROM run_events e JOIN runs r ON r.id = e.run_id WHERE r.agent = 'q-slow' AND e.type = 'run.completed'")
    bnode=$(sq "SELECT MAX(lease_owner) FROM runs WHERE agent = 'q-slow'")
    resumed_on_b=$(sq "SELECT COUNT(DISTINCT run_id) FROM run_events WHERE type = 'run.resumed' AND data LIKE '%$bnode%'")
    local lim=$((2 * LEASE_S * 1000))
    echo "TAKEOVER round=$r runs=$TAKEOVER_RUNS lease_s=$LEASE_S slow_ms=$SLOW_MS lease_left_at_kill_ms=$((exp_ms - kill_ms)) kill_to_first_resumed_ms=$((first - kill_ms)) kill_to_last_resumed_ms=$((last - kill_ms)) kill_to_all_completed_ms=$((fin - kill_ms)) limit_2x_lease_ms=$lim resumed_runs_on_b=$resumed_on_b completed=$ncomp run_completed_events=$done_evs attempt=$att1-$att2 owner_b=$bnode $( ((last - kill_ms <= lim)) && echo PASS || echo FAIL)" | tee -a "$RESULTS"
    AH_PID=$b_pid
    AH_PORT=$b_port
    ah_stop "$b_pid"
}

phase_takeover() {
    local r
    for r in $(seq 1 "$TAKEOVER_ROUNDS"); do takeover_round "$r"; done
}

# ------------------------------------------------------------ profile -------
profile_one() { # sqlite|postgres
    local kind=$1 data="$RUN_DIR/perf_$1.data" cg=() res out="$RUN_DIR/profile_$1.txt" perf_pid pids
    [[ "$CALLGRAPH" == none ]] || cg=(--call-graph "$CALLGRAPH")
    STORE_KIND=$kind
    if [[ "$kind" == sqlite ]]; then
        STORE_DB=$(sqlite_path profile_sqlite)
        start_hub profile_sqlite "sqlite://$STORE_DB"
    else
        pg_start off
        start_hub profile_pg "postgres://agenthub@127.0.0.1:$PG_PORT/agenthub"
    fi
    check_run
    pids=$AH_PID
    # PostgreSQL: the hub's backends too (children of the postmaster, all connected by now)
    [[ "$kind" == sqlite ]] || pids+=",$(pgrep -d, -P "$PG_PID")"
    export RUN_MODE=async
    bench_wait_no_wrk
    bench_wait_quiet
    bench_log "profile $kind: perf record ${PROFILE_S}s during async q-noop c=$CONNS (pids $pids)"
    (
        sleep 1
        exec perf record -e cpu-clock -F "$FREQ" "${cg[@]}" -p "$pids" -o "$data" -- sleep "$PROFILE_S"
    ) >"$RUN_DIR/logs/perf_record_$kind.txt" 2>&1 &
    perf_pid=$!
    BENCH_PIDS+=("$perf_pid")
    res=$(bench_wrk_lua "profiled_async_$kind" "$CONNS" "$((PROFILE_S + 2))s" "http://127.0.0.1:$AH_PORT/v1/agents/q-noop/runs" \
        "$BENCH_DIR/queue_post.lua" "$AH_PID" "${PG_PID:-}") || exit 1
    wait "$perf_pid" || bench_log "perf record exited non-zero; see $RUN_DIR/logs/perf_record_$kind.txt"
    bench_forget_pid "$perf_pid"
    drain || true
    (
        set +o pipefail
        echo "# perf: async q-noop POSTs, wrk -t1 -c$CONNS, ${PROFILE_S}s of $((PROFILE_S + 2))s, $WORKERS workers, $kind, cpu-clock @ $FREQ Hz, call graph $CALLGRAPH"
        echo "# load while profiled: $res"
        echo "## by thread (self; postgres = the hub's backends)"
        perf report -i "$data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -10
        echo "## by thread, DSO (self)"
        perf report -i "$data" --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25
        echo "## top symbols (self)"
        perf report -i "$data" --no-children --sort comm,dso,sym --stdio -g none --percent-limit 0.5 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -60
        if [[ "$CALLGRAPH" != none ]]; then
            echo "## inclusive (children) >= 2 %, per thread"
            perf report -i "$data" --children --sort comm,dso,sym --stdio -g none --percent-limit 2 2>/dev/null |
                grep -v '^#' | grep -v '^$' | head -150
        fi
    ) >"$out"
    bench_log "profile written to $out"
    ah_stop "$AH_PID"
    [[ "$kind" == sqlite ]] || pg_stop
}

phase_profile() {
    local k
    perf stat -e cpu-clock true >/dev/null 2>&1 || bench_die "perf cannot count cpu-clock here (perf_event_paranoid?)"
    for k in $PROFILE_STORES; do profile_one "$k"; done
}

# ------------------------------------------------------------ main ----------
bench_log "RUN_DIR=$RUN_DIR phases: $PHASES"
for ph in $PHASES; do
    case "$ph" in
    sqlite | postgres | takeover | profile) "phase_$ph" ;;
    *) bench_die "unknown phase $ph" ;;
    esac
done
echo
echo "== results ($RESULTS)"
cat "$RESULTS"
