#!/usr/bin/env bash
# bench/sandbox.sh - exec tool start to first byte: a bwrap sandbox vs the same
# command run directly (`sandbox: none`), in one process, interleaved run by
# run, for `true` and `python3 -c pass`. Target (issue "Agent runtime", item 4):
# sandboxed p50 under 10 ms, compared with direct in the same run.
#
# Compiles bench/sandbox_bench.c with cc against an existing build's
# libahcore.a (it builds nothing else), then runs it. The time measured is the
# module's first_byte_ns (spawn to first output byte or exit; the value behind
# agenthub_sandbox_start_seconds); a third column times a naive
# fork+execve+waitpid of the same program for reference. A second pass with
# BALLAST_MB of touched heap and 8 extra threads shows that the spawn cost does
# not grow with the server's size (fork's does).
#
# Environment knobs [defaults]:
#   BUILD_DIR=build   build directory holding libahcore.a (relative to the repo)
#   RUNS=200          measured runs per command and mode (after 10 warm-up runs)
#   BALLAST_MB=1024   second pass with this much resident heap; 0 = skip it
#   CC=cc
#   QUIET_MAX=60 QUIET_PCT=15: wait before measuring for the machine to be idle (lib.sh)
#   RUN_DIR, KEEP_RUN_DIR: see bench/lib.sh
#
# Usage: bash bench/sandbox.sh
BENCH_NAME=sandbox
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUILD_DIR=${BUILD_DIR:-build}
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR="$REPO_DIR/$BUILD_DIR"
RUNS=${RUNS:-200}
BALLAST_MB=${BALLAST_MB:-1024}
CC=${CC:-cc}
LIB="$BUILD_DIR/libahcore.a"
bench_need "$CC" pkg-config bwrap python3
[[ -f "$LIB" ]] || bench_die "no $LIB: build first (cmake -S . -B build && cmake --build build)"

BIN="$RUN_DIR/sandbox_bench"
# shellcheck disable=SC2046 # pkg-config output is a list of flags
"$CC" -O2 -g -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -I"$REPO_DIR/src" \
    "$BENCH_DIR/sandbox_bench.c" "$LIB" \
    $(pkg-config --libs libevent_pthreads libevent jansson yaml-0.1 sqlite3 libpq libcurl \
        hiredis libcrypto libseccomp) -lpthread -lm -o "$BIN" ||
    bench_die "could not build $BIN"

bench_wait_quiet
bench_log "pass 1: the bench process as it starts (small RSS)"
"$BIN" --runs "$RUNS" | tee "$RUN_DIR/sandbox.txt"
if ((BALLAST_MB > 0)); then
    bench_wait_quiet
    bench_log "pass 2: with $BALLAST_MB MiB resident and 8 extra threads"
    "$BIN" --runs "$RUNS" --ballast-mb "$BALLAST_MB" | tee "$RUN_DIR/sandbox_ballast.txt"
fi
bench_log "raw output in $RUN_DIR"
