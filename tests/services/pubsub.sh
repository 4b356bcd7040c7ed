#!/usr/bin/env bash
# Google's Pub/Sub emulator on a free 127.0.0.1 port for the Pub/Sub specs. It is preinstalled on
# some machines only (google-cloud-cli-pubsub-emulator; not installable from apt or npm): where it
# is missing, `start` and `check` exit 3 and the specs report "skipped, emulator not installed".
#   usage: tests/services/pubsub.sh start|stop|status|env|check   (the verbs: tests/services/lib.sh)
#   prints PUBSUB_EMULATOR_HOST=127.0.0.1:PORT   (PUBSUB_EMULATOR_BIN overrides the launcher)
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

emulator=${PUBSUB_EMULATOR_BIN:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}
READY_SECONDS=60

check() {
    [ -x "$emulator" ] || unavailable "emulator not installed ($emulator)"
    need java curl
}

ready() { curl -sf -o /dev/null -m 5 "http://$(env_value PUBSUB_EMULATOR_HOST)/"; }

launch() {
    local port
    port=$(free_port)
    port_must_be_free "$port"
    # the launcher script execs java, so the recorded PID is the JVM's
    spawn pubsub.log "$emulator" --host=127.0.0.1 --port="$port"
    put_env "PUBSUB_EMULATOR_HOST=127.0.0.1:$port"
}

service_main "$@"
