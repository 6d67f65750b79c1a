#!/usr/bin/env bash
# deps.sh GROUP: installs the Debian packages GROUP needs (build, test, bench) that are missing.
# Runs apt-get update once, only when something must be installed. Needs root or sudo.
set -euo pipefail
group=${1:-build}
build_pkgs=(build-essential cmake pkg-config libevent-dev libcurl4-openssl-dev libjansson-dev
    libyaml-dev libsqlite3-dev libpq-dev libhiredis-dev libssl-dev libseccomp-dev curl)
test_pkgs=(libcmocka-dev clang clang-format cppcheck nodejs npm prometheus sqlite3
    bubblewrap postgresql redis-server valgrind libclang-rt-14-dev)
bench_pkgs=(wrk hyperfine nginx-light)
case $group in
build) want=("${build_pkgs[@]}") ;;
test) want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
bench) want=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
*) echo "deps.sh: unknown group '$group' (build, test, bench)" >&2; exit 2 ;;
esac
# A package is also satisfied by its command being on PATH from another source (e.g. a
# Node.js install that bundles npm: installing Debian's npm next to it would conflict).
declare -A provides=([nginx-light]=nginx [nodejs]=node [npm]=npm [prometheus]=promtool
    [bubblewrap]=bwrap [redis-server]=redis-server [clang]=clang [clang-format]=clang-format
    [cppcheck]=cppcheck [valgrind]=valgrind [wrk]=wrk [hyperfine]=hyperfine [curl]=curl
    [cmake]=cmake [sqlite3]=sqlite3)
missing=()
for p in "${want[@]}"; do
    cmd=${provides[$p]:-}
    if [ -n "$cmd" ] && command -v "$cmd" >/dev/null 2>&1; then continue; fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps.sh: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
