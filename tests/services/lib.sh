# Shared helpers for the test service scripts (sourced, not run): free loopback ports, waiting
# for readiness, and stopping exactly the processes a script started, by PID.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
npm_dir="$root/.deps/npm"

die() {
    echo "$(basename "$0"): $*" >&2
    exit 1
}

# A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Fails clearly when something already listens on 127.0.0.1:$1.
port_must_be_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        die "port 127.0.0.1:$1 is already taken; stop whatever listens there or pick another port"
    fi
}

# wait_for SECONDS CMD...: runs CMD every 0.2 s until it succeeds; fails after SECONDS.
wait_for() {
    local limit=$1
    shift
    local tries=$((limit * 5)) i
    for ((i = 0; i < tries; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# wait_while_alive PIDFILE SECONDS CMD...: like wait_for, but gives up at once when one of the
# processes in PIDFILE has exited.
wait_while_alive() {
    local f=$1 limit=$2
    shift 2
    local tries=$((limit * 5)) i
    for ((i = 0; i < tries; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        pids_alive "$f" || return 1
        sleep 0.2
    done
    return 1
}

# True when every PID in the file is alive.
pids_alive() {
    local f=$1 pid
    [ -s "$f" ] || return 1
    while read -r pid; do
        [ -n "$pid" ] || continue
        kill -0 "$pid" 2>/dev/null || return 1
    done <"$f"
    return 0
}

# Stops the PIDs listed in the file (TERM, then KILL after 10 s), newest first.
stop_pids() {
    local f=$1 pid i alive
    [ -f "$f" ] || return 0
    for pid in $(tac "$f"); do kill "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for pid in $(cat "$f"); do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.2
    done
    for pid in $(cat "$f"); do kill -9 "$pid" 2>/dev/null || true; done
    rm -f "$f"
}

# The state directory of a service: $AUTOPGO_SERVICES_DIR/<name>, default build/services/<name>.
state_dir() {
    echo "${AUTOPGO_SERVICES_DIR:-$root/build/services}/$1"
}
