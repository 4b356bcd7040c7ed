#!/usr/bin/env bash
# A Google Cloud Storage JSON API emulator for the GCS specs: the Firebase Storage emulator from
# npm firebase-tools, started by tests/services/gcs-emu.js (which also enforces generation
# preconditions, see there) on a free 127.0.0.1 port. No auth. Idempotent: `start` reuses a
# running instance.
#   usage: tests/services/gcs.sh start|stop|status|env
#   start/env print STORAGE_EMULATOR_HOST=127.0.0.1:PORT (the variable Google's libraries read)
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

D=$(state_dir gcs)

ready() { [ -f "$D/port" ] && curl -sf -o /dev/null "http://127.0.0.1:$(cat "$D/port")/b"; }

print_env() { echo "STORAGE_EMULATOR_HOST=127.0.0.1:$(cat "$D/port")"; }

stop() {
    stop_pids "$D/pids"
    rm -rf "$D"
}

start() {
    if pids_alive "$D/pids" && ready; then
        print_env
        return 0
    fi
    [ -d "$npm_dir/node_modules/firebase-tools" ] || die "firebase-tools is not installed in $npm_dir (scripts/deps.sh test)"
    [ -f "$D/pids" ] && stop
    mkdir -p "$D/tmp"
    local port
    port=$(free_port)
    port_must_be_free "$port"
    echo "$port" >"$D/port"
    # TMPDIR: the emulator keeps blobs under os.tmpdir(); keep them per instance
    (cd "$D" && TMPDIR="$D/tmp" GCS_PORT="$port" AUTOPGO_NPM_DIR="$npm_dir" \
        exec node "$root/tests/services/gcs-emu.js" </dev/null >"$D/gcs.log" 2>&1) &
    echo $! >"$D/pids"
    wait_while_alive "$D/pids" 30 ready || { tail -20 "$D/gcs.log" >&2; stop; die "the GCS emulator did not answer on 127.0.0.1:$port"; }
    print_env
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) if pids_alive "$D/pids" && ready; then echo running; else echo stopped; exit 1; fi ;;
env) ready && print_env || die "not running (tests/services/gcs.sh start)" ;;
*) die "usage: $0 start|stop|status|env" ;;
esac
