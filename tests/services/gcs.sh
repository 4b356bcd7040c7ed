#!/usr/bin/env bash
# A Google Cloud Storage JSON API emulator for the GCS specs: the Firebase Storage emulator from
# npm firebase-tools, started by tests/services/gcs-emu.js (which also enforces generation
# preconditions, see there) on a free 127.0.0.1 port. No auth.
#   usage: tests/services/gcs.sh start|stop|status|env|check   (the verbs: tests/services/lib.sh)
#   prints STORAGE_EMULATOR_HOST=127.0.0.1:PORT (the variable Google's libraries read)
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

check() {
    need node curl
    need_npm firebase-tools express
}

ready() { curl -sf -o /dev/null -m 5 "http://$(env_value STORAGE_EMULATOR_HOST)/b"; }

launch() {
    local port
    port=$(free_port)
    port_must_be_free "$port"
    mkdir -p "$D/tmp"
    # TMPDIR: the emulator keeps blobs under os.tmpdir(); keep them with the instance
    spawn gcs.log env TMPDIR="$D/tmp" GCS_PORT="$port" AUTOPGO_NPM_DIR="$npm_dir" \
        node "$root/tests/services/gcs-emu.js"
    put_env "STORAGE_EMULATOR_HOST=127.0.0.1:$port"
}

service_main "$@"
