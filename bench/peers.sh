#!/usr/bin/env bash
# bench/peers.sh - agenthub side by side with a peer gateway (Portkey's, from
# npm) and nginx proxy_pass, through ../shared/peers-bench/run_peer_bench.sh:
#
#   wrk -> Portkey          -> nginx fake OpenAI (127.0.0.1:18080)
#   wrk -> agenthub         -> nginx fake OpenAI         (EXTRA_GW of the harness)
#   wrk -> nginx fake OpenAI directly                    (the harness's baseline)
#
# agenthub runs with what a user runs: an API key checked per request (the
# harness sends `Authorization: Bearer sk-test`: here the admin key), routing
# of `gpt-4o-mini` to an `openai` provider, limits and usage accounting on,
# access log off. The harness starts the upstream, Portkey and wrk, prints the
# table and stops only what it started; this script starts and stops agenthub.
#
# Knobs: PEERS_BENCH (the harness folder) [../shared/peers-bench], WORKERS
# (agenthub event loops) [2], and the harness's own: CONNS ["1 32 64"],
# DURATION [10s], WARMUP [5s], SKIP_PORTKEY [0], WITH_DELAY [0]. AGENTHUB_BIN,
# RUN_DIR, KEEP_RUN_DIR as in lib.sh. Portkey's node_modules are installed by
# the harness (`npm ci` from its lockfile) the first time.
BENCH_NAME=peers
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=bench/gw_config.sh
source "$(dirname "${BASH_SOURCE[0]}")/gw_config.sh"

PEERS_BENCH=${PEERS_BENCH:-$REPO_DIR/../shared/peers-bench}
WORKERS=${WORKERS:-2}
export CONNS=${CONNS:-"1 32 64"}
[[ -x "$PEERS_BENCH/run_peer_bench.sh" || -f "$PEERS_BENCH/run_peer_bench.sh" ]] ||
    bench_die "no peer harness at $PEERS_BENCH (set PEERS_BENCH)"
bench_need wrk nginx curl node
bench_pin_binary

conf="$RUN_DIR/agenthub.yaml"
gw_write_config "$conf" 127.0.0.1:0 "$RUN_DIR/agenthub.db" false warn 18080 gpt-4o-mini "$WORKERS"
AGENTHUB_ADMIN_KEY=sk-test ah_start "$conf" "$RUN_DIR/logs/agenthub"
port=$AH_PORT # the kernel's pick: a random one may be a client's port at that moment

EXTRA_GW_NAME=agenthub EXTRA_GW_URL="http://127.0.0.1:$port/v1/chat/completions" \
    EXTRA_GW_PID=$AH_PID RUN_DIR="$RUN_DIR/peers" \
    bash "$PEERS_BENCH/run_peer_bench.sh"

served=$(curl -s -m 5 "http://127.0.0.1:$port/metrics" |
    awk '$1 ~ /^agenthub_gateway_requests_total\{/ && index($1, "status=\"200\"") { s += $2 } END { printf "%d", s }')
bench_log "agenthub answered $served chat completions with 200 (wrk counted non-2xx in the table)"
ah_stop "$AH_PID"
