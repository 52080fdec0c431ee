#!/usr/bin/env bash
# Instructions per record for decode, dedupe and commit on a fixed input
# (examples/callgrind_stages.rs), under valgrind --tool=callgrind: repeatable
# on a loaded machine where timings are not.
#
#   scripts/callgrind.sh [N] [PRELOAD]     # default N=20000, PRELOAD=100000
#   CALLGRIND_KEEP=/tmp/cg.out scripts/callgrind.sh   # also keep the profile
#                                         # (for callgrind_annotate --auto=yes)
#
# Prints one row per stage: inclusive instructions of the stage function / N.
# sled's background flusher thread is not inside any stage (the commit's own
# flush is). Needs valgrind (apt-get install valgrind). --fair-sched=yes:
# valgrind runs one thread at a time, and without a fair lock sled's
# spin-waiting threads starve the one they wait for (the run never ends).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
PRELOAD=${2:-100000}
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --example callgrind_stages >&2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$out/cg.out" \
    target/release/examples/callgrind_stages "$N" "$PRELOAD" >"$out/run.txt" 2>"$out/valgrind.txt" || {
    cat "$out/valgrind.txt" >&2; exit 1; }
callgrind_annotate --inclusive=yes --threshold=100 "$out/cg.out" >"$out/annotate.txt" 2>/dev/null
if [ -n "${CALLGRIND_KEEP:-}" ]; then cp "$out/cg.out" "$CALLGRIND_KEEP"; fi
cat "$out/run.txt"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), N=$N, preloaded IDs=$PRELOAD"
printf '| stage | instructions | per record |\n|---|---:|---:|\n'
total=0
stage_ir() {
    local ir
    ir=$(grep -E "callgrind_stages::stage_$1 " "$out/annotate.txt" | head -1 | awk '{gsub(",","",$1); print $1}')
    echo "${ir:-0}"
}
for stage in decode dedupe commit; do
    ir=$(stage_ir "$stage")
    total=$((total + ir))
    printf '| %s | %s | %s |\n' "$stage" "$ir" "$((ir / N))"
done
printf '| **decode + dedupe + commit** | %s | **%s** |\n' "$total" "$((total / N))"
ir=$(stage_ir decode_with_usage)
printf '| (decode building the parsed UsageEvent, Kill Bill routes only) | %s | %s |\n' "$ir" "$((ir / N))"
ir=$(stage_ir decode_json)
printf '| (json format, dedupe by JSON pointer /trackingId, same events) | %s | %s |\n' "$ir" "$((ir / N))"
