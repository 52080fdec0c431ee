#!/usr/bin/env bash
# Build tally and run its whole test suite against a throwaway Tansu broker.
#
#   scripts/test.sh [ARGS...]     # ARGS go to the test runner (nextest or cargo test)
#
# Steps: install the rig's tools (scripts/broker.sh install), build once
# (cargo build --all-targets), start ONE broker for the run, export
#   TALLY_TEST_BROKER, TALLY_TEST_PYTHON, TALLY_TEST_KAFKA_TOOL, TALLY_TANSU_BIN,
# start ONE private RabbitMQ node (scripts/rabbitmq.sh) and export TALLY_TEST_AMQP_URL,
# and run `cargo nextest run --no-fail-fast` (or `cargo test --no-fail-fast`
# without cargo-nextest). The broker and RabbitMQ are always stopped on exit; the exit
# code is the test runner's.
#
# Environment: TALLY_TEST_RUNNER=nextest|cargo forces a runner;
# TALLY_TEST_STATIC=0 skips the static build and its crash-test run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BROKER_NAME="test-$$"
TOOLS="${TALLY_TOOLS:-$ROOT/.tools}"

log() { printf '\n==> %s\n' "$*" >&2; }

stop_broker() {
    local rc=$?
    "$ROOT/scripts/broker.sh" stop "$BROKER_NAME" || true
    "$ROOT/scripts/rabbitmq.sh" stop "$BROKER_NAME" || true
    exit "$rc"
}

log "tools"
"$ROOT/scripts/broker.sh" install
"$ROOT/scripts/stunnel.sh" install

log "cargo build --all-targets"
cargo build --all-targets

log "broker"
trap stop_broker EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
line=$("$ROOT/scripts/broker.sh" start "$BROKER_NAME")
export TALLY_TEST_BROKER="${line#TALLY_TEST_BROKER=}"
export TALLY_TEST_PYTHON="$TOOLS/venv/bin/python"
export TALLY_TEST_KAFKA_TOOL="$ROOT/tests/support/kafka_tool.py"
export TALLY_TANSU_BIN="$TOOLS/bin/tansu"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
echo "TALLY_TEST_BROKER=$TALLY_TEST_BROKER" >&2

log "rabbitmq (amqp sink tests)"
line=$("$ROOT/scripts/rabbitmq.sh" start "$BROKER_NAME")
export TALLY_TEST_AMQP_URL="${line#TALLY_TEST_AMQP_URL=}"

runner="${TALLY_TEST_RUNNER:-}"
if [[ -z "$runner" ]]; then
    if cargo nextest --version >/dev/null 2>&1; then runner=nextest; else runner=cargo; fi
fi

rc=0
if [[ "$runner" == nextest ]]; then
    # nextest does not run doctests: run them first, so that the last summary
    # line is nextest's (CI reads the runner's closing line).
    if [[ $# -eq 0 ]]; then
        log "cargo test --doc"
        cargo test --doc --no-fail-fast || rc=$?
    fi
    if [[ $# -eq 0 && "${TALLY_TEST_STATIC:-1}" != 0 ]]; then
        # The shipped artifact is the tested one: the crash test runs once
        # more against the static musl build (before the full run, so the
        # full run's summary stays the last line).
        log "static binary: scripts/build-static.sh"
        if static_bin=$("$ROOT/scripts/build-static.sh" | tail -1); then
            log "crash test against $static_bin"
            TALLY_BIN="$static_bin" cargo nextest run --no-fail-fast --test crash ||
                { r=$?; [[ $rc -ne 0 ]] || rc=$r; }
        else
            log "static build FAILED"
            rc=1
        fi
    fi
    log "cargo nextest run --no-fail-fast $*"
    cargo nextest run --no-fail-fast "$@" || { r=$?; [[ $rc -ne 0 ]] || rc=$r; }
else
    log "cargo test --no-fail-fast $*"
    cargo test --no-fail-fast "$@" || rc=$?
fi
[[ $rc -ne 0 ]] || rm -f "$TOOLS/run/$BROKER_NAME.log"
exit "$rc"
