#!/usr/bin/env bash
# Runs every test suite (format, luacheck, C under ASan+UBSan, Lua specs, end-to-end, fuzz and any
# tests/*/run.sh) and ends with one line "N passed, N failed" summing them all. Above it, one line
# each for behaviour (C, Lua, end-to-end, extra suites), lint (format and luacheck, one per file)
# and fuzz seed replays. Anything that did not run is a failure: a pending spec (except the
# Pub/Sub emulator's named skip, listed as skipped), a suite that reports nothing, a tool that exits
# non-zero or is missing, a tests/*/run.sh without its exec bit.
# usage: scripts/test.sh [suite...] [-- spec...]
#   suites: format luacheck c lua e2e extra (default: all); specs after -- replace the default
#   spec directories of the lua and e2e suites (e.g. scripts/test.sh lua -- tests/lua/log_spec.lua)
# The test services (tests/services/*.sh) share one run directory: each starts at most once, on
# first use by any suite, and all are stopped at the end, also when the run fails or is interrupted.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
jobs=$(nproc 2>/dev/null || echo 2)
logdir="${AUTOPGO_TEST_LOGS:-$root/build/test-logs}" # a run inside a run (tests/e2e/runner_spec.lua) keeps its own
mkdir -p "$logdir"

# The one pending spec that is not a failure: Google's Pub/Sub emulator cannot be installed from
# apt or npm, so its spec file skips by name where it is absent (tests/lua/services.lua).
allowed_skip_file="tests/lua/bus/pubsub_spec.lua"
allowed_skip_name="gcppubsub bus against the Pub/Sub emulator skipped"

declare -A kind_pass=([behaviour]=0 [lint]=0 [seeds]=0) kind_fail=([behaviour]=0 [lint]=0 [seeds]=0)
skipped=()
failed_suites=()

say() { echo "test.sh: $* ($(date +%H:%M:%S))"; }

record() { # suite passed failed [kind: behaviour (default) | lint | seeds] [note]
    local kind=${4:-behaviour}
    echo "== $1: $2 passed, $3 failed${5:+ ($5)}"
    kind_pass[$kind]=$((kind_pass[$kind] + $2))
    kind_fail[$kind]=$((kind_fail[$kind] + $3))
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
    say "building $dir/ (logs: $logdir/cmake-$(basename "$dir").log, build-$(basename "$dir").log)"
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$logdir/cmake-$(basename "$dir").log" 2>&1 &&
        cmake --build "$dir" -j"$jobs" >"$logdir/build-$(basename "$dir").log" 2>&1
}

suite_format() {
    say "format: clang-format --dry-run on every C file"
    if ! command -v clang-format >/dev/null 2>&1; then
        echo "format: clang-format is not installed (scripts/deps.sh test)"
        record format 0 1 lint
        return
    fi
    local pass=0 fail=0 f
    while IFS= read -r f; do
        if clang-format --dry-run --Werror "$f" >/dev/null 2>"$logdir/format.tmp"; then
            pass=$((pass + 1))
        else
            fail=$((fail + 1))
            echo "format: $f is not clang-formatted (clang-format -i $f)"
        fi
    done < <(git ls-files --cached --others --exclude-standard -- 'core/*.c' 'core/*.h' 'tests/*.c' 'tests/*.h' 'bench/*.c')
    if [ $((pass + fail)) -eq 0 ]; then
        echo "format: no C files found"
        fail=1
    fi
    record format "$pass" "$fail" lint
}

suite_luacheck() {
    say "luacheck: every Lua file"
    local out rc pass fail
    out=$(luacheck --no-color --codes lua tests config.example.lua rocks .busted 2>&1)
    rc=$?
    echo "$out" | grep -vE '^Checking .* OK$' | grep -vE '^$' | grep -v '^Total:' || true
    pass=$(echo "$out" | grep -cE '^Checking .* OK$')
    fail=$(echo "$out" | grep -E '^Checking ' | grep -cvE ' OK$')
    if [ $((pass + fail)) -eq 0 ]; then
        echo "luacheck: checked nothing (exit $rc): is it installed? (scripts/deps.sh test)"
        fail=$((fail + 1))
    elif [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
        echo "luacheck: exited $rc with every file OK"
        fail=1
    fi
    record luacheck "$pass" "$fail" lint
}

suite_c() {
    if ! build build-asan -DAP_SANITIZE=ON; then
        tail -30 "$logdir/build-build-asan.log"
        record c 0 1
        return
    fi
    say "c: ctest under ASan+UBSan (about 2 minutes)"
    local out rc pass fail
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0" \
        ctest --test-dir build-asan --output-on-failure -j"$jobs" >"$logdir/ctest.log" 2>&1
    rc=$?
    out=$(cat "$logdir/ctest.log")
    echo "$out" | grep -E 'Test +#|tests passed|tests failed|No tests were found' || true
    pass=$(echo "$out" | grep -cE 'Test +#.* Passed')
    fail=$(echo "$out" | grep -E 'Test +#' | grep -cvE ' Passed')
    if [ $((pass + fail)) -eq 0 ]; then
        echo "c: ctest reported no results (exit $rc, see $logdir/ctest.log)"
        fail=1
    elif [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
        echo "c: ctest exited $rc though every test passed (see $logdir/ctest.log)"
        fail=1
    fi
    record c "$pass" "$fail"
}

busted_suite() { # name binary run-profile
    local name=$1 bin=$2 run=$3 out rc summary s f e p
    say "$name: busted --run=$run with $bin${specs[*]:+ (${specs[*]})}"
    ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0" \
        "$bin" run tests/lua/busted.lua --run="$run" -o utfTerminal "${specs[@]}" >"$logdir/$name.log" 2>&1
    rc=$?
    out=$(cat "$logdir/$name.log")
    echo "$out" | tail -n +2 | grep -vE '^$' | tail -n 60
    summary=$(echo "$out" | grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' | tail -n1)
    if [ -z "$summary" ]; then
        echo "$name: busted did not finish (exit $rc, see $logdir/$name.log)"
        record "$name" 0 1
        return
    fi
    s=$(echo "$summary" | sed -E 's/^([0-9]+) success.*/\1/')
    f=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures? .*/\1/')
    e=$(echo "$summary" | sed -E 's/.* ([0-9]+) errors? .*/\1/')
    p=$(echo "$summary" | sed -E 's/.* ([0-9]+) pending.*/\1/')
    # Pending specs did not run: failures, except the named Pub/Sub skip. busted prints each as
    # "Pending → FILE @ LINE" followed by its full name.
    local allowed=0 where spec
    while IFS=$'\t' read -r where spec; do
        [ -n "$where" ] || continue
        if [ "${where%% @ *}" = "$allowed_skip_file" ] && [[ "$spec" == "$allowed_skip_name"* ]]; then
            allowed=$((allowed + 1))
            skipped+=("$name: $spec")
        else
            echo "$name: PENDING counts as a failure: $spec ($where)"
        fi
    done < <(echo "$out" | awk '/^Pending (→|->) /{ sub(/^Pending (→|->) /, ""); w = $0; getline; print w "\t" $0 }')
    local unrun=$((p - allowed))
    # A sanitizer report (ASan, LSan at exit, UBSan) is a failure even when every spec passed.
    local san
    san=$(echo "$out" | grep -cE 'ERROR: (Address|Leak)Sanitizer|runtime error:')
    [ "$san" -eq 0 ] || echo "$name: $san sanitizer report(s), see $logdir/$name.log"
    local bad=$((f + e + unrun + san))
    if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
        echo "$name: busted exited $rc though every spec passed (see $logdir/$name.log)"
        bad=1
    fi
    local note=""
    [ "$unrun" -eq 0 ] || note="$unrun pending counted as failed"
    record "$name" "$s" "$bad" behaviour "$note"
}

suite_extra() {
    local script name out rc line pass fail seeds sp sf
    for script in tests/*/run.sh; do
        [ -e "$script" ] || continue
        if [ ! -x "$script" ]; then
            echo "$script is not executable (chmod +x $script; git update-index --chmod=+x $script)"
            record "$script" 0 1
            continue
        fi
        name=$(basename "$(dirname "$script")")
        sp=0
        sf=0
        say "$script (log: $logdir/$name.log)"
        "$script" >"$logdir/$name.log" 2>&1
        rc=$?
        out=$(cat "$logdir/$name.log")
        echo "$out" | tail -n 15
        line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n1)
        if [ -z "$line" ]; then
            echo "$script: no \"N passed, N failed\" line (exit $rc)"
            record "$script" 0 1
            continue
        fi
        pass=${line%% passed*}
        fail=${line#*, }
        fail=${fail%% failed}
        # A suite may report seed replays on a line of their own; they are part of its total.
        seeds=$(echo "$out" | grep -E '^seed replays: [0-9]+ passed, [0-9]+ failed$' | tail -n1)
        if [ -n "$seeds" ]; then
            sp=${seeds#seed replays: }
            sp=${sp%% passed*}
            sf=${seeds#*, }
            sf=${sf%% failed}
            record "$script seed replays" "$sp" "$sf" seeds
            pass=$((pass - sp))
            fail=$((fail - sf))
        fi
        if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ] && [ "$sf" -eq 0 ]; then
            echo "$script: exited $rc though it reported no failure"
            fail=1
        fi
        record "$script" "$pass" "$fail"
    done
}

selected=()
specs=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then
        shift
        specs=("$@")
        break
    fi
    selected+=("$1")
    shift
done
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

say "checking dependencies (scripts/deps.sh test; on a fresh machine it installs the apt packages and npm emulators first, 5 to 15 minutes)"
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
echo "behaviour (C, Lua, end-to-end, extra suites): ${kind_pass[behaviour]} passed, ${kind_fail[behaviour]} failed"
echo "lint (format and luacheck, one per file): ${kind_pass[lint]} passed, ${kind_fail[lint]} failed"
echo "fuzz seed replays: ${kind_pass[seeds]} passed, ${kind_fail[seeds]} failed"
total_pass=$((kind_pass[behaviour] + kind_pass[lint] + kind_pass[seeds]))
total_fail=$((kind_fail[behaviour] + kind_fail[lint] + kind_fail[seeds]))
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
