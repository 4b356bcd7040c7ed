#!/usr/bin/env bash
# bench/merge fold: one typical upload (a 30 s profile, 2,500 samples, a few hundred KB) folded
# into bases of about 1, 10, 20 and 50 MB (gzip, as served), three ways in one run: autopgo's fold
# (core/pprof/fold.c through `pproftool fold`: a folder made over the base once, then UPLOADS
# uploads folded one by one, compactions included), today's full merge (`autopgo merge base
# upload`) and Go's (tests/goref pprofmerge: Parse base + upload, Merge, Write). CPU time, the
# folder's resident set between folds (what a worker holds per app: pproftool's VmRSS after each
# fold, its output handed on) and the peak RSS (the folder's start decodes the base once); the load
# average is printed beside them. With BEFORE=path/to/an/older/pproftool, that fold is measured in
# the same run (CPU per fold, peak RSS). Not a test.
# usage: bench/merge/fold.sh [SIZE...]   (MB: 1 10 20 50; env BUILD, UPLOADS (40), GO_SKIP="50", BEFORE)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$root/build}
work=$build/bench-fold
sizes=("${@:-1 10 20 50}")
read -r -a sizes <<<"${sizes[*]}"
uploads=${UPLOADS:-40}
mkdir -p "$work"
tool=$build/tests/c/pprof/pproftool
[ -x "$build/autopgo" ] && [ -x "$tool" ] || { echo "build autopgo and pproftool first"; exit 1; }
"$root/tests/goref/build.sh" "$build/goref" >/dev/null
gen=$build/goref/bin/pprofgen

# One service: one universe (binary), labels following the call path; the base is the full merge
# of one large generated profile (so it is a merge result: one sample per stack).
universe=(-functions 4000 -locations 12000 -depth 48 -labels 2 -path-labels -mappings 3 -inline 0.2)
shape() { # SIZE -> samples paths
    case $1 in
    1) echo "20000 14000" ;;
    10) echo "270000 190000" ;;
    20) echo "550000 385000" ;;
    50) echo "1380000 970000" ;;
    *) echo "unknown size $1" >&2; exit 2 ;;
    esac
}
measure() { # OUTFILE CMD... -> "wall user sys maxrss_kb"
    local out=$1
    shift
    /usr/bin/time -f "%e %U %S %M" -o "$out" "$@"
}

results=$work/results.md
{
    echo "| base (gzip) | upload | autopgo fold: CPU ms per upload (median / mean over $uploads, compactions included) | folder start (decode + layout) CPU s | folder RSS between folds / peak MiB |${BEFORE:+ before: CPU ms per upload (median) / peak RSS MiB |} autopgo merge (today) CPU s / RSS MiB | Go fold CPU s / RSS MiB | Go / fold (CPU, mean) |"
    echo "| ---: | ---: | ---: | ---: | ---: |${BEFORE:+ ---: |} ---: | ---: | ---: |"
} >"$results"

for size in "${sizes[@]}"; do
    read -r samples paths <<<"$(shape "$size")"
    dir=$work/$size
    mkdir -p "$dir"
    if [ ! -s "$dir/base.pgo" ]; then
        "$gen" -o "$dir/gen.pb.gz" "${universe[@]}" -samples "$samples" -paths "$paths" -seed 1000
        "$build/autopgo" merge -l error -o "$dir/base.pgo" "$dir/gen.pb.gz"
        rm -f "$dir/gen.pb.gz"
    fi
    ups=()
    for s in $(seq 1 "$uploads"); do
        [ -s "$dir/up$s.pb.gz" ] || "$gen" -o "$dir/up$s.pb.gz" "${universe[@]}" -samples 2500 -paths "$paths" -seed "$s"
        ups+=("$dir/up$s.pb.gz")
    done
    base_mb=$(awk -v b="$(stat -c %s "$dir/base.pgo")" 'BEGIN { printf "%.1f", b / 1048576 }')
    up_kb=$(($(stat -c %s "${ups[0]}") / 1024))
    echo "== base $base_mb MB, upload $up_kb KB, load: $(cut -d' ' -f1-3 /proc/loadavg)"

    measure "$dir/fold.t" "$tool" fold -stats -o "$dir/fold.pgo" "$dir/base.pgo" "${ups[@]}" 2>"$dir/fold.log"
    read -r _ _ _ frss <"$dir/fold.t"
    start=$(awk -F'cpu=' '/^start/ { print $2 }' "$dir/fold.log")
    read -r median mean <<<"$(awk '/^fold/ { sub(/.*cpu=/, ""); split($0, a, " "); print a[1] * 1000 }' "$dir/fold.log" |
        sort -n | awk '{ v[NR] = $1; s += $1 } END { printf "%.1f %.1f", v[int((NR + 1) / 2)], s / NR }')"
    compactions=$(grep -c 'compacted=1' "$dir/fold.log" || true)
    steady=$(awk '/^fold/ { sub(/.*rss_kb=/, ""); if ($1 > m) m = $1 } END { printf "%d", m / 1024 }' "$dir/fold.log")
    before=""
    if [ -n "${BEFORE:-}" ]; then
        measure "$dir/before.t" "$BEFORE" fold -stats -o "$dir/before.pgo" "$dir/base.pgo" "${ups[@]}" 2>"$dir/before.log"
        read -r _ _ _ brss <"$dir/before.t"
        bmedian=$(awk '/^fold/ { sub(/.*cpu=/, ""); split($0, a, " "); print a[1] * 1000 }' "$dir/before.log" |
            sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", v[int((NR + 1) / 2)] }')
        before=" $bmedian / $((brss / 1024)) |"
    fi

    measure "$dir/merge.t" "$build/autopgo" merge -l error -o "$dir/merge.pgo" "$dir/base.pgo" "${ups[0]}"
    read -r _ mu ms mrss <"$dir/merge.t"
    if [[ " ${GO_SKIP:-} " == *" $size "* ]]; then
        go="skipped"
        ratio="-"
    else
        measure "$dir/go.t" "$build/goref/bin/pprofmerge" -o "$dir/go.pgo" "$dir/base.pgo" "${ups[0]}"
        read -r _ gu gs grss <"$dir/go.t"
        go=$(awk -v u="$gu" -v s="$gs" -v r="$grss" 'BEGIN { printf "%.2f / %d", u + s, r / 1024 }')
        ratio=$(awk -v u="$gu" -v s="$gs" -v m="$mean" 'BEGIN { printf "%.0f×", (u + s) * 1000 / m }')
    fi
    printf "| %s MB | %s KB | %s / %s (%s compactions) | %s | %s / %d |%s %s | %s | %s |\n" "$base_mb" "$up_kb" \
        "$median" "$mean" "$compactions" "$start" "$steady" $((frss / 1024)) "$before" \
        "$(awk -v u="$mu" -v s="$ms" -v r="$mrss" 'BEGIN { printf "%.2f / %d", u + s, r / 1024 }')" \
        "$go" "$ratio" >>"$results"
    tail -n1 "$results"
done
echo
cat "$results"
