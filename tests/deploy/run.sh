#!/usr/bin/env bash
# The deployment test: builds the container images (deploy/image) and runs them on a real Docker
# engine: `autopgo server` from the image against the shared corpus (checked against the Go
# reference), then the compose stack (deploy/compose: NATS JetStream, 2 servers, 2 workers, a
# scraper and the sample Go service) until both workers merged and the results equal the Go
# reference, then `docker-compose down` leaving nothing. Ends with "N passed, N failed".
# Starts dockerd (no bridge, no iptables: every container uses the host's loopback) only when no
# engine answers, and stops it, by PID, at the end. usage: tests/deploy/run.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1
pass=0
fail=0
ok() {
    pass=$((pass + 1))
    echo "ok - $1"
}
bad() {
    fail=$((fail + 1))
    echo "not ok - $1"
}
# check NAME COMMAND...: one test, passed when COMMAND succeeds
check() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/autopgo-deploy-XXXXXX") || exit 1
tag=autopgo-deploytest-$$
project=$tag
dockerd_pid=
compose_up=

# Debian's client (the engine's version, chosen once deps.sh installed it); docker-compose talks
# to the engine itself
export DOCKER=docker
docker() { "$DOCKER" "$@"; }
compose() { docker-compose -p "$project" -f deploy/compose/docker-compose.yml "$@"; }

cleanup() {
    if [ -n "$compose_up" ]; then compose down -v --remove-orphans >/dev/null 2>&1; fi
    docker rm -f "$tag-server" >/dev/null 2>&1
    if [ -n "$dockerd_pid" ]; then
        kill -TERM "$dockerd_pid" 2>/dev/null
        for _ in $(seq 1 60); do
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$dockerd_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! scripts/deps.sh deploy >"$tmp/deps.log" 2>&1; then
    tail -20 "$tmp/deps.log"
    bad "scripts/deps.sh deploy installs docker.io, docker-compose and mmdebstrap"
    finish
fi
mkdir -p build
[ ! -x /usr/bin/docker ] || DOCKER=/usr/bin/docker

# --- the engine -----------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    dockerd --bridge=none --iptables=false --ip6tables=false --pidfile "$tmp/dockerd.pid" \
        >"$root/build/test-dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 0.5
    done
fi
if ! docker info >/dev/null 2>&1; then
    tail -20 "$root/build/test-dockerd.log" 2>/dev/null
    bad "a Docker engine answers (started dockerd: see build/test-dockerd.log)"
    finish
fi

# --- the images -----------------------------------------------------------------------------------
# (quick when scripts/test.sh has just built it)
if ! { cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null && cmake --build build -j2 >/dev/null; }; then
    bad "autopgo builds"
    finish
fi
version=$(build/autopgo --version | awk '{print $2}')
image=autopgo:$version
# AUTOPGO_IMAGE_REPIN: a lock naming versions Debian has since replaced is pinned again (and said)
for kind in autopgo nats goservice; do
    started=$(date +%s)
    if AUTOPGO_IMAGE_REPIN=1 deploy/image/build.sh "$kind" >"$tmp/image-$kind.log" 2>&1; then
        ok "image $kind builds ($(tail -n1 "$tmp/image-$kind.log"), $(($(date +%s) - started)) s)"
        grep -h 'pinning again' "$tmp/image-$kind.log" || true
    else
        tail -20 "$tmp/image-$kind.log"
        bad "image $kind builds"
        finish
    fi
done

size=$(docker image inspect -f '{{.Size}}' "$image")
check "the image is under 100 MB ($size bytes)" test "$size" -lt 100000000
check "the entry point is the autopgo binary, run as the non-root user 65532" test \
    "$(docker image inspect -f '{{json .Config.Entrypoint}} {{.Config.User}}' "$image")" = '["/usr/bin/autopgo"] 65532:65532'
check "--version in the container" test "$(docker run --rm "$image" --version)" = "autopgo $version"
docker run --rm "$image" --help >"$tmp/help" 2>&1
check "--help in the container" grep -q '^Usage: autopgo <command>' "$tmp/help"
docker run --rm "$image" server --help >"$tmp/server-help" 2>&1
check "server --help in the container lists --blob-store-url" grep -q -- '--blob-store-url' "$tmp/server-help"

# The root filesystem is reproducible: built again from the lock, it is the image's layer.
deploy/image/build.sh --tar "$tmp/rootfs.tar" autopgo >/dev/null 2>"$tmp/rootfs.log"
layer=$(docker image inspect -f '{{index .RootFS.Layers 0}}' "$image")
check "a rebuilt root filesystem is byte-identical to the image's layer" test \
    "sha256:$(sha256sum "$tmp/rootfs.tar" 2>/dev/null | cut -d' ' -f1)" = "$layer"
# CA certificates: the bundle is there and every certificate in it parses
if tar -xf "$tmp/rootfs.tar" -C "$tmp" ./etc/ssl/certs/ca-certificates.crt 2>/dev/null; then
    n=$(grep -c 'BEGIN CERTIFICATE' "$tmp/etc/ssl/certs/ca-certificates.crt")
    parsed=$(openssl crl2pkcs7 -nocrl -certfile "$tmp/etc/ssl/certs/ca-certificates.crt" 2>/dev/null |
        openssl pkcs7 -print_certs -noout 2>/dev/null | grep -c '^subject=')
    check "the CA bundle holds $n certificates, all parsed" test "$n" -gt 100 -a "$parsed" -eq "$n"
else
    bad "the image has /etc/ssl/certs/ca-certificates.crt"
fi
rm -f "$tmp/rootfs.tar"

# --- helpers --------------------------------------------------------------------------------------
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        ss -ltnH "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return; }
    done
}
# wait_for SECONDS COMMAND...: true once COMMAND succeeds
wait_for() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}
ready() { curl -sf -o /dev/null "http://127.0.0.1:$1/api/ready"; }
# upload PORT APP FILE: the HTTP status
upload() {
    curl -s -o "$tmp/upload.out" -w '%{http_code}' --data-binary "@$3" "http://127.0.0.1:$1/api/profile/$2"
}
goref=build/goref/bin
if ! { [ -x "$goref/pprofmerge" ] && [ -x "$goref/pprofcanon" ]; } && ! tests/goref/build.sh build/goref >"$tmp/goref.log" 2>&1; then
    tail -20 "$tmp/goref.log"
    bad "the Go reference (tests/goref) builds"
    finish
fi
# expect APP FILE...: the canonical dump of the Go reference merge of the files, into $tmp/want-APP
expect() {
    local app=$1
    shift
    "$goref/pprofmerge" -o "$tmp/want-$app.pgo" "$@" && "$goref/pprofcanon" "$tmp/want-$app.pgo" >"$tmp/want-$app"
}
# merged PORT APP: the served profile of APP equals the Go reference merge (its canonical dump)
merged() {
    curl -sf -o "$tmp/got-$2.pgo" "http://127.0.0.1:$1/api/profile/$2" || return 1
    "$goref/pprofcanon" "$tmp/got-$2.pgo" >"$tmp/got-$2" 2>/dev/null && cmp -s "$tmp/got-$2" "$tmp/want-$2"
}
corpus=tests/testdata/pprof
goapp=("$corpus"/goapp-go123-cpu-1.pb.gz "$corpus"/goapp-go123-cpu-2.pb.gz "$corpus"/goapp-go123-cpu-3.pb.gz)

# --- one server from the image --------------------------------------------------------------------
port=$(free_port)
docker run -d --name "$tag-server" --network host "$image" server --port "$port" >/dev/null
if wait_for 30 ready "$port"; then
    ok "server from the image is ready on 127.0.0.1:$port"
else
    docker logs "$tag-server" 2>&1 | tail -20
    bad "server from the image is ready on 127.0.0.1:$port"
    finish
fi
pid=$(docker inspect -f '{{.State.Pid}}' "$tag-server")
check "the server process runs as uid 65532" test "$(awk '/^Uid:/ {print $2 $3}' "/proc/$pid/status")" = 6553265532
codes=
for f in "${goapp[@]}"; do codes+="$(upload "$port" goapp "$f") "; done
codes+="$(upload "$port" autopgo "$corpus/autopgo/default.pgo")"
check "the server in the container takes the corpus's uploads (201 each)" test "$codes" = "201 201 201 201"
check "an upload that does not parse is refused with 400" test "$(upload "$port" goapp "$corpus/bad/random.bin")" = 400
expect goapp "${goapp[@]}" && expect autopgo "$corpus/autopgo/default.pgo"
check "the merged goapp profile equals the Go reference merge" wait_for 60 merged "$port" goapp
check "the merged autopgo profile equals the Go reference merge" wait_for 60 merged "$port" autopgo
docker stop -t 30 "$tag-server" >/dev/null
check "the server stops on SIGTERM with status 0" test "$(docker inspect -f '{{.State.ExitCode}}' "$tag-server")" = 0
docker rm "$tag-server" >/dev/null

# --- the compose stack ----------------------------------------------------------------------------
NATS_PORT=$(free_port)
SERVER_1_PORT=$(free_port)
SERVER_2_PORT=$(free_port)
WORKER_1_PORT=$(free_port)
WORKER_2_PORT=$(free_port)
GOSERVICE_PORT=$(free_port)
SCRAPER_PORT=$(free_port)
export NATS_PORT SERVER_1_PORT SERVER_2_PORT WORKER_1_PORT WORKER_2_PORT GOSERVICE_PORT SCRAPER_PORT
export AUTOPGO_VERSION=$version SCRAPE_FREQUENCY=2s SCRAPE_DURATION=1s AUTOPGO_TARGETS=$tmp/targets.json
echo "[{\"address\": \"http://127.0.0.1:$GOSERVICE_PORT\"}]" >"$AUTOPGO_TARGETS"
check "docker-compose parses the stack" compose config -q
compose_up=1
if compose up -d >"$tmp/compose-up.log" 2>&1; then
    ok "docker-compose up starts the stack"
else
    cat "$tmp/compose-up.log"
    bad "docker-compose up starts the stack"
    finish
fi
all_ready() { ready "$SERVER_1_PORT" && ready "$SERVER_2_PORT" && ready "$WORKER_1_PORT" && ready "$WORKER_2_PORT"; }
if wait_for 60 all_ready; then
    ok "both servers and both workers are ready (NATS JetStream, shared store)"
else
    compose logs --tail 20 2>&1
    bad "both servers and both workers are ready (NATS JetStream, shared store)"
    finish
fi
# Uploads of 4 apps, each to the two servers in turn, in three phases: worker-1 alone, worker-2
# alone (so each is seen merging, whatever NATS hands to whom), then both at once; after each
# phase every app equals the Go reference merge of all its uploads so far.
declare -A files
took1=0
took2=0
sent=0
upload_round() { # N: N uploads of each app
    local i app f
    for i in $(seq 1 $(($1 * 4))); do
        app=app-$((sent % 4))
        f=${goapp[$((sent % 3))]}
        files[$app]+="$f "
        if [ $((sent % 2)) -eq 0 ]; then
            [ "$(upload "$SERVER_1_PORT" "$app" "$f")" = 201 ] && took1=$((took1 + 1))
        else
            [ "$(upload "$SERVER_2_PORT" "$app" "$f")" = 201 ] && took2=$((took2 + 1))
        fi
        sent=$((sent + 1))
    done
}
all_merged() { # PHASE
    local app n
    for app in app-0 app-1 app-2 app-3; do
        # shellcheck disable=SC2086 # the list of files of the app
        expect "$app" ${files[$app]}
        n=$(echo ${files[$app]} | wc -w)
        check "$1: $app served by server-2 equals the Go reference merge of its $n uploads" \
            wait_for 120 merged "$SERVER_2_PORT" "$app"
    done
}
merges_of() { # WORKER: the merges it wrote since it started (its /metrics)
    local p=WORKER_${1}_PORT
    curl -sf "http://127.0.0.1:${!p}/metrics" | grep -E '^autopgo_merges_total\{result="merged"\}' | awk '{print $2}'
}
compose stop worker-2 >/dev/null 2>&1
upload_round 3
all_merged "worker-1 alone"
m=$(merges_of 1)
check "worker-1 merged (${m:-0} merges)" test "${m:-0}" -gt 0
compose start worker-2 >/dev/null 2>&1
wait_for 60 ready "$WORKER_2_PORT" && compose stop worker-1 >/dev/null 2>&1
upload_round 3
all_merged "worker-2 alone"
m=$(merges_of 2)
check "worker-2 merged (${m:-0} merges)" test "${m:-0}" -gt 0
compose start worker-1 >/dev/null 2>&1
check "worker-1 is back" wait_for 60 ready "$WORKER_1_PORT"
upload_round 2
all_merged "both workers"
check "both servers took their uploads ($took1 + $took2 of $sent)" test "$took1" -eq $((sent / 2)) -a "$took2" -eq $((sent / 2))
# the scraper profiles the sample Go service and its profile is merged like any other
scraped() { merged_any "$SERVER_1_PORT" goservice; }
merged_any() {
    curl -sf -o "$tmp/$2.pgo" "http://127.0.0.1:$1/api/profile/$2" &&
        "$goref/pprofcanon" "$tmp/$2.pgo" >"$tmp/$2.canon" 2>/dev/null && grep -q '"main.burnFibonacci"' "$tmp/$2.canon"
}
check "the scraper's profiles of the Go service are merged (they name main.burnFibonacci)" wait_for 90 scraped

compose down -v --remove-orphans >"$tmp/compose-down.log" 2>&1
down=$?
compose_up=
check "docker-compose down succeeds" test "$down" -eq 0
left=$(
    docker ps -aq --filter "label=com.docker.compose.project=$project"
    docker volume ls -q --filter "label=com.docker.compose.project=$project"
    docker network ls -q --filter "label=com.docker.compose.project=$project"
)
check "docker-compose down leaves no container, volume or network behind" test -z "$left"

finish
