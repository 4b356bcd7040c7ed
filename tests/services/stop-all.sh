#!/usr/bin/env bash
# Stops every test service that has state in a run directory (each by its own script, by PID).
# scripts/test.sh runs it at the end of a run; tests/lua/services.lua when busted ran on its own.
#   usage: tests/services/stop-all.sh [--logs DIR] [--after PID] [RUN_DIR]
#   RUN_DIR defaults to $AUTOPGO_SERVICES_DIR, else build/services. --logs copies each service's
#   logs to DIR/<name>/ first; --after waits until process PID has exited, then stops them and
#   removes RUN_DIR (a watcher that cleans up after a test run that died without doing so).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
logs=""
after=""
while [ $# -gt 0 ]; do
    case "$1" in
    --logs) logs=$2; shift 2 ;;
    --after) after=$2; shift 2 ;;
    -*) echo "usage: $0 [--logs DIR] [--after PID] [RUN_DIR]" >&2; exit 2 ;;
    *) break ;;
    esac
done
run=${1:-${AUTOPGO_SERVICES_DIR:-$root/build/services}}

if [ -n "$after" ]; then
    while kill -0 "$after" 2>/dev/null; do sleep 1; done
fi
[ -d "$run" ] || exit 0

status=0
for d in "$run"/*/; do
    [ -d "$d" ] || continue
    name=$(basename "$d")
    script="$root/tests/services/$name.sh"
    [ -x "$script" ] || continue
    if [ -n "$logs" ]; then
        mkdir -p "$logs/$name"
        find "$d" -maxdepth 2 -type f \( -name '*.log' -o -name '*.out' \) -exec cp {} "$logs/$name/" \; 2>/dev/null || true
    fi
    AUTOPGO_SERVICES_DIR=$run "$script" stop || status=1
done
[ -z "$after" ] || rm -rf "$run"
exit $status
