# shellcheck shell=bash
# bench/gw_config.sh - the agenthub config every gateway benchmark measures
# (gateway.sh, gateway_ab.sh, peers.sh), sourced: what a user runs, with
# auth (the admin key sk-test, set by the caller), routing of gpt-4o-mini to an
# `openai` provider, rate limits high enough never to trigger, usage and cost
# accounting on.
#
# gw_write_config FILE LISTEN DB ACCESS_LOG(true|false) LEVEL UPSTREAM_PORT TARGET_MODEL WORKERS
gw_write_config() {
    cat >"$1" <<EOF_GW
server: { listen: "$2", workers: $8, access_log: $4, max_connections: 20000 }
storage: { url: "sqlite://$3" }
log: { level: $5 }
limits: { default_rpm: 100000000, default_tpm: 2000000000, default_concurrency: 1000000 }
providers:
  - { name: up, type: openai, base_url: "http://127.0.0.1:$6/v1", api_key: "sk-upstream" }
models:
  - name: gpt-4o-mini
    targets: [ { provider: up, model: "$7" } ]
    price: { input_per_mtok: 0.15, output_per_mtok: 0.60 }
EOF_GW
}
