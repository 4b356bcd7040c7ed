#!/usr/bin/env bash
# Builds the libFuzzer target for the pprof decoder (clang, ASan + UBSan), replays every seed,
# then fuzzes for FUZZ_SECONDS (default 60) on a corpus seeded from tests/testdata/pprof (raw and
# gunzipped) and tests/fuzz/regressions (inputs that once crashed). Ends with "N passed, N failed":
# one per replayed seed, plus one for the fuzz run; the line before it, "seed replays: N passed,
# N failed", is the seeds' share (scripts/test.sh reports it on its own line).
# usage: tests/fuzz/run.sh   (env: FUZZ_SECONDS, BUILD_DIR)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${BUILD_DIR:-$root/build}/fuzz
seconds=${FUZZ_SECONDS:-60}
mkdir -p "$out/seeds" "$out/corpus" "$out/artifacts"
pass=0 fail=0

if ! clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer -I"$root/core/pprof" "$root"/core/pprof/*.c "$root/tests/fuzz/decode_fuzz.c" \
    $(pkg-config --cflags --libs zlib libdeflate libpcre2-8) -o "$out/decode_fuzz" 2>"$out/build.log"; then
    cat "$out/build.log"
    echo "0 passed, 1 failed"
    exit 1
fi

# Seeds: every corpus file as is, and gunzipped so mutations reach the protobuf directly.
rm -f "$out"/seeds/*
i=0
while IFS= read -r f; do
    i=$((i + 1))
    cp "$f" "$out/seeds/$i-$(basename "$f")"
    if gzip -t "$f" 2>/dev/null; then gzip -dc "$f" >"$out/seeds/$i-$(basename "$f").raw" 2>/dev/null; fi
done < <(find "$root/tests/testdata/pprof" "$root/tests/fuzz/regressions" -type f ! -name '*.md' | sort)

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for f in "$out"/seeds/*; do
    if "$out/decode_fuzz" -runs=1 "$f" >"$out/replay.log" 2>&1; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "seed $(basename "$f") fails:"
        grep -E "ERROR|invariant|runtime error" "$out/replay.log" | head -5
    fi
done

seed_pass=$pass seed_fail=$fail

"$out/decode_fuzz" "$out/corpus" "$out/seeds" -max_total_time="$seconds" -timeout=20 \
    -rss_limit_mb=2560 -max_len=1048576 -artifact_prefix="$out/artifacts/" -print_final_stats=1 \
    >"$out/fuzz.log" 2>&1
rc=$?
grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|Done [0-9]+ runs)" "$out/fuzz.log" | tail -2
if [ $rc -eq 0 ] && ! grep -qE "ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:|invariant failed" "$out/fuzz.log"; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "fuzzing found a problem (exit $rc); see $out/fuzz.log and $out/artifacts/"
    grep -E "ERROR|invariant|runtime error|SUMMARY" "$out/fuzz.log" | head -10
fi
echo "seed replays: $seed_pass passed, $seed_fail failed"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
