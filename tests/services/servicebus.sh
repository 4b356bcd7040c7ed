#!/usr/bin/env bash
# The Service Bus peer of the tests (tests/services/servicebus-fake.mjs, a server written from the
# Service Bus REST API reference; no emulator runs here) on 127.0.0.1 on a port it picked, with a
# namespace key made up per start.
#   usage: tests/services/servicebus.sh start|stop|status|env|check   (the verbs: tests/services/lib.sh)
#   prints SERVICEBUS_CONNECTION_STRING=Endpoint=sb://127.0.0.1:PORT/;SharedAccessKeyName=...
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

check() { need node curl; }

# Any HTTP answer (an unsigned request gets 401).
ready() { [ -s "$D/port" ] && http_answers "$(cat "$D/port")"; }

launch() {
    local key
    key=$(head -c 32 /dev/urandom | base64)
    spawn servicebus.log env SB_KEY_NAME=RootManageSharedAccessKey SB_KEY="$key" \
        node "$root/tests/services/servicebus-fake.mjs" "$D/port"
    await 20 "the port file" test -s "$D/port"
    put_env "SERVICEBUS_CONNECTION_STRING=Endpoint=sb://127.0.0.1:$(cat "$D/port")/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=$key;UseDevelopmentEmulator=true"
}

service_main "$@"
