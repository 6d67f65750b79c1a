#!/usr/bin/env bash
# bench/http.sh - GET /healthz throughput and latency: agenthub (2 workers)
# against nginx returning the same static 200, in one run, with wrk -t1 (as
# ../shared/peers-bench does). Prints rps / p50 / p90 / p99 / server CPU per
# target and concurrency, then agenthub/nginx ratios. Target (issue): agenthub
# reaches >= 0.7x nginx's rps at c=32.
#
# Targets, each started just before its runs and stopped (SIGTERM) right after,
# so an idle target never shares the 2 cores with a measured one:
#   agenthub        access_log: true,  log.level info   (one JSON line per request, stderr to a file)
#   agenthub-quiet  access_log: false, log.level warn
#   nginx-wp1       bench/nginx/healthz.conf, worker_processes 1 (the peers-bench baseline)
#   nginx-wp2       same, worker_processes 2 (same worker count as agenthub)
#
# Environment knobs [defaults]:
#   CONNS="1 32"   wrk -c values; one measured run per value and target
#   DURATION=10s   each measured run (-d)
#   WARMUP=3s      unmeasured run at the largest CONNS before each target (0 = none)
#   ROUNDS=1       repeat the whole set; the ratio table uses the median rps per row
#   TARGETS="agenthub agenthub-quiet nginx-wp1 nginx-wp2"
#   WORKERS=2      agenthub server.workers
#   QUIET_MAX=60 QUIET_PCT=15
#                  before each run wait (at most QUIET_MAX s) until other processes
#                  use < QUIET_PCT % of a core: this machine is shared (see lib.sh)
#   OTHER_MAX=20 RETRIES=2
#                  a run during which other processes used > OTHER_MAX % of a core
#                  is measured again, up to RETRIES times (the last one is kept)
#   AH_LOG_SINK    where agenthub's stderr goes [RUN_DIR/logs/<target>.err, deleted after
#                  each target because it grows ~250 bytes per request]; e.g. /dev/null
#   AGENTHUB_BIN, RUN_DIR, KEEP_RUN_DIR: see bench/lib.sh
#
# Usage: bash bench/http.sh
#        CONNS="1 32 64" DURATION=20s ROUNDS=3 bash bench/http.sh
BENCH_NAME=http
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS=${CONNS:-"1 32"}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-1}
TARGETS=${TARGETS:-"agenthub agenthub-quiet nginx-wp1 nginx-wp2"}
WORKERS=${WORKERS:-2}
OTHER_MAX=${OTHER_MAX:-20}
RETRIES=${RETRIES:-2}
AH_LOG_SINK=${AH_LOG_SINK:-}
NGINX_PORT=18180 # fixed in bench/nginx/healthz.conf
NGINX_CONF="$BENCH_DIR/nginx/healthz.conf"

bench_need wrk nginx curl ss timeout awk
MAX_C=$(tr ' ' '\n' <<<"$CONNS" | sort -n | tail -1)
RESULTS="$RUN_DIR/http_results.txt"
: >"$RESULTS"

check_body() { # name url: the answer must be 200 {"status":"ok"} as JSON
    local hdr body
    body=$(curl -s -m 5 -D "$RUN_DIR/logs/$1.headers" "$2") || bench_die "$1: curl failed"
    hdr=$(tr -d '\r' <"$RUN_DIR/logs/$1.headers")
    [[ "$body" == '{"status":"ok"}' && "$hdr" == *"HTTP/1.1 200"* && "${hdr,,}" == *"content-type: application/json"* ]] ||
        bench_die "$1 answered unexpectedly: $hdr $body"
}

measure() { # target round url cpu_pid
    local t=$1 r=$2 url=$3 pid=$4 c res
    check_body "$t" "$url"
    bench_wait_quiet
    if [[ "$WARMUP" != 0 ]]; then
        bench_log "warm-up $t c=$MAX_C $WARMUP"
        bench_wrk "${t}_r${r}_warmup" "$MAX_C" "$WARMUP" "$url" >/dev/null
    fi
    for c in $CONNS; do
        for try in $(seq 0 "$RETRIES"); do
            # Another bench's wrk on the same 2 cores would spoil both runs.
            if declare -F bench_wait_no_wrk >/dev/null; then bench_wait_no_wrk "${WRK_WAIT_MAX:-1800}"; fi
            bench_wait_quiet
            bench_log "measure $t c=$c $DURATION (round $r)"
            res=$(bench_wrk "${t}_r$r" "$c" "$DURATION" "$url" "$pid") || exit 1
            (($(kv "$res" other) <= OTHER_MAX)) && break
            ((try < RETRIES)) && bench_log "other processes used $(kv "$res" other)% of a core meanwhile; measuring again"
        done
        echo "$t $c $r $res" >>"$RESULTS"
    done
}

run_agenthub() { # target round access_log level
    local t=$1 r=$2 db="$RUN_DIR/$1.db" conf="$RUN_DIR/$1.yaml" err
    err=${AH_LOG_SINK:-$RUN_DIR/logs/${t}_r$r.err}
    ah_write_config "$conf" "127.0.0.1:0" "$db" "$3" "$4" "$WORKERS"
    AH_STDERR=$err ah_start "$conf" "$RUN_DIR/logs/${t}_r$r"
    measure "$t" "$r" "http://127.0.0.1:$AH_PORT/healthz" "$AH_PID"
    ah_stop "$AH_PID"
    if [[ -z "$AH_LOG_SINK" ]]; then
        bench_log "$t: agenthub wrote $(du -h "$err" | cut -f1) of stderr; keeping the last 20 lines"
        tail -n 20 "$err" >"$err.tail" && rm -f "$err"
    fi
}

run_nginx() { # target round worker_processes
    nginx_start "$NGINX_CONF" "$NGINX_PORT" "$3"
    measure "$1" "$2" "http://127.0.0.1:$NGINX_PORT/healthz" "$NGX_PID"
    nginx_stop "$NGX_PID"
}

for r in $(seq 1 "$ROUNDS"); do
    for t in $TARGETS; do
        case "$t" in
        agenthub) run_agenthub "$t" "$r" true info ;;
        agenthub-quiet) run_agenthub "$t" "$r" false warn ;;
        nginx-wp1) run_nginx "$t" "$r" 1 ;;
        nginx-wp2) run_nginx "$t" "$r" 2 ;;
        *) bench_die "unknown target '$t'" ;;
        esac
    done
done

# ------------------------------------------------------------ report --------
{
    echo "# GET /healthz, wrk -t1 --latency -d$DURATION, warm-up $WARMUP at c=$MAX_C, rounds $ROUNDS"
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), $("$AGENTHUB_BIN" --version 2>/dev/null | head -1 || true)"
    echo "# cpu% = server CPU time / wall time during the run (100 = one core); wrk shares the same 2 cores;"
    echo "# other% = machine busy time not charged to wrk or the server: other jobs (builds, fuzzers) plus softirq"
    echo "# time charged to no process (0-15 % from the run itself); distrust rows well above that"
    echo "# medians over rounds:"
    echo
    awk '
    function kv(s, k,   i, n, a) { n = split(s, a, " "); for (i = 1; i <= n; i++) if (index(a[i], k "=") == 1) return substr(a[i], length(k) + 2); return "" }
    function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        t = $1; c = $2; r = $3; line = $0
        printf "%-15s %5s %5s %10.0f %8s %8s %8s %8s %7s %6s %5s %5s %6s\n", t, c, r, kv(line, "rps"), kv(line, "p50_ms"),
            kv(line, "p90_ms"), kv(line, "p99_ms"), kv(line, "max_ms"), kv(line, "non2xx"), kv(line, "errors"),
            kv(line, "cpu"), kv(line, "wrk"), kv(line, "other") > "/dev/stderr"
        cpu[t, c] = cpu[t, c] " " kv(line, "cpu"); oth[t, c] = oth[t, c] " " kv(line, "other")
        rps[t, c] = rps[t, c] " " kv(line, "rps"); p50[t, c] = p50[t, c] " " kv(line, "p50_ms"); p99[t, c] = p99[t, c] " " kv(line, "p99_ms")
        if (!((t, c) in seen)) { seen[t, c] = 1; key[++n] = t SUBSEP c }
        if (!(c in cs)) { cs[c] = 1; clist[++nc] = c }
        if (!(t in ts)) { ts[t] = 1; tlist[++nt] = t }
    }
    END {
        printf "%-15s %5s %10s %8s %8s %5s %6s\n", "target", "conns", "rps", "p50_ms", "p99_ms", "cpu%", "other%"
        for (i = 1; i <= n; i++) {
            split(key[i], k, SUBSEP)
            printf "%-15s %5s %10.0f %8.3f %8.3f %5.0f %6.0f\n", k[1], k[2], median(rps[key[i]]), median(p50[key[i]]),
                median(p99[key[i]]), median(cpu[key[i]]), median(oth[key[i]])
        }
        printf "\n%-15s %5s %14s %14s\n", "ratio (rps)", "conns", "vs nginx-wp1", "vs nginx-wp2"
        for (i = 1; i <= nt; i++) {
            t = tlist[i]; if (t !~ /^agenthub/) continue
            for (j = 1; j <= nc; j++) {
                c = clist[j]; a = median(rps[t, c]); r1 = "-"; r2 = "-"
                if ((("nginx-wp1", c) in seen)) r1 = sprintf("%.3f", a / median(rps["nginx-wp1", c]))
                if ((("nginx-wp2", c) in seen)) r2 = sprintf("%.3f", a / median(rps["nginx-wp2", c]))
                printf "%-15s %5s %14s %14s\n", t, c, r1, r2
            }
        }
        printf "\ntarget: agenthub / nginx rps >= 0.7 at c=32\n"
    }' "$RESULTS" 2>"$RUN_DIR/per_run.txt"
    echo
    echo "# every run (target conns round rps p50 p90 p99 max_ms non2xx errors cpu% wrk% other%)"
    cat "$RUN_DIR/per_run.txt"
} | tee "$RUN_DIR/report.txt"
bench_log "raw wrk output and logs: $RUN_DIR"
