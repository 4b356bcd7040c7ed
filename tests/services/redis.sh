#!/usr/bin/env bash
# redis-server (Debian) on 127.0.0.1 for the Redis blob store specs: one plain instance without a
# password, one TLS-only instance that requires a password and checks client certificates when
# one is shown (tls-auth-clients optional; certificates made here by openssl), and
# a Redis Cluster of three masters (plain, no password).
#   usage: tests/services/redis.sh start|stop|status|env|check   (the verbs: tests/services/lib.sh)
#   prints REDIS_URL=redis://127.0.0.1:PORT/0, REDIS_TLS_URL=rediss://127.0.0.1:PORT/0,
#   REDIS_PASSWORD, REDIS_USER + REDIS_USER_PASSWORD (an ACL user), REDIS_CA_FILE (the CA that
#   signed the server certificate), REDIS_OTHER_CA_FILE (a CA that did not), REDIS_SERVER_BIN,
#   REDIS_CLIENT_CERT_FILE/_KEY_FILE (a client certificate the CA signed), REDIS_STRANGER_CERT_FILE/
#   _KEY_FILE (one another CA signed), REDIS_CLUSTER_URL=redis://127.0.0.1:PORT/0 (one node of the
#   cluster; it redirects to the others)
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

check() { need redis-server redis-cli openssl node; }

ready() {
    redis-cli -h 127.0.0.1 -p "$(env_value REDIS_PLAIN_PORT)" ping 2>/dev/null | grep -q PONG &&
        redis-cli -h 127.0.0.1 -p "$(env_value REDIS_TLS_PORT)" --tls --cacert "$D/tls/ca.pem" \
            -a "$(env_value REDIS_PASSWORD)" --no-auth-warning ping 2>/dev/null | grep -q PONG &&
        redis-cli -h 127.0.0.1 -p "$(env_value REDIS_CLUSTER_PORT)" cluster info 2>/dev/null |
        grep -q 'cluster_state:ok'
}

# A CA, a server certificate it signs for 127.0.0.1 and localhost, and a second, unrelated CA.
make_certs() {
    local t="$D/tls"
    mkdir -p "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=autopgo-test-ca \
        -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=autopgo-other-ca \
        -keyout "$t/other-ca.key" -out "$t/other-ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
        -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$t/ext.cnf"
    openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
        -days 2 -extfile "$t/ext.cnf" -out "$t/server.pem" 2>/dev/null
    # client certificates: one the server trusts (signed by the CA), one it does not
    local who
    for who in client:ca stranger:other-ca; do
        openssl req -newkey rsa:2048 -nodes -subj "/CN=${who%%:*}" \
            -keyout "$t/${who%%:*}.key" -out "$t/${who%%:*}.csr" 2>/dev/null
        openssl x509 -req -in "$t/${who%%:*}.csr" -CA "$t/${who#*:}.pem" -CAkey "$t/${who#*:}.key" \
            -CAcreateserial -days 2 -out "$t/${who%%:*}.pem" 2>/dev/null
    done
}

launch() {
    make_certs
    local plain tls password user_password
    plain=$(free_port)
    tls=$(free_port)
    port_must_be_free "$plain"
    port_must_be_free "$tls"
    password=$(openssl rand -hex 12)
    user_password=$(openssl rand -hex 12)
    mkdir -p "$D/plain" "$D/tls-data"
    spawn plain.log redis-server --bind 127.0.0.1 --port "$plain" --save "" --appendonly no \
        --dir "$D/plain" --protected-mode no
    spawn tls.log redis-server --bind 127.0.0.1 --port 0 --tls-port "$tls" \
        --tls-cert-file "$D/tls/server.pem" --tls-key-file "$D/tls/server.key" \
        --tls-ca-cert-file "$D/tls/ca.pem" --tls-auth-clients optional \
        --requirepass "$password" --user autopgo on ">$user_password" '~*' '&*' +@all \
        --save "" --appendonly no --dir "$D/tls-data"
    # the cluster: three masters, each with a client port and a bus port of its own
    local nodes=() port bus i
    for i in 1 2 3; do
        port=$(free_port)
        bus=$(free_port)
        port_must_be_free "$port"
        port_must_be_free "$bus"
        mkdir -p "$D/cluster-$i"
        spawn "cluster-$i.log" redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
            --cluster-port "$bus" --cluster-config-file "$D/cluster-$i/nodes.conf" \
            --save "" --appendonly no --dir "$D/cluster-$i"
        nodes+=("127.0.0.1:$port")
    done
    for i in 0 1 2; do await 10 "cluster node ${nodes[$i]}" redis-cli -h 127.0.0.1 -p "${nodes[$i]#*:}" ping; done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$D/cluster-create.log" 2>&1 ||
        die "redis-cli --cluster create failed: $(tail -n 5 "$D/cluster-create.log")"
    put_env "REDIS_CLUSTER_URL=redis://${nodes[0]}/0" "REDIS_CLUSTER_PORT=${nodes[0]#*:}"
    put_env "REDIS_URL=redis://127.0.0.1:$plain/0" "REDIS_TLS_URL=rediss://127.0.0.1:$tls/0" \
        "REDIS_PLAIN_PORT=$plain" "REDIS_TLS_PORT=$tls" "REDIS_PASSWORD=$password" \
        "REDIS_USER=autopgo" "REDIS_USER_PASSWORD=$user_password" \
        "REDIS_CA_FILE=$D/tls/ca.pem" "REDIS_OTHER_CA_FILE=$D/tls/other-ca.pem" \
        "REDIS_TLS_CERT_FILE=$D/tls/server.pem" "REDIS_TLS_KEY_FILE=$D/tls/server.key" \
        "REDIS_CLIENT_CERT_FILE=$D/tls/client.pem" "REDIS_CLIENT_KEY_FILE=$D/tls/client.key" \
        "REDIS_STRANGER_CERT_FILE=$D/tls/stranger.pem" "REDIS_STRANGER_KEY_FILE=$D/tls/stranger.key" \
        "REDIS_SERVER_BIN=$(command -v redis-server)"
}

service_main "$@"
