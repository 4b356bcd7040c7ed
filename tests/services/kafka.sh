#!/usr/bin/env bash
# Starts/stops librdkafka's mock Kafka cluster (tools/kafka_mockd) on loopback for the tests.
# usage: tests/services/kafka.sh start DIR [topic[:partitions]...]   prints KAFKA_BROKERS=host:port,...
#        tests/services/kafka.sh stop DIR
# The daemon's PID is kept in DIR/kafka.pid; AUTOPGO_BUILD_DIR picks the build tree (default build).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [topics...]" >&2; exit 2; }
shift 2 || true

case "$cmd" in
start)
    bin="${AUTOPGO_BUILD_DIR:-$root/build}/tools/kafka_mockd/kafka_mockd"
    [ -x "$bin" ] || { echo "kafka: $bin is not built (make -C build kafka_mockd)" >&2; exit 1; }
    mkdir -p "$dir"
    "$bin" -b 3 -p 4 "$@" </dev/null >"$dir/kafka.out" 2>"$dir/kafka.err" &
    echo $! >"$dir/kafka.pid"
    for _ in $(seq 1 100); do
        line=$(head -n1 "$dir/kafka.out" 2>/dev/null || true)
        if [ -n "$line" ]; then
            echo "KAFKA_BROKERS=$line"
            exit 0
        fi
        kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null || break
        sleep 0.05
    done
    echo "kafka: the mock cluster did not start: $(cat "$dir/kafka.err")" >&2
    exit 1
    ;;
stop)
    [ -f "$dir/kafka.pid" ] || exit 0
    pid=$(cat "$dir/kafka.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/kafka.pid"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
