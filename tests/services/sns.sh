#!/usr/bin/env bash
# Starts/stops the SNS peer (serverless-offline-sns from npm, via tests/services/sns-launch.mjs)
# on 127.0.0.1 on a random port for the tests.
# usage: tests/services/sns.sh start DIR   prints SNS_PORT=<port> and dummy AWS credentials
#        tests/services/sns.sh stop DIR
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

case "$cmd" in
start)
    modules="$root/.deps/npm/node_modules"
    [ -d "$modules/serverless-offline-sns" ] || { echo "sns: serverless-offline-sns is not installed (scripts/deps.sh test)" >&2; exit 1; }
    mkdir -p "$dir"
    rm -f "$dir/sns.port"
    # its SQS fan-out uses the AWS SDK: keep it from looking for real credentials or IMDS
    AWS_ACCESS_KEY_ID=AKIDTEST AWS_SECRET_ACCESS_KEY=test-secret AWS_REGION=us-east-1 \
        AWS_EC2_METADATA_DISABLED=true node "$root/tests/services/sns-launch.mjs" "$modules" "$dir/sns.port" \
        </dev/null >"$dir/sns.log" 2>&1 &
    echo $! >"$dir/sns.pid"
    for _ in $(seq 1 200); do
        if [ -s "$dir/sns.port" ]; then
            echo "SNS_PORT=$(cat "$dir/sns.port")"
            echo "AWS_ACCESS_KEY_ID=AKIDTEST"
            echo "AWS_SECRET_ACCESS_KEY=test-secret"
            echo "AWS_REGION=us-east-1"
            echo "AWS_EC2_METADATA_DISABLED=true"
            exit 0
        fi
        kill -0 "$(cat "$dir/sns.pid")" 2>/dev/null || break
        sleep 0.05
    done
    echo "sns: the SNS emulator did not start: $(tail -5 "$dir/sns.log")" >&2
    exit 1
    ;;
stop)
    [ -f "$dir/sns.pid" ] || exit 0
    pid=$(cat "$dir/sns.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/sns.pid"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
