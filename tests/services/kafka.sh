#!/usr/bin/env bash
# librdkafka's mock Kafka cluster (3 brokers, tests/kafka_mockd) on 127.0.0.1 for the Kafka specs.
# Topics are created on first use with 4 partitions; specs use topic and group names of their own.
#   usage: tests/services/kafka.sh start|stop|status|env|check   (the verbs: tests/services/lib.sh)
#   prints KAFKA_BROKERS=127.0.0.1:PORT,...   (AUTOPGO_BUILD_DIR picks the build tree, default build)
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

bin="${AUTOPGO_BUILD_DIR:-$root/build}/tests/kafka_mockd/kafka_mockd"

check() { [ -x "$bin" ] || die "$bin is not built (cmake --build build --target kafka_mockd)"; }

# Every broker accepts connections.
ready() {
    local b brokers
    brokers=$(env_value KAFKA_BROKERS)
    [ -n "$brokers" ] || return 1
    for b in ${brokers//,/ }; do port_open "${b##*:}" || return 1; done
}

launch() {
    spawn -o kafka.out kafka.log "$bin" -b 3 -p 4
    # the first line on stdout is the bootstrap list
    await 10 "the bootstrap list" test -s "$D/kafka.out"
    put_env "KAFKA_BROKERS=$(head -n1 "$D/kafka.out")"
}

service_main "$@"
