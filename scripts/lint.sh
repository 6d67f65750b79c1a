#!/usr/bin/env bash
# lint.sh: clang-format check, cppcheck, and the banned-function grep (CONVENTIONS.md).
set -uo pipefail
cd "$(dirname "$0")/.."
fail=0

files=$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 2>/dev/null)
[ -z "$files" ] && files=$(find src tests -name '*.[ch]' | sort)

# 1. Formatting.
unformatted=$(for f in $files; do clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || echo "$f"; done)
if [ -n "$unformatted" ]; then
    echo "lint: not formatted (run make format):"
    printf '    %s\n' $unformatted
    fail=1
fi

# 2. Banned functions (curl's list): the safe forms are snprintf, strtol, gmtime_r ...
banned=$(grep -nE '\b(sprintf|vsprintf|strcpy|strcat|strtok|gets|atoi|atol|gmtime|localtime|asctime|ctime)\s*\(' $files |
    grep -vE '^\S+:[0-9]+:\s*(//|/?\*)')
if [ -n "$banned" ]; then
    echo "lint: banned functions:"
    printf '    %s\n' "$banned"
    fail=1
fi

# 3. cppcheck: real bugs only (style noise off), every file of src/.
if command -v cppcheck >/dev/null 2>&1; then
    out=$(cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
        --suppress=missingIncludeSystem --std=c11 -D_GNU_SOURCE -DAH_VERSION=\"lint\" -Isrc src 2>&1)
    if [ $? -ne 0 ]; then
        echo "lint: cppcheck:"
        printf '%s\n' "$out" | sed 's/^/    /'
        fail=1
    fi
else
    echo "lint: cppcheck not installed (make deps-test installs it)"
    fail=1
fi

[ $fail -eq 0 ] && echo "lint: ok"
exit $fail
