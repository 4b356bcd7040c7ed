#!/usr/bin/env bash
# Differential tests of the pprof core against the Go reference (tests/goref, Debian's Go 1.19 +
# google/pprof): the same merges and prunes through `autopgo merge` and `pprofmerge` (with
# -compatibilize, and -compact after a prune, as autopgo's one merge does) must give
# canonically equal profiles (and, as it turns out, the same protobuf bytes before gzip); bad
# inputs are rejected by both; the PGO check agrees with Go 1.23's `go tool preprofile`.
# usage: differential.sh AUTOPGO PPROFTOOL GOREF_BIN TESTDATA WORKDIR
set -uo pipefail

autopgo=$1 pproftool=$2 goref=$3 data=$4 work=$5
go123=${AP_GO123:-/usr/lib/go-1.23/bin/go}
rm -rf "$work"
mkdir -p "$work/gen"
export GOCACHE="$work/gocache" GOFLAGS= GOPROXY=off
pass=0 fail=0

ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL $*"
}

# merge_case NAME [--prune FILE --app NAME] -- INPUT...
# Both tools merge (and prune) the inputs; the canonical dumps must match, and so must the
# uncompressed bytes (Go's encoder order is reproduced exactly).
merge_case() {
    local name=$1
    shift
    local aopts=() gopts=(-compatibilize)
    while [ "$1" != "--" ]; do
        case $1 in
        --prune) aopts+=(--prune "$2"); gopts+=(-prune "$2" -compact); shift 2 ;;
        --app) aopts+=(--app "$2"); gopts+=(-app "$2"); shift 2 ;;
        *) echo "merge_case: bad option $1"; exit 2 ;;
        esac
    done
    shift
    local a="$work/$name.ours.pgo" g="$work/$name.go.pgo"
    "$autopgo" merge -l error -o "$a" "${aopts[@]}" "$@" 2>"$work/$name.ours.err"
    local ra=$?
    "$goref/pprofmerge" -o "$g" "${gopts[@]}" "$@" 2>"$work/$name.go.err"
    local rg=$?
    if [ $ra -ne 0 ] || [ $rg -ne 0 ]; then
        bad "$name: merge failed (autopgo $ra: $(head -c 300 "$work/$name.ours.err"); go $rg: $(head -c 300 "$work/$name.go.err"))"
        return
    fi
    "$goref/pprofcanon" "$a" >"$a.canon" 2>&1
    "$goref/pprofcanon" "$g" >"$g.canon" 2>&1
    if ! cmp -s "$a.canon" "$g.canon"; then
        bad "$name: canonical dumps differ: $(diff "$a.canon" "$g.canon" | head -5)"
        return
    fi
    if ! cmp -s <(gzip -dc "$a") <(gzip -dc "$g"); then
        bad "$name: same profile, different protobuf bytes"
        return
    fi
    ok
}

# Both reject the inputs of a merge.
reject_case() {
    local name=$1
    shift
    "$autopgo" merge -l error -o "$work/$name.ours.pgo" "$@" 2>"$work/$name.ours.err"
    local ra=$?
    "$goref/pprofmerge" -compatibilize -o "$work/$name.go.pgo" "$@" 2>"$work/$name.go.err"
    local rg=$?
    if [ $ra -eq 0 ] || [ $rg -eq 0 ]; then
        bad "$name: expected both to fail (autopgo $ra, go $rg)"
    else
        ok
    fi
}

# The worker's loop: base = Prune(Merge(new, base)) for each new profile, through files.
worker_case() {
    local name=$1 rules=$2 app=$3
    shift 3
    local a="$work/$name.wa.pgo" g="$work/$name.wg.pgo" first=1 f
    for f in "$@"; do
        local pa=() pg=(-compatibilize)
        [ -n "$rules" ] && pa=(--prune "$rules" --app "$app") && pg+=(-prune "$rules" -app "$app" -compact)
        if [ $first -eq 1 ]; then
            "$autopgo" merge -l error -o "$a.tmp" "${pa[@]}" "$f" &&
                "$goref/pprofmerge" -o "$g.tmp" "${pg[@]}" "$f" || { bad "$name: step failed"; return; }
            first=0
        else
            "$autopgo" merge -l error -o "$a.tmp" "${pa[@]}" "$f" "$a" &&
                "$goref/pprofmerge" -o "$g.tmp" "${pg[@]}" "$f" "$g" || { bad "$name: step failed"; return; }
        fi
        mv "$a.tmp" "$a"
        mv "$g.tmp" "$g"
    done
    "$goref/pprofcanon" "$a" >"$a.canon"
    "$goref/pprofcanon" "$g" >"$g.canon"
    if cmp -s "$a.canon" "$g.canon" && cmp -s <(gzip -dc "$a") <(gzip -dc "$g"); then
        ok
    else
        bad "$name: worker sequence differs: $(diff "$a.canon" "$g.canon" | head -5)"
    fi
}

# PGO decision vs Go 1.23's loader: "ok, N edges" = preprofile writes N edges; "ok, empty" =
# it writes none; a reason = it fails.
pgo_case() {
    local f=$1 ours theirs out="$work/pp.out"
    ours=$("$pproftool" pgo "$f")
    if "$go123" tool preprofile -i "$f" -o "$out" >"$work/pp.err" 2>&1; then
        local n=$((($(wc -l <"$out") - 1) / 3))
        if [ $n -eq 0 ]; then theirs="ok, empty"; else theirs="ok, $n edges"; fi
    else
        theirs="no"
    fi
    if [ "${ours%%:*}" = "$theirs" ] || [ "$ours" = "$theirs" ]; then
        ok
    else
        bad "pgo $f: autopgo says '$ours', go tool preprofile says '$theirs' ($(head -c 200 "$work/pp.err"))"
    fi
}

gen() { # NAME FLAGS...
    local name=$1
    shift
    "$goref/pprofgen" -o "$work/gen/$name.pb.gz" "$@" || bad "pprofgen $name failed"
    echo "$work/gen/$name.pb.gz"
}

# ---- the corpus ----
good=()
for f in "$data"/*.pb.gz "$data"/autopgo/* "$data"/edge/* "$data"/google-pprof/derived/*; do
    good+=("$f")
done
for f in driver--cppbench.cpu_no_samples_type driver--go.nomappings.crash proftest--large.cpu report--sample.cpu; do
    good+=("$data/google-pprof/$f")
done
for f in "${good[@]}"; do
    merge_case "one-$(basename "$f")" -- "$f"
    merge_case "twice-$(basename "$f")" -- "$f" "$f"
done
merge_case goapp3 -- "$data"/goapp-cpu-{1,2,3}.pb.gz
merge_case go123 -- "$data"/goapp-go123-cpu-{1,2,3}.pb.gz
merge_case new-and-base -- "$data/goapp-go123-cpu-2.pb.gz" "$data/autopgo/default.pgo"
merge_case go119-and-go123 -- "$data/goapp-cpu-1.pb.gz" "$data/goapp-go123-cpu-1.pb.gz"
merge_case edge-mix -- "$data"/edge/{minimal,duplicate-samples,zero-value-samples,empty-stack-sample,labels-multi-and-numeric,dangling-mapping-id,period-1ms,no-samples,no-start-line}.pb.gz "$data/edge/minimal-uncompressed.pb"
merge_case cppbench-cpu -- "$data"/google-pprof/derived/{profile,driver}--cppbench.cpu.pb.gz
# Different sample types are merged on the common ones (CompatibilizeSampleTypes), as Go's pprof.
merge_case cppbench-types -- "$data/google-pprof/derived/profile--cppbench.cpu.pb.gz" "$data/google-pprof/driver--cppbench.cpu_no_samples_type"
worker_case worker-go123 "" "" "$data"/goapp-go123-cpu-{1,2,3}.pb.gz "$data/autopgo/default.pgo"

# Legacy formats: Go parses them, autopgo does not (protobuf only). Go's reading of each is
# compared with autopgo's reading of the derived protobuf copy.
for f in "$data"/google-pprof/*; do
    [ -f "$f" ] || continue
    d="$data/google-pprof/derived/$(basename "$f").pb.gz"
    [ -f "$d" ] || continue
    if "$pproftool" check "$f" >/dev/null 2>&1; then
        bad "legacy $(basename "$f"): autopgo accepted a legacy-format file"
        continue
    fi
    "$autopgo" merge -l error -o "$work/legacy.ours.pgo" "$d" && "$goref/pprofmerge" -o "$work/legacy.go.pgo" "$f" ||
        { bad "legacy $(basename "$f"): merge failed"; continue; }
    if cmp -s <("$goref/pprofcanon" "$work/legacy.ours.pgo") <("$goref/pprofcanon" "$work/legacy.go.pgo"); then
        ok
    else
        bad "legacy $(basename "$f"): the derived copy merges differently"
    fi
done

# Bad inputs: both reject (alone, and next to a good profile).
for f in "$data"/bad/*; do
    if "$goref/pprofcanon" -check "$f" >/dev/null 2>&1; then
        bad "bad $(basename "$f"): Go accepts it"
        continue
    fi
    reject_case "bad-$(basename "$f")" "$f"
    reject_case "bad2-$(basename "$f")" "$data/edge/minimal.pb.gz" "$f"
done
merge_case compat-types -- "$data/edge/minimal.pb.gz" "$data/edge/cpu-only-nanoseconds.pb.gz"
merge_case compat-types-first -- "$data/edge/cpu-only-nanoseconds.pb.gz" "$data/edge/minimal.pb.gz"
reject_case incompatible-period "$data/edge/minimal.pb.gz" "$data/edge/heap-sample-types.pb.gz"

# ---- generated profiles ----
base=(-functions 800 -locations 2500 -samples 3000 -depth 40 -mappings 4 -inline 0.3)
g=()
for s in 1 2 3 4; do g+=("$(gen "std$s" "${base[@]}" -seed $s -labels 3)"); done
merge_case gen-std -- "${g[@]}"
x=()
for s in 1 2 3; do
    x+=("$(gen "cxx$s" "${base[@]}" -seed $s -cxx -numlabels 3 -aslr -fakemapping -nomapping 0.1 -folded 0.1 -comments 2 -emptystack 0.05)")
done
merge_case gen-cxx-aslr -- "${x[@]}"
merge_case gen-zero-neg -- "$(gen zn1 "${base[@]}" -seed 5 -zero 0.2 -negative 0.2)" "$(gen zn2 "${base[@]}" -seed 5 -negative 1)" "$(gen zn3 "${base[@]}" -seed 6 -negative 0.5)"
merge_case gen-cancel-all -- "$(gen c1 "${base[@]}" -seed 7)" "$(gen c2 "${base[@]}" -seed 7 -negative 1)"
merge_case gen-heap -- "$(gen h1 "${base[@]}" -seed 1 -sparse-ids -types alloc_objects/count,alloc_space/bytes,inuse_objects/count,inuse_space/bytes -period-type space/bytes -period 524288 -default-type alloc_space -drop-frames 'runtime\..*' -keep-frames 'runtime\.main')" "$(gen h2 "${base[@]}" -seed 2 -types alloc_objects/count,alloc_space/bytes,inuse_objects/count,inuse_space/bytes -period-type space/bytes -period 1048576)"
merge_case gen-deep -- "$(gen d1 "${base[@]}" -seed 1 -depth 200 -inline 0.7)" "$(gen d2 "${base[@]}" -seed 2 -depth 200 -inline 0.7)"
merge_case gen-universes -- "$(gen u1 "${base[@]}" -seed 1 -universe 1)" "$(gen u2 "${base[@]}" -seed 1 -universe 2)" "$(gen u3 "${base[@]}" -seed 1 -universe 3 -nostartline)"
merge_case gen-cpu-only -- "$(gen o1 "${base[@]}" -seed 1 -types cpu/nanoseconds)" "$(gen o2 "${base[@]}" -seed 9 -types cpu/nanoseconds -time 0)"
# Sample types made compatible: input 0 losing a type (merged twice), gaining one, types in
# another order, a default type that is dropped or kept; none in common is refused.
o3=$(gen o3 "${base[@]}" -types cpu/nanoseconds)
merge_case gen-compat-shrink -- "${g[0]}" "$o3" "${g[1]}"
merge_case gen-compat-grow -- "$o3" "${g[0]}" "${g[1]}"
merge_case gen-compat-order -- "${g[2]}" "$(gen r1 "${base[@]}" -seed 11 -types cpu/nanoseconds,wall/nanoseconds,samples/count -default-type wall)" "$(gen r2 "${base[@]}" -seed 12 -types wall/nanoseconds,samples/count,cpu/nanoseconds -default-type samples)"
merge_case gen-compat-default -- "$(gen r3 "${base[@]}" -seed 13 -types wall/nanoseconds,cpu/nanoseconds -default-type wall)" "$o3" "${g[3]}"
reject_case gen-no-common-type "$o3" "$(gen o4 "${base[@]}" -seed 3 -types wall/nanoseconds)"

# ---- prune ----
cat >"$work/rules.json" <<'JSON'
[
 {"app": "first", "rules": [{"drop": "runtime\\.", "keep": "runtime\\.(main|mallocgc)"}]},
 {"app": "chain", "rules": [{"drop": "net/http"}, {"drop": "sort\\.", "keep": null}, {"drop": "regexp\\.\\(\\*Regexp\\)"}]},
 {"app": "cxx", "rules": [{"drop": "\\(anonymous namespace\\)::"}, {"drop": "operator\\(\\)$"}, {"drop": "^alpha"}, {"drop": "Lambda", "keep": "Lambda1"}]},
 {"app": "root", "rules": [{"drop": "."}]},
 {"app": "keepall", "rules": [{"drop": "e", "keep": ""}]},
 {"app": "anchored", "rules": [{"drop": "^github\\.com/acme/svc/[a-h]", "keep": "\\.func\\d$"}]},
 {"app": "first", "rules": [{"drop": "never used: the first entry for an app wins"}]}
]
JSON
for app in first chain root keepall nosuchapp; do
    merge_case "prune-$app" --prune "$work/rules.json" --app "$app" -- "$data"/goapp-go123-cpu-{1,2}.pb.gz "$data/autopgo/default.pgo"
done
for app in cxx anchored root first; do
    merge_case "prune-gen-$app" --prune "$work/rules.json" --app "$app" -- "${x[@]}"
done
worker_case worker-prune "$work/rules.json" chain "$data"/goapp-go123-cpu-{1,2,3}.pb.gz
worker_case worker-prune-gen "$work/rules.json" cxx "${x[@]}" "${x[0]}"

# ---- PGO check vs the Go 1.23 loader ----
if [ -x "$go123" ]; then
    for f in "${good[@]}" "${g[@]}" "$work/gen/u3.pb.gz" "$work/gen/o1.pb.gz" "$work/gen/h1.pb.gz" \
        "$work/go123.ours.pgo" "$work/prune-chain.ours.pgo" "$work/gen-cancel-all.ours.pgo"; do
        pgo_case "$f"
    done
else
    bad "Go 1.23 ($go123) is missing: scripts/deps.sh test installs it"
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
