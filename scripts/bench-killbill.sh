#!/usr/bin/env bash
# Kill Bill sink throughput: tally (release) from Kafka into the in-process
# Kill Bill double with added latency, beside a one-request-at-a-time loop.
#
#   scripts/bench-killbill.sh [EVENTS=50000] [LATENCY_MS=5] [MAX_IN_FLIGHT...=64]
#
# Starts its own broker (always stopped on exit). Prints records/s.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS="${TALLY_TOOLS:-$ROOT/.tools}"
BROKER_NAME="bench-kb-$$"

"$ROOT/scripts/broker.sh" install >&2
cargo build --release --bin tally --example bench_killbill >&2

stop_broker() {
    local rc=$?
    "$ROOT/scripts/broker.sh" stop "$BROKER_NAME" >&2 || true
    exit "$rc"
}
trap stop_broker EXIT
line=$("$ROOT/scripts/broker.sh" start "$BROKER_NAME")
export TALLY_TEST_BROKER="${line#TALLY_TEST_BROKER=}"
export TALLY_TEST_PYTHON="$TOOLS/venv/bin/python"
export TALLY_TEST_KAFKA_TOOL="$ROOT/tests/support/kafka_tool.py"
export TALLY_BIN="$ROOT/target/release/tally"

"$ROOT/target/release/examples/bench_killbill" "$@"
