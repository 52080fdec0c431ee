#!/usr/bin/env bash
# End-to-end throughput of tally beside baseline consumers, on the same data,
# in one invocation, reported as ratios to a raw rskafka fetch loop (the median
# of the invocation's raw rows: interleave several, e.g. --rows raw,tally-run,raw,…).
#
#   scripts/bench.sh [--record] [--n N] [--partitions P] [--rows LIST]
#                    [--max-bytes B] [--keep]
#
#   --n N           events to generate and produce (env N, default 1000000)
#   --partitions P  topic partitions (env P, default 8)
#   --rows LIST     comma-separated subset of:
#                   raw,tally-fetch,tally-decode,librdkafka,tally-run,tally-run-base,
#                   killbill,killbill-base,tally-group,tally-run-changelog,tally-restore,
#                   tally-backlog,tally-run-linewatch
#                   (env ROWS, default raw,tally-fetch,tally-decode,librdkafka,raw,
#                   tally-run,killbill,raw: three raw rows for the median;
#                   rows may repeat, each run gets a fresh directory)
#   --max-bytes B   per-partition fetch max bytes for every row
#                   (env BENCH_MAX_BYTES, default 1048576 = tally's default)
#   --record        append the table, machine and command to BENCHMARKS.md
#   --keep          keep the work directory (sink file, store, logs, timings)
#
# Generated events are cached in $BENCH_CACHE (default .tools/bench-data/).
# BENCH_TALLY=PATH runs the tally rows with that binary instead of the release
# build (e.g. scripts/build-static.sh's musl binary, the one users get).
#
# Rows (each measured as its own process under /usr/bin/time):
#   raw          examples/raw_rskafka_fetch --client rskafka: rskafka 0.6
#                fetch_records, one task per partition, to the high watermark
#   tally-fetch  the same loop over tally's own consume path
#                (ClusterClient / PartitionConsumer::fetch)
#   tally-decode tally-fetch plus tally's killbill-usage decoder and dedupe
#                digest per record (no store, no sink): the decoder's cost
#   librdkafka   tests/support/kafka_tool.py consume (confluent-kafka, assign
#                mode, no parsing; Python loop over consume(num_messages=1000))
#   tally-run    `tally run` into the file sink with a fresh store (durable
#                dedupe): wall = process start to the moment the last
#                expected line is in the sink file; then SIGTERM. Delivered
#                lines must equal the distinct events exactly, with no
#                repeated dedupe key. The watcher only stats the sink file
#                (every 5 ms) and asks tally's admin API (5 times a second)
#                whether every event is delivered; the last line's offset is
#                found after the run. BENCH_WATCH=lines reads and counts the
#                file as it grows instead (sessions up to 19; that costs
#                ~12 % of the 2 cores during the row, see BENCHMARKS.md);
#                the row tally-run-linewatch is tally-run with that watcher.
#   killbill     `tally run` into the Kill Bill double (tests/support,
#                in examples/bench_killbill) with KB_LATENCY_MS (default 5)
#                added to every request, default max_in_flight, fresh store:
#                wall = process start to the KB_LIMIT-th accepted record
#                (default min(100000, distinct events)); fails if any
#                trackingId is POSTed twice. CPU/RSS are tally's own.
#   tally-group  tally-run with `[assignment] mode = "group"` (one member,
#                a fresh group and its own changelog, which group mode
#                requires): the cost of heartbeats, offset commits to the
#                group, the fence and the changelog; wall includes the first join
#                (not in the default rows).
#   tally-run-changelog  tally-run with `changelog_topic` (P partitions):
#                every commit's IDs also produced to the changelog after
#                the sink's ack; run it right after tally-run to compare.
#   tally-restore  after tally-run-changelog: a fresh (deleted) store on
#                the same config; records = IDs restored from the
#                changelog, wall = the restores' window (first start to last
#                end, from the log), CPU as of the last restore; the sink
#                must receive nothing. Reports IDs/s, MB/s and bytes/ID.
#   tally-run-base  tally-run with the binary in $BENCH_BASE_TALLY (e.g. a
#                copy of main's build): an A/B of two builds in one
#                invocation, same broker and data; alternate it with tally-run.
#                killbill-base does the same for the killbill row.
#   tally-backlog  backlog memory: `tally run` into an HTTP sink whose port
#                refuses connections (transient: retried forever) while all
#                N records wait; observed until every partition is assigned
#                and peak RSS has not moved for 5 s (at most 120 s). Reports
#                peak RSS (VmHWM), the fetch budget's peak use, the lag
#                (records waiting) and tally's CPU during the outage
#                (nothing spins); records/s does not apply.
#
# records/s = records / wall, wall measured from process start (nothing
# subtracted: connection setup, interpreter start and tally's store/topic
# start-up are all inside it). CPU = user+sys of the measured process (for
# tally-run including the drain after SIGTERM). Broker CPU = the Tansu
# process's user+sys during the row, from /proc. The broker, the client and
# the poller share the machine: on 2 cores the broker's CPU is part of the
# picture.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TALLY_TOOLS:-$ROOT/.tools}"
PY="$TOOLS/venv/bin/python"
KT="$ROOT/tests/support/kafka_tool.py"
# BENCH_TALLY: the tally binary of the tally rows (default: the release build
# made above), e.g. the shipped musl binary from scripts/build-static.sh.
TALLY="${BENCH_TALLY:-$ROOT/target/release/tally}"
# Absolute: the Kill Bill row's driver starts tally from its own directory.
TALLY="$(realpath -m "$TALLY")"
if [[ -n "${BENCH_BASE_TALLY:-}" ]]; then
    BENCH_BASE_TALLY="$(realpath -m "$BENCH_BASE_TALLY")"
fi
FETCH="$ROOT/target/release/examples/raw_rskafka_fetch"
KB_BENCH="$ROOT/target/release/examples/bench_killbill"
TIME=/usr/bin/time

N="${N:-1000000}"
P="${P:-8}"
ROWS="${ROWS:-raw,tally-fetch,tally-decode,librdkafka,raw,tally-run,killbill,raw}"
KB_LATENCY_MS="${KB_LATENCY_MS:-5}"
MAX_BYTES="${BENCH_MAX_BYTES:-1048576}"
CACHE="${BENCH_CACHE:-$TOOLS/bench-data}"
RECORD=0
KEEP=0
CMDLINE="scripts/bench.sh $*"

log() { printf 'bench.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --record) RECORD=1 ;;
        --keep) KEEP=1 ;;
        --n) N="$2"; shift ;;
        --partitions) P="$2"; shift ;;
        --rows) ROWS="$2"; shift ;;
        --max-bytes) MAX_BYTES="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || die "N must be a positive integer"
[[ "$P" =~ ^[0-9]+$ && "$P" -gt 0 ]] || die "P must be a positive integer"
IFS=',' read -r -a ROW_LIST <<<"$ROWS"
for r in "${ROW_LIST[@]}"; do
    case "$r" in raw|tally-fetch|tally-decode|librdkafka|tally-run|tally-run-base|killbill|killbill-base|tally-group|tally-run-changelog|tally-restore|tally-backlog|tally-run-linewatch) ;; *) die "unknown row: $r" ;; esac
done

# ---------------------------------------------------------------- tools

if [[ ! -x "$TIME" ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing GNU time (apt-get install time)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >&2
    fi
    [[ -x "$TIME" ]] || die "$TIME missing: install GNU time (Debian: apt-get install time)"
fi

log "building: cargo build --release --bin tally --examples"
(cd "$ROOT" && cargo build --release --bin tally --examples) >&2
"$ROOT/scripts/broker.sh" install >&2

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tally-bench.XXXXXX")"
BROKER_NAME="bench-$$"
TALLY_PID=""
TIME_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$TALLY_PID" ]] && kill -0 "$TALLY_PID" 2>/dev/null; then
        kill -KILL "$TALLY_PID" 2>/dev/null || true
    fi
    [[ -n "$TIME_PID" ]] && wait "$TIME_PID" 2>/dev/null || true
    "$ROOT/scripts/broker.sh" stop "$BROKER_NAME" >/dev/null 2>&1 || true
    if [[ $KEEP -eq 1 || $rc -ne 0 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
json_get() { "$PY" -c 'import json,sys; l=sys.stdin.read().strip().splitlines()[-1]; d=json.loads(l[l.index("{"):]); print(d[sys.argv[1]])' "$1"; }

line=$("$ROOT/scripts/broker.sh" start "$BROKER_NAME")
BROKER="${line#TALLY_TEST_BROKER=}"
BROKER_PID="$(cat "$TOOLS/run/$BROKER_NAME.pid")"
log "broker $BROKER_NAME at $BROKER (pid $BROKER_PID); work dir $WORK"

# user+sys seconds of a pid so far (clock ticks from /proc/PID/stat)
proc_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}

TOPIC="bench.usage"
CHANGELOG="bench.changelog"
"$PY" "$KT" create-topic --broker "$BROKER" --topic "$TOPIC" --partitions "$P" >/dev/null
"$PY" "$KT" create-topic --broker "$BROKER" --topic "$CHANGELOG" --partitions "$P" >/dev/null

# ---------------------------------------------------------------- data

# gen-usage is deterministic (seed 1) but slow in Python (~75 s per 1M), so
# the file is cached per N and generator version.
GEN_ARGS=(--count "$N" --dup-ratio 0.05 --seed 1)
GEN_TAG="$(printf '%s ' "${GEN_ARGS[@]}" | cat - "$KT" | sha256sum | cut -c1-12)"
EVENTS="$CACHE/usage-$N-$GEN_TAG.jsonl"
if [[ -s "$EVENTS" && -s "$EVENTS.gen.json" ]]; then
    GEN_S="cached"
    log "events: $EVENTS (cached)"
else
    mkdir -p "$CACHE"
    log "generating $N usage events (5% duplicates) into $EVENTS"
    t0=$(now)
    "$PY" "$KT" gen-usage "${GEN_ARGS[@]}" >"$EVENTS.tmp" 2>"$EVENTS.gen.json"
    mv "$EVENTS.tmp" "$EVENTS"
    GEN_S="$(elapsed "$t0" "$(now)")s"
fi
DISTINCT=$(json_get distinct <"$EVENTS.gen.json")
EVENT_BYTES=$(stat -c %s "$EVENTS")
log "events: $N lines, $DISTINCT distinct, $((EVENT_BYTES / N)) bytes/event (generate: $GEN_S)"

log "producing $N events once (confluent-kafka, keyed by /trackingId)"
t0=$(now)
"$PY" "$KT" produce --broker "$BROKER" --topic "$TOPIC" --key-pointer /trackingId \
    --linger-ms 50 --batch-num-messages 10000 --timeout 600 \
    <"$EVENTS" >"$WORK/produce.json"
PRODUCE_S=$(elapsed "$t0" "$(now)")
produced=$(json_get count <"$WORK/produce.json")
[[ "$produced" -eq "$N" ]] || die "produced $produced of $N"
log "produced in ${PRODUCE_S}s ($(awk -v n="$N" -v s="$PRODUCE_S" 'BEGIN{printf "%.0f", n/s}') records/s)"

# ---------------------------------------------------------------- rows

# results: one line per row, "name records wall cpu rss_kb broker_cpu note"
RESULTS="$WORK/results.txt"
: >"$RESULTS"

# timed OUT_JSON TIME_FILE CMD...: run CMD under GNU time; the wall clock
# (GNU time's %e has 10 ms resolution) is taken here and replaces field 1.
timed() {
    local out=$1 tf=$2 t0 t1
    shift 2
    t0=$(now)
    "$TIME" -f '%e %U %S %M' -o "$tf" "$@" >"$out"
    t1=$(now)
    echo "$(elapsed "$t0" "$t1") $(tail -1 "$tf" | cut -d' ' -f2-)" >>"$tf"
}
# time_fields TIME_FILE -> "wall cpu rss_kb"
time_fields() { tail -1 "$1" | awk '{ printf "%s %.2f %s\n", $1, $2 + $3, $4 }'; }

row_fetch() {
    local name=$1 client=$2 b0 b1 wall cpu rss records
    shift 2
    b0=$(proc_cpu "$BROKER_PID")
    timed "$WORK/$name.json" "$WORK/$name.time" "$FETCH" --broker "$BROKER" --topic "$TOPIC" \
        --partitions "$P" --max-bytes "$MAX_BYTES" --client "$client" "$@"
    b1=$(proc_cpu "$BROKER_PID")
    read -r wall cpu rss < <(time_fields "$WORK/$name.time")
    records=$(json_get records <"$WORK/$name.json")
    [[ "$records" -eq "$N" ]] || die "$name read $records of $N records"
    echo "$name $records $wall $cpu $rss $(elapsed "$b0" "$b1") loop_only_(setup_excluded):_$(json_get records_per_sec <"$WORK/$name.json")/s" >>"$RESULTS"
}

row_librdkafka() {
    local name=librdkafka b0 b1 wall cpu rss records
    b0=$(proc_cpu "$BROKER_PID")
    timed "$WORK/$name.json" "$WORK/$name.time" "$PY" "$KT" consume --broker "$BROKER" --topic "$TOPIC" \
        --partitions "$P" --count "$N" --timeout 900 --fetch-max-bytes "$MAX_BYTES"
    b1=$(proc_cpu "$BROKER_PID")
    read -r wall cpu rss < <(time_fields "$WORK/$name.time")
    records=$(json_get count <"$WORK/$name.json")
    [[ "$records" -eq "$N" ]] || die "$name read $records of $N records"
    echo "$name $records $wall $cpu $rss $(elapsed "$b0" "$b1") from_first_record:_$(json_get records_per_s_after_first <"$WORK/$name.json")/s" >>"$RESULTS"
}

# tally_config DIR NAME [ROUTE_EXTRA]: the benchmark config, store and sink
# in DIR; group mode (a fresh group) for the tally-group row.
tally_config() {
    local assignment=$'mode = "static"\nmember = 0\nmembers = 1' extra=${3:-} group
    if [[ "$2" == tally-group ]]; then
        # Group mode requires a changelog: a fresh group gets a fresh one,
        # so the tally-restore row's changelog holds only its own run's IDs.
        group="bench-$$-$(date +%s%N)"
        assignment=$'mode = "group"\n'"group_id = \"$group\""
        "$PY" "$KT" create-topic --broker "$BROKER" --topic "$CHANGELOG.$group" --partitions "$P" >/dev/null
        extra="changelog_topic = \"$CHANGELOG.$group\""
    fi
    cat >"$1/tally.toml" <<EOF
[kafka]
brokers = ["$BROKER"]
fetch_max_bytes = $MAX_BYTES

[store]
path = "$1/state"

[assignment]
$assignment

[[routes]]
name = "usage"
topics = ["$TOPIC"]
format = "killbill-usage"
sink = "file"
start = "earliest"
$extra

[sinks.file]
path = "$1/delivered.jsonl"
EOF
}

# row_tally_run [NAME [ROUTE_EXTRA]]: a fresh directory (store, sink file)
# each time the row runs. The watcher must not compete with tally for the
# two cores: reading and counting the ~490 MB sink file while tally writes
# it (BENCH_WATCH=lines, sessions up to 19) took ~12 % of all CPU samples
# in a system-wide perf profile of the row (session 20). Now it records
# (time, size, tally CPU, RSS) whenever the file's size moves, stops once
# /metrics counts every event delivered, then finds the byte offset where
# the last expected line ends and takes the first sample at or past it.
row_tally_run() {
    local name=${1:-tally-run} b0 b1 wall cpu rss t_start poll lines dir admin_port
    dir=$(mktemp -d "$WORK/$name.XXXX")
    tally_config "$dir" "$name" "${2:-}"
    admin_port=$("$PY" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' "$admin_port" >>"$dir/tally.toml"
    b0=$(proc_cpu "$BROKER_PID")
    t_start=$(now)
    TALLY_LOG="${TALLY_LOG:-info}" "$TIME" -f '%e %U %S %M' -o "$WORK/$name.time" \
        "$TALLY" run --config "$dir/tally.toml" >"$dir/tally.log" 2>&1 &
    TIME_PID=$!
    # The watcher reports epoch times of the first and of the last expected
    # line, and tally's CPU and peak RSS at that moment.
    poll=$("$PY" - "$dir/delivered.jsonl" "$DISTINCT" "$TIME_PID" 900 "$admin_port" "${WATCH:-${BENCH_WATCH:-size}}" <<'EOF'
import http.client, json, os, re, resource, sys, time
path, want, pid, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
port, watch = int(sys.argv[5]), sys.argv[6]
deadline = time.time() + timeout
hz = os.sysconf("SC_CLK_TCK")
child = None
conn = None
delivered_re = re.compile(rb'^tally_records_total\{[^}]*outcome="delivered"[^}]*\} ([0-9.e+]+)$', re.M)
def tally_pid():
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
        return int(kids[0]) if kids else None
    except OSError:
        return None
def sample(p):
    """user+sys seconds and peak RSS (kB) of the tally process so far."""
    try:
        st = open(f"/proc/{p}/stat").read().rsplit(") ", 1)[1].split()
        hwm = next(l for l in open(f"/proc/{p}/status") if l.startswith("VmHWM:")).split()[1]
        return (int(st[11]) + int(st[12])) / hz, int(hwm)
    except (OSError, StopIteration, IndexError, TypeError):
        return None, None
def delivered():
    """tally's delivered count (written, fsynced, committed), or None."""
    global conn
    try:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        conn = None
        return None
    return int(sum(float(m) for m in delivered_re.findall(body)))
def end_of_line(n):
    """Byte offset just past the n-th line of the sink file (None if short)."""
    buf = bytearray(1 << 22)
    seen, pos = 0, 0
    with open(path, "rb", buffering=0) as f:
        while True:
            got = f.readinto(buf)
            if not got:
                return None
            view = bytes(buf[:got])
            c = view.count(b"\n")
            if seen + c >= n:
                i = -1
                for _ in range(n - seen):
                    i = view.index(b"\n", i + 1)
                return pos + i + 1
            seen += c
            pos += got

lines, first, f = 0, None, None
samples = []  # (time, sink size, tally CPU s, peak RSS kB) whenever the size moved
next_scrape, size = 0.0, -1
while True:
    if child is None:
        child = tally_pid()
    now = time.time()
    if watch == "lines":
        # The old watcher: read and count the sink file as it grows.
        if f is None and os.path.exists(path):
            f = open(path, "rb")
        if f is not None:
            chunk = f.read(1 << 22)
            if chunk:
                lines += chunk.count(b"\n")
                if first is None and lines:
                    first = time.time()
                if lines >= want:
                    break
                continue
    else:
        # Only stat the file (and read /proc when it grew); ask tally's
        # admin API five times a second whether everything is delivered.
        try:
            s = os.stat(path).st_size
        except OSError:
            s = 0
        if s != size:
            size = s
            samples.append((now, s) + sample(child))
            if first is None and s > 0:
                first = now
        if now >= next_scrape:
            next_scrape = now + 0.2
            n = delivered()
            if n is not None and n >= want:
                break
    if time.time() > deadline or not os.path.exists(f"/proc/{pid}"):
        break
    time.sleep(0.005 if watch != "lines" else 0.01)
last = time.time()
ru = resource.getrusage(resource.RUSAGE_SELF)
watcher_cpu = ru.ru_utime + ru.ru_stime
cpu, rss = sample(child)
if watch != "lines":
    # The last expected line's moment: the first sample whose size covers it.
    end = end_of_line(want)
    if end is not None:
        lines = want
        hit = next((x for x in samples if x[1] >= end), None)
        if hit is not None:
            last, cpu, rss = hit[0], hit[2], hit[3]
print(json.dumps({"lines": lines, "first": first, "last": last, "tally_pid": child, "cpu_at_last": cpu, "rss_kb_at_last": rss, "watcher_cpu": watcher_cpu}))
EOF
)
    TALLY_PID=$(json_get tally_pid <<<"$poll")
    [[ "$TALLY_PID" =~ ^[0-9]+$ ]] || TALLY_PID=$(awk '{print $1}' "/proc/$TIME_PID/task/$TIME_PID/children" 2>/dev/null || true)
    [[ -n "$TALLY_PID" ]] && kill -TERM "$TALLY_PID" 2>/dev/null || true
    wait "$TIME_PID" || log "tally run exited with status $? after SIGTERM (see $dir/tally.log)"
    TIME_PID=""
    TALLY_PID=""
    b1=$(proc_cpu "$BROKER_PID")
    lines=$(json_get lines <<<"$poll")
    [[ "$lines" -ge "$DISTINCT" ]] || { tail -20 "$dir/tally.log" >&2; die "tally run delivered $lines of $DISTINCT distinct events"; }
    wall=$(elapsed "$t_start" "$(json_get last <<<"$poll")")
    startup=$(elapsed "$t_start" "$(json_get first <<<"$poll")")
    # CPU and RSS as of the last line (the drain after SIGTERM excluded);
    # the whole process's totals go into the note.
    read -r _ cpu_total rss_total < <(time_fields "$WORK/$name.time")
    cpu=$(json_get cpu_at_last <<<"$poll")
    rss=$(json_get rss_kb_at_last <<<"$poll")
    [[ "$cpu" != None ]] || cpu=$cpu_total
    [[ "$rss" != None ]] || rss=$rss_total
    # Correctness: exactly the distinct events, each dedupe key once, after
    # shutdown too (nothing delivered twice while draining).
    "$PY" - "$dir/delivered.jsonl" "$DISTINCT" <<'EOF' || die "tally run: delivered set is wrong"
import json, sys
path, want = sys.argv[1], int(sys.argv[2])
keys = set(); n = 0
with open(path, "rb") as f:
    for line in f:
        n += 1
        keys.add(json.loads(line)["dedupe_key"])
ok = n == want and len(keys) == want
print(f"bench.sh: sink check: {n} lines, {len(keys)} distinct dedupe keys, expected {want}: {'ok' if ok else 'WRONG'}", file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
    echo "$name $DISTINCT $wall $cpu $rss $(elapsed "$b0" "$b1") first_line_after_${startup}_s;_CPU/RSS_at_last_line;_whole_process_incl._drain:_${cpu_total}_s_CPU,_$((rss_total / 1024))_MB;_watcher_CPU_$(printf %.2f "$(json_get watcher_cpu <<<"$poll")")_s" >>"$RESULTS"
}

row_tally_backlog() {
    local name=tally-backlog b0 b1 dir ports sink_port admin_port poll
    dir=$(mktemp -d "$WORK/$name.XXXX")
    # Two free ports: the admin API's, and one nothing listens on (the sink).
    ports=$("$PY" -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
    read -r sink_port admin_port <<<"$ports"
    cat >"$dir/tally.toml" <<EOF
[kafka]
brokers = ["$BROKER"]
fetch_max_bytes = $MAX_BYTES

[store]
path = "$dir/state"

[assignment]
mode = "static"
member = 0
members = 1

[pipeline]
drain_timeout = "1s"

[[routes]]
name = "usage"
topics = ["$TOPIC"]
format = "killbill-usage"
sink = "http"
start = "earliest"

[sinks.http]
url = "http://127.0.0.1:$sink_port/usage"

[admin]
listen = "127.0.0.1:$admin_port"
EOF
    b0=$(proc_cpu "$BROKER_PID")
    TALLY_LOG="${TALLY_LOG:-info}" "$TIME" -f '%e %U %S %M' -o "$WORK/$name.time" \
        "$TALLY" run --config "$dir/tally.toml" >"$dir/tally.log" 2>&1 &
    TIME_PID=$!
    poll=$("$PY" - "$TIME_PID" "$admin_port" "$P" <<'EOF'
import json, os, re, sys, time, urllib.request
pid, port, parts = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
hz = os.sysconf("SC_CLK_TCK")
def child():
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
        return int(kids[0]) if kids else None
    except OSError:
        return None
def sample(p):
    st = open(f"/proc/{p}/stat").read().rsplit(") ", 1)[1].split()
    hwm = next(l for l in open(f"/proc/{p}/status") if l.startswith("VmHWM:")).split()[1]
    return (int(st[11]) + int(st[12])) / hz, int(hwm)
def metrics():
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r"(tally_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out
start = time.time()
assigned_at, last_hwm, still_since, used_max = None, None, None, 0.0
t = child()
while t is None and time.time() - start < 30:
    time.sleep(0.05)
    t = child()
m, hwm, cpu = {}, 0, 0.0
while t is not None and time.time() - start < 120 and os.path.exists(f"/proc/{t}"):
    time.sleep(0.25)
    m = metrics() or m
    used_max = max(used_max, m.get("tally_fetch_budget_used_bytes", 0.0))
    try:
        cpu, hwm = sample(t)
    except (OSError, StopIteration):
        break
    now = time.time()
    if assigned_at is None and m.get("tally_partitions_assigned", 0) >= parts:
        assigned_at = now
    if hwm != last_hwm:
        last_hwm, still_since = hwm, now
    if assigned_at and now - assigned_at >= 10 and now - still_since >= 5:
        break
print(json.dumps({"tally_pid": t, "observed": time.time() - start, "cpu": cpu, "hwm_kb": hwm,
    "budget_used_max": used_max, "budget": m.get("tally_fetch_budget_bytes", 0.0),
    "waits": m.get("tally_fetch_budget_waits_total", 0.0), "lag": m.get("tally_partition_lag", 0.0)}))
EOF
)
    TALLY_PID=$(json_get tally_pid <<<"$poll")
    [[ "$TALLY_PID" =~ ^[0-9]+$ ]] && kill -TERM "$TALLY_PID" 2>/dev/null || true
    wait "$TIME_PID" || log "tally run exited with status $? after SIGTERM (see $dir/tally.log)"
    TIME_PID=""
    TALLY_PID=""
    b1=$(proc_cpu "$BROKER_PID")
    local lag used budget waits observed cpu hwm
    lag=$(json_get lag <<<"$poll")
    lag=${lag%.*}
    [[ "$lag" -gt 0 ]] || { tail -20 "$dir/tally.log" >&2; die "tally-backlog: no records waiting (lag $lag)"; }
    used=$(awk -v b="$(json_get budget_used_max <<<"$poll")" 'BEGIN { printf "%.1f", b / 1048576 }')
    budget=$(awk -v b="$(json_get budget <<<"$poll")" 'BEGIN { printf "%.0f", b / 1048576 }')
    waits=$(json_get waits <<<"$poll")
    observed=$(json_get observed <<<"$poll")
    cpu=$(json_get cpu <<<"$poll")
    hwm=$(json_get hwm_kb <<<"$poll")
    echo "$name $lag $observed $cpu $hwm $(elapsed "$b0" "$b1") sink_down:_${lag}_records_waiting_(lag);_fetch_budget_peak_${used}_of_${budget}_MiB,_${waits%.*}_budget_waits;_CPU_over_${observed%.*}_s_observed" >>"$RESULTS"
}

row_tally_restore() {
    local name=tally-restore b0 b1 t_start poll dir
    compgen -G "$WORK/tally-run-changelog.*/delivered.jsonl" >/dev/null ||
        die "tally-restore needs the tally-run-changelog row before it"
    dir=$(mktemp -d "$WORK/$name.XXXX")
    tally_config "$dir" "$name" "changelog_topic = \"$CHANGELOG\""
    b0=$(proc_cpu "$BROKER_PID")
    t_start=$(now)
    TALLY_LOG="${TALLY_LOG:-info}" "$TIME" -f '%e %U %S %M' -o "$WORK/$name.time" \
        "$TALLY" run --config "$dir/tally.toml" >"$dir/tally.log" 2>&1 &
    TIME_PID=$!
    # Waits for one restore line per partition; the window runs from the
    # earliest restore start (end - seconds) to the latest end.
    poll=$("$PY" - "$dir/tally.log" "$P" "$TIME_PID" 900 "$t_start" <<'EOF'
import datetime, json, os, re, sys, time
path, want, pid, timeout, t_start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
deadline = time.time() + timeout
hz = os.sysconf("SC_CLK_TCK")
def restores():
    try:
        text = re.sub(r"\x1b\[[0-9;]*m", "", open(path, errors="replace").read())
    except OSError:
        return []
    return [l for l in text.splitlines() if "restored tracking IDs from the changelog" in l]
while len(restores()) < want and time.time() < deadline and os.path.exists(f"/proc/{pid}"):
    time.sleep(0.02)
cpu = rss = child = None
try:
    kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    child = int(kids[0])
    st = open(f"/proc/{child}/stat").read().rsplit(") ", 1)[1].split()
    cpu = (int(st[11]) + int(st[12])) / hz
    rss = int(next(l for l in open(f"/proc/{child}/status") if l.startswith("VmHWM:")).split()[1])
except (OSError, IndexError, ValueError, StopIteration):
    pass
ids = nbytes = 0
starts, ends, longest = [], [], 0.0
field = lambda l, k: re.search(rf"\b{k}=\"?([0-9.]+)", l).group(1)
for l in restores():
    end = datetime.datetime.fromisoformat(l.split()[0].replace("Z", "+00:00")).timestamp()
    secs = float(field(l, "seconds"))
    ids += int(field(l, "ids")); nbytes += int(field(l, "bytes"))
    starts.append(end - secs); ends.append(end); longest = max(longest, secs)
print(json.dumps({"restores": len(ends), "ids": ids, "bytes": nbytes,
    "window": (max(ends) - min(starts)) if ends else None, "first_start": (min(starts) - t_start) if starts else None,
    "longest": longest, "tally_pid": child, "cpu": cpu, "rss_kb": rss}))
EOF
)
    TALLY_PID=$(json_get tally_pid <<<"$poll")
    [[ "$TALLY_PID" =~ ^[0-9]+$ ]] && kill -TERM "$TALLY_PID" 2>/dev/null || true
    wait "$TIME_PID" || log "tally run exited with status $? after SIGTERM (see $dir/tally.log)"
    TIME_PID=""
    TALLY_PID=""
    b1=$(proc_cpu "$BROKER_PID")
    [[ "$(json_get restores <<<"$poll")" -eq "$P" ]] || { tail -20 "$dir/tally.log" >&2; die "only $(json_get restores <<<"$poll") of $P partitions restored"; }
    local ids bytes window lines
    ids=$(json_get ids <<<"$poll"); bytes=$(json_get bytes <<<"$poll"); window=$(json_get window <<<"$poll")
    [[ "$ids" -eq "$DISTINCT" ]] || die "restored $ids IDs, expected $DISTINCT"
    lines=$(cat "$dir/delivered.jsonl" 2>/dev/null | wc -l)
    [[ "$lines" -eq 0 ]] || die "tally-restore delivered $lines records after restoring"
    echo "$name $ids $window $(json_get cpu <<<"$poll") $(json_get rss_kb <<<"$poll") $(elapsed "$b0" "$b1") $(awk -v b="$bytes" -v i="$ids" -v w="$window" -v f="$(json_get first_start <<<"$poll")" -v l="$(json_get longest <<<"$poll")" 'BEGIN { printf "%.1f_MB/s_of_changelog,_%.1f_bytes/ID,_slowest_partition_%.2f_s,_first_restore_began_%.2f_s_after_start;_sink_empty_at_stop", b / w / 1e6, b / i, l, f }')" >>"$RESULTS"
}

row_killbill() {
    local name="${1:-killbill}" b0 b1 out limit="${KB_LIMIT:-$(( DISTINCT < 100000 ? DISTINCT : 100000 ))}"
    b0=$(proc_cpu "$BROKER_PID")
    out=$(TALLY_TEST_BROKER="$BROKER" TALLY_BIN="$TALLY" "$KB_BENCH" row "$TOPIC" "$EVENTS" "$KB_LATENCY_MS" "$limit") \
        || die "killbill row failed"
    b1=$(proc_cpu "$BROKER_PID")
    echo "$out" >"$WORK/$name.json"
    local records wall cpu rss first
    records=$(json_get records <<<"$out")
    wall=$(json_get wall_s <<<"$out")
    cpu=$(json_get tally_cpu_s <<<"$out")
    rss=$(json_get tally_rss_kb <<<"$out")
    first=$(json_get first_ack_s <<<"$out")
    echo "$name $records $wall $cpu $rss $(elapsed "$b0" "$b1") ${KB_LATENCY_MS}_ms_per_request,_max_in_flight_64;_first_ack_after_$(printf '%.3f' "$first")_s;_$(json_get requests <<<"$out")_requests,_0_duplicate_POSTs" >>"$RESULTS"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for r in "${ROW_LIST[@]}"; do
    log "row: $r"
    case "$r" in
        raw) row_fetch raw rskafka ;;
        tally-fetch) row_fetch tally-fetch tally ;;
        tally-decode) row_fetch tally-decode tally --decode ;;
        librdkafka) row_librdkafka ;;
        tally-run) row_tally_run ;;
        tally-run-linewatch) WATCH=lines row_tally_run tally-run-linewatch ;;
        tally-run-base)
            [[ -x "${BENCH_BASE_TALLY:-}" ]] || die "tally-run-base needs BENCH_BASE_TALLY=/path/to/another/tally"
            TALLY="$BENCH_BASE_TALLY" row_tally_run tally-run-base ;;
        killbill) row_killbill ;;
        killbill-base)
            [[ -x "${BENCH_BASE_TALLY:-}" ]] || die "killbill-base needs BENCH_BASE_TALLY=/path/to/another/tally"
            TALLY="$BENCH_BASE_TALLY" row_killbill killbill-base ;;
        tally-run-changelog) row_tally_run tally-run-changelog "changelog_topic = \"$CHANGELOG\"" ;;
        tally-restore) row_tally_restore ;;
        tally-group) row_tally_run tally-group ;;
        tally-backlog) row_tally_backlog ;;
    esac
    tail -1 "$RESULTS" >&2
done

# ---------------------------------------------------------------- report

TABLE=$("$PY" - "$RESULTS" <<'EOF'
import re, statistics, sys
labels = {
    "raw": "raw rskafka fetch loop",
    "tally-fetch": "tally fetch loop (PartitionConsumer)",
    "tally-decode": "tally fetch + killbill-usage decode (no store/sink)",
    "librdkafka": "confluent-kafka consume (Python)",
    "tally-run": "`tally run` → file sink, durable dedupe",
    "tally-run-linewatch": "`tally run` → file sink, durable dedupe: watcher reads the sink file (≤ session 19)",
    "tally-run-base": "`tally run` → file sink, durable dedupe: BENCH_BASE_TALLY build",
    "killbill": "`tally run` → Kill Bill double, durable dedupe",
    "killbill-base": "`tally run` → Kill Bill double, durable dedupe: BENCH_BASE_TALLY build",
    "tally-run-changelog": "`tally run` → file sink, durable dedupe + changelog",
    "tally-restore": "restore of a deleted store from the changelog (IDs)",
    "tally-group": "`tally run`, group mode (1 member) → file sink",
    "tally-backlog": "`tally run` → HTTP sink down: backlog waits (records = waiting)",
}
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
# The ratio base: the median of the invocation's raw rows. On these VMs the
# raw row alone varies 1.1-1.8M/s from one run to the next (session 21), so
# one raw row, taken first, made every ratio follow that row's luck; raw
# rows interleaved with the others and their median follow the box's drift.
raw_rates = sorted(float(r[1]) / float(r[2]) for r in rows if r[0] == "raw" and float(r[2]) > 0)
base = statistics.median(raw_rates) if raw_rates else None
print("| row | records | wall s | records/s | ratio to raw (median) | CPU s (user+sys) | CPU µs/record | peak RSS MB | broker CPU s | note |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for name, recs, wall, cpu, rss, bcpu, note in rows:
    note = re.sub(r"(\d+)(?:\.\d+)?/s", lambda m: f"{int(m.group(1)):,}/s", note.replace("_", " "))
    recs, wall, cpu, rss, bcpu = int(recs), float(wall), float(cpu), int(rss), float(bcpu)
    rate = recs / wall if wall > 0 else 0
    ratio = f"{rate / base:.2f}" if base else "n/a"
    rate, per = f"{rate:,.0f}", f"{cpu / recs * 1e6:.2f}"
    if name == "tally-backlog":  # nothing is delivered: no rate
        rate, ratio, per = "–", "–", "–"
    print(f"| {labels[name]} | {recs:,} | {wall:.2f} | {rate} | {ratio} | {cpu:.2f} | {per} | {rss / 1024:.0f} | {bcpu:.2f} | {note} |")
if base:
    print(f"\nRatio base: the median of {len(raw_rates)} raw row(s), {base:,.0f} records/s "
          f"(raw rows: {', '.join(f'{r:,.0f}' for r in raw_rates)} records/s).")
EOF
)

LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
MEM=$(free -g | awk '/^Mem:/ { print $2 " GiB total, " $7 " GiB available" }')
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
SUMMARY="N=$N events ($DISTINCT distinct, $((EVENT_BYTES / N)) bytes/event avg), P=$P partitions, fetch max bytes $MAX_BYTES; produced once in ${PRODUCE_S}s (confluent-kafka, linger 50 ms, 10k msgs/batch); generate: $GEN_S"
printf '\n%s\nload average before/after the rows: %s / %s\n\n%s\n' "$SUMMARY" "$LOAD0" "$LOAD1" "$TABLE"

if [[ $RECORD -eq 1 ]]; then
    {
        printf '\n### %s — `%s`\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$CMDLINE"
        printf -- '- machine: %s cores (`nproc`), %s, CPU %s; tally %s\n' \
            "$(nproc)" "$MEM" "$CPU_MODEL" "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
        printf -- '- load average (1/5/15 min) before the rows: %s, after: %s\n' "$LOAD0" "$LOAD1"
        printf -- '- data: %s\n\n' "$SUMMARY"
        printf '%s\n' "$TABLE"
    } >>"$ROOT/BENCHMARKS.md"
    log "appended to BENCHMARKS.md"
fi
