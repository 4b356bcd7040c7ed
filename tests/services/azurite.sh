#!/usr/bin/env bash
# Azurite 3.35.0 (Microsoft's Azure Storage emulator, which verifies Shared Key and SAS) for the
# Azure Blob specs: the blob service only, in memory, telemetry off, on a free 127.0.0.1 port.
# Idempotent: `start` reuses a running instance.
#   usage: tests/services/azurite.sh start|stop|status|env
#   start/env print AUTOPGO_TEST_AZURE_BLOB_ENDPOINT=http://127.0.0.1:PORT/devstoreaccount1,
#   AUTOPGO_TEST_AZURE_ACCOUNT=devstoreaccount1 and AUTOPGO_TEST_AZURE_KEY=<its well-known key>
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

D=$(state_dir azurite)
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
MAIN="$npm_dir/node_modules/azurite/dist/src/blob/main.js"

# Any HTTP answer means it is up (an unauthenticated GET / gets 400).
ready() {
    [ -f "$D/port" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(cat "$D/port")/")" != 000 ]
}

print_env() {
    echo "AUTOPGO_TEST_AZURE_BLOB_ENDPOINT=http://127.0.0.1:$(cat "$D/port")/$ACCOUNT"
    echo "AUTOPGO_TEST_AZURE_ACCOUNT=$ACCOUNT"
    echo "AUTOPGO_TEST_AZURE_KEY=$KEY"
}

stop() {
    stop_pids "$D/pids"
    rm -rf "$D"
}

start() {
    if pids_alive "$D/pids" && ready; then
        print_env
        return 0
    fi
    [ -f "$MAIN" ] || die "azurite is not installed in $npm_dir (scripts/deps.sh test)"
    [ -f "$D/pids" ] && stop
    mkdir -p "$D"
    local port
    port=$(free_port)
    port_must_be_free "$port"
    echo "$port" >"$D/port"
    (cd "$D" && exec node "$MAIN" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence \
        --disableTelemetry --silent </dev/null >"$D/azurite.log" 2>&1) &
    echo $! >"$D/pids"
    wait_while_alive "$D/pids" 30 ready || { tail -20 "$D/azurite.log" >&2; stop; die "azurite did not answer on 127.0.0.1:$port"; }
    print_env
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) if pids_alive "$D/pids" && ready; then echo running; else echo stopped; exit 1; fi ;;
env) ready && print_env || die "not running (tests/services/azurite.sh start)" ;;
*) die "usage: $0 start|stop|status|env" ;;
esac
