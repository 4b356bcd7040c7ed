#!/usr/bin/env bash
# autopgo's compiler view against the real Go 1.23 toolchain (Debian's golang-1.23-go):
# 1. for every corpus profile go accepts, generated profiles of several sizes and shapes
#    (tests/goref pprofgen) and merged windows: `go tool preprofile` of the full profile, of
#    autopgo's minimal profile (format=pgo) and autopgo's own format=preprofile are byte-identical;
#    profiles go refuses are refused by autopgo too;
# 2. on tests/goservice with a profile of it (goservice.pb.gz): `go build -pgo` of the full and of
#    the minimal profile (-trimpath, same file name, separate build caches so neither build reuses
#    the other's work) print the same pgodebug=1 decisions and give identical binaries; the
#    compiler's hot functions are autopgo's, less those whose inline budget it never weighs (-m=2
#    on their packages shows neither "can inline" nor "function too complex" for them), and its
#    hot-callsite-thres-from-CDF is autopgo's; autopgo's preprofile given to the compiler directly
#    (-gcflags=all=-pgoprofile=, as Bazel does) gives the same decisions;
# 3. no_inline: with a hot callee listed, pgodebug shows it is no longer hot nor hot-inlined, and
#    every decision not naming it is unchanged.
# Prints the size of each minimal profile against its full profile; ends with "N passed, N failed".
# usage: tests/pgo/run.sh   (env: BUILD_DIR, AP_GO123)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
autopgo=$build/autopgo
go=${AP_GO123:-/usr/lib/go-1.23/bin/go}
work=$build/pgo-check
data=$root/tests/testdata/pprof
shape() { "$autopgo" run "$root/tests/pgo/shape.lua" "$@"; }
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL $*"
}

if [ ! -x "$autopgo" ] || [ ! -x "$go" ]; then
    echo "missing $autopgo or $go (build first; Go 1.23 comes from scripts/deps.sh)"
    echo "0 passed, 1 failed"
    exit 1
fi
rm -rf "$work/cases" "$work/gen"
mkdir -p "$work/cases" "$work/gen"
export GOFLAGS='' GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off GOCACHE="$work/gocache-tools"

# ---- 1. preprofile equality ----

# case NAME FILE: the three preprofile outputs agree, or both sides refuse the profile.
case_file() {
    local name=$1 f=$2 d="$work/cases/$1"
    mkdir -p "$d"
    if ! "$go" tool preprofile -i "$f" -o "$d/go.pp" 2>"$d/go.err"; then
        if shape "$f" preprofile "$d/ours.pp" 2>"$d/ours.err"; then
            bad "$name: go tool preprofile refuses it ($(head -c 200 "$d/go.err")), autopgo does not"
        elif shape "$f" pgo "$d/min.pgo" 2>/dev/null; then
            bad "$name: autopgo wrote a minimal profile of a profile go refuses"
        else
            ok
        fi
        return
    fi
    if ! shape "$f" preprofile "$d/ours.pp" 2>"$d/ours.err"; then
        bad "$name: autopgo preprofile failed: $(head -c 300 "$d/ours.err")"
        return
    fi
    cmp -s "$d/go.pp" "$d/ours.pp" && ok || bad "$name: format=preprofile differs from go tool preprofile"
    if ! shape "$f" pgo "$d/min.pgo" 2>"$d/ours.err"; then
        bad "$name: autopgo minimal profile failed: $(head -c 300 "$d/ours.err")"
        return
    fi
    if "$go" tool preprofile -i "$d/min.pgo" -o "$d/min.pp" 2>"$d/min.err" && cmp -s "$d/go.pp" "$d/min.pp"; then
        ok
    else
        bad "$name: go tool preprofile of the minimal profile differs ($(head -c 200 "$d/min.err"))"
    fi
    local full_size min_size
    full_size=$(stat -c %s "$f") min_size=$(stat -c %s "$d/min.pgo")
    sizes+=("$(awk -v n="$name" -v f="$full_size" -v m="$min_size" 'BEGIN { printf "%-44s %10d %8d %7.1fx", n, f, m, f / m }')")
}

sizes=()
for f in "$data"/*.pb.gz "$data"/autopgo/* "$data"/edge/* "$data"/google-pprof/derived/* \
    "$data"/google-pprof/{driver--cppbench.cpu_no_samples_type,driver--go.nomappings.crash,proftest--large.cpu,report--sample.cpu}; do
    case_file "$(basename "$f")" "$f"
done

# Generated profiles: sizes, inlining, C++ names, negative and zero samples, sparse ids, missing
# start lines, cpu-only; built with the Go reference (tests/goref, Debian's Go 1.19).
goref=$build/goref/bin
if [ ! -x "$goref/pprofgen" ] || [ ! -x "$goref/pprofmerge" ]; then
    "$root/tests/goref/build.sh" "$build/goref" >"$work/goref-build.log" 2>&1 ||
        bad "building tests/goref failed: $(tail -5 "$work/goref-build.log")"
fi
gen() { # NAME FLAGS...
    local name=$1
    shift
    if "$goref/pprofgen" -o "$work/gen/$name.pb.gz" "$@" 2>"$work/gen/$name.err"; then
        case_file "gen-$name" "$work/gen/$name.pb.gz"
    else
        bad "pprofgen $name: $(head -c 200 "$work/gen/$name.err")"
    fi
}
# Go reads an empty file, and a gzip stream of nothing, as an empty profile.
: >"$work/gen/empty"
printf '' | gzip >"$work/gen/empty.gz"
case_file empty "$work/gen/empty"
case_file empty-gzip "$work/gen/empty.gz"
gen small -functions 50 -locations 120 -samples 300 -depth 8
gen medium -seed 2 -samples 5000
gen large -seed 3 -universe 3 -functions 6000 -locations 20000 -samples 60000 -depth 48 -labels 4
gen inline -seed 4 -inline 0.8
gen cxx -seed 5 -cxx
gen negative -seed 6 -negative 0.3 -zero 0.2
gen folded-nomapping -seed 7 -folded 0.3 -nomapping 0.5 -fakemapping
gen cpu-only -seed 8 -types cpu/nanoseconds
gen nostartline -seed 9 -nostartline
gen heap -seed 10 -types alloc_objects/count,alloc_space/bytes
# Small universes (recursion, shared call sites) with negative and zero samples: edges that sum
# to zero or below, nodes whose weights cancel.
for seed in 11 12 13 14 15 16; do
    gen "cancel-$seed" -seed $seed -universe $seed -functions 12 -locations 30 -samples 400 -depth 6 \
        -negative 0.45 -zero 0.1 -inline 0.5
done
# Merged windows: autopgo merge of several captures, and a base merged with a new capture.
merged() { # NAME INPUTS...
    local name=$1
    shift
    if "$autopgo" merge -l error -o "$work/gen/$name.pb.gz" "$@" 2>"$work/gen/$name.err"; then
        case_file "merge-$name" "$work/gen/$name.pb.gz"
    else
        bad "autopgo merge $name: $(head -c 200 "$work/gen/$name.err")"
    fi
}
merged go123-window "$data"/goapp-go123-cpu-{1,2,3}.pb.gz
merged base-and-new "$data/goapp-go123-cpu-2.pb.gz" "$data/autopgo/default.pgo"
merged gen-week "$work"/gen/{small,medium,large,inline}.pb.gz
# A day of one service: 24 hourly captures of the same program (one universe of functions), the
# shape of a merged base or window in production.
day=()
for seed in $(seq 1 24); do
    if "$goref/pprofgen" -o "$work/gen/day-$seed.pb.gz" -seed "$seed" -universe 7 -samples 3000 \
        2>"$work/gen/day.err"; then
        day+=("$work/gen/day-$seed.pb.gz")
    else
        bad "pprofgen day-$seed: $(head -c 200 "$work/gen/day.err")"
    fi
done
merged gen-day-of-24-captures "${day[@]}"

echo "size of the minimal profile (format=pgo) against the full profile, bytes:"
printf '  %-44s %10s %8s %8s\n' profile full minimal ratio
for s in "${sizes[@]}"; do echo "  $s"; done

# ---- 2. go build -pgo on tests/goservice ----

svc=$work/svc
rm -rf "$svc"
mkdir -p "$svc/src" "$svc/full" "$svc/min" "$svc/noinline"
cp "$root"/tests/goservice/go.mod "$root"/tests/goservice/main.go "$svc/src/"
prof=$root/tests/pgo/goservice.pb.gz
cp "$prof" "$svc/full/default.pgo"
shape "$prof" pgo "$svc/min/default.pgo" || bad "goservice: no minimal profile"

# Compiler output per package (packages finish in any order), sorted within the package.
normalize() {
    awk '/^# /{pkg=$0; next} {print pkg "\t" $0}' "$1" | LC_ALL=C sort
}
# build DIR CACHE: go build -pgo=DIR/default.pgo into DIR/goservice, pgodebug output in DIR/out
gobuild() {
    (cd "$svc/src" && GOCACHE="$work/$2" "$go" build -trimpath -pgo="$1/default.pgo" \
        -gcflags=all=-d=pgodebug=1 -o "$1/goservice" . >"$1/out" 2>&1)
}
if gobuild "$svc/full" gocache-full && gobuild "$svc/min" gocache-min; then
    normalize "$svc/full/out" >"$svc/full/norm"
    normalize "$svc/min/out" >"$svc/min/norm"
    if [ -s "$svc/full/norm" ] && cmp -s "$svc/full/norm" "$svc/min/norm"; then
        ok
    else
        bad "goservice: pgodebug decisions differ (diff $svc/full/norm $svc/min/norm)"
    fi
    cmp -s "$svc/full/goservice" "$svc/min/goservice" && ok || bad "goservice: the binaries differ"
    # the compiler's hot set and threshold against autopgo's decisions view
    shape "$prof" hot "$svc/ours.hot"
    shape "$prof" thres "$svc/ours.thres"
    grep -o 'hot-node enabled increased budget=2000 for func=.*' "$svc/full/out" | sed 's/.*func=//' |
        LC_ALL=C sort -u >"$svc/go.hot"
    LC_ALL=C sort -u "$svc/ours.hot" -o "$svc/ours.hot"
    missing=$(LC_ALL=C comm -23 "$svc/go.hot" "$svc/ours.hot")
    if [ -s "$svc/go.hot" ] && [ -z "$missing" ]; then ok; else bad "goservice: compiler hot functions autopgo does not report: $missing"; fi
    if grep -qx "hot-callsite-thres-from-CDF=$(cat "$svc/ours.thres")" "$svc/full/out"; then
        ok
    else
        bad "goservice: hot-callsite-thres-from-CDF $(grep -m1 -o 'thres-from-CDF=.*' "$svc/full/out") vs ours $(cat "$svc/ours.thres")"
    fi
    # autopgo's hot functions the compiler did not list must be ones whose inline budget it never
    # looks at (assembly, recursion, a go: directive): -m=2 on their packages must show no
    # "can inline F" and no "cannot inline F: function too complex" (both come after the budget).
    others=$(LC_ALL=C comm -13 "$svc/go.hot" "$svc/ours.hot")
    pkg_of() { # a symbol's import path (package main is the module's)
        local dir rest pkg
        dir=$(dirname "$1") rest=${1##*/}
        pkg=${rest%%.*}
        [ "$dir" = "." ] || pkg=$dir/$pkg
        [ "$pkg" = main ] && pkg=autopgo.test/goservice
        echo "$pkg"
    }
    budgeted() { # SYMBOL: -m=2 shows the compiler weighing its inline budget
        local pkg short
        pkg=$(pkg_of "$1") short=${1##*/}
        short=${short#*.}
        awk -v h="# $pkg" '/^# /{on=($0==h); next} on' "$svc/m2/out" |
            grep -F -e ": can inline $short with cost" -e ": cannot inline $short: function too complex" >/dev/null
    }
    pkgs=() mflags=()
    for f in $others; do
        pkg=$(pkg_of "$f")
        case " ${pkgs[*]} " in *" $pkg "*) ;; *) pkgs+=("$pkg") ;; esac
    done
    for pkg in "${pkgs[@]}"; do mflags+=("-gcflags=$pkg=-d=pgodebug=1 -m=2"); done
    mkdir -p "$svc/m2"
    cp "$prof" "$svc/m2/default.pgo"
    if [ -z "$others" ]; then
        ok
    elif ! (cd "$svc/src" && GOCACHE="$work/gocache-full" "$go" build -trimpath \
        -pgo="$svc/m2/default.pgo" -gcflags=all=-d=pgodebug=1 "${mflags[@]}" -o "$svc/m2/goservice" . \
        >"$svc/m2/out" 2>&1); then
        bad "goservice: the -m=2 build failed: $(tail -3 "$svc/m2/out")"
    else
        wrong="" control=""
        for f in $others; do budgeted "$f" && wrong="$wrong $f"; done
        # the check can see a budget: a hot function of one of those packages shows one
        while IFS= read -r f; do
            case " ${pkgs[*]} " in *" $(pkg_of "$f") "*) control=$f; break ;; esac
        done <"$svc/go.hot"
        if [ -n "$wrong" ]; then
            bad "goservice: the compiler weighed the budget of$wrong but did not mark them hot"
        elif [ -n "$control" ] && ! budgeted "$control"; then
            bad "goservice: -m=2 shows no budget for $control, which the compiler marked hot"
        else
            ok
        fi
    fi
    echo "hot functions: compiler $(wc -l <"$svc/go.hot"), autopgo $(wc -l <"$svc/ours.hot");" \
        "autopgo's others, whose inline budget the compiler never weighs (assembly, recursion, a go: directive):" "$(echo $others)"

    # format=preprofile given to the compiler directly (Bazel rules_go, -gcflags=all=-pgoprofile=):
    # the same decisions as go build -pgo with the full profile.
    mkdir -p "$svc/pp"
    if shape "$prof" preprofile "$svc/pp/profile.pp" &&
        (cd "$svc/src" && GOCACHE="$work/gocache-min" "$go" build -trimpath \
            -gcflags="all=-d=pgodebug=1 -pgoprofile=$svc/pp/profile.pp" -o "$svc/pp/goservice" . \
            >"$svc/pp/out" 2>&1); then
        normalize "$svc/pp/out" >"$svc/pp/norm"
        cmp -s "$svc/full/norm" "$svc/pp/norm" && ok ||
            bad "goservice: -pgoprofile=<format=preprofile> decides otherwise (diff $svc/full/norm $svc/pp/norm)"
    else
        bad "goservice: build with -gcflags=all=-pgoprofile= failed: $(tail -3 "$svc/pp/out")"
    fi

    # ---- 3. no_inline ----
    victim=$(grep -o 'hot-budget check allows inlining for call [^ ]* .* in function main\.' "$svc/full/out" |
        head -1 | sed 's/hot-budget check allows inlining for call \([^ ]*\) .*/\1/')
    if [ -z "$victim" ]; then
        bad "no_inline: the full profile hot-inlines nothing into package main"
    elif shape "$prof" pgo "$svc/noinline/default.pgo" "$victim" && gobuild "$svc/noinline" gocache-full; then
        normalize "$svc/noinline/out" >"$svc/noinline/norm"
        if grep -qF -e "for call $victim " -e "for func=$victim" "$svc/noinline/out"; then
            bad "no_inline: $victim is still hot: $(grep -F "$victim" "$svc/noinline/out" | head -3)"
        else
            ok
        fi
        if cmp -s <(grep -vF "$victim" "$svc/full/norm") <(grep -vF "$victim" "$svc/noinline/norm"); then
            ok
        else
            bad "no_inline: decisions not naming $victim changed: $(diff <(grep -vF "$victim" "$svc/full/norm") <(grep -vF "$victim" "$svc/noinline/norm") | head -5)"
        fi
        echo "no_inline: $victim is not hot-inlined any more; $(grep -cF "$victim" "$svc/full/norm") compiler lines named it"
    else
        bad "no_inline: build failed: $(tail -5 "$svc/noinline/out")"
    fi
else
    bad "goservice: go build -pgo failed: $(tail -5 "$svc"/*/out)"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
