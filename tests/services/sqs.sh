#!/usr/bin/env bash
# Starts/stops the SQS peer (sqslite from npm, with the fixes of tests/services/sqs-launch.js) on
# 127.0.0.1 on a random port for the tests.
# usage: tests/services/sqs.sh start DIR   prints SQS_PORT=<port> and dummy AWS credentials
#        tests/services/sqs.sh stop DIR    (sqslite checks no signatures; IMDS is switched off)
# Queue URLs must read http://localhost:<port>/queues/<name>: sqslite only knows that form.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

case "$cmd" in
start)
    modules="$root/.deps/npm/node_modules"
    [ -d "$modules/sqslite" ] || { echo "sqs: sqslite is not installed (scripts/deps.sh test)" >&2; exit 1; }
    mkdir -p "$dir"
    rm -f "$dir/sqs.port"
    node "$root/tests/services/sqs-launch.js" "$modules" "$dir/sqs.port" </dev/null >"$dir/sqs.log" 2>&1 &
    echo $! >"$dir/sqs.pid"
    for _ in $(seq 1 200); do
        if [ -s "$dir/sqs.port" ]; then
            port=$(cat "$dir/sqs.port")
            if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
                echo "SQS_PORT=$port"
                echo "AWS_ACCESS_KEY_ID=AKIDTEST"
                echo "AWS_SECRET_ACCESS_KEY=test-secret"
                echo "AWS_REGION=us-east-1"
                echo "AWS_EC2_METADATA_DISABLED=true"
                exit 0
            fi
        fi
        kill -0 "$(cat "$dir/sqs.pid")" 2>/dev/null || break
        sleep 0.05
    done
    echo "sqs: sqslite did not start: $(tail -5 "$dir/sqs.log")" >&2
    exit 1
    ;;
stop)
    [ -f "$dir/sqs.pid" ] || exit 0
    pid=$(cat "$dir/sqs.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/sqs.pid"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
