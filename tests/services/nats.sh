#!/usr/bin/env bash
# Starts/stops nats-server with JetStream on loopback (random ports) for the tests.
# usage: tests/services/nats.sh start DIR    prints NATS_SERVER_URL=nats://127.0.0.1:port
#        tests/services/nats.sh stop DIR     (also NATS_MONITOR_URL=http://127.0.0.1:port)
# The server's PID is kept in DIR/nats.pid and its JetStream store in DIR/js.
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

case "$cmd" in
start)
    command -v nats-server >/dev/null || { echo "nats: nats-server is not installed (scripts/deps.sh test)" >&2; exit 1; }
    mkdir -p "$dir/js"
    nats-server -a 127.0.0.1 -p -1 -m -1 -js -sd "$dir/js" --ports_file_dir "$dir" \
        </dev/null >"$dir/nats.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/nats.pid"
    ports="$dir/nats-server_$pid.ports"
    for _ in $(seq 1 100); do
        if [ -s "$ports" ]; then
            url=$(sed -E 's/.*"nats":\["([^"]+)".*/\1/' "$ports")
            mon=$(sed -E 's/.*"monitoring":\["([^"]+)".*/\1/' "$ports")
            if curl -sf "$mon/healthz?js-enabled-only=true" >/dev/null 2>&1; then
                echo "NATS_SERVER_URL=$url"
                echo "NATS_MONITOR_URL=$mon"
                exit 0
            fi
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "nats: nats-server did not become ready: $(tail -5 "$dir/nats.log")" >&2
    exit 1
    ;;
stop)
    [ -f "$dir/nats.pid" ] || exit 0
    pid=$(cat "$dir/nats.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/nats.pid"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
