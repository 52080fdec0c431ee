#!/usr/bin/env bash
# Test RabbitMQ for tally's amqp sink: a private node of Debian's rabbitmq-server.
#
#   scripts/rabbitmq.sh install        # apt-get install rabbitmq-server when root and missing
#   scripts/rabbitmq.sh start [NAME]   # prints TALLY_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:PORT/%2f
#   scripts/rabbitmq.sh status [NAME]  # exit 0 running, 3 not running
#   scripts/rabbitmq.sh stop [NAME]
#   scripts/rabbitmq.sh resume [NAME]  # start a stopped node again: same data, same ports
#
# The node is private: its own NODENAME, data (RABBITMQ_MNESIA_BASE), logs,
# Erlang cookie (HOME) and ports (AMQP and distribution, free loopback
# ports) under $TALLY_TOOLS/run/rabbit-NAME; no plugins. It never touches a
# system RabbitMQ. Diagnostics go to stderr; only the URL goes to stdout.
#
# Environment:
#   TALLY_TOOLS                 tools dir (default <repo>/.tools)
#   TALLY_RABBIT_START_TIMEOUT  seconds to wait for readiness (default 60)
#   TALLY_RABBIT_TLS_DIR        start only: also listen for AMQPS with ca.pem,
#                               server.pem, server.key from this dir, requiring
#                               a client certificate from that CA; prints a
#                               second line TALLY_TEST_AMQPS_URL=amqps://…
#
# Measured on this machine kind: apt install ~25 s (first time), start ~13 s (mostly Erlang boot).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TALLY_TOOLS:-$ROOT/.tools}"
RUN="$TOOLS/run"
BIN=/usr/lib/rabbitmq/bin

log() { printf 'rabbitmq.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

install() {
    if [[ -x "$BIN/rabbitmq-server" ]]; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1 ||
        die "rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)"
    local t0
    t0=$(now_ms)
    log "installing rabbitmq-server with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server >&2; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server >&2
    fi
    log "installed in $(($(now_ms) - t0)) ms"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Exports the node's environment for NAME (dir, ports read back if running).
node_env() {
    local name="$1"
    DIR="$RUN/rabbit-$name"
    export HOME="$DIR/home"
    export RABBITMQ_NODENAME="tally-$name@localhost"
    export RABBITMQ_MNESIA_BASE="$DIR/mnesia"
    export RABBITMQ_LOG_BASE="$DIR/log"
    export RABBITMQ_PID_FILE="$DIR/pid"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
    export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
    export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_SERVER_START_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    if [[ -f "$DIR/ports" ]]; then
        read -r PORT DIST_PORT TLS_PORT <"$DIR/ports" || true
        export RABBITMQ_NODE_PORT="$PORT" RABBITMQ_DIST_PORT="$DIST_PORT"
    fi
}

ctl() { timeout 30 "$BIN/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q "$@"; }

running() {
    [[ -f "$RABBITMQ_PID_FILE" ]] && kill -0 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null
}

start() {
    local name="$1"
    install
    node_env "$name"
    if running; then
        die "node $RABBITMQ_NODENAME is already running (scripts/rabbitmq.sh stop $name)"
    fi
    rm -rf "$DIR"
    mkdir -p "$HOME" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
    echo "[]." >"$RABBITMQ_ENABLED_PLUGINS_FILE"
    : >"$RABBITMQ_CONF_ENV_FILE"
    echo "[]." >"$RABBITMQ_ADVANCED_CONFIG_FILE"
    printf 'loopback_users.guest = true\nlog.file.level = warning\n' >"$RABBITMQ_CONFIG_FILE.conf"
    PORT=$(free_port)
    DIST_PORT=$(free_port)
    TLS_PORT=
    if [[ -n "${TALLY_RABBIT_TLS_DIR:-}" ]]; then
        local tls="$TALLY_RABBIT_TLS_DIR" f
        for f in ca.pem server.pem server.key; do
            [[ -r "$tls/$f" ]] || die "TALLY_RABBIT_TLS_DIR: $tls/$f is missing"
        done
        TLS_PORT=$(free_port)
        # verify_peer + fail_if_no_peer_cert: mutual TLS, as production brokers do.
        {
            echo "listeners.ssl.default = $TLS_PORT"
            echo "ssl_options.cacertfile = $tls/ca.pem"
            echo "ssl_options.certfile = $tls/server.pem"
            echo "ssl_options.keyfile = $tls/server.key"
            echo "ssl_options.verify = verify_peer"
            echo "ssl_options.fail_if_no_peer_cert = true"
        } >>"$RABBITMQ_CONFIG_FILE.conf"
    fi
    echo "$PORT $DIST_PORT $TLS_PORT" >"$DIR/ports"
    export RABBITMQ_NODE_PORT="$PORT" RABBITMQ_DIST_PORT="$DIST_PORT"
    launch "$name"
}

# A restart as an operator does it: durable queues and persistent messages
# survive, clients see the same URL (tests restart a node mid-stream).
resume() {
    local name="$1"
    node_env "$name"
    [[ -f "$DIR/ports" ]] || die "node $RABBITMQ_NODENAME was never started (scripts/rabbitmq.sh start $name)"
    if running; then
        die "node $RABBITMQ_NODENAME is already running"
    fi
    launch "$name"
}

# Boots the node configured by node_env and waits until it accepts clients.
launch() {
    local name="$1" t0
    t0=$(now_ms)
    # setsid: the node outlives this script and is not hit by the caller's Ctrl-C.
    setsid "$BIN/rabbitmq-server" >>"$DIR/stdout.log" 2>&1 </dev/null &
    local launcher=$!
    local timeout="${TALLY_RABBIT_START_TIMEOUT:-60}"
    local deadline=$(($(date +%s) + timeout))
    until ctl await_startup --timeout 5 >/dev/null 2>&1; do
        if ! kill -0 "$launcher" 2>/dev/null; then
            tail -n 30 "$DIR/stdout.log" >&2 || true
            die "rabbitmq-server exited during start"
        fi
        if (($(date +%s) >= deadline)); then
            tail -n 30 "$DIR/stdout.log" >&2 || true
            stop "$name"
            die "node not ready after ${timeout}s"
        fi
        sleep 0.5
    done
    log "node $RABBITMQ_NODENAME ready on 127.0.0.1:$PORT in $(($(now_ms) - t0)) ms (dir $DIR)"
    echo "TALLY_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:$PORT/%2f"
    if [[ -n "${TLS_PORT:-}" ]]; then
        echo "TALLY_TEST_AMQPS_URL=amqps://guest:guest@127.0.0.1:$TLS_PORT/%2f"
    fi
}

stop() {
    local name="$1"
    node_env "$name"
    if ! running; then
        log "node $RABBITMQ_NODENAME is not running"
        return 0
    fi
    local pid
    pid=$(cat "$RABBITMQ_PID_FILE")
    ctl stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "node did not stop in 10 s; SIGKILL $pid"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$RABBITMQ_PID_FILE"
    log "node $RABBITMQ_NODENAME stopped"
}

status() {
    node_env "$1"
    if running; then
        log "node $RABBITMQ_NODENAME running on 127.0.0.1:${PORT:-?}"
        return 0
    fi
    return 3
}

cmd="${1:-}"
name="${2:-default}"
[[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || die "bad NAME \"$name\""
case "$cmd" in
install) install ;;
start) start "$name" ;;
resume) resume "$name" ;;
stop) stop "$name" ;;
status) status "$name" ;;
*) die "usage: $0 install|start|resume|status|stop [NAME]" ;;
esac
