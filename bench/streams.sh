#!/usr/bin/env bash
# bench/streams.sh - many concurrent streaming chat completions through ONE
# agenthub process. Target (issue "LLM gateway", Performance): 10,000
# concurrent streams without errors, agenthub VmRSS under 1 GB.
#
#   node bench/streams_client.mjs (STREAMS streams, one connection each)
#     -> agenthub (WORKERS workers, auth + routing + rate limiter + usage rows on)
#       -> MOCKS x `agenthub mock-llm` (equal-weight targets of one model)
#
# The upstream model is "echo?ttft_ms=TTFT_MS&token_ms=TOKEN_MS": the mock
# answers "echo: <message>" 4 characters per chunk, so with MESSAGE_CHARS=194
# each stream carries 50 token chunks and lasts 0.1 + 49 x 0.2 = 9.9 s. The
# client opens RAMP_PER_TICK streams every TICK_MS ms (10,000 in 2 s), so all
# of them are open together for ~8 s. Each stream is checked: HTTP 200, all 50
# token chunks, no error event, data: [DONE].
#
# While the streams run the script samples agenthub's VmRSS (/proc/PID/status,
# workers are threads of that PID) every SAMPLE_S s together with the number
# of streams that are streaming (first bytes received, not ended: what
# agenthub really proxies at that moment; the client's open connections can be
# more, some waiting in the accept queue), and agenthub's open fds every
# second. Reported: idle RSS, peak RSS (and VmHWM), RSS at the sample with the
# most streams streaming, RSS per stream = (that RSS - idle RSS) / streams
# streaming, RSS after the streams,
# errors, completed streams, durations, CPU of each process, and the
# usage-row / mock-llm counters (every stream accounted, none aborted).
#
# Why MOCKS=2: mock-llm is agenthub's binary with the same fixed
# max_connections 10,000 per process (no option to raise it), so 10,000
# upstream streams go to two of them. agenthub gets server.max_connections
# 2 x STREAMS.
#
# MOCKS=0: the model is agenthub's in-process mock provider (`type: mock`, the
# same echo model and timing options): no upstream connection, so one
# descriptor per stream. That shows STREAMS concurrent client streams where
# the descriptor limit cannot hold two per stream (here: hard 20,000).
#
# File descriptors: agenthub needs one per client connection plus one per
# upstream connection, i.e. 2 x STREAMS + ~40 (STREAMS + ~40 with MOCKS=0).
# The script raises the soft limit (ulimit -n) to the hard one; it cannot
# raise the hard limit without CAP_SYS_RESOURCE. If the limit is too small,
# FD_CAP=1 (default) lowers STREAMS to what fits and says so; FD_CAP=0 runs
# STREAMS anyway (to see how agenthub behaves when it runs out of descriptors).
#
# Environment knobs [defaults]:
#   STREAMS=10000 TTFT_MS=100 TOKEN_MS=200 MESSAGE_CHARS=194
#   RAMP_PER_TICK=100 TICK_MS=20 TIMEOUT_S=120 (per stream)
#   WORKERS=2 MOCKS=2 MOCK_WORKERS=1 SAMPLE_S=0.25 FD_CAP=1 FD_RESERVE=64
#   AGENTHUB_BIN, RUN_DIR, KEEP_RUN_DIR: see bench/lib.sh
#
# Usage: bash bench/streams.sh
#        STREAMS=2000 bash bench/streams.sh
BENCH_NAME=streams
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STREAMS=${STREAMS:-10000}
TTFT_MS=${TTFT_MS:-100}
TOKEN_MS=${TOKEN_MS:-200}
MESSAGE_CHARS=${MESSAGE_CHARS:-194}
RAMP_PER_TICK=${RAMP_PER_TICK:-100}
TICK_MS=${TICK_MS:-20}
TIMEOUT_S=${TIMEOUT_S:-120}
WORKERS=${WORKERS:-2}
MOCKS=${MOCKS:-2}
MOCK_WORKERS=${MOCK_WORKERS:-1}
SAMPLE_S=${SAMPLE_S:-0.25}
FD_CAP=${FD_CAP:-1}
FD_RESERVE=${FD_RESERVE:-64}
MODEL="echo?ttft_ms=$TTFT_MS&token_ms=$TOKEN_MS"
bench_need node curl awk pgrep

# ------------------------------------------------------------ limits --------
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
REQUESTED=$STREAMS
PER=$((MOCKS > 0 ? 2 : 1)) # descriptors per stream: client (+ upstream)
NEED=$((PER * STREAMS + FD_RESERVE))
FD_NOTE="RLIMIT_NOFILE $NOFILE (hard $(ulimit -Hn)); agenthub needs ~$PER x $STREAMS + $FD_RESERVE = $NEED"
if ((NOFILE < NEED)); then
    if [[ "$FD_CAP" == 1 ]]; then
        STREAMS=$(((NOFILE - FD_RESERVE) / PER))
        FD_NOTE="$FD_NOTE: TOO LOW (the hard limit cannot be raised here), STREAMS lowered $REQUESTED -> $STREAMS (FD_CAP=0 runs $REQUESTED anyway)"
    else
        FD_NOTE="$FD_NOTE: TOO LOW, running $STREAMS anyway (FD_CAP=0): expect descriptor exhaustion in agenthub"
    fi
fi
bench_log "$FD_NOTE"
bench_pin_binary
export AGENTHUB_ADMIN_KEY=sk-test

# ------------------------------------------------------------ start ---------
MOCK_PIDS=() MOCK_PORTS=()
for i in $(seq 1 "$MOCKS"); do
    mockllm_start "mock$i" "$MOCK_WORKERS"
    MOCK_PIDS+=("$MOCK_PID") MOCK_PORTS+=("$MOCK_PORT")
done
CONF="$RUN_DIR/streams.yaml"
{
    echo "server: { listen: \"127.0.0.1:0\", workers: $WORKERS, access_log: false, max_connections: $((PER * STREAMS + 100)) }"
    echo "storage: { url: \"sqlite://$RUN_DIR/streams.db\" }"
    echo "log: { level: warn }"
    echo "limits: { default_rpm: 100000000, default_tpm: 2000000000, default_concurrency: 1000000 }"
    echo "providers:"
    ((MOCKS > 0)) || echo "  - { name: local, type: mock }"
    for i in $(seq 1 "$MOCKS"); do
        echo "  - { name: mock$i, type: openai, base_url: \"http://127.0.0.1:${MOCK_PORTS[i - 1]}/v1\", api_key: \"sk-upstream\" }"
    done
    echo "models:"
    echo "  - name: gpt-4o-mini"
    echo "    targets:"
    ((MOCKS > 0)) || echo "      - { provider: local, model: \"$MODEL\" }"
    for i in $(seq 1 "$MOCKS"); do
        echo "      - { provider: mock$i, model: \"$MODEL\", weight: 1 }"
    done
    echo "    price: { input_per_mtok: 0.15, output_per_mtok: 0.60 }"
} >"$CONF"
AH_STDERR="$RUN_DIR/logs/agenthub.err" ah_start "$CONF" "$RUN_DIR/logs/agenthub"
URL="http://127.0.0.1:$AH_PORT/v1/chat/completions"

# one short stream as a check (fast model options, 5 chunks)
check=$(curl -sN -m 20 -H 'Authorization: Bearer sk-test' -H 'Content-Type: application/json' "$URL" \
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"check 123456"}]}')
[[ "$check" == *'"content":"echo"'* && "$check" == *'data: [DONE]'* ]] || bench_die "stream check failed: ${check:0:400}"
bench_log "stream check ok ($(grep -c '^data: ' <<<"$check") events)"

sleep 1
IDLE_KIB=$(bench_rss_kib "$AH_PID")
IDLE_FDS=$(bench_proc_fds "$AH_PID")
bench_log "agenthub idle: VmRSS $IDLE_KIB KiB, $IDLE_FDS fds"

# ------------------------------------------------------------ run -----------
bench_wait_no_wrk
bench_wait_quiet
cpu0_ah=$(bench_cpu_ticks "$AH_PID")
cpu0_mock=0
for p in "${MOCK_PIDS[@]}"; do cpu0_mock=$((cpu0_mock + $(bench_cpu_ticks "$p"))); done
b0=$(bench_busy_ticks)
bench_child_ticks >"$RUN_DIR/tmp/k0"
W0=$EPOCHREALTIME
CLIENT_OUT="$RUN_DIR/client.out"
bench_log "client: $STREAMS streams of model $MODEL, $MESSAGE_CHARS-char message, $RAMP_PER_TICK per ${TICK_MS} ms"
node "$BENCH_DIR/streams_client.mjs" "$URL" "$STREAMS" gpt-4o-mini "$MESSAGE_CHARS" "$RAMP_PER_TICK" "$TICK_MS" "$TIMEOUT_S" \
    >"$CLIENT_OUT" 2>"$RUN_DIR/client.err" &
NODE_PID=$!
BENCH_PIDS+=("$NODE_PID")
SAMPLES="$RUN_DIR/samples.tsv"
echo -e "t_s\tvmrss_kib\tstreaming\tfds\tclient_open" >"$SAMPLES"
last_fd_t=-1 fds=-
while kill -0 "$NODE_PID" 2>/dev/null; do
    t=$(awk -v a="$W0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
    rss=$(bench_rss_kib "$AH_PID" 2>/dev/null || echo 0)
    prog=$({ grep '^PROGRESS' "$CLIENT_OUT" 2>/dev/null || true; } | tail -1)
    open=$(sed -n 's/.* open=\([0-9]*\).*/\1/p' <<<"$prog")
    streaming=$(sed -n 's/.* streaming=\([0-9]*\).*/\1/p' <<<"$prog")
    if ((${t%.*} > last_fd_t)); then
        fds=$(bench_proc_fds "$AH_PID")
        last_fd_t=${t%.*}
    fi
    echo -e "$t\t$rss\t${streaming:-0}\t$fds\t${open:-0}" >>"$SAMPLES"
    sleep "$SAMPLE_S"
done
client_rc=0
wait "$NODE_PID" || client_rc=$?
bench_forget_pid "$NODE_PID"
W1=$EPOCHREALTIME
b1=$(bench_busy_ticks)
bench_child_ticks >"$RUN_DIR/tmp/k1"
NODE_TICKS=$(($(<"$RUN_DIR/tmp/k1") - $(<"$RUN_DIR/tmp/k0")))
cpu1_ah=$(bench_cpu_ticks "$AH_PID")
cpu1_mock=0
for p in "${MOCK_PIDS[@]}"; do cpu1_mock=$((cpu1_mock + $(bench_cpu_ticks "$p"))); done
HWM_KIB=$(bench_rss_kib "$AH_PID" VmHWM)
sleep 2
AFTER_KIB=$(bench_rss_kib "$AH_PID")
AFTER_FDS=$(bench_proc_fds "$AH_PID")

# server-side accounting
sleep 1
m=$(curl -s -m 5 "http://127.0.0.1:$AH_PORT/metrics")
GW_OK=$(awk '$1 ~ /^agenthub_gateway_requests_total\{/ && index($1, "status=\"200\"") { s += $2 } END { printf "%d", s }' <<<"$m")
GW_ALL=$(awk '$1 ~ /^agenthub_gateway_requests_total\{/ { s += $2 } END { printf "%d", s }' <<<"$m")
REJECTED=$(awk '$1 == "agenthub_http_connections_rejected_total" { print $2 }' <<<"$m")
ROWS=0
for _ in $(seq 1 20); do
    ROWS=$(curl -s -m 5 -H 'Authorization: Bearer sk-test' "http://127.0.0.1:$AH_PORT/v1/usage?group_by=model" |
        grep -o '"requests":[0-9]*' | awk -F: '{ s += $2 } END { printf "%d", s }')
    [[ "$ROWS" == "$GW_ALL" ]] && break
    sleep 0.5
done
MOCK_STATS=""
for i in $(seq 1 "$MOCKS"); do
    MOCK_STATS+="mock$i $(curl -s -m 5 "http://127.0.0.1:${MOCK_PORTS[i - 1]}/mock/stats" | grep -o '"requests":[0-9]*,"aborted":[0-9]*,"failed":[0-9]*' | head -1); "
done
ERR_LINES=$(grep -vc 'admin key is shorter' "$RUN_DIR/logs/agenthub.err" || true)
ERR_FIRST=$({ grep -v 'admin key is shorter' "$RUN_DIR/logs/agenthub.err" || true; } | head -2 | cut -c1-220 || true)
ah_stop "$AH_PID"

# ------------------------------------------------------------ report --------
RES=$(grep '^STREAMS_RESULT' "$CLIENT_OUT" || echo "STREAMS_RESULT missing")
{
    echo "# agenthub concurrent streams: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores shared by node client + agenthub + mock-llm, $(uname -r)"
    echo "# $("$AGENTHUB_BIN" --version 2>/dev/null | head -1), $WORKERS workers, access_log off; $MOCKS x mock-llm ($MOCK_WORKERS worker each); node $(node --version)"
    echo "# model $MODEL, message $MESSAGE_CHARS chars -> $(kv "$RES" expect_chunks) token chunks per stream; ramp $RAMP_PER_TICK streams / $TICK_MS ms"
    echo "# $FD_NOTE"
    echo
    echo "streams requested $REQUESTED, run $STREAMS"
    echo "client: $RES"
    echo "client exit status $client_rc; first failures:"
    head -5 "$RUN_DIR/client.err" | sed 's/^/  /'
    awk -F'\t' -v idle="$IDLE_KIB" -v hwm="$HWM_KIB" -v after="$AFTER_KIB" -v ifd="$IDLE_FDS" -v afd="$AFTER_FDS" -v per="$PER" '
        NR > 1 { if ($2 > peak) { peak = $2; peak_t = $1; peak_s = $3 }
                 if ($3 > ms || ($3 == ms && $2 > ms_rss)) { ms = $3; ms_rss = $2; ms_t = $1 }
                 if ($4 != "-" && $4 > maxfd) { maxfd = $4; maxfd_t = $1 } }
        END {
            printf "agenthub VmRSS: idle %.1f MiB; peak sampled %.1f MiB (t=%ss, %d streams streaming); VmHWM %.1f MiB; after the streams %.1f MiB\n",
                idle / 1024, peak / 1024, peak_t, peak_s, hwm / 1024, after / 1024
            if (ms > 0)
                printf "at the most streams streaming (%d, t=%ss): VmRSS %.1f MiB -> %.1f KiB per stream over idle (%.1f KiB per stream with idle included)\n",
                    ms, ms_t, ms_rss / 1024, (ms_rss - idle) / ms, ms_rss / ms
            printf "agenthub fds: idle %d, max sampled %d (t=%ss: ~%d streams proxied = (fds - idle) / %d), after %d\n", ifd, maxfd, maxfd_t, (maxfd - ifd) / per, per, afd
            printf "RSS target (< 1 GiB at peak): %s\n", (hwm < 1048576 ? "PASS" : "FAIL")
        }' "$SAMPLES"
    awk -v a="$cpu0_ah" -v b="$cpu1_ah" -v c="$cpu0_mock" -v d="$cpu1_mock" -v x="$b0" -v y="$b1" -v w0="$W0" -v w1="$W1" -v hz="$(getconf CLK_TCK)" \
        -v nt="$NODE_TICKS" 'BEGIN { w = w1 - w0; printf "CPU over the %.1f s run (100 = one core): agenthub %.0f%%, mock-llm total %.0f%%, node client %.0f%%, machine total %.0f%% (of 200)\n",
                 w, 100 * (b - a) / hz / w, 100 * (d - c) / hz / w, 100 * nt / hz / w, 100 * (y - x) / hz / w }'
    echo "agenthub: gateway requests $GW_ALL (status 200: $GW_OK), usage rows $ROWS, connections rejected at max_connections ${REJECTED:-?}, stderr lines other than the admin-key warning: $ERR_LINES"
    [[ -z "$ERR_FIRST" ]] || echo "agenthub stderr: $ERR_FIRST"
    echo "mock-llm: $MOCK_STATS"
    ok=$(kv "$RES" completed)
    if [[ "$ok" == "$REQUESTED" && "$(kv "$RES" failed)" == 0 && "$(kv "$RES" max_streaming)" == "$REQUESTED" ]]; then
        echo "streams target ($REQUESTED concurrent, no errors): PASS"
    elif [[ "$ok" == "$STREAMS" && "$(kv "$RES" failed)" == 0 && "$(kv "$RES" max_streaming)" != "$STREAMS" ]]; then
        echo "streams target: all $ok streams completed without errors, but at most $(kv "$RES" max_streaming) were streaming at once (client ramp $(kv "$RES" ramp_s) s, see samples)"
    elif [[ "$STREAMS" != "$REQUESTED" && "$ok" == "$STREAMS" && "$(kv "$RES" failed)" == 0 ]]; then
        echo "streams target: NOT MEASURED at $REQUESTED (fd limit); $STREAMS concurrent streams without errors"
    else
        echo "streams target ($REQUESTED concurrent, no errors): FAIL ($ok of $STREAMS completed, $(kv "$RES" failed) failed)"
    fi
    echo
    echo "# samples: $SAMPLES; client progress: $CLIENT_OUT; agenthub stderr: $RUN_DIR/logs/agenthub.err"
} | tee "$RUN_DIR/report.txt"
bench_log "report: $RUN_DIR/report.txt"
