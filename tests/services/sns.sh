#!/usr/bin/env bash
# The SNS peer of the tests: serverless-offline-sns from npm (via tests/services/sns-launch.mjs)
# on 127.0.0.1 on a port it picked. It checks no signatures; the credentials it prints are dummies.
#   usage: tests/services/sns.sh start|stop|status|env|check   (the verbs: tests/services/lib.sh)
#   prints SNS_PORT=<port>, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_EC2_METADATA_DISABLED
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

check() {
    need node curl
    need_npm serverless-offline-sns express
}

ready() { http_answers "$(env_value SNS_PORT)"; }

launch() {
    # its SQS fan-out uses the AWS SDK: keep it from looking for real credentials or IMDS
    spawn sns.log env AWS_ACCESS_KEY_ID=AKIDTEST AWS_SECRET_ACCESS_KEY=test-secret AWS_REGION=us-east-1 \
        AWS_EC2_METADATA_DISABLED=true node "$root/tests/services/sns-launch.mjs" "$npm_dir/node_modules" "$D/port"
    await 20 "the port file" test -s "$D/port"
    put_env "SNS_PORT=$(cat "$D/port")" AWS_ACCESS_KEY_ID=AKIDTEST AWS_SECRET_ACCESS_KEY=test-secret \
        AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
}

service_main "$@"
