#!/usr/bin/env bash
# bench/merge: autopgo vs the Go reference (tests/goref pprofmerge: Debian's Go 1.19 +
# google/pprof, what the original worker runs) merging 10 generated profiles of one input shape
# each; wall time, CPU time (user + sys), peak RSS and ratios, plus the zlib floor (zfloor.c:
# inflate the inputs + deflate the merged output on one thread, at level 1 as `autopgo merge`
# writes, and at 6), plus decode-only of a typical 30 s CPU profile. Not a test.
# Shapes: 1, 10, 50 (MB per input: one service, labels that follow the call path) and three of
# 260 000 samples per input with stacks up to 64 deep: `labels` (a quarter of the samples carry
# random labels: many distinct samples), `deep` (5 000 hot paths: heavy inputs, smaller output),
# `large` (100 000 paths, path labels on a quarter: a large output).
# autopgo and the floor run REPEAT times (default 3) and the median is kept; Go runs once per
# shape in the same run, right after autopgo (the 50 MB Go run takes minutes and ~13 GB).
# BUSY=N runs N busy loops beside everything (a loaded machine), stopped at exit.
# usage: bench/merge/run.sh [SHAPE...]   (env BUILD, REPEAT, GO_SKIP="50 ...", BUSY)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$root/build}
work=$build/bench-merge
sizes=("${@:-1 10 50 labels deep large}")
read -r -a sizes <<<"${sizes[*]}"
mkdir -p "$work"

[ -x "$build/autopgo" ] || { echo "build autopgo first (make build)"; exit 1; }
"$root/tests/goref/build.sh" "$build/goref" >/dev/null
for t in zfloor decode_bench phases; do
    cc -O2 -I"$root/core/pprof" "$root/bench/merge/$t.c" "$root"/core/pprof/*.c \
        $(pkg-config --cflags --libs zlib libdeflate libpcre2-8) -lpthread -lm -o "$work/$t"
done
gen=$build/goref/bin/pprofgen

# One service's profiles: the same binary (universe), 10 seeds, 3 mappings, 20 % inlined.
common="-mappings 3 -inline 0.2"
shape() {
    case $1 in
    1) echo "-samples 13500 -paths 4000 -functions 3000 -locations 8000 -labels 2 -path-labels" ;;
    10) echo "-samples 135000 -paths 40000 -functions 8000 -locations 30000 -labels 2 -path-labels" ;;
    50) echo "-samples 680000 -paths 200000 -functions 20000 -locations 80000 -labels 2 -path-labels" ;;
    labels) echo "-samples 260000 -paths 20000 -functions 8000 -locations 20000 -depth 64 -labels 2 -labelled 0.25" ;;
    deep) echo "-samples 260000 -paths 5000 -functions 8000 -locations 20000 -depth 64 -labels 2 -labelled 0.25" ;;
    large) echo "-samples 260000 -paths 100000 -functions 20000 -locations 80000 -depth 64 -labels 2 -path-labels -labelled 0.25" ;;
    *) echo "unknown shape $1" >&2; exit 2 ;;
    esac
}

busy=()
stop_busy() { for p in "${busy[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_busy EXIT
for _ in $(seq 1 "${BUSY:-0}"); do
    (while :; do :; done) &
    busy+=($!)
done

measure() { # OUTFILE CMD... -> "wall user sys maxrss_kb" in OUTFILE
    local out=$1
    shift
    /usr/bin/time -f "%e %U %S %M" -o "$out" "$@"
}

# The median (by wall time) of REPEAT runs (default 3).
median() { # OUTFILE CMD...
    local out=$1 i r=${REPEAT:-3}
    shift
    for i in $(seq 1 "$r"); do
        measure "$out.$i" "$@"
    done
    sort -n "$out".* | sed -n "$(((r + 1) / 2))p" >"$out"
    rm -f "$out".*
}
med() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

results=$work/results.md
{
    echo "| inputs | tool | wall s | CPU s | peak RSS MiB | output MiB |"
    echo "| --- | --- | ---: | ---: | ---: | ---: |"
} >"$results"
summary=$work/summary.md
{
    echo "| 10 inputs of | uncompressed in / out | load | Go wall / CPU / RSS | autopgo wall / CPU / RSS | speed-up (wall) | memory | zlib floor (level 1 / 6) | autopgo / floor |"
    echo "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |"
} >"$summary"

for size in "${sizes[@]}"; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    dir=$work/in-$size
    mkdir -p "$dir"
    read -r -a flags <<<"$(shape "$size")"
    for s in $(seq 1 10); do
        # shellcheck disable=SC2086
        [ -s "$dir/$s.pb.gz" ] || "$gen" -o "$dir/$s.pb.gz" "${flags[@]}" $common -seed "$s"
    done
    inputs=("$dir"/{1..10}.pb.gz)
    in_bytes=0
    for f in "${inputs[@]}"; do in_bytes=$((in_bytes + $(gzip -dc "$f" | wc -c))); done
    echo "== $size x 10 ($((in_bytes / 1048576)) MiB uncompressed in), load: $(cut -d' ' -f1-3 /proc/loadavg)"

    median "$work/ours-$size.t" "$build/autopgo" merge -l error -o "$work/ours-$size.pgo" "${inputs[@]}"
    read -r ow ou os orss <"$work/ours-$size.t"
    gzip -dc "$work/ours-$size.pgo" >"$work/ours-$size.raw"
    floor=$(for i in $(seq 1 "${REPEAT:-3}"); do
        "$work/zfloor" 1 "$work/ours-$size.raw" "${inputs[@]}" | awk '/^floor/{print $2}'
    done | med)
    floor6=$(for i in $(seq 1 "${REPEAT:-3}"); do
        "$work/zfloor" 6 "$work/ours-$size.raw" "${inputs[@]}" | awk '/^floor/{print $2}'
    done | med)
    out_raw=$(awk -v b="$(stat -c %s "$work/ours-$size.raw")" 'BEGIN{printf "%.1f", b/1048576}')
    out_mib=$(awk -v b="$(stat -c %s "$work/ours-$size.pgo")" 'BEGIN{printf "%.1f", b/1048576}')
    ocpu=$(awk -v u="$ou" -v s="$os" 'BEGIN{printf "%.2f", u+s}')
    echo "| 10 x $size MB | autopgo | $ow | $ocpu | $((orss / 1024)) | $out_mib |" >>"$results"
    echo "autopgo: wall $ow s, CPU $ocpu s, RSS $((orss / 1024)) MiB; zlib floor $floor s (level 1), $floor6 s (level 6)"

    gw=- gcpu=- grss=- speed=- mem=-
    if [[ " ${GO_SKIP:-} " != *" $size "* ]]; then
        measure "$work/go-$size.t" "$build/goref/bin/pprofmerge" -o "$work/go-$size.pgo" "${inputs[@]}"
        read -r gw gu gs grss <"$work/go-$size.t"
        gcpu=$(awk -v u="$gu" -v s="$gs" 'BEGIN{printf "%.2f", u+s}')
        echo "| 10 x $size MB | Go pprofmerge | $gw | $gcpu | $((grss / 1024)) | - |" >>"$results"
        speed=$(awk -v g="$gw" -v o="$ow" 'BEGIN{printf "%.1fx", g/o}')
        mem=$(awk -v g="$grss" -v o="$orss" 'BEGIN{printf "1/%.0f", g/o}')
        if cmp -s "$work/ours-$size.raw" <(gzip -dc "$work/go-$size.pgo"); then same="same bytes"; else same="DIFFERENT"; fi
        echo "Go: wall $gw s, CPU $gcpu s, RSS $((grss / 1024)) MiB; speed-up $speed, memory $mem; output $same"
        grss="$((grss / 1024)) MiB"
        rm -f "$work/go-$size.pgo"
    fi
    ratio=$(awk -v o="$ow" -v f="$floor" 'BEGIN{printf "%.2f", o/f}')
    echo "| $size | $((in_bytes / 1048576)) / $out_raw MiB | $load | $gw s / $gcpu s / $grss | $ow s / $ocpu s / $((orss / 1024)) MiB | $speed | $mem | $floor / $floor6 s | $ratio |" >>"$summary"
    rm -f "$work/ours-$size.raw"
done

# Decode only: a typical 30 s CPU profile (generated: ~6000 samples) and a real one.
[ -s "$work/cpu30s.pb.gz" ] || "$gen" -o "$work/cpu30s.pb.gz" -samples 6000 -paths 4000 -functions 2500 -locations 6000 -depth 48 -labels 2 -path-labels -seed 3
decode=$("$work/decode_bench" "$work/cpu30s.pb.gz" 500)
real=$("$work/decode_bench" "$root/tests/testdata/pprof/goapp-go123-cpu-1.pb.gz" 500)
echo
cat "$summary"
echo
echo "decode: $decode"
echo "decode: $real"
{
    echo
    echo "decode: $decode"
    echo "decode: $real"
    echo "machine: $(nproc) CPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$summary"
echo "tables in $summary and $results"
