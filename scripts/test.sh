#!/usr/bin/env bash
# test.sh BUILD_DIR: every suite a change must pass (make test; make asan with AH_ASAN=1).
#   1. lint (format, banned functions, cppcheck)
#   2. unit tests (cmocka, via ctest)
#   3. integration tests (node:test driving the real binary, real SDKs), then the
#      run-related ones again on PostgreSQL (npm run test:pg)
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=$(cd "$build" && pwd)
failed=()

if [ "${AH_ASAN:-0}" = 1 ]; then
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
else
    echo "== lint"
    scripts/lint.sh || failed+=(lint)
fi

echo "== unit tests"
(cd "$build" && ctest --output-on-failure -j "$(nproc)") || failed+=(unit)

echo "== integration tests"
it=tests/integration
if [ ! -d "$it/node_modules" ] || [ "$it/package-lock.json" -nt "$it/node_modules/.package-lock.json" ]; then
    (cd "$it" && npm ci --no-audit --no-fund --loglevel=error) || failed+=(npm-ci)
fi
(cd "$it" && AGENTHUB_BIN="$build/agenthub" npm test --silent) || failed+=(integration)

# The run-related suites again, each hub on a throwaway PostgreSQL (lib/pg.mjs).
echo "== integration tests on PostgreSQL"
if [ -x "${AH_TEST_PG_BIN:-/nonexistent}/initdb" ] || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ||
    command -v initdb >/dev/null; then
    (cd "$it" && AGENTHUB_BIN="$build/agenthub" npm run --silent test:pg) || failed+=(integration-pg)
else
    echo "SKIP: PostgreSQL 15 not installed (apt-get install postgresql, or make test)"
fi

if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all suites passed"
