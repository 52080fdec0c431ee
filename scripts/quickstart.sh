#!/usr/bin/env bash
# Quickstart: tally's main job end to end on the bundled sample data.
#
#   scripts/quickstart.sh
#
# 1. installs the test broker (Tansu) and Python tools, builds tally --release
# 2. starts a broker, creates stream.usagemetrics (4 partitions)
# 3. produces data/sample/usage-events.jsonl (50 lines: 43 distinct events,
#    5 exact duplicates, 2 bad lines) with `tally produce`
# 4. `tally run` until every distinct event is in the file sink, then SIGTERM
# 5. runs tally again: nothing new is delivered
# 6. prints the delivered file, `tally offsets` and the dead letters
#
# Everything happens in a temporary work dir (config copied there, store
# ./state, sink ./delivered.jsonl); the broker is always stopped.
#
# Environment:
#   TALLY_QUICKSTART_PRODUCER=tally|kafka-tool  who produces the sample (default tally;
#                                  kafka-tool = confluent-kafka stand-in)
#   TALLY_QUICKSTART_TIMEOUT=60    seconds allowed for the first run to deliver everything
#   TALLY_QUICKSTART_KEEP=1        keep the work dir (always kept on failure)
#   TALLY_BIN=/path/to/tally       use this binary instead of building --release
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TALLY_TOOLS:-$ROOT/.tools}"
PY="$TOOLS/venv/bin/python"
KT="$ROOT/tests/support/kafka_tool.py"
SAMPLE="$ROOT/data/sample/usage-events.jsonl"
TOPIC="stream.usagemetrics"
BROKER_NAME="quickstart-$$"
PRODUCER="${TALLY_QUICKSTART_PRODUCER:-tally}"
TIMEOUT="${TALLY_QUICKSTART_TIMEOUT:-60}"
TALLY_PID=""
WORK=""
OK=0

if [[ -t 2 ]]; then
    say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
else
    say() { printf '\n==> %s\n' "$*" >&2; }
fi
die() { printf '\nquickstart: FAILED: %s\n' "$*" >&2; exit 1; }

cleanup() {
    local rc=$?
    if [[ -n "$TALLY_PID" ]] && kill -0 "$TALLY_PID" 2>/dev/null; then
        kill -KILL "$TALLY_PID" 2>/dev/null || true
        wait "$TALLY_PID" 2>/dev/null || true
    fi
    "$ROOT/scripts/broker.sh" stop "$BROKER_NAME" >/dev/null 2>&1 || true
    if [[ -n "$WORK" ]]; then
        if [[ $OK -eq 1 && -z "${TALLY_QUICKSTART_KEEP:-}" ]]; then
            rm -rf "$WORK" "$TOOLS/run/$BROKER_NAME.log"
        else
            echo "quickstart: work dir kept: $WORK" >&2
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

lines_in() { [[ -f "$1" ]] && tr -cd '\n' <"$1" | wc -c || echo 0; }

# start_tally LOG: `tally run` in the background
start_tally() {
    RUST_LOG="${RUST_LOG:-info}" "$TALLY" run --config tally.toml >"$1" 2>&1 </dev/null &
    TALLY_PID=$!
}

# stop_tally LOG: SIGTERM, wait up to 30 s, require exit 0
stop_tally() {
    local log=$1 i rc=0
    kill -TERM "$TALLY_PID" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$TALLY_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$TALLY_PID" 2>/dev/null; then
        kill -KILL "$TALLY_PID" 2>/dev/null || true
        wait "$TALLY_PID" 2>/dev/null || true
        TALLY_PID=""
        tail -20 "$log" >&2
        die "tally run did not exit within 30 s of SIGTERM"
    fi
    wait "$TALLY_PID" || rc=$?
    TALLY_PID=""
    if [[ $rc -ne 0 ]]; then
        tail -20 "$log" >&2
        die "tally run exited with $rc after SIGTERM (expected 0)"
    fi
}

# ------------------------------------------------------------------ setup

say "tools: scripts/broker.sh install"
"$ROOT/scripts/broker.sh" install

if [[ -n "${TALLY_BIN:-}" ]]; then
    TALLY="$(cd "$(dirname "$TALLY_BIN")" && pwd)/$(basename "$TALLY_BIN")"
    say "using TALLY_BIN=$TALLY"
else
    say "build: cargo build --release"
    (cd "$ROOT" && cargo build --release --bin tally)
    TALLY="${CARGO_TARGET_DIR:-$ROOT/target}/release/tally"
fi
[[ -x "$TALLY" ]] || die "no binary at $TALLY"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tally-quickstart.XXXXXX")
cp "$ROOT/data/tally.quickstart.toml" "$WORK/tally.toml"
cd "$WORK"
echo "work dir: $WORK" >&2

say "broker"
line=$("$ROOT/scripts/broker.sh" start "$BROKER_NAME")
BROKER="${line#TALLY_TEST_BROKER=}"
export TALLY_BROKERS="$BROKER"   # overrides kafka.brokers in tally.toml
echo "TALLY_BROKERS=$TALLY_BROKERS" >&2

say "create topic $TOPIC (4 partitions)"
"$PY" "$KT" create-topic --broker "$BROKER" --topic "$TOPIC" --partitions 4

stats=$("$PY" "$KT" usage-stats --file "$SAMPLE")
read -r LINES VALID DISTINCT DUPS INVALID < <("$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["lines"], d["valid"], d["distinct"], d["duplicates"], d["invalid"])' "$stats")
echo "sample: $LINES lines, $DISTINCT distinct events, $DUPS exact duplicates, $INVALID bad lines" >&2

say "produce ${SAMPLE#"$ROOT"/} ($PRODUCER)"
case "$PRODUCER" in
    tally)
        "$TALLY" produce --config tally.toml --topic "$TOPIC" --key-pointer /trackingId <"$SAMPLE" ;;
    kafka-tool)
        "$PY" "$KT" produce --broker "$BROKER" --topic "$TOPIC" --key-pointer /trackingId <"$SAMPLE" ;;
    *) die "TALLY_QUICKSTART_PRODUCER must be tally or kafka-tool" ;;
esac
produced=$("$PY" "$KT" consume --broker "$BROKER" --topic "$TOPIC" --partitions 4 --timeout 30 --idle 1)
PRODUCED=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["count"])' "$produced")
echo "records on $TOPIC: $PRODUCED" >&2
[[ "$PRODUCED" -eq "$LINES" ]] || die "expected $LINES records on $TOPIC, found $PRODUCED"

# ------------------------------------------------------------------ run 1

say "tally run (until all $DISTINCT distinct events are delivered, at most ${TIMEOUT}s)"
start_tally run1.log
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
    n=$(lines_in delivered.jsonl)
    if ! kill -0 "$TALLY_PID" 2>/dev/null; then
        rc=0; wait "$TALLY_PID" || rc=$?; TALLY_PID=""
        tail -20 run1.log >&2
        die "tally run exited early (exit $rc) after delivering $n lines"
    fi
    (( n >= DISTINCT )) && break
    if (( $(date +%s) >= deadline )); then
        tail -20 run1.log >&2
        die "only $n of $DISTINCT events delivered within ${TIMEOUT}s"
    fi
    sleep 0.2
done
sleep 1 # let it finish resolving the tail (duplicates, dead letters) and commit
stop_tally run1.log
DELIVERED=$(lines_in delivered.jsonl)
UNIQUE_DELIVERED=$("$PY" - delivered.jsonl <<'EOF'
import json, sys
keys = [json.loads(l).get("dedupe_key") for l in open(sys.argv[1]) if l.strip()]
print(len(set(map(json.dumps, keys))))
EOF
)
printf 'delivered lines: %s   distinct dedupe keys delivered: %s   distinct events in sample: %s\n' \
    "$DELIVERED" "$UNIQUE_DELIVERED" "$DISTINCT" >&2
[[ "$DELIVERED" -eq "$DISTINCT" && "$UNIQUE_DELIVERED" -eq "$DISTINCT" ]] ||
    die "expected exactly $DISTINCT delivered lines, one per distinct event"

# ------------------------------------------------------------------ run 2

say "tally run again: nothing new must be delivered"
start_tally run2.log
sleep 3
kill -0 "$TALLY_PID" 2>/dev/null || { tail -20 run2.log >&2; die "second tally run exited early"; }
stop_tally run2.log
AFTER=$(lines_in delivered.jsonl)
echo "delivered lines after the second run: $AFTER (before: $DELIVERED)" >&2
[[ "$AFTER" -eq "$DELIVERED" ]] || die "the second run delivered $(( AFTER - DELIVERED )) more lines"

# ------------------------------------------------------------------ show

say "delivered.jsonl"
cat delivered.jsonl

say "tally offsets"
"$TALLY" offsets --config tally.toml
offsets_json=$("$TALLY" offsets --config tally.toml --json)
"$PY" - "$offsets_json" "$LINES" <<'EOF'
import json, sys
doc, total = json.loads(sys.argv[1]), int(sys.argv[2])
rows = doc if isinstance(doc, list) else doc.get("partitions") or doc.get("offsets") or []
lags = [r.get("lag") for r in rows if isinstance(r, dict) and isinstance(r.get("lag"), int)]
committed = sum(r.get("committed", 0) for r in rows if isinstance(r, dict) and isinstance(r.get("committed"), int))
print(f"partitions: {len(rows)}  committed offsets sum: {committed} (records produced: {total})  total lag: {sum(lags) if lags else 'n/a'}", file=sys.stderr)
if lags and sum(lags) != 0:
    sys.exit("lag is not zero")
EOF

say "dead letters (expect $INVALID)"
"$TALLY" dlq list --config tally.toml || echo "(tally dlq list failed)" >&2

OK=1
say "quickstart OK: $LINES records -> $DELIVERED delivered once each, $DUPS duplicates skipped, $INVALID dead-lettered; a rerun delivered nothing"
