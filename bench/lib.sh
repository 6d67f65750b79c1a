# shellcheck shell=bash
# bench/lib.sh - helpers shared by the bench/*.sh scripts (sourced, not run).
#
# Starts agenthub and nginx on 127.0.0.1 only, remembers every PID it started
# and stops exactly those PIDs (TERM, then KILL after 5 s) when the calling
# script exits, however it exits. Builds nothing: AGENTHUB_BIN must exist.
#
# Knobs shared by the scripts:
#   AGENTHUB_BIN   binary to measure [build/agenthub, relative to the repo root]
#   RUN_DIR        logs, configs, databases and raw wrk output [mktemp -d /tmp/ahbench.XXXXXX]
#   KEEP_RUN_DIR   0 = delete RUN_DIR on exit (only if the script created it) [1]

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
AGENTHUB_BIN=${AGENTHUB_BIN:-$REPO_DIR/build/agenthub}
[[ "$AGENTHUB_BIN" == /* ]] || AGENTHUB_BIN="$PWD/$AGENTHUB_BIN"
KEEP_RUN_DIR=${KEEP_RUN_DIR:-1}
if [[ -z "${RUN_DIR:-}" ]]; then
    RUN_DIR=$(mktemp -d /tmp/ahbench.XXXXXX)
    RUN_DIR_CREATED=1
else
    mkdir -p "$RUN_DIR"
    RUN_DIR_CREATED=0
fi
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/wrk" "$RUN_DIR/tmp"

bench_log() { printf '[%s] %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
bench_die() {
    bench_log "ERROR: $*"
    exit 1
}

# ------------------------------------------------------------ cleanup -------
BENCH_PIDS=()
bench_stop_pid() { # pid: TERM, wait up to 5 s, then KILL; returns the exit status
    local pid=$1 rc=0
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" 2>/dev/null || rc=$?
        return $rc
    }
    kill -TERM "$pid" 2>/dev/null || true
    local _
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        bench_log "pid $pid did not exit 5 s after TERM; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    return $rc
}
bench_forget_pid() {
    local p keep=()
    for p in "${BENCH_PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
    BENCH_PIDS=("${keep[@]+"${keep[@]}"}")
}
bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]+"${BENCH_PIDS[@]}"}"; do
        bench_stop_pid "$pid" || true
    done
    BENCH_PIDS=()
    if [[ "$KEEP_RUN_DIR" == 0 && "$RUN_DIR_CREATED" == 1 ]]; then
        rm -rf "$RUN_DIR"
    fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || bench_die "missing '$t' (apt-get install wrk nginx-light curl iproute2)"
    done
}

# ------------------------------------------------------------ ports ---------
bench_port_busy() { ss -Hltn "sport = :$1" | grep -q .; }

bench_free_port() { # a TCP port nobody listens on, from 20000-59999
    local p _
    for _ in $(seq 1 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        bench_port_busy "$p" || {
            echo "$p"
            return 0
        }
    done
    bench_die "no free port found"
}

bench_wait_http_200() { # url, timeout seconds
    local url=$1 deadline=$((SECONDS + $2))
    while ((SECONDS <= deadline)); do
        [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null) == 200 ]] && return 0
        sleep 0.05
    done
    return 1
}

# ------------------------------------------------------------ agenthub ------
# ah_write_config FILE LISTEN DB_PATH ACCESS_LOG(true|false) LEVEL [WORKERS]
ah_write_config() {
    cat >"$1" <<EOF
server: { listen: "$2", workers: ${6:-2}, access_log: $4 }
storage: { url: "sqlite://$3" }
log: { level: $5 }
EOF
}

# ah_start CONFIG LOG_PREFIX: starts agenthub, waits for its "listening on"
# line and for /readyz 200. Sets AH_PID and AH_PORT. stdout/stderr go to
# LOG_PREFIX.out / LOG_PREFIX.err (stderr can be big with access_log on).
ah_start() {
    local conf=$1 prefix=$2
    [[ -x "$AGENTHUB_BIN" ]] || bench_die "no agenthub binary at $AGENTHUB_BIN (build it or set AGENTHUB_BIN)"
    : >"$prefix.out" # exists before the child opens it, for the sed below
    "$AGENTHUB_BIN" serve -c "$conf" >"$prefix.out" 2>"${AH_STDERR:-$prefix.err}" &
    AH_PID=$!
    BENCH_PIDS+=("$AH_PID")
    local tries
    AH_PORT=""
    for tries in $(seq 200 -1 1); do # 10 s
        AH_PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$prefix.out" | head -1)
        [[ -n "$AH_PORT" ]] && break
        kill -0 "$AH_PID" 2>/dev/null || bench_die "agenthub exited at start; see $prefix.out/.err"
        ((tries > 1)) && sleep 0.05
    done
    [[ -n "$AH_PORT" ]] || bench_die "agenthub did not print its listening line; see $prefix.out"
    bench_wait_http_200 "http://127.0.0.1:$AH_PORT/readyz" 10 || bench_die "agenthub /readyz not 200"
    bench_log "agenthub pid $AH_PID on 127.0.0.1:$AH_PORT ($(basename "$conf"))"
}

ah_stop() { # pid: SIGTERM and check the graceful exit status
    local pid=$1 rc=0
    bench_stop_pid "$pid" || rc=$?
    bench_forget_pid "$pid"
    [[ $rc == 0 ]] || bench_log "WARNING: agenthub pid $pid exited with status $rc after SIGTERM"
}

# ah_counter PORT ROUTE: value of agenthub_http_requests_total for GET ROUTE 200
ah_counter() {
    curl -s -m 5 "http://127.0.0.1:$1/metrics" |
        awk -v r="$2" '$1 ~ /^agenthub_http_requests_total\{/ && index($1, "route=\"" r "\"") &&
                        index($1, "status=\"200\"") { s += $2 } END { printf "%d\n", s }'
}

# ------------------------------------------------------------ nginx ---------
# nginx_start CONF PORT WORKER_PROCESSES: our own nginx (never the system
# service) with -p RUN_DIR; the conf's listen port must equal PORT. Sets NGX_PID.
nginx_start() {
    local conf=$1 port=$2 wp=$3
    ! bench_port_busy "$port" || bench_die "port $port already in use; refusing to measure someone else's server"
    nginx -p "$RUN_DIR/" -c "$conf" -e "$RUN_DIR/logs/nginx_error.log" \
        -g "daemon off; worker_processes $wp; pid logs/nginx_wp$wp.pid;" \
        >"$RUN_DIR/logs/nginx_wp$wp.out" 2>&1 &
    NGX_PID=$!
    BENCH_PIDS+=("$NGX_PID")
    bench_wait_http_200 "http://127.0.0.1:$port/healthz" 10 ||
        bench_die "nginx did not come up; see $RUN_DIR/logs/"
    bench_log "nginx pid $NGX_PID (worker_processes $wp) on 127.0.0.1:$port"
}

nginx_stop() {
    bench_stop_pid "$1" || true
    bench_forget_pid "$1"
}

# ------------------------------------------------------------ wrk -----------
# Seconds from a wrk duration (10s, 2m, 30).
bench_secs() {
    case "$1" in
    *m) echo $((${1%m} * 60)) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
    esac
}

# CPU ticks (utime+stime) of a pid and its direct children (nginx workers).
bench_cpu_ticks() {
    local pid=$1 total=0 p
    for p in "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        [[ -r /proc/$p/stat ]] &&
            total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
    done
    echo "$total"
}

# Busy CPU ticks of the whole machine (all cores) from /proc/stat.
bench_busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# CPU ticks used so far by this shell's waited-for children (wrk).
# Must run in the shell that waited for wrk, hence the file rather than a pipe.
bench_child_ticks() {
    local hz
    hz=$(getconf CLK_TCK)
    times >"$RUN_DIR/tmp/times.$BASHPID"
    awk -v hz="$hz" 'NR == 2 {
        n = split($1 " " $2, a, " "); s = 0
        for (i = 1; i <= n; i++) { split(a[i], b, "m"); s += b[1] * 60 + b[2] }
        printf "%d\n", s * hz + 0.5 }' "$RUN_DIR/tmp/times.$BASHPID"
}

# bench_wait_quiet: other engineers' builds and fuzzers share this machine.
# Wait (up to QUIET_MAX seconds [60], 0 = do not wait) until the machine's
# busy CPU over one second is under QUIET_PCT [15] % of one core.
QUIET_MAX=${QUIET_MAX:-60}
QUIET_PCT=${QUIET_PCT:-15}
bench_wait_quiet() {
    ((QUIET_MAX > 0)) || return 0
    local hz b0 b1 deadline=$((SECONDS + QUIET_MAX)) busy
    hz=$(getconf CLK_TCK)
    while ((SECONDS < deadline)); do
        b0=$(bench_busy_ticks)
        sleep 1
        b1=$(bench_busy_ticks)
        busy=$((100 * (b1 - b0) / hz))
        ((busy < QUIET_PCT)) && return 0
    done
    bench_log "machine still busy (${busy}% of a core used by other processes) after ${QUIET_MAX}s; measuring anyway (see other%)"
}

# bench_wrk LABEL CONNS DURATION URL CPU_PID: one wrk -t1 run with
# wrk_report.lua; prints its WRK_RESULT line plus " cpu=<%> wrk=<%> other=<%>":
# CPU time of the server (CPU_PID and its children; "-" without CPU_PID), of
# wrk, and "other" = the machine's busy time (/proc/stat) minus those two, / wall
# time (100 = one core). other% holds other processes AND interrupt/softirq time
# the kernel charges to no process (loopback packet processing that ran while
# a CPU was otherwise idle: 0-15 % in a run on a quiet machine). Well above
# that, someone else's job shared the cores: distrust that row.
bench_wrk() {
    local label=$1 c=$2 dur=$3 url=$4 cpu_pid=${5:-}
    local out="$RUN_DIR/wrk/${label}_c${c}_${dur}.txt" t0=0 t1=0 w0 w1 b0 b1 k0 k1
    [[ -n "$cpu_pid" ]] && t0=$(bench_cpu_ticks "$cpu_pid")
    bench_child_ticks >"$RUN_DIR/tmp/k0.$BASHPID"
    k0=$(<"$RUN_DIR/tmp/k0.$BASHPID")
    b0=$(bench_busy_ticks)
    w0=$EPOCHREALTIME
    timeout $(($(bench_secs "$dur") + 30)) \
        wrk -t1 -c"$c" -d"$dur" --timeout 10s --latency -s "$BENCH_DIR/wrk_report.lua" "$url" \
        >"$out" 2>&1 || bench_die "wrk failed ($label c=$c); see $out"
    w1=$EPOCHREALTIME
    b1=$(bench_busy_ticks)
    bench_child_ticks >"$RUN_DIR/tmp/k1.$BASHPID"
    k1=$(<"$RUN_DIR/tmp/k1.$BASHPID")
    [[ -n "$cpu_pid" ]] && t1=$(bench_cpu_ticks "$cpu_pid")
    local line
    line=$(grep '^WRK_RESULT' "$out") || bench_die "no WRK_RESULT in $out"
    awk -v l="$line" -v s=$((t1 - t0)) -v k=$((k1 - k0)) -v b=$((b1 - b0)) -v has="$cpu_pid" \
        -v hz="$(getconf CLK_TCK)" -v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" \
        'BEGIN { f = 100 / hz / w; o = (b - s - k) * f; if (o < 0) o = 0
                 printf "%s cpu=%s wrk=%.0f other=%.0f\n", l, has == "" ? "-" : sprintf("%.0f", s * f), k * f, o }'
}

# kv LINE KEY: value of KEY=value in a WRK_RESULT line
kv() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

# VmRSS / VmHWM of a pid in KiB
bench_rss_kib() { awk -v k="${2:-VmRSS}:" '$1 == k { print $2 }' "/proc/$1/status"; }

# ============================================================================
# Added for bench/gateway.sh and bench/streams.sh (gateway benchmarks).
# ============================================================================

# bench_wait_no_wrk [MAX_S]: another engineer's bench may be running wrk on
# this machine; poll (0.5 s) until `pgrep -x wrk` is empty, at most MAX_S
# seconds [WRK_WAIT_MAX, 1800]. Call it between our own wrk runs only.
WRK_WAIT_MAX=${WRK_WAIT_MAX:-1800}
# shellcheck disable=SC2120 # the argument is optional
bench_wait_no_wrk() {
    local max=${1:-$WRK_WAIT_MAX} deadline said=0
    deadline=$((SECONDS + max))
    while pgrep -x wrk >/dev/null; do
        if ((said == 0)); then
            bench_log "someone else's wrk is running (pids $(pgrep -x wrk | tr '\n' ' ')); waiting"
            said=1
        fi
        ((SECONDS < deadline)) || {
            bench_log "wrk still running after ${max}s; measuring anyway"
            return 0
        }
        sleep 0.5
    done
    ((said == 0)) || bench_log "no foreign wrk any more"
}

# bench_pin_binary: copy AGENTHUB_BIN into RUN_DIR/bin and point AGENTHUB_BIN
# at the copy, so a rebuild by someone else cannot swap the binary mid-run.
bench_pin_binary() {
    [[ -x "$AGENTHUB_BIN" ]] || bench_die "no agenthub binary at $AGENTHUB_BIN"
    mkdir -p "$RUN_DIR/bin"
    cp -p "$AGENTHUB_BIN" "$RUN_DIR/bin/agenthub"
    bench_log "measuring a copy of $AGENTHUB_BIN ($(stat -c '%y' "$AGENTHUB_BIN" | cut -d. -f1), sha256 $(sha256sum "$AGENTHUB_BIN" | cut -c1-12))"
    AGENTHUB_BIN="$RUN_DIR/bin/agenthub"
}

# bench_render TEMPLATE OUT KEY=VALUE...: copy TEMPLATE to OUT replacing every
# @KEY@ by VALUE (for configs whose ports are picked at run time).
bench_render() {
    local in=$1 out=$2 kv expr=()
    shift 2
    for kv in "$@"; do expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${expr[@]}" "$in" >"$out"
    ! grep -q '@[A-Z_]*@' "$out" || bench_die "unreplaced @KEY@ left in $out"
}

# nginx_start_as NAME CONF PORT WORKER_PROCESSES: like nginx_start, but pid
# file, stdout and error log are named after NAME, so several nginx can run
# at once (an upstream and a proxy). The conf must answer GET /healthz 200 on
# PORT and must not set worker_processes, pid or daemon. Sets NGX_PID.
nginx_start_as() {
    local name=$1 conf=$2 port=$3 wp=$4
    ! bench_port_busy "$port" || bench_die "port $port already in use; refusing to measure someone else's server"
    nginx -p "$RUN_DIR/" -c "$conf" -e "$RUN_DIR/logs/${name}_error.log" \
        -g "daemon off; worker_processes $wp; pid logs/$name.pid;" \
        >"$RUN_DIR/logs/$name.out" 2>&1 &
    NGX_PID=$!
    BENCH_PIDS+=("$NGX_PID")
    bench_wait_http_200 "http://127.0.0.1:$port/healthz" 10 ||
        bench_die "nginx $name did not come up; see $RUN_DIR/logs/${name}_error.log"
    bench_log "nginx $name pid $NGX_PID (worker_processes $wp) on 127.0.0.1:$port"
}

# mockllm_start NAME WORKERS [EXTRA ARGS]: `agenthub mock-llm` on a free
# loopback port (port 0, read back from its "listening on" line), waits for
# /healthz. Sets MOCK_PID and MOCK_PORT. Logs: RUN_DIR/logs/NAME.out/.err.
mockllm_start() {
    local name=$1 workers=$2 prefix="$RUN_DIR/logs/$1" tries
    shift 2
    : >"$prefix.out"
    "$AGENTHUB_BIN" mock-llm --listen 127.0.0.1:0 --workers "$workers" "$@" \
        >"$prefix.out" 2>"$prefix.err" &
    MOCK_PID=$!
    BENCH_PIDS+=("$MOCK_PID")
    MOCK_PORT=""
    for tries in $(seq 200 -1 1); do
        MOCK_PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$prefix.out" | head -1)
        [[ -n "$MOCK_PORT" ]] && break
        kill -0 "$MOCK_PID" 2>/dev/null || bench_die "mock-llm $name exited at start; see $prefix.err"
        ((tries > 1)) && sleep 0.05
    done
    [[ -n "$MOCK_PORT" ]] || bench_die "mock-llm $name did not print its listening line"
    bench_wait_http_200 "http://127.0.0.1:$MOCK_PORT/healthz" 10 || bench_die "mock-llm $name /healthz not 200"
    bench_log "mock-llm $name pid $MOCK_PID ($workers workers) on 127.0.0.1:$MOCK_PORT"
}

# bench_wrk_lua LABEL CONNS DURATION URL LUA CPU_PID UP_PID [WRK ARGS...]:
# like bench_wrk, but with any wrk script LUA that prints a WRK_RESULT line
# (e.g. a POST), extra wrk arguments (-H ...), and a second server whose CPU
# is reported apart (UP_PID: the upstream behind a gateway; "" = none).
# Appends " cpu=<%> up=<%> wrk=<%> other=<%> foreign_wrk=<n>": CPU of CPU_PID
# (+children), of UP_PID (+children), of wrk, of everything else (100 = one
# core); foreign_wrk = most wrk processes not ours seen during the run
# (polled every 0.5 s; > 0 means someone else's load overlapped: distrust).
bench_wrk_lua() {
    local label=$1 c=$2 dur=$3 url=$4 lua=$5 cpu_pid=${6:-} up_pid=${7:-}
    shift 7
    local out="$RUN_DIR/wrk/${label}_c${c}_${dur}.txt" t0=0 t1=0 u0=0 u1=0 w0 w1 b0 b1 k0 k1 wpid n foreign=0 rc=0
    [[ -n "$cpu_pid" ]] && t0=$(bench_cpu_ticks "$cpu_pid")
    [[ -n "$up_pid" ]] && u0=$(bench_cpu_ticks "$up_pid")
    bench_child_ticks >"$RUN_DIR/tmp/k0.$BASHPID"
    k0=$(<"$RUN_DIR/tmp/k0.$BASHPID")
    b0=$(bench_busy_ticks)
    w0=$EPOCHREALTIME
    timeout $(($(bench_secs "$dur") + 30)) \
        wrk -t1 -c"$c" -d"$dur" --timeout 10s --latency -s "$lua" "$@" "$url" >"$out" 2>&1 &
    wpid=$!
    # Foreign wrk: looked for just after the start and just before the end, not
    # all along: pgrep reads all of /proc, a few ms of CPU that delays whatever
    # wakes on that core and shows in a c=1 p99 (twice a second was enough to
    # add ~0.4 ms to direct nginx's p99 here). other% still counts any load.
    local ours="" check
    for check in start end; do
        if [[ $check == start ]]; then
            sleep 0.3
        else
            sleep "$(awk -v d="$(bench_secs "$dur")" 'BEGIN { s = d - 0.8; print (s > 0 ? s : 0) }')"
        fi
        kill -0 "$wpid" 2>/dev/null || break
        [[ -n "$ours" ]] || ours=$(pgrep -x -P "$wpid" wrk | head -1 || true)
        [[ -n "$ours" ]] || continue
        n=$(pgrep -x wrk | grep -vxF "$ours" | grep -c . || true)
        ((n > foreign)) && foreign=$n
    done
    wait "$wpid" || rc=$?
    ((rc == 0)) || bench_die "wrk failed ($label c=$c, status $rc); see $out"
    w1=$EPOCHREALTIME
    b1=$(bench_busy_ticks)
    bench_child_ticks >"$RUN_DIR/tmp/k1.$BASHPID"
    k1=$(<"$RUN_DIR/tmp/k1.$BASHPID")
    [[ -n "$cpu_pid" ]] && t1=$(bench_cpu_ticks "$cpu_pid")
    [[ -n "$up_pid" ]] && u1=$(bench_cpu_ticks "$up_pid")
    local line
    line=$(grep '^WRK_RESULT' "$out") || bench_die "no WRK_RESULT in $out"
    awk -v l="$line" -v s=$((t1 - t0)) -v u=$((u1 - u0)) -v k=$((k1 - k0)) -v b=$((b1 - b0)) \
        -v has="$cpu_pid" -v hasu="$up_pid" -v fw="$foreign" \
        -v hz="$(getconf CLK_TCK)" -v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" \
        'BEGIN { f = 100 / hz / w; o = (b - s - u - k) * f; if (o < 0) o = 0
                 printf "%s cpu=%s up=%s wrk=%.0f other=%.0f foreign_wrk=%d\n", l,
                        has == "" ? "-" : sprintf("%.0f", s * f), hasu == "" ? "-" : sprintf("%.0f", u * f),
                        k * f, o, fw }'
}

# bench_proc_fds PID: open file descriptors of PID
bench_proc_fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# bench_free_port_safe: like bench_free_port, but below the kernel's ephemeral
# range (net.ipv4.ip_local_port_range, 32768-60999 here) and with no socket
# at all on it (ss -tan, not only listeners): a port in the ephemeral range
# can be taken by an outgoing connection (wrk's, a gateway's) between the
# check and nginx's bind() ("Address already in use").
bench_free_port_safe() {
    local lo p _
    lo=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    ((lo > 20100)) || bench_die "ephemeral range starts at $lo; no safe range below it"
    for _ in $(seq 1 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % (lo - 20000)))
        ss -Htan "( sport = :$p )" | grep -q . || {
            echo "$p"
            return 0
        }
    done
    bench_die "no free port found below $lo"
}
