#!/usr/bin/env bash
# Starts/stops the Service Bus peer of the tests (tests/services/servicebus-fake.mjs, a server
# written from the Service Bus REST API reference; no emulator runs here) on 127.0.0.1 on a random
# port. The namespace key is made up per run.
# usage: tests/services/servicebus.sh start DIR   prints SERVICEBUS_CONNECTION_STRING=...
#        tests/services/servicebus.sh stop DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

case "$cmd" in
start)
    command -v node >/dev/null || { echo "servicebus: node is not installed (scripts/deps.sh test)" >&2; exit 1; }
    mkdir -p "$dir"
    rm -f "$dir/sb.port"
    key=$(head -c 32 /dev/urandom | base64)
    SB_KEY_NAME=RootManageSharedAccessKey SB_KEY="$key" node "$root/tests/services/servicebus-fake.mjs" \
        "$dir/sb.port" </dev/null >"$dir/sb.log" 2>&1 &
    echo $! >"$dir/sb.pid"
    for _ in $(seq 1 100); do
        if [ -s "$dir/sb.port" ]; then
            port=$(cat "$dir/sb.port")
            echo "SERVICEBUS_CONNECTION_STRING=Endpoint=sb://127.0.0.1:$port/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=$key;UseDevelopmentEmulator=true"
            exit 0
        fi
        kill -0 "$(cat "$dir/sb.pid")" 2>/dev/null || break
        sleep 0.05
    done
    echo "servicebus: the server did not start: $(tail -5 "$dir/sb.log")" >&2
    exit 1
    ;;
stop)
    [ -f "$dir/sb.pid" ] || exit 0
    pid=$(cat "$dir/sb.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/sb.pid"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
