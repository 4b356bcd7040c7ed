#!/usr/bin/env bash
# Folds (core/pprof/fold.c, through `pproftool fold`: one fold per upload into a base, segments
# deflated again only where they changed, compactions on the way) against the Go reference: the
# result must be canonically equal to pprofmerge of the base and every upload, read as an
# ordinary gzip, and give `go tool pprof -top` the same table and `go tool preprofile` the same
# edges. With prune rules the reference is
# the original worker's sequence (each step Prune + Compact of the previous result and the next
# upload, so earlier uploads are pruned again), and folds fall back to a full merge where a
# Prune would cut again. A base written by today's one merge (`autopgo merge`) is folded into.
# usage: fold.sh AUTOPGO PPROFTOOL GOREF_BIN TESTDATA WORKDIR
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

# The same rules for both tools: pprofmerge reads them from rules.json by app, pproftool as flags.
cat >"$work/rules.json" <<'JSON'
[
 {"app": "runtime", "rules": [{"drop": "runtime\\.", "keep": "runtime\\.(main|mallocgc)"}]},
 {"app": "cxx", "rules": [{"drop": "\\(anonymous namespace\\)::"}, {"drop": "operator\\(\\)$"}, {"drop": "Lambda", "keep": "Lambda1"}]},
 {"app": "root", "rules": [{"drop": "."}]}
]
JSON
flags_runtime=(-drop 'runtime\.' -keep 'runtime\.(main|mallocgc)')
flags_cxx=(-drop '\(anonymous namespace\)::' -drop 'operator\(\)$' -drop Lambda -keep Lambda1)
flags_root=(-drop .)

# fold_case NAME APP|"" BASE UPLOAD...: a fold per upload; exit 3 (an upload needs a full merge)
# is a failure here, the cases are chosen so that every upload folds.
fold_case() {
    local name=$1 app=$2
    shift 2
    local a="$work/$name.fold.pgo" g="$work/$name.go.pgo" pa=() pg=(-compatibilize)
    if [ -n "$app" ]; then
        local v="flags_$app[@]"
        pa=("${!v}" -fallback)
        pg+=(-prune "$work/rules.json" -app "$app" -compact)
    fi
    "$pproftool" fold -stats -o "$a" "${pa[@]}" "$@" 2>"$work/$name.fold.err" ||
        { bad "$name: fold failed: $(tail -c 300 "$work/$name.fold.err")"; return; }
    if [ -n "$app" ]; then
        cp "$1" "$g"
        shift
        local f
        for f in "$@"; do
            "$goref/pprofmerge" -o "$g.tmp" "${pg[@]}" "$g" "$f" 2>"$work/$name.go.err" ||
                { bad "$name: pprofmerge failed: $(head -c 300 "$work/$name.go.err")"; return; }
            mv "$g.tmp" "$g"
        done
    else
        "$goref/pprofmerge" -o "$g" "${pg[@]}" "$@" 2>"$work/$name.go.err" ||
            { bad "$name: pprofmerge failed: $(head -c 300 "$work/$name.go.err")"; return; }
    fi
    gzip -t "$a" || { bad "$name: not a valid gzip file"; return; }
    "$goref/pprofcanon" "$a" >"$a.canon" 2>&1
    "$goref/pprofcanon" "$g" >"$g.canon" 2>&1
    if ! cmp -s "$a.canon" "$g.canon"; then
        bad "$name: canonical dumps differ: $(diff "$a.canon" "$g.canon" | head -5)"
        return
    fi
    if [ -x "$go123" ]; then
        if ! cmp -s <("$go123" tool pprof -top -nodecount=40 "$a" 2>&1 | grep -v '^File:') \
            <("$go123" tool pprof -top -nodecount=40 "$g" 2>&1 | grep -v '^File:'); then
            bad "$name: go tool pprof -top differs"
            return
        fi
        "$go123" tool preprofile -i "$a" -o "$a.pre" 2>"$a.pre.err"
        local ra=$?
        "$go123" tool preprofile -i "$g" -o "$g.pre" 2>"$g.pre.err"
        local rg=$?
        if [ $ra -ne $rg ] || { [ $ra -eq 0 ] && ! cmp -s "$a.pre" "$g.pre"; }; then
            bad "$name: go tool preprofile differs ($ra vs $rg)"
            return
        fi
    fi
    ok
}

gen() { # NAME FLAGS...
    local name=$1
    shift
    "$goref/pprofgen" -o "$work/gen/$name.pb.gz" "$@" || bad "pprofgen $name failed"
    echo "$work/gen/$name.pb.gz"
}

base=(-functions 800 -locations 2500 -samples 3000 -depth 40 -mappings 4 -inline 0.3)
std=() lab=() cxx=() deep=()
for s in $(seq 1 12); do std+=("$(gen "std$s" "${base[@]}" -seed "$s")"); done
for s in 1 2 3 4 5; do
    lab+=("$(gen "lab$s" "${base[@]}" -seed "$s" -labels 3 -numlabels 2 -path-labels)")
    cxx+=("$(gen "cxx$s" "${base[@]}" -seed "$s" -cxx -numlabels 3 -aslr -fakemapping -nomapping 0.1 -folded 0.1 -comments 2 -emptystack 0.05)")
    deep+=("$(gen "deep$s" "${base[@]}" -seed "$s" -depth 200 -inline 0.7 -sparse-ids)")
done

# Twelve folds into one base: sample segments rewritten, tables extended, compactions.
fold_case std "" "${std[@]}"
grep -q 'compacted=1' "$work/std.fold.err" || bad "std: no compaction on the way"
awk '/^fold/ { split($4, s, "="); split($5, r, "="); if (r[2] < s[2]) found = 1 } END { exit !found }' \
    "$work/std.fold.err" || bad "std: every fold deflated every segment again"
fold_case one "" "${std[0]}" "${std[1]}"
fold_case same-again "" "${std[0]}" "${std[0]}" "${std[0]}"
fold_case labels "" "${lab[@]}"
fold_case cxx-aslr "" "${cxx[@]}"
fold_case deep "" "${deep[@]}"
fold_case universes "" "${std[0]}" "$(gen u2 "${base[@]}" -seed 1 -universe 2)" "$(gen u3 "${base[@]}" -seed 2 -universe 3 -nostartline)"
fold_case heap "" "$(gen h1 "${base[@]}" -seed 1 -types alloc_objects/count,alloc_space/bytes -period-type space/bytes -default-type alloc_space -drop-frames 'runtime\..*')" \
    "$(gen h2 "${base[@]}" -seed 2 -types alloc_objects/count,alloc_space/bytes -period-type space/bytes -period 1048576 -time 0)"
fold_case zero "" "$(gen z1 "${base[@]}" -seed 5 -zero 0.2)" "$(gen z2 "${base[@]}" -seed 6 -zero 0.5)"
# Pruning: each upload pruned once as it comes, the result as Prune + Compact of the whole.
fold_case prune-runtime runtime "$data"/goapp-go123-cpu-{1,2,3}.pb.gz
fold_case prune-cxx cxx "${cxx[@]}"
fold_case prune-root root "${cxx[0]}" "${std[1]}" "${std[2]}"
fold_case prune-std runtime "${std[@]}"
grep -q '^fold ' "$work/prune-runtime.fold.err" || bad "prune-runtime: no upload was folded"
# Upgrade in place: a base written by today's one merge is read and extended.
"$autopgo" merge -l error -o "$work/old.pgo" "${std[0]}" "${std[1]}" || bad "autopgo merge failed"
fold_case upgrade "" "$work/old.pgo" "${std[2]}" "${std[3]}"
fold_case upgrade-corpus "" "$data/autopgo/default.pgo" "$data"/goapp-go123-cpu-{1,2}.pb.gz
# A base written by the first fold layout (segments kept in memory, commit 61a388a) is read and
# extended.
fold_case upgrade-fold-v1 "" "$data/folded-v1.pgo" "$data"/goapp-go123-cpu-{2,3}.pb.gz "$data/goapp-cpu-3.pb.gz"
# The folder's temp file (segments) is unlinked as soon as it is made: nothing is left under
# TMPDIR after a fold, a failed one, or at all while folding; no TMPDIR to write to is an IO error.
mkdir -p "$work/tmp"
TMPDIR=$work/tmp "$pproftool" fold -o "$work/x.pgo" "${std[0]}" "${std[1]}" 2>/dev/null || bad "fold under TMPDIR failed"
TMPDIR=$work/tmp "$pproftool" fold -o "$work/x.pgo" "${std[0]}" "$data/bad/truncated-goapp.pb.gz" 2>/dev/null
[ $? -eq 1 ] && ok || bad "a malformed upload: expected exit 1"
[ -z "$(ls -A "$work/tmp")" ] && ok || bad "the folder left files under TMPDIR: $(ls "$work/tmp")"
TMPDIR=$work/none "$pproftool" fold -o "$work/x.pgo" "${std[0]}" "${std[1]}" 2>"$work/none.err"
[ $? -eq 1 ] && grep -q '^IO: folder temp file' "$work/none.err" && ok || bad "no TMPDIR: $(cat "$work/none.err")"
# A fold's own output is a base like any other (a new folder over it, as after a restart).
cp "$work/std.fold.pgo" "$work/restart.pgo"
fold_case restart "" "$work/restart.pgo" "${std[0]}"

# What a fold cannot do exactly it hands to the full merge (exit 3): other sample types, sums
# that cancel out to an all-zero sample.
"$pproftool" fold -o "$work/x.pgo" "${std[0]}" "$(gen t1 "${base[@]}" -seed 3 -types cpu/nanoseconds)" 2>/dev/null
[ $? -eq 3 ] && ok || bad "other sample types: expected exit 3"
"$pproftool" fold -o "$work/x.pgo" "${std[0]}" "$(gen n1 "${base[@]}" -seed 1 -negative 1)" 2>/dev/null
[ $? -eq 3 ] && ok || bad "cancelled sums: expected exit 3"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
