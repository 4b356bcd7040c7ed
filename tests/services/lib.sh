# The one convention of the test service scripts (sourced by tests/services/<name>.sh, not run):
# verbs, state directory, PIDs, readiness, locking, free loopback ports, stopping by PID.
#
# A service script defines three functions and ends with `service_main "$@"`:
#   check   fails (die) when what the service needs is not installed; `unavailable` instead
#           for a service the suite may skip (only Google's Pub/Sub emulator);
#   launch  starts the processes with `spawn` (which records each PID), waits with `await` for
#           what it needs, and writes what clients need with `put_env K=V...`;
#   ready   succeeds when the running instance answers (start waits for it, status asks it).
# and may set READY_SECONDS (how long start waits for `ready`, default 30).
#
# Verbs, the same for every service:
#   start   starts the service unless it is already running and ready, then prints its K=V lines
#           (exit 0); a service that cannot start prints why on stderr and exits 1 (3: skipped,
#           not installable here). Concurrent starts of one service wait for each other.
#   stop    stops its processes by PID (TERM, then KILL after 10 s) and removes its state.
#   status  prints "running" (exit 0) or "stopped" (exit 1).
#   env     prints the K=V lines of the running instance (exit 1 when it is not running).
#   check   exit 0 when it can be started here, 1 (missing, a failure) or 3 (skipped).
#
# State lives in $AUTOPGO_SERVICES_DIR/<name> (default build/services/<name>): pids (one PID per
# line), env (the K=V lines), *.log, and the service's data. scripts/test.sh points
# AUTOPGO_SERVICES_DIR at one directory per run and tests/services/stop-all.sh stops what is in it.
# shellcheck shell=bash

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
npm_dir="$root/.deps/npm"
name=$(basename "$0" .sh)
services_dir=$(realpath -m "${AUTOPGO_SERVICES_DIR:-$root/build/services}")
D="$services_dir/$name"
READY_SECONDS=30

die() {
    echo "$name: $*" >&2
    exit 1
}

# The service cannot be installed from apt or npm here: its specs are reported as skipped.
unavailable() {
    echo "$name: skipped, $*" >&2
    exit 3
}

# need CMD...: dies naming the first command that is not installed.
need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null || die "$c is not installed (scripts/deps.sh test)"
    done
}

# need_npm PACKAGE...: dies naming the first package missing from .deps/npm.
need_npm() {
    local p
    for p in "$@"; do
        [ -d "$npm_dir/node_modules/$p" ] || die "npm package $p is not installed in $npm_dir (scripts/deps.sh test)"
    done
}

# A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Fails clearly when something already listens on 127.0.0.1:$1.
port_must_be_free() {
    if port_open "$1"; then
        die "port 127.0.0.1:$1 is already taken; stop whatever listens there or pick another port"
    fi
}

# True when the service answers HTTP at all on 127.0.0.1:$1 (any status).
http_answers() {
    [ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$1/")" != 000 ]
}

# spawn [-o STDOUT] LOG CMD...: runs CMD in the background in $D with stdin closed, stderr (and
# stdout, unless -o names another file) appended to $D/LOG, and records its PID in $D/pids.
# CMD is exec'd, so the recorded PID is the service's own (use `env K=V cmd` for variables).
spawn() {
    local out=""
    if [ "$1" = -o ]; then
        out=$2
        shift 2
    fi
    local log=$1
    shift
    [ -n "$out" ] || out=$log
    # fd 9 holds the start lock: the service must not inherit it
    (cd "$D" && exec "$@" </dev/null >>"$D/$out" 2>>"$D/$log" 9>&-) &
    echo $! >>"$D/pids"
}

# The PID spawn recorded last.
last_pid() {
    tail -n1 "$D/pids"
}

# put_env K=V...: the lines `start` and `env` print.
put_env() {
    printf '%s\n' "$@" >>"$D/env"
}

# env_value K: the value of K in the env file.
env_value() {
    sed -n "s/^$1=//p" "$D/env" 2>/dev/null
}

# True when process $1 runs. A process that has exited but was not reaped yet (a zombie: its
# parent is init, which may reap only every few seconds) counts as gone.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# True when every PID in the file is alive.
pids_alive() {
    local f=$1 pid
    [ -s "$f" ] || return 1
    while read -r pid; do
        [ -n "$pid" ] || continue
        alive "$pid" || return 1
    done <"$f"
    return 0
}

# await SECONDS WHAT CMD...: runs CMD every 0.1 s until it succeeds; dies (naming WHAT) after
# SECONDS or as soon as one of the service's processes has exited.
await() {
    local limit=$1 what=$2
    shift 2
    local tries=$((limit * 10)) i
    for ((i = 0; i < tries; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        pids_alive "$D/pids" || die "$what: a process of the service exited"
        sleep 0.1
    done
    die "$what: not ready after ${limit} s"
}

# Stops the PIDs listed in the file (TERM, then KILL after 10 s), newest first.
stop_pids() {
    local f=$1 pid i any pids
    [ -f "$f" ] || return 0
    mapfile -t pids < <(tac "$f")
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 100; i++)); do
        any=0
        for pid in "${pids[@]}"; do alive "$pid" && any=1; done
        [ $any -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -f "$f"
}

running() {
    pids_alive "$D/pids" && [ -s "$D/env" ] && ready
}

# Removes the state directory, and only that.
remove_state() {
    case "$D" in
    /*/"$name") [ "$D" != "/$name" ] && rm -rf "$D" ;;
    *) die "refusing to remove state directory $D" ;;
    esac
}

stop_service() {
    stop_pids "$D/pids"
    remove_state
}

# Shows the end of each log of a start that failed, then stops what it started.
failed_start() {
    local rc=$? f
    [ $rc -ne 0 ] || return 0
    for f in "$D"/*.log "$D"/log/*; do
        [ -s "$f" ] || continue
        echo "--- $f" >&2
        tail -n 15 "$f" >&2
    done
    stop_service
    exit $rc
}

start_service() {
    if running; then
        cat "$D/env"
        return 0
    fi
    check
    stop_service
    mkdir -p "$D"
    local t0=$EPOCHREALTIME
    trap failed_start EXIT
    launch
    await "$READY_SECONDS" readiness ready
    trap - EXIT
    # one line per real start, so a run can show what it started and how long that took
    awk -v n="$name" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%s %.1f s\n", n, b - a }' >>"$services_dir/started"
    cat "$D/env"
}

# Takes the service's lock (fd 9) so that starts and stops of one service never overlap.
lock() {
    mkdir -p "$services_dir"
    exec 9>"$services_dir/$name.lock"
    flock 9
}

service_main() {
    case "${1:-}" in
    start)
        lock
        start_service
        ;;
    stop)
        lock
        stop_service
        ;;
    status)
        if running; then
            echo running
        else
            echo stopped
            exit 1
        fi
        ;;
    env) if running; then cat "$D/env"; else die "not running (tests/services/$name.sh start)"; fi ;;
    check)
        check
        echo ok
        ;;
    *) die "usage: $0 start|stop|status|env|check   (state in $D)" ;;
    esac
}
