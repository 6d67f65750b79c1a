#!/usr/bin/env bash
# fuzz.sh BUILD_DIR SECONDS: runs every libFuzzer target for SECONDS each, from tests/fuzz/corpus/<name>.
set -euo pipefail
build=$1
secs=${2:-60}
cd "$(dirname "$0")/.."
status=0
for bin in "$build"/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    seeds=tests/fuzz/corpus/${name#fuzz_}
    work=$(mktemp -d)
    [ -d "$seeds" ] && cp -r "$seeds"/. "$work"/ 2>/dev/null || true
    echo "== $name for ${secs}s"
    if ! "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 "$work" \
        2>"$work.log"; then
        status=1
        tail -40 "$work.log"
    fi
    grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$work.log" || true
    rm -rf "$work" "$work.log"
done
exit $status
