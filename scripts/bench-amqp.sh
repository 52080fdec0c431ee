#!/usr/bin/env bash
# AMQP forwarding throughput with publisher confirms on: tally (release, or
# $TALLY_BIN) reads EVENTS JSON events from a local broker and publishes each
# to a RabbitMQ exchange (persistent, confirmed); the clock runs from tally's
# start until every event is in the bound queue and every offset is committed.
#
#   scripts/bench-amqp.sh [EVENTS=50000] [PARTITIONS=8] [MAX_BATCH_RECORDS=500]
#
# Baseline in the same invocation: pika publishing the same number of
# persistent ~300-byte messages with confirms to its own exchange and queue
# (what a hand-written forwarder does); the table gives tally's ratio to it.
#
# Starts its own broker and RabbitMQ node (always stopped on exit).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS="${TALLY_TOOLS:-$ROOT/.tools}"
EVENTS="${1:-50000}"
PARTITIONS="${2:-8}"
BATCH="${3:-500}"
NAME="bench-amqp-$$"
PY="$TOOLS/venv/bin/python"
WORK="$(mktemp -d)"

"$ROOT/scripts/broker.sh" install >&2
if [[ -z "${TALLY_BIN:-}" ]]; then
    cargo build --release --bin tally >&2
    TALLY_BIN="$ROOT/target/release/tally"
fi

cleanup() {
    local rc=$?
    [[ -n "${TALLY_PID:-}" ]] && kill "$TALLY_PID" 2>/dev/null || true
    "$ROOT/scripts/broker.sh" stop "$NAME" >&2 || true
    "$ROOT/scripts/rabbitmq.sh" stop "$NAME" >&2 || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

line=$("$ROOT/scripts/broker.sh" start "$NAME")
export TALLY_TEST_BROKER="${line#TALLY_TEST_BROKER=}"
line=$("$ROOT/scripts/rabbitmq.sh" start "$NAME" | grep '^TALLY_TEST_AMQP_URL=')
export AMQP_URL="${line#TALLY_TEST_AMQP_URL=}"

KT=("$PY" "$ROOT/tests/support/kafka_tool.py")
AT=("$PY" "$ROOT/tests/support/amqp_tool.py")
"${KT[@]}" create-topic --topic bench.forward --partitions "$PARTITIONS" >&2
"${AT[@]}" setup --url "$AMQP_URL" --exchange bench-events --queue bench-q >&2
# ~300-byte events with a unique eventId each.
"$PY" -c '
import json, sys
pad = "x" * 200
for i in range(int(sys.argv[1])):
    print(json.dumps({"eventId": f"ev-{i:09d}", "type": "contention.associated", "claimId": i, "pad": pad}))
' "$EVENTS" | "${KT[@]}" produce --topic bench.forward --key-pointer /eventId >&2

cat >"$WORK/tally.toml" <<EOF
[kafka]
brokers = ["$TALLY_TEST_BROKER"]
[store]
path = "$WORK/state"
[pipeline]
max_batch_records = $BATCH
[[routes]]
name = "forward"
topics = ["bench.forward"]
format = "json"
dedupe = "/eventId"
sink = "amqp"
start = "earliest"
[sinks.amqp]
url_env = "AMQP_URL"
[sinks.amqp.exchanges]
"bench.forward" = "bench-events"
EOF

t0=$(date +%s.%N)
"$TALLY_BIN" run --config "$WORK/tally.toml" 2>"$WORK/tally.log" &
TALLY_PID=$!
while :; do
    n=$("${AT[@]}" count --url "$AMQP_URL" --queue bench-q 2>/dev/null |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["messages"])' 2>/dev/null || echo 0)
    [[ "$n" -ge "$EVENTS" ]] && break
    kill -0 "$TALLY_PID" 2>/dev/null || { tail -20 "$WORK/tally.log" >&2; echo "tally exited" >&2; exit 1; }
    sleep 0.2
done
t1=$(date +%s.%N)
kill -TERM "$TALLY_PID"
wait "$TALLY_PID" || true
TALLY_PID=
# Baseline: same broker, its own exchange and queue, no Kafka, no dedupe.
"${AT[@]}" setup --url "$AMQP_URL" --exchange bench-baseline --queue bench-baseline-q >&2
baseline=$("${AT[@]}" publish --url "$AMQP_URL" --exchange bench-baseline --count "$EVENTS" |
    "$PY" -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
committed=$("$TALLY_BIN" offsets --config "$WORK/tally.toml" --json 2>/dev/null |
    "$PY" -c 'import json,sys; print(sum(max(0, p.get("committed") or 0) for p in json.load(sys.stdin)))' || echo "?")
"$PY" -c '
import sys
events, t0, t1, committed, parts, batch, base = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], float(sys.argv[7])
secs = t1 - t0
print("%d events, %s partitions, max_batch_records %s; offsets committed: %s" % (events, parts, batch, committed))
row = "%-44s %8s %10s %6s"
print(row % ("run", "seconds", "events/s", "ratio"))
print(row % ("pika publish, confirms (baseline)", "%.2f" % base, "{:,.0f}".format(events / base), "1.00"))
print(row % ("tally Kafka -> RabbitMQ, confirms, dedupe", "%.2f" % secs, "{:,.0f}".format(events / secs), "%.2f" % (base / secs)))
' "$EVENTS" "$t0" "$t1" "$committed" "$PARTITIONS" "$BATCH" "$baseline"
