#!/usr/bin/env bash
# Starts/stops Google's Pub/Sub emulator on 127.0.0.1 for the tests. It is preinstalled on some
# machines only (google-cloud-cli-pubsub-emulator; not installable from apt or npm): where it is
# missing, `start` exits 3 and says so, and the specs report "skipped, emulator not installed".
# usage: tests/services/pubsub.sh start DIR PORT   prints PUBSUB_EMULATOR_HOST=127.0.0.1:PORT
#        tests/services/pubsub.sh stop DIR
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }
emulator=${PUBSUB_EMULATOR_BIN:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}

case "$cmd" in
start)
    port=${3:-}
    [ -n "$port" ] || { echo "usage: $0 start DIR PORT" >&2; exit 2; }
    if [ ! -x "$emulator" ]; then
        echo "pubsub: skipped, emulator not installed ($emulator)" >&2
        exit 3
    fi
    command -v java >/dev/null || { echo "pubsub: java is not installed (scripts/deps.sh test)" >&2; exit 1; }
    mkdir -p "$dir"
    "$emulator" --host=127.0.0.1 --port="$port" </dev/null >"$dir/pubsub.log" 2>&1 &
    echo $! >"$dir/pubsub.pid"
    for _ in $(seq 1 600); do
        if curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1; then
            echo "PUBSUB_EMULATOR_HOST=127.0.0.1:$port"
            exit 0
        fi
        kill -0 "$(cat "$dir/pubsub.pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "pubsub: the emulator did not become ready: $(tail -5 "$dir/pubsub.log")" >&2
    exit 1
    ;;
stop)
    [ -f "$dir/pubsub.pid" ] || exit 0
    pid=$(cat "$dir/pubsub.pid")
    # the launcher script execs java, so the PID is the JVM's
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pubsub.pid"
    ;;
*)
    echo "usage: $0 start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac
