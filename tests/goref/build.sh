#!/usr/bin/env bash
# Builds the Go reference programs (pprofmerge, pprofcanon, pprofgen, pproftime) with Debian's Go 1.19 and
# Debian's github.com/google/pprof in GOPATH mode, offline, into OUT/bin (cache in OUT/cache).
# usage: tests/goref/build.sh OUT
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT}
mkdir -p "$out/bin" "$out/cache"
out=$(cd "$out" && pwd)
go=${AP_GO:-/usr/lib/go-1.19/bin/go}
for t in pprofmerge pprofcanon pprofgen pproftime; do
    GO111MODULE=off GOPATH="/usr/share/gocode:$here" GOCACHE="$out/cache" GOPROXY=off GOFLAGS= \
        "$go" build -o "$out/bin/$t" "$t"
done
