#!/usr/bin/env bash
# Instructions per delivered record of the whole `tally run` process
# (fetch, decode, dedupe, file sink, durable commit, start-up and drain),
# under valgrind --tool=callgrind: repeatable on a loaded box where
# timings are not.
#
#   scripts/callgrind-run.sh [N]               # default N=200000
#   CALLGRIND_BINS="a/tally b/tally" scripts/callgrind-run.sh   # A/B on one produced topic
#   CALLGRIND_KEEP=/tmp/cg scripts/callgrind-run.sh   # keep /tmp/cg.1.out … for callgrind_annotate
#
# The first N events of the cached bench data (`head -N` of
# $TALLY_TOOLS/bench-data/usage-1000000-*.jsonl, the file scripts/bench.sh
# generates) are produced once into 8 partitions of a broker of its own
# (scripts/broker.sh start callgrind-$$), keyed by /trackingId. Each binary
# (default target/release/tally, built first) then runs under
# `valgrind --tool=callgrind --fair-sched=yes` into the file sink with a
# fresh store; SIGTERM once every distinct event has its line. Prints,
# per binary, the inclusive instructions of the stages below divided by
# the delivered lines. ~40 s per binary at N=200000 on 2 cores.
# --fair-sched=yes: without it sled's spin-waits starve the thread they
# wait for and the run never ends.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
N=${1:-200000}
P=8
TOOLS="${TALLY_TOOLS:-$ROOT/.tools}"
PY="$TOOLS/venv/bin/python"
KT="$ROOT/tests/support/kafka_tool.py"
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
DATA=$(ls "$TOOLS"/bench-data/usage-1000000-*.jsonl 2>/dev/null | head -1)
[[ -s "$DATA" ]] || { echo "no cached bench data in $TOOLS/bench-data: run scripts/bench.sh once" >&2; exit 1; }
if [[ -z "${CALLGRIND_BINS:-}" ]]; then
    nice cargo build --release --bin tally >&2
    CALLGRIND_BINS="$ROOT/target/release/tally"
fi

WORK=$(mktemp -d)
NAME="callgrind-$$"
VG_PID=""
cleanup() {
    [[ -n "$VG_PID" ]] && kill -KILL "$VG_PID" 2>/dev/null || true
    "$ROOT/scripts/broker.sh" stop "$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

line=$(TALLY_TOOLS="$TOOLS" "$ROOT/scripts/broker.sh" start "$NAME")
BROKER="${line#TALLY_TEST_BROKER=}"
head -n "$N" "$DATA" >"$WORK/events.jsonl"
DISTINCT=$("$PY" "$KT" usage-stats --file "$WORK/events.jsonl" |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["distinct"])')
"$PY" "$KT" create-topic --broker "$BROKER" --topic bench.usage --partitions "$P" >/dev/null
"$PY" "$KT" produce --broker "$BROKER" --topic bench.usage --key-pointer /trackingId \
    --linger-ms 50 --batch-num-messages 10000 --timeout 300 <"$WORK/events.jsonl" >/dev/null
echo "N=$N events ($DISTINCT distinct) in $P partitions; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Inclusive Ir of function $2 (its own line, "file:name [binary]"; an
# async fn's body is its {{closure}}); 0 when it does not appear.
ir_of() {
    grep -E ":tally::$2(::\{\{closure\}\})? \[" "$1" | head -1 | awk '{gsub(",","",$1); print $1}' || true
}

run=0
for bin in $CALLGRIND_BINS; do
    run=$((run + 1))
    dir="$WORK/run$run"
    mkdir -p "$dir"
    cat >"$dir/tally.toml" <<EOF
[kafka]
brokers = ["$BROKER"]
fetch_max_bytes = 1048576

[store]
path = "$dir/state"

[assignment]
mode = "static"
member = 0
members = 1

[[routes]]
name = "usage"
topics = ["bench.usage"]
format = "killbill-usage"
sink = "file"
start = "earliest"

[sinks.file]
path = "$dir/delivered.jsonl"
EOF
    TALLY_LOG=warn valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$dir/cg.out" \
        "$bin" run --config "$dir/tally.toml" >"$dir/tally.log" 2>&1 &
    VG_PID=$!
    deadline=$((SECONDS + 600))
    lines=0
    while ((SECONDS < deadline)) && kill -0 "$VG_PID" 2>/dev/null; do
        lines=$( (wc -l <"$dir/delivered.jsonl") 2>/dev/null || echo 0)
        ((lines >= DISTINCT)) && break
        sleep 1
    done
    kill -TERM "$VG_PID" 2>/dev/null || true
    wait "$VG_PID" || true
    VG_PID=""
    lines=$(wc -l <"$dir/delivered.jsonl")
    ((lines == DISTINCT)) || { tail -5 "$dir/tally.log" >&2; echo "$bin delivered $lines of $DISTINCT lines" >&2; exit 1; }
    # From a directory where the crate's relative source paths do not
    # resolve: from the repo, callgrind_annotate splits a function's
    # inclusive count by the source file of its inlined parts.
    (cd "$dir" && callgrind_annotate --inclusive=yes --threshold=100 cg.out >annotate.txt 2>/dev/null)
    [[ -n "${CALLGRIND_KEEP:-}" ]] && cp "$dir/cg.out" "$CALLGRIND_KEEP.$run.out"
    total=$(grep -E 'PROGRAM TOTALS' "$dir/annotate.txt" | awk '{gsub(",","",$1); print $1}')
    echo
    echo "$bin ($("$bin" --version 2>/dev/null | head -1)): $lines lines"
    printf '| where | per delivered line |\n|---|---:|\n'
    printf '| **whole process** | **%s** |\n' "$((total / lines))"
    while IFS='|' read -r label regex; do
        ir=$(ir_of "$dir/annotate.txt" "$regex")
        printf '| %s | %s |\n' "$label" "$(( ${ir:-0} / lines ))"
    done <<'EOF'
worker resolve_chunk|pipeline::worker::PartitionWorker::resolve_chunk
— Decoder::decode|format::Decoder::decode
— file sink write_line|sink::file::line::(LineWriter::)?write_line
—— push_str|sink::json_text::push_str
—— push_int|sink::json_text::push_int
— pick_round|pipeline::worker::PartitionWorker::pick_round
— digest|store::api::digest
Store::commit|store::api::Store::commit
— key_codec::encode_into|store::key_codec::encode(_into)?
fetch (PartitionConsumer::fetch)|kafka::client::PartitionConsumer::fetch
— RawBatch::records_into|kafka::record_batch::RawBatch::records_into
— parse_batch|kafka::record_batch::parse_batch
EOF
done
