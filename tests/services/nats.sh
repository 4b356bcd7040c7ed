#!/usr/bin/env bash
# nats-server with JetStream (store in the state directory) on 127.0.0.1, ports the server picked,
# for the NATS specs and tests/c/nats. Specs use subjects (so streams) of their own.
#   usage: tests/services/nats.sh start|stop|status|env|check   (the verbs: tests/services/lib.sh)
#   prints NATS_SERVER_URL=nats://127.0.0.1:PORT and NATS_MONITOR_URL=http://127.0.0.1:PORT
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

check() { need nats-server curl; }

ready() { curl -sf -o /dev/null -m 5 "$(env_value NATS_MONITOR_URL)/healthz?js-enabled-only=true"; }

launch() {
    mkdir -p "$D/js"
    spawn nats.log nats-server -a 127.0.0.1 -p -1 -m -1 -js -sd "$D/js" --ports_file_dir "$D"
    local ports
    ports="$D/nats-server_$(last_pid).ports"
    await 10 "the ports file" test -s "$ports"
    put_env "NATS_SERVER_URL=$(sed -E 's/.*"nats":\["([^"]+)".*/\1/' "$ports")" \
        "NATS_MONITOR_URL=$(sed -E 's/.*"monitoring":\["([^"]+)".*/\1/' "$ports")"
}

service_main "$@"
