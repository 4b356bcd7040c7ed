#!/usr/bin/env bash
# Runs every test suite (format, luacheck, C under ASan+UBSan, Lua specs, end-to-end, fuzz and any
# tests/*/run.sh) and ends with one line "N passed, N failed" summing them all.
# usage: scripts/test.sh [suite...]   suites: format luacheck c lua e2e extra (default: all)
# The test services (tests/services/*.sh) share one run directory: each starts at most once, on
# first use by any suite, and all are stopped at the end, also when the run fails or is interrupted.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
jobs=$(nproc 2>/dev/null || echo 2)
logdir="$root/build/test-logs"
mkdir -p "$logdir"

total_pass=0
total_fail=0
skipped=()
failed_suites=()

record() { # suite passed failed
    echo "== $1: $2 passed, $3 failed"
    total_pass=$((total_pass + $2))
    total_fail=$((total_fail + $3))
    [ "$3" -eq 0 ] || failed_suites+=("$1")
}

want() {
    [ ${#selected[@]} -eq 0 ] && return 0
    local s
    for s in "${selected[@]}"; do [ "$s" = "$1" ] && return 0; done
    return 1
}

build() { # dir extra-cmake-args...
    local dir=$1
    shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$logdir/cmake-$(basename "$dir").log" 2>&1 &&
        cmake --build "$dir" -j"$jobs" >"$logdir/build-$(basename "$dir").log" 2>&1
}

suite_format() {
    local pass=0 fail=0 f
    while IFS= read -r f; do
        if clang-format --dry-run --Werror "$f" >/dev/null 2>"$logdir/format.tmp"; then
            pass=$((pass + 1))
        else
            fail=$((fail + 1))
            echo "format: $f is not clang-formatted (clang-format -i $f)"
        fi
    done < <(git ls-files --cached --others --exclude-standard -- 'core/*.c' 'core/*.h' 'tests/*.c' 'tests/*.h' 'bench/*.c')
    record format "$pass" "$fail"
}

suite_luacheck() {
    local out pass fail
    out=$(luacheck --no-color --codes lua tests config.example.lua rocks .busted 2>&1)
    echo "$out" | grep -vE '^Checking .* OK$' | grep -vE '^$' | grep -v '^Total:' || true
    pass=$(echo "$out" | grep -cE '^Checking .* OK$')
    fail=$(echo "$out" | grep -E '^Checking ' | grep -cvE ' OK$')
    record luacheck "$pass" "$fail"
}

suite_c() {
    if ! build build-asan -DAP_SANITIZE=ON; then
        tail -30 "$logdir/build-build-asan.log"
        record c 0 1
        return
    fi
    local out pass fail
    out=$(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0" \
        ctest --test-dir build-asan --output-on-failure -j"$jobs" 2>&1 | tee "$logdir/ctest.log")
    echo "$out" | grep -E 'Test +#|tests passed|tests failed' || true
    pass=$(echo "$out" | grep -cE 'Test +#.* Passed')
    fail=$(echo "$out" | grep -E 'Test +#' | grep -cvE ' Passed')
    record c "$pass" "$fail"
}

busted_suite() { # name binary run-profile
    local name=$1 bin=$2 run=$3 out summary s f e p
    out=$(ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0" \
        "$bin" run tests/lua/busted.lua --run="$run" -o utfTerminal 2>&1 |
        tee "$logdir/$name.log")
    echo "$out" | tail -n +2 | grep -vE '^$' | tail -n 60
    summary=$(echo "$out" | grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' | tail -n1)
    if [ -z "$summary" ]; then
        echo "$name: busted did not finish (see $logdir/$name.log)"
        record "$name" 0 1
        return
    fi
    s=$(echo "$summary" | sed -E 's/^([0-9]+) success.*/\1/')
    f=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures? .*/\1/')
    e=$(echo "$summary" | sed -E 's/.* ([0-9]+) errors? .*/\1/')
    p=$(echo "$summary" | sed -E 's/.* ([0-9]+) pending.*/\1/')
    if [ "$p" -gt 0 ]; then
        while IFS= read -r line; do skipped+=("$name: $line"); done < <(echo "$out" |
            awk '/^Pending -> /{getline; print}')
    fi
    # A sanitizer report (ASan, LSan at exit, UBSan) is a failure even when every spec passed.
    local san
    san=$(echo "$out" | grep -cE 'ERROR: (Address|Leak)Sanitizer|runtime error:')
    [ "$san" -eq 0 ] || echo "$name: $san sanitizer report(s), see $logdir/$name.log"
    record "$name" "$s" $((f + e + san))
}

suite_extra() {
    local script out line pass fail
    for script in tests/*/run.sh; do
        [ -x "$script" ] || continue
        out=$("$script" 2>&1 | tee "$logdir/$(basename "$(dirname "$script")").log")
        echo "$out" | tail -n 15
        line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n1)
        if [ -z "$line" ]; then
            record "$script" 0 1
            continue
        fi
        pass=${line%% passed*}
        fail=${line#*, }
        fail=${fail%% failed}
        record "$script" "$pass" "$fail"
    done
}

selected=("$@")
started=$(date +%s)

# One directory for the services of this run (state, PIDs, logs), handed to every suite. The trap
# stops every service found in it, by PID, and keeps their logs in $logdir/services.
AUTOPGO_SERVICES_DIR=$(mktemp -d "${TMPDIR:-/tmp}/autopgo-services-XXXXXX") || exit 1
export AUTOPGO_SERVICES_DIR
stop_services() {
    rm -rf "$logdir/services"
    tests/services/stop-all.sh --logs "$logdir/services" "$AUTOPGO_SERVICES_DIR" ||
        echo "test services: some did not stop cleanly (see tests/services/stop-all.sh)"
    rm -rf "$AUTOPGO_SERVICES_DIR"
}
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

scripts/deps.sh test || { echo "deps: installation failed"; echo "0 passed, 1 failed"; exit 1; }
if ! build build; then
    tail -30 "$logdir/build-build.log"
    echo "build failed"
    echo "0 passed, 1 failed"
    exit 1
fi

want format && suite_format
want luacheck && suite_luacheck
want c && suite_c
if want lua; then
    if want c || build build-asan -DAP_SANITIZE=ON; then
        busted_suite lua build-asan/autopgo default
    else
        tail -30 "$logdir/build-build-asan.log"
        record lua 0 1
    fi
fi
want e2e && busted_suite e2e build/autopgo e2e
want extra && suite_extra

echo
if [ -s "$AUTOPGO_SERVICES_DIR/started" ]; then
    echo "services started: $(paste -sd, "$AUTOPGO_SERVICES_DIR/started" | sed 's/,/, /g')"
fi
for s in "${skipped[@]}"; do echo "SKIPPED (not counted as passed): $s"; done
[ ${#failed_suites[@]} -eq 0 ] || echo "failing suites: ${failed_suites[*]}"
echo "test run took $(($(date +%s) - started)) s"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
