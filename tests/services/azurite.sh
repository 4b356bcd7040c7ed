#!/usr/bin/env bash
# Azurite 3.35.0 (Microsoft's Azure Storage emulator, which verifies Shared Key and SAS) for the
# Azure Blob specs: the blob service only, in memory, telemetry off, on a free 127.0.0.1 port.
#   usage: tests/services/azurite.sh start|stop|status|env|check   (the verbs: tests/services/lib.sh)
#   prints AUTOPGO_TEST_AZURE_BLOB_ENDPOINT=http://127.0.0.1:PORT/devstoreaccount1,
#   AUTOPGO_TEST_AZURE_ACCOUNT=devstoreaccount1 and AUTOPGO_TEST_AZURE_KEY=<its well-known key>
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

check() {
    need node curl
    need_npm azurite
}

# Any HTTP answer means it is up (an unauthenticated GET / gets 400).
ready() { http_answers "$(cat "$D/port")"; }

launch() {
    local port
    port=$(free_port)
    port_must_be_free "$port"
    echo "$port" >"$D/port"
    spawn azurite.log node "$npm_dir/node_modules/azurite/dist/src/blob/main.js" --blobHost 127.0.0.1 \
        --blobPort "$port" --inMemoryPersistence --disableTelemetry --silent
    put_env "AUTOPGO_TEST_AZURE_BLOB_ENDPOINT=http://127.0.0.1:$port/$ACCOUNT" "AUTOPGO_TEST_AZURE_ACCOUNT=$ACCOUNT" \
        "AUTOPGO_TEST_AZURE_KEY=$KEY"
}

service_main "$@"
