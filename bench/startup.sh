#!/usr/bin/env bash
# bench/startup.sh - time from exec to the first GET /readyz 200, with an
# EXISTING SQLite store (created and migrated by one unmeasured start first).
# Target (issue): median < 50 ms.
#
# Each run: note $EPOCHREALTIME (bash's microsecond clock, no fork), start
# agenthub on a fixed free port, poll /readyz over bash's /dev/tcp as fast as
# possible (a refused connect costs a few microseconds; curl would cost ~5 ms of
# fork+exec per try, so the error is at most POLL_US plus one try), note the time of the first "HTTP/1.1 200", then SIGTERM
# and wait for exit 0. Also reports the server's own "startup_ms" log field and
# the time to the first accepted TCP connection.
#
# Environment knobs [defaults]:
#   RUNS=20        measured starts
#   WORKERS=2      server.workers
#   PORT           listen port [a free one, picked once]
#   POLL_US=100    pause between two /readyz tries, in microseconds, without a
#                  fork (read -t on an idle pipe); keeps the poller from taking
#                  a core from the server when other jobs share the machine
#   QUIET_MAX=60 QUIET_PCT=15: wait before each run for the machine to be idle (lib.sh)
#   AGENTHUB_BIN, RUN_DIR, KEEP_RUN_DIR: see bench/lib.sh
#
# Usage: bash bench/startup.sh
BENCH_NAME=startup
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUNS=${RUNS:-20}
POLL_US=${POLL_US:-100}
WORKERS=${WORKERS:-2}
PORT=${PORT:-$(bench_free_port)}
DEADLINE_S=10 # give up on a single start after this long
bench_need curl ss awk

! bench_port_busy "$PORT" || bench_die "port $PORT is in use"
CONF="$RUN_DIR/startup.yaml"
DB="$RUN_DIR/startup.db"
ah_write_config "$CONF" "127.0.0.1:$PORT" "$DB" true info "$WORKERS"

# Create and migrate the store once (prints the first-start admin key).
ah_start "$CONF" "$RUN_DIR/logs/create"
ah_stop "$AH_PID"
[[ -s "$DB" ]] || bench_die "no SQLite file at $DB after the first start"
bench_log "store created: $DB ($(du -h "$DB" | cut -f1)); measuring $RUNS starts on 127.0.0.1:$PORT"

# poll_ready: one try; 0 when /readyz answered 200. Sets CONNECTED=1 once a
# TCP connect succeeded.
poll_ready() {
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
    [[ -n "$T_CONN" ]] || T_CONN=$EPOCHREALTIME
    printf 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    local status=""
    IFS= read -r -t 2 status <&3 || true
    exec 3<&- 3>&-
    [[ "$status" == "HTTP/1.1 200"* ]]
}

# An idle pipe to sleep on with read -t (bash has no sub-second sleep builtin).
exec {IDLE_FD}<> <(:)
POLL_S=$(awk -v u="$POLL_US" 'BEGIN { printf "%.6f", u / 1e6 }')
pause() { ((POLL_US > 0)) && { read -r -t "$POLL_S" -u "$IDLE_FD" _ || true; }; }

RESULTS="$RUN_DIR/startup_runs.txt"
: >"$RESULTS"
for i in $(seq 1 "$RUNS"); do
    ! bench_port_busy "$PORT" || bench_die "port $PORT still taken before run $i"
    bench_wait_quiet # others' builds share the 2 cores (QUIET_MAX, QUIET_PCT: lib.sh)
    err="$RUN_DIR/logs/run$i.err"
    T_CONN=""
    t0=$EPOCHREALTIME
    "$AGENTHUB_BIN" serve -c "$CONF" >"$RUN_DIR/logs/run$i.out" 2>"$err" &
    pid=$!
    BENCH_PIDS+=("$pid")
    ok=0
    deadline=$((SECONDS + DEADLINE_S))
    while ((SECONDS < deadline)); do
        if poll_ready 2>/dev/null; then
            ok=1
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        pause
    done
    t1=$EPOCHREALTIME
    ((ok)) || bench_die "run $i: no /readyz 200 within ${DEADLINE_S}s; see $err"
    ah_stop "$pid"
    internal=$(sed -n 's/.*"msg":"listening".*"startup_ms":\([0-9.]*\).*/\1/p' "$err" | head -1)
    awk -v a="$t0" -v b="$t1" -v c="$T_CONN" -v s="${internal:--1}" -v i="$i" \
        'BEGIN { printf "%d %.3f %.3f %s\n", i, (b - a) * 1000, (c - a) * 1000, s }' >>"$RESULTS"
done

{
    echo "# start -> first /readyz 200, existing SQLite store, $WORKERS workers, $RUNS runs"
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), $("$AGENTHUB_BIN" --version 2>/dev/null | head -1 || true)"
    echo "# ready_ms: exec -> first 200 seen by the poller; connect_ms: exec -> first accepted TCP connect;"
    echo "# server_ms: the server's own startup_ms log field"
    sort -n -k2 "$RESULTS" | awk '
        { r[NR] = $2; c[NR] = $3; s[NR] = $4; sum += $2 }
        function med(a, n,   i, j, t, b) {
            for (i = 1; i <= n; i++) b[i] = a[i]
            for (i = 2; i <= n; i++) { t = b[i]; for (j = i - 1; j >= 1 && b[j] > t; j--) b[j + 1] = b[j]; b[j + 1] = t }
            return (n % 2) ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
        }
        END {
            printf "%-12s %9s %9s %9s %9s\n", "", "min", "median", "p90", "max"
            printf "%-12s %9.2f %9.2f %9.2f %9.2f\n", "ready_ms", r[1], med(r, NR), r[int(NR * 0.9 + 0.999)], r[NR]
            printf "%-12s %9s %9.2f %9s %9s\n", "connect_ms", "", med(c, NR), "", ""
            printf "%-12s %9s %9.2f %9s %9s\n", "server_ms", "", med(s, NR), "", ""
            printf "\ntarget: median ready_ms < 50 -> %s\n", (med(r, NR) < 50) ? "MET" : "NOT MET"
        }'
    echo
    echo "# every run (run ready_ms connect_ms server_ms)"
    cat "$RESULTS"
} | tee "$RUN_DIR/report.txt"
bench_log "logs: $RUN_DIR"
