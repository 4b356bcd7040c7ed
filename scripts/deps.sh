#!/usr/bin/env bash
# Installs what autopgo needs from Debian (apt) and npm; idempotent and quick when all is present.
# usage: scripts/deps.sh [build|test|deploy]   (build: enough for `make run`; test: everything
# `make test` uses; deploy: test's Debian packages plus the container tools of `make image` and
# tests/deploy, without npm)
set -euo pipefail

group=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)

build_pkgs=(
    cmake make gcc pkg-config
    lua5.4 liblua5.4-dev lua-luv-dev lua-cjson-dev
    lua-yaml
    libuv1-dev libh2o-dev libcurl4-openssl-dev libssl-dev zlib1g-dev libdeflate-dev
    libprotobuf-c-dev protobuf-c-compiler libpcre2-dev
    librdkafka-dev libnats-dev libhiredis-dev
)
# The web view's flame graph library is embedded at build time (core/host/CMakeLists.txt), so
# the build group fetches it: npm into .deps/ui, pinned.
ui_npm_pkgs=(d3@7.9.0 d3-flame-graph@5.0.0)
test_pkgs=(
    clang libclang-rt-14-dev clang-format lua-busted lua-check luarocks curl procps openssl
    golang-1.19-go golang-github-google-pprof-dev
    nats-server kcat openjdk-17-jre-headless
    libqpid-proton11-dev libqpid-proton11-dev-examples
    ceph-mon ceph-osd radosgw
    redis-server redis-tools
    chromium chromium-driver
)
backports_pkgs=(golang-1.23-go)
# Docker's engine and compose, and mmdebstrap for the images (deploy/image, tests/deploy)
deploy_pkgs=(docker.io docker-compose mmdebstrap iproute2)

# npm packages live in .deps/npm, pinned; services are started by the tests that need them.
npm_pkgs=(s3rver@3.7.1 azurite@3.35.0 sqslite@2.1.1 firebase-tools@15.34.2
    serverless-offline-sns@0.78.2 express@4 playwright-core@1.65.1)

missing() {
    local p out=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || out+=("$p")
    done
    echo "${out[@]}"
}

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
apt_updated=0
apt_install() {
    [ $# -gt 0 ] || return 0
    echo "deps: installing $*" >&2
    if [ $apt_updated -eq 0 ]; then
        "${sudo_cmd[@]}" apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Go 1.23 comes from bookworm-backports: add the suite to the existing Debian source, naming no host.
enable_backports() {
    grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
    local src=/etc/apt/sources.list.d/debian.sources
    if [ -f "$src" ]; then
        "${sudo_cmd[@]}" sed -i '0,/^Suites: bookworm bookworm-updates/s//Suites: bookworm bookworm-updates bookworm-backports/' "$src"
        grep -q bookworm-backports "$src" && { apt_updated=0; return 0; }
    fi
    local line
    line=$(grep -hE '^deb [^ ]+ bookworm main' /etc/apt/sources.list 2>/dev/null | head -n1 || true)
    [ -n "$line" ] || { echo "deps: cannot find the Debian source to add bookworm-backports" >&2; return 1; }
    echo "${line/ bookworm / bookworm-backports }" | "${sudo_cmd[@]}" tee /etc/apt/sources.list.d/autopgo-backports.list >/dev/null
    apt_updated=0
}

read -r -a need <<<"$(missing "${build_pkgs[@]}")"
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
# deploy: the test group's Debian packages (Go, the Go reference's pprof, curl, openssl) and the
# container tools, without the npm packages (tests/deploy uses none)
npm=1
if [ "$group" = deploy ]; then
    read -r -a more <<<"$(missing "${deploy_pkgs[@]}")"
    need+=("${more[@]}")
    group=test
    npm=0
fi
if [ "$group" = test ]; then
    read -r -a more <<<"$(missing "${test_pkgs[@]}")"
    # node/npm may come from elsewhere (e.g. nodesource); only take Debian's when there is none.
    command -v kubectl >/dev/null 2>&1 || more+=(kubernetes-client)
    need+=("${more[@]}")
fi
apt_install "${need[@]}"

if [ "$group" = test ]; then
    read -r -a bp <<<"$(missing "${backports_pkgs[@]}")"
    if [ ${#bp[@]} -gt 0 ]; then
        enable_backports
        apt_updated=0
        "${sudo_cmd[@]}" apt-get update -qq
        apt_updated=1
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
            -t bookworm-backports "${bp[@]}" >/dev/null
    fi
fi
# npm_install DIR PACKAGE...: installs the pinned packages into DIR/node_modules once per list.
npm_install() {
    local dir=$1
    shift
    local stamp="$dir/.installed-$(printf '%s\n' "$@" | md5sum | cut -c1-12)"
    [ -f "$stamp" ] && return 0
    echo "deps: installing npm packages into $dir" >&2
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "$@" >/dev/null)
    touch "$stamp"
}
npm_install "$root/.deps/ui" "${ui_npm_pkgs[@]}"
if [ "$group" = test ] && [ $npm -eq 1 ]; then
    npm_install "$root/.deps/npm" "${npm_pkgs[@]}"
fi
