#!/usr/bin/env bash
# bench/server: uploads per second and p50/p99 latency for 1, 16 and 64 concurrent clients posting
# a typical 30 s CPU profile, for autopgo (the upload path alone, and the embedded default with
# its worker merging in the same process) and a Go reference server doing what the original does
# on upload (profile.Parse then Write; Go 1.19 + Debian's google/pprof), in one run, with each
# server's peak RSS. Writes bench/server/RESULTS.md.
# With --auth-file (a token with the upload scope) the upload path is measured a second time, for the
# cost of access control. AP_BENCH_ROWS picks the servers (default "go only auth embedded") and
# AP_BENCH_CLIENTS the levels (default "1 16 64"), for short runs on a busy machine; AP_BENCH_OUT
# where the table goes (default bench/server/RESULTS.md).
# Rows drain and drain-worker measure the worker beside the server (issue 19): the embedded default
# under 16 clients for the level's seconds (ingest rate, merges during it, then the drain of what
# is left), and a separate `autopgo worker` draining the backlog the upload path alone staged; each
# with history (--segment 1h, the default) and without (--segment 0). AP_BIN picks the autopgo
# binary of these rows (default build/autopgo), to compare builds.
# usage: bench/server/run.sh [seconds per level (default 10)]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-10}
out="$root/build/bench-server"
go=${AP_GO:-/usr/lib/go-1.19/bin/go}
mkdir -p "$out/bin"
cd "$root"
[ -x build/autopgo ] || { cmake -S . -B build >/dev/null && cmake --build build -j2 >/dev/null; }
bin=${AP_BIN:-build/autopgo}

gobuild() { # GOPATH-dir tool
    GO111MODULE=off GOPATH="/usr/share/gocode:$1" GOCACHE="$out/cache" GOPROXY=off GOFLAGS= \
        "$go" build -o "$out/bin/$2" "$2"
}
gobuild "$here" goserver
gobuild "$here" loadgen
"$root/tests/goref/build.sh" "$out/goref"

# A typical 30 s CPU profile of a busy service: 2500 samples over 3000 locations, with start lines.
profile="$out/profile.pb.gz"
"$out/goref/bin/pprofgen" -o "$profile" -samples 2500 -locations 3000 -functions 1500 -duration 30000000000
# The drain rows post 8 such profiles in turn: one program, 8 processes (other samples, mappings
# at other addresses), so the worker merges uploads that differ, as a fleet's do.
drainset=""
for s in 1 2 3 4 5 6 7 8; do
    "$out/goref/bin/pprofgen" -o "$out/drain-$s.pb.gz" -samples 2500 -locations 3000 -functions 1500 \
        -duration 30000000000 -seed "$s" -aslr
    drainset="$drainset${drainset:+,}$out/drain-$s.pb.gz"
done

current=""
cleanup() { [ -z "$current" ] || kill "$current" 2>/dev/null || true; }
trap cleanup EXIT

# TLS: a self-signed certificate for 127.0.0.1 (its own CA)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$out/tls.key" -out "$out/tls.crt" -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null

wait_up() { # port [scheme]
    for _ in $(seq 1 200); do
        curl -s --cacert "$out/tls.crt" -o /dev/null "${2:-http}://127.0.0.1:$1/api/profile/x" && return 0
        sleep 0.05
    done
    echo "server on port $1 did not start" >&2
    return 1
}

results=()
rows=${AP_BENCH_ROWS:-go only auth embedded tls drain drain-worker}
results_file=${AP_BENCH_OUT:-$here/RESULTS.md}
levels=${AP_BENCH_CLIENTS:-1 16 64}
want() { [[ " $rows " == *" $1 "* ]]; }

measure() { # label port pid [scheme [loadgen flags...]]
    local label=$1 port=$2 pid=$3 scheme=${4:-http} c line
    shift 4 2>/dev/null || shift 3
    wait_up "$port" "$scheme"
    for c in $levels; do
        line=$("$out/bin/loadgen" -url "$scheme://127.0.0.1:$port/api/profile/bench-app" -file "$profile" \
            -c "$c" -d "${secs}s" -warmup 2s "$@")
        results+=("$label|$c|$line")
        echo "$label c=$c $line" >&2
    done
    local rss
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    results+=("$label|rss|$rss")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    current=""
}

data="$out/data"
rm -rf "$data" && mkdir -p "$data"/{go,only,auth,embedded}

# One token among ten grants (the check hashes the token and compares it with every grant).
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
{
    echo "["
    for i in $(seq 1 9); do
        printf '{"name":"other-%d","sha256":"%s","scopes":["download"],"apps":["*"]},\n' "$i" \
            "$(printf 'other-%d' "$i" | sha256sum | cut -d' ' -f1)"
    done
    printf '{"name":"bench","sha256":"%s","scopes":["upload"],"apps":["bench-*"]}\n]\n' \
        "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)"
} >"$out/auth.json"

if want go; then
    "$out/bin/goserver" -addr 127.0.0.1:19101 -data "$data/go" &
    current=$!
    measure "Go reference (Parse + Write)" 19101 "$current"
fi

if want only; then
    build/autopgo run bench/server/server_only.lua --port 19102 --data-dir "$data/only" 2>"$out/only.log" &
    current=$!
    measure "autopgo, upload path (worker elsewhere)" 19102 "$current"
fi

if want auth; then
    build/autopgo run bench/server/server_only.lua --port 19104 --data-dir "$data/auth" --auth-file "$out/auth.json" \
        2>"$out/auth.log" &
    current=$!
    measure "autopgo, upload path with --auth-file" 19104 "$current" http -token "$token"
fi

if want embedded; then
    build/autopgo server --port 19103 --data-dir "$data/embedded" 2>"$out/embedded.log" &
    current=$!
    measure "autopgo server, embedded default (merging too)" 19103 "$current"
fi

if want tls; then
    tls=(--tls-cert "$out/tls.crt" --tls-key "$out/tls.key")
    mkdir -p "$data/tls1" "$data/tls2"
    build/autopgo server --port 19105 --data-dir "$data/tls1" "${tls[@]}" 2>"$out/tls1.log" &
    current=$!
    measure "autopgo server, embedded default, TLS (HTTP/1.1)" 19105 "$current" https -ca "$out/tls.crt"

    build/autopgo server --port 19106 --data-dir "$data/tls2" "${tls[@]}" 2>"$out/tls2.log" &
    current=$!
    measure "autopgo server, embedded default, TLS (HTTP/2)" 19106 "$current" https -ca "$out/tls.crt" -h2
fi

field() { echo "$1" | sed -E "s/.*\"$2\":([0-9.]+).*/\1/"; }
# The sum of a metric's samples (every label set) on a server's /metrics.
metric() { # port name
    curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" 'index($1, n) == 1 && substr($1, length(n) + 1, 1) ~ /^(\{|)$/ \
        {s += $2} END {printf "%d", s}'
}
now() { date +%s.%N; }
# CPU seconds (user + system) a process has used so far.
cpu_of() { awk -v t="$(getconf CLK_TCK)" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
# Waits until the worker behind port has merged n uploads (at most 900 s); prints the time then.
merged_by() { # port n
    local deadline=$(($(date +%s) + 900))
    while [ "$(metric "$1" autopgo_profiles_merged_total)" -lt "$2" ] && [ "$(date +%s)" -lt "$deadline" ]; do
        sleep 0.2
    done
    now
}
drains=()
for seg in 1h 0; do
    label="segment $seg"
    [ "$seg" = 1h ] && label="history on (--segment 1h)"
    [ "$seg" = 0 ] && label="history off (--segment 0)"
    if want drain; then
        rm -rf "$data/drain" && mkdir -p "$data/drain"
        "$bin" server --port 19107 --data-dir "$data/drain" --segment "$seg" 2>"$out/drain.log" &
        current=$!
        wait_up 19107
        t0=$(now)
        line=$("$out/bin/loadgen" -url "http://127.0.0.1:19107/api/profile/bench-app" -file "$drainset" -c 16 \
            -d "${secs}s" -warmup 0s)
        t1=$(now)
        n=$(metric 19107 'autopgo_uploads_total{status="201"}')
        during=$(metric 19107 autopgo_profiles_merged_total)
        t2=$(merged_by 19107 "$n")
        left=$(metric 19107 autopgo_profiles_merged_total)
        cpu=$(echo "1000 * $(cpu_of "$current") / $left" | bc -l)
        drains+=("embedded default, $label|$(field "$line" per_second)|$n|$(echo "$during / ($t1 - $t0)" | bc -l)|$(echo "($left - $during) / ($t2 - $t1)" | bc -l)|$(echo "$t2 - $t1" | bc -l)|$left|$cpu|$(cut -d' ' -f1 /proc/loadavg)")
        echo "drain: ${drains[-1]}" >&2
        kill "$current"; wait "$current" 2>/dev/null || true; current=""
    fi
    if want drain-worker; then
        rm -rf "$data/dw" && mkdir -p "$data/dw"
        "$bin" run bench/server/server_only.lua --port 19108 --data-dir "$data/dw" 2>"$out/dw-server.log" &
        current=$!
        wait_up 19108
        line=$("$out/bin/loadgen" -url "http://127.0.0.1:19108/api/profile/bench-app" -file "$drainset" -c 16 \
            -d "${secs}s" -warmup 0s)
        kill "$current"; wait "$current" 2>/dev/null || true; current=""
        n=$(find "$data/dw/bench-app/staging" -type f | wc -l)
        # the in-process bus: the worker merges what it finds staged at start
        "$bin" worker --port 19109 --data-dir "$data/dw" --segment "$seg" 2>"$out/dw-worker.log" &
        current=$!
        t0=$(now)
        wait_up 19109 || true
        t1=$(merged_by 19109 "$n")
        left=$(metric 19109 autopgo_profiles_merged_total)
        cpu=$(echo "1000 * $(cpu_of "$current") / $left" | bc -l)
        drains+=("separate worker, $label (backlog staged by the upload path)|$(field "$line" per_second)|$n|-|$(echo "$left / ($t1 - $t0)" | bc -l)|$(echo "$t1 - $t0" | bc -l)|$left|$cpu|$(cut -d' ' -f1 /proc/loadavg)")
        echo "drain: ${drains[-1]}" >&2
        kill "$current"; wait "$current" 2>/dev/null || true; current=""
    fi
done

{
    echo "# bench/server results"
    echo
    echo "Generated by \`${AP_BENCH_ROWS:+AP_BENCH_ROWS=\"$rows\" }${AP_BENCH_CLIENTS:+AP_BENCH_CLIENTS=\"$levels\" }bench/server/run.sh $secs\` on $(date -u +%Y-%m-%d) ($(nproc) CPUs, load average"
    echo "$(cut -d' ' -f1-3 /proc/loadavg) at the end; the machine is shared, so compare rows of one run, not runs)."
    echo "Each level runs ${secs} s after a 2 s warm-up with keep-alive clients posting the same"
    echo "$(stat -c %s "$profile")-byte gzip CPU profile (pprofgen: 2500 samples, 3000 locations, 30 s)."
    echo "autopgo fsyncs every upload (file and directory); the Go reference writes like gocloud.dev's"
    echo "fileblob (temporary file, rename, no fsync) and publishes no event. TLS rows: a 2048-bit RSA"
    echo "certificate, Go's client with keep-alive (HTTP/1.1: one connection per client; HTTP/2: all"
    echo "clients multiplexed on one connection)."
    echo
    echo "| server | clients | uploads/s | p50 ms | p99 ms | errors |"
    echo "|---|---:|---:|---:|---:|---:|"
    for r in "${results[@]}"; do
        IFS='|' read -r label c line <<<"$r"
        [ "$c" = rss ] && continue
        printf '| %s | %s | %.1f | %.1f | %.1f | %s |\n' "$label" "$c" "$(field "$line" per_second)" \
            "$(field "$line" p50_ms)" "$(field "$line" p99_ms)" "$(field "$line" errors)"
    done
    echo
    echo "| server | peak RSS |"
    echo "|---|---:|"
    for r in "${results[@]}"; do
        IFS='|' read -r label c line <<<"$r"
        [ "$c" = rss ] && printf '| %s | %d MiB |\n' "$label" $((line / 1024))
    done
    if [ ${#drains[@]} -gt 0 ]; then
        echo
        echo "Ingest and drain side by side (one app, 16 clients for ${secs} s posting 8 profiles of one program in"
        echo "turn, then until every accepted upload is merged; rates in uploads/s; CPU: the process's CPU time per merged upload, all of its"
        echo "threads: the embedded server's covers ingest and merge, the separate worker's the merge alone;"
        echo "load: the 1-minute load average when the row ended):"
        echo
        echo "| worker | ingest | uploads | merged during ingest | merged after ingest | drain time s | merged | CPU ms/upload | load |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        for r in "${drains[@]}"; do
            IFS='|' read -r label ing n during after secs_left merged cpu load <<<"$r"
            [ "$during" = - ] || during=$(printf '%.1f' "$during")
            printf '| %s | %.1f | %s | %s | %.1f | %.1f | %s | %.2f | %s |\n' "$label" "$ing" "$n" "$during" "$after" \
                "$secs_left" "$merged" "$cpu" "$load"
        done
    fi
} >"$results_file"
cat "$results_file"
