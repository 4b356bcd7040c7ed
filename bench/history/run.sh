#!/usr/bin/env bash
# bench/history: a 7-day window of hourly segments of an app getting 60 uploads an hour of a ~1 MB
# (uncompressed) CPU profile, served by `autopgo server` (embedded default, hourly history) cold
# (first request: merges the segments) and warm (repeat: served from the window cache), against
# the Go reference merging the same uploads (Debian's Go 1.19 + google/pprof, Merge in batches
# of one hour into a running result), with the server's memory and a canonical-dump comparison of
# the two outputs. Not a test. Writes bench/history/RESULTS.md (or $OUT/RESULTS.md with OUT set).
# usage: bench/history/run.sh [SERVER_BINARY (default build/autopgo)]
#   env HB_HOURS (168), HB_PER_HOUR (60), HB_POOL (distinct profiles, 60), HB_CONC (uploaders, 4),
#   HB_WARM (warm requests, 5), HB_GO_BATCH (uploads per Go Merge call, default HB_PER_HOUR),
#   HB_GO_SKIP=1 (no Go reference: at full scale it runs for hours on 2 CPUs), HB_WAIT_IDLE=1
#   (measure the window only once nothing is left staged).
#   Quick run: HB_HOURS=4 HB_PER_HOUR=6 bench/history/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$(realpath "${1:-$root/build/autopgo}")
hours=${HB_HOURS:-168}
per_hour=${HB_PER_HOUR:-60}
pool_n=${HB_POOL:-60}
conc=${HB_CONC:-4}
warm_n=${HB_WARM:-5}
go_batch=${HB_GO_BATCH:-$per_hour}
work="$root/build/bench-history"
go=${AP_GO:-/usr/lib/go-1.19/bin/go}
[ -x "$bin" ] || { echo "no server binary at $bin (build autopgo first)" >&2; exit 1; }
mkdir -p "$work/bin"

GO111MODULE=off GOPATH="/usr/share/gocode:$here" GOCACHE="$work/cache" GOPROXY=off GOFLAGS="" \
    "$go" build -o "$work/bin/histload" histload
"$root/tests/goref/build.sh" "$work/goref" >/dev/null

# The pool of distinct uploads (one service: same universe, different seeds), generated once:
# ~1.1 MB uncompressed each, the 1 MB shape of bench/merge.
pool="$work/pool"
mkdir -p "$pool"
for i in $(seq 0 $((pool_n - 1))); do
    [ -s "$pool/$i.pb.gz" ] || "$work/goref/bin/pprofgen" -o "$pool/$i.pb.gz" -seed $((i + 1)) \
        -samples 13500 -paths 4000 -functions 3000 -locations 8000 -labels 2 -path-labels -mappings 3 -inline 0.2
done

# Uploads fill the `hours` whole hours before the current one (all in the past, so each upload's
# own time_nanos is its capture time).
now=$(date +%s)
start=$(((now / 3600 - hours) * 3600))
end=$(((now / 3600) * 3600))
from=$(date -u -d "@$start" +%Y-%m-%dT%H:%M:%SZ)
to=$(date -u -d "@$end" +%Y-%m-%dT%H:%M:%SZ)
total=$((hours * per_hour))
gen=(-pool "$pool" -k "$pool_n" -hours "$hours" -per-hour "$per_hour" -start "$start")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
app=bench-app
data="$work/data"
rm -rf "$data" && mkdir -p "$data"
server=""
cleanup() { [ -z "$server" ] || kill "$server" 2>/dev/null || true; }
trap cleanup EXIT
"$bin" server --port "$port" --host 127.0.0.1 --data-dir "$data" --log-level warn 2>"$work/server.log" &
server=$!
for _ in $(seq 1 200); do
    curl -s -o /dev/null "$url/api/profile" && break
    sleep 0.05
done
mib() { echo "scale=1; $1 / 1024" | bc; }
status() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$server/status"; }

echo "uploading $total profiles ($hours h x $per_hour) to $url ..." >&2
t0=$(date +%s.%N)
upload=$("$work/bin/histload" "${gen[@]}" -upload "$url/api/profile/$app" -c "$conc")
echo "$upload" >&2
# Merged into history when the history lists every upload in its segments.
merged=0
while :; do
    merged=$(curl -sf "$url/api/profile/$app/history" | jq '[.segments[].uploads] | add // 0' || echo 0)
    [ "$merged" -ge "$total" ] && break
    kill -0 "$server" || { echo "the server died; see $work/server.log" >&2; exit 1; }
    sleep 1
done
# With HB_WAIT_IDLE=1, also until nothing is left staged (the base profile has caught up), so the
# window requests do not compete with merges. Off by default: at full scale the base drains far
# more slowly than the history fills (see RESULTS.md).
while [ "${HB_WAIT_IDLE:-0}" = 1 ]; do
    staged=$(curl -sf "$url/api/profile/$app/uploads" | jq '.staged | length' || echo 1)
    [ "$staged" -eq 0 ] && break
    kill -0 "$server" || { echo "the server died; see $work/server.log" >&2; exit 1; }
    sleep 1
done
t1=$(date +%s.%N)
ingest_s=$(printf "%.1f" "$(echo "$t1 - $t0" | bc)")
segments=$(curl -sf "$url/api/profile/$app/history" | jq '.segments | length')
# Day roll-ups the worker's sweep (at start, then every 5 minutes) had built: a window merges a
# current one instead of that day's segments, so a long ingest makes the cold window cheaper.
rollups=0
[ ! -d "$data/$app/history/86400" ] || rollups=$(find "$data/$app/history/86400" -name '*.json' | wc -l)
ingest_hwm=$(status VmHWM)
rss_idle=$(status VmRSS)

# One request: prints "seconds bytes status"; the body goes to $2.
fetch() { # QUERY OUT [extra curl args]
    local q=$1 out=$2
    shift 2
    curl -s -o "$out" -w '%{time_total} %{size_download} %{http_code}' "$@" "$url/api/profile/$app?$q"
}
range="from=$from&to=$to"
echo 5 >"/proc/$server/clear_refs" # peak RSS from here on: the window requests alone
cold=$(fetch "$range" "$work/cold.pgo")
cold_hwm=$(status VmHWM)
warm_times=()
for _ in $(seq 1 "$warm_n"); do
    w=$(fetch "$range" "$work/warm.pgo")
    warm_times+=("${w%% *}")
done
warm_med=$(printf '%s\n' "${warm_times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
etag=$(curl -sI "$url/api/profile/$app?$range" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
not_modified=$(fetch "$range" /dev/null -H "If-None-Match: $etag")
window=$(fetch "window=$((hours + 1))h" "$work/window.pgo")
window_hwm=$(status VmHWM)
cmp -s "$work/cold.pgo" "$work/warm.pgo" && warm_same=yes || warm_same=no

if [ "${HB_GO_SKIP:-0}" = 1 ]; then
    go_row="| Go reference | not run (HB_GO_SKIP=1) | | |"
    equal="not compared (no Go run)"
else
    echo "Go reference merging the same $total uploads ..." >&2
    /usr/bin/time -f "%e %U %S %M" -o "$work/go.time" "$work/bin/histload" "${gen[@]}" -merge "$work/go.pb.gz" \
        -batch "$go_batch" >/dev/null
    read -r go_wall go_user go_sys go_rss <"$work/go.time"
    go_row="| Go reference: ParseData + Merge of the $total uploads | $go_wall | $(mib "$go_rss") | CPU $(echo "$go_user + $go_sys" | bc) s, $go_batch uploads per Merge call into the running result |"
    if [ "$("$work/goref/bin/pprofcanon" "$work/cold.pgo" | sha256sum)" = \
        "$("$work/goref/bin/pprofcanon" "$work/go.pb.gz" | sha256sum)" ]; then equal=yes; else equal=no; fi
fi

read -r cold_s cold_bytes cold_code <<<"$cold"
read -r nm_s _ nm_code <<<"$not_modified"
read -r win_s _ win_code <<<"$window"
upload_bytes=$(echo "$upload" | jq .bytes)
result="${OUT:-$here}/RESULTS.md"
{
    echo "# bench/history results"
    echo
    echo "Generated by \`bench/history/run.sh\` (HB_HOURS=$hours HB_PER_HOUR=$per_hour HB_POOL=$pool_n) on"
    echo "$(date -u +%Y-%m-%d) against \`$bin\` ($(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at"
    echo "the end; the machine is shared). $total uploads of $((upload_bytes / total)) bytes (uncompressed"
    echo "pprofgen CPU profiles: 13500 samples, 8000 locations; $pool_n distinct ones, each upload with its"
    echo "own time_nanos) in $segments hourly segments, posted by $conc clients to \`autopgo server\`"
    echo "(embedded default, file store). The window asked for is \`?from=$from&to=$to\`."
    echo
    echo "| | seconds | peak RSS MiB | notes |"
    echo "|---|---:|---:|---|"
    echo "| ingest: upload and merge into history$([ "${HB_WAIT_IDLE:-0}" = 1 ] && echo " and the base, until nothing is staged") | $ingest_s | $(mib "$ingest_hwm") | $(echo "$upload" | jq -r '"\(.errors) upload errors, uploads took \(.seconds | floor) s"') |"
    echo "| window, cold ($segments segments; $rollups day roll-ups stored) | $cold_s | $(mib "$cold_hwm") | HTTP $cold_code, $cold_bytes bytes; RSS before $(mib "$rss_idle") MiB |"
    echo "| window, warm (median of $warm_n) | $warm_med | | same bytes as cold: $warm_same |"
    echo "| window, If-None-Match | $nm_s | | HTTP $nm_code |"
    echo "| \`?window=$((hours + 1))h\` (same segments, another query) | $win_s | $(mib "$window_hwm") | HTTP $win_code |"
    echo "$go_row"
    echo
    echo "Canonical dump (tests/goref pprofcanon) of the cold window equal to Go's merge: **$equal**."
    echo "Peak RSS of the window rows is the server's VmHWM after resetting it (clear_refs) just before"
    echo "the first window request, so it covers the window requests alone; it starts from the RSS the"
    echo "server kept after the ingest (memory its allocator had not returned), so the window's own"
    echo "cost is the difference: $(mib $((cold_hwm - rss_idle))) MiB for the cold request."
} >"$result"
cat "$result"
