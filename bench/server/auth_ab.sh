#!/usr/bin/env bash
# bench/server/auth_ab.sh: the cost of --auth-file on uploads, measured A/B on a busy machine. The
# upload path (server_only.lua) runs twice at once, without and with an auth file of ten grants,
# and 16 keep-alive clients post to one and then the other in alternating short rounds, so load from
# elsewhere hits both alike. Prints each round and the totals. Needs a run of run.sh first (tools).
# usage: bench/server/auth_ab.sh [rounds (default 6)] [seconds per round (default 4)] [clients (16)]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rounds=${1:-6}
secs=${2:-4}
clients=${3:-16}
out="$root/build/bench-server"
cd "$root"
if [ ! -x "$out/bin/loadgen" ] || [ ! -f "$out/profile.pb.gz" ]; then
    echo "run bench/server/run.sh first" >&2
    exit 1
fi

token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
{
    echo "["
    for i in $(seq 1 9); do
        printf '{"name":"other-%d","sha256":"%s","scopes":["download"],"apps":["*"]},\n' "$i" \
            "$(printf 'other-%d' "$i" | sha256sum | cut -d' ' -f1)"
    done
    printf '{"name":"bench","sha256":"%s","scopes":["upload"],"apps":["bench-*"]}\n]\n' \
        "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)"
} >"$out/auth-ab.json"
rm -rf "$out/ab" && mkdir -p "$out/ab/plain" "$out/ab/auth"
build/autopgo run bench/server/server_only.lua --port 19111 --data-dir "$out/ab/plain" 2>"$out/ab/plain.log" &
plain=$!
build/autopgo run bench/server/server_only.lua --port 19112 --data-dir "$out/ab/auth" --auth-file "$out/auth-ab.json" \
    2>"$out/ab/auth.log" &
auth=$!
trap 'kill $plain $auth 2>/dev/null || true' EXIT
for port in 19111 19112; do
    for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$port/api/health" && break; sleep 0.05; done
done
field() { echo "$1" | sed -E "s/.*\"$2\":([0-9.]+).*/\1/"; }
tp=0; ta=0; ep=0; ea=0
for r in $(seq 1 "$rounds"); do
    lp=$("$out/bin/loadgen" -url http://127.0.0.1:19111/api/profile/bench-app -file "$out/profile.pb.gz" \
        -c "$clients" -d "${secs}s" -warmup 1s)
    la=$("$out/bin/loadgen" -url http://127.0.0.1:19112/api/profile/bench-app -file "$out/profile.pb.gz" \
        -c "$clients" -d "${secs}s" -warmup 1s -token "$token")
    printf 'round %d: plain %.1f/s p99 %.1f ms; auth %.1f/s p99 %.1f ms\n' "$r" "$(field "$lp" per_second)" \
        "$(field "$lp" p99_ms)" "$(field "$la" per_second)" "$(field "$la" p99_ms)"
    tp=$((tp + $(field "$lp" uploads))); ta=$((ta + $(field "$la" uploads)))
    ep=$((ep + $(field "$lp" errors))); ea=$((ea + $(field "$la" errors)))
done
awk -v p="$tp" -v a="$ta" -v s="$((rounds * secs))" -v ep="$ep" -v ea="$ea" -v c="$clients" 'BEGIN {
    printf "total, %d clients: plain %.1f uploads/s (%d errors), auth %.1f uploads/s (%d errors): auth/plain %.3f\n",
        c, p / s, ep, a / s, ea, a / p }'
