#!/usr/bin/env bash
# The SQS peer of the tests: sqslite from npm, with the fixes of tests/services/sqs-launch.js, on
# 127.0.0.1 on a port it picked. It checks no signatures; the credentials it prints are dummies.
# Queue URLs must read http://localhost:<port>/queues/<name>: sqslite only knows that form.
#   usage: tests/services/sqs.sh start|stop|status|env|check   (the verbs: tests/services/lib.sh)
#   prints SQS_PORT=<port>, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_EC2_METADATA_DISABLED
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

check() {
    need node curl
    need_npm sqslite
}

ready() { http_answers "$(env_value SQS_PORT)"; }

launch() {
    spawn sqs.log node "$root/tests/services/sqs-launch.js" "$npm_dir/node_modules" "$D/port"
    await 20 "the port file" test -s "$D/port"
    put_env "SQS_PORT=$(cat "$D/port")" AWS_ACCESS_KEY_ID=AKIDTEST AWS_SECRET_ACCESS_KEY=test-secret \
        AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
}

service_main "$@"
