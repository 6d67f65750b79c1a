#!/usr/bin/env bash
# run.sh BIN CONFIG: starts the hub in the foreground on the example config (make run).
set -euo pipefail
bin=$1
config=$2
mkdir -p data
cat <<EOF2
Starting agenthub with $config (in-process mock model, SQLite in ./data).
Stop with Ctrl-C (graceful drain).

EOF2
exec "$bin" serve -c "$config"
