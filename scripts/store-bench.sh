#!/usr/bin/env bash
# The store at scale with the real binary (issue #9): time from process start
# to the first fetch with a big store, and retention pruning while consuming.
# A benchmark, not a test: not run by scripts/test.sh or CI.
#
#   scripts/store-bench.sh [startup] [prune] [--ids N] [--old N] [--recent N]
#                          [--events M] [--dups D] [--runs R] [--cold] [--keep]
#
#   startup   a store of N IDs (--ids, default 10,000,000) written by
#             examples/store_bench, a topic of M events (--events, default
#             1,000,000; fresh keys), R times (--runs, default 3): a copy of
#             the store, `tally run` into the file sink, stopped at the first
#             delivered line. Reports spawn -> "tally starting", -> store
#             opened (and the rebuild), -> first partition assigned, -> first
#             fetch response ("fetched", debug), -> first line; CPU and RSS then.
#             --cold also evicts the copy from the page cache before each run.
#   prune     a store of --old IDs (default 9,000,000) committed a day ago plus
#             --recent IDs (default 1,000,000) committed now; R pairs of runs on
#             fresh copies, alternating: `tally run` without retention, then
#             with `store.retention = "1h"` (its first prune starts with the
#             daemon, so it runs while the M events are consumed). Reports
#             throughput to the M-th line (ratio), the longest gap between sink
#             lines, the slowest commit (bucket of tally_commit_duration), the
#             prune (from its log lines), RSS and bytes on disk before/after.
#             Then checks correctness: after the prune, D (--dups, default
#             10,000) events of pruned keys, D of retained keys and D fresh
#             ones are produced to a second topic; with retention the pruned
#             keys must be delivered again and the retained ones skipped,
#             without retention both skipped.
#
# Environment: TALLY_BIN=/path/to/tally measures that binary (e.g. the static
# musl build of scripts/build-static.sh) instead of target/release/tally;
# STORE_BENCH_BASE_TALLY=/path/to/other/tally also runs that one (startup:
# alternating with the binary under test, on copies of the same store), for
# a before/after in one invocation.
#
# Both scenarios run by default. Needs the test broker's tools
# (TALLY_TOOLS, see scripts/broker.sh); starts its own broker and stops it.
# Disk: ~35 B per stored ID for the base store plus one copy per run at a time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TALLY_TOOLS:-$ROOT/.tools}"
PY="$TOOLS/venv/bin/python"
KT="$ROOT/tests/support/kafka_tool.py"
TALLY="${TALLY_BIN:-$ROOT/target/release/tally}"
SB="$ROOT/target/release/examples/store_bench"

IDS=10000000
OLD=9000000
RECENT=1000000
EVENTS=1000000
DUPS=10000
RUNS=3
COLD=0
KEEP=0
SCENARIOS=()
P=8

log() { printf 'store-bench.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
num() { [[ "$2" =~ ^[0-9]+$ && "$2" -gt 0 ]] || die "$1 must be a positive integer, got '$2'"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        startup|prune) SCENARIOS+=("$1") ;;
        --ids) num --ids "$2"; IDS="$2"; shift ;;
        --old) num --old "$2"; OLD="$2"; shift ;;
        --recent) num --recent "$2"; RECENT="$2"; shift ;;
        --events) num --events "$2"; EVENTS="$2"; shift ;;
        --dups) num --dups "$2"; DUPS="$2"; shift ;;
        --runs) num --runs "$2"; RUNS="$2"; shift ;;
        --cold) COLD=1 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
[[ ${#SCENARIOS[@]} -gt 0 ]] || SCENARIOS=(startup prune)
[[ "$DUPS" -le "$OLD" && "$DUPS" -le "$RECENT" ]] || die "--dups must not exceed --old or --recent"

log "building: cargo build --release --bin tally --example store_bench"
(cd "$ROOT" && cargo build --release --bin tally --example store_bench) >&2
"$ROOT/scripts/broker.sh" install >&2

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tally-store-bench.XXXXXX")"
BROKER_NAME="store-bench-$$"
cleanup() {
    local rc=$?
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

line=$("$ROOT/scripts/broker.sh" start "$BROKER_NAME")
BROKER="${line#TALLY_TEST_BROKER=}"
log "broker $BROKER_NAME at $BROKER; work dir $WORK; load $(cut -d' ' -f1-3 /proc/loadavg)"
log "measuring $("$TALLY" --version | head -1) ($TALLY)"

# Keys of the stored IDs are store_bench's key numbers 0..; events of fresh
# keys start far above them.
FRESH=1000000000
MARKER=2000000000
TOPIC="store-bench.usage"
"$PY" "$KT" create-topic --broker "$BROKER" --topic "$TOPIC" --partitions "$P" >/dev/null
t0=$(date +%s.%N)
"$SB" events "$FRESH" "$EVENTS" |
    "$PY" "$KT" produce --broker "$BROKER" --topic "$TOPIC" --key-pointer /trackingId >"$WORK/produce.json"
log "produced $EVENTS events to $TOPIC in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# tally_config DIR TOPICS RETENTION: file sink, admin API on a free port.
tally_config() {
    local retention=""
    [[ -n "$3" ]] && retention="retention = \"$3\""
    cat >"$1/tally.toml" <<EOF
[kafka]
brokers = ["$BROKER"]

[store]
path = "$1/state"
$retention

[assignment]
mode = "static"
member = 0
members = 1

[admin]
listen = "127.0.0.1:$(free_port)"

[[routes]]
name = "usage"
topics = [$2]
format = "killbill-usage"
sink = "file"
start = "earliest"

[sinks.file]
path = "$1/delivered.jsonl"
EOF
}

# The fresh copy of a base store a run works on (the base stays untouched).
copy_store() {
    rm -rf "$2"
    mkdir -p "$2"
    cp -a "$1" "$2/state"
    if [[ $COLD -eq 1 ]]; then
        # Written back, then dropped from the page cache (only these files).
        find "$2/state" -type f -exec sync {} + -exec sh -c 'for f; do dd if="$f" iflag=nocache count=0 status=none; done' sh {} +
    fi
}

disk() { du -sb "$1/state" "$1/state/digests" "$1/state/keys" | awk '{printf "%s%s", (NR>1?" ":""), $1}'; }

# run_tally DIR MODE ARGS...: spawns `tally run`, follows its JSON log, the
# sink file and /proc; prints one JSON object. MODE first-line stops at the
# first delivered line; MODE consume waits for WANT lines, then (prune runs)
# produces the correctness events and waits for them.
run_tally() {
    "$PY" - "${RUN_BIN:-$TALLY}" "$@" <<'EOF'
import json, os, re, signal, subprocess, sys, time, urllib.request
from datetime import datetime

tally, d, mode = sys.argv[1], sys.argv[2], sys.argv[3]
want = int(sys.argv[4]) if len(sys.argv) > 4 else 1
phase2 = sys.argv[5] if len(sys.argv) > 5 else ""
phase2_want, phase2_dups = (int(sys.argv[6]), int(sys.argv[7])) if phase2 else (0, 0)
cfg = f"{d}/tally.toml"
admin = re.search(r'listen = "([^"]+)"', open(cfg).read()).group(1)
hz = os.sysconf("SC_CLK_TCK")
env = dict(os.environ, TALLY_LOG="info,tally=debug")
logf = open(f"{d}/tally.log", "wb")
t0 = time.time()
p = subprocess.Popen([tally, "run", "--log-format", "json", "--config", cfg], stdout=logf, stderr=subprocess.STDOUT, env=env)

def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() - t0

def proc():
    try:
        st = open(f"/proc/{p.pid}/stat").read().rsplit(") ", 1)[1].split()
        rss = next(l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS:")).split()[1]
        return (int(st[11]) + int(st[12])) / hz, int(rss) >> 10
    except (OSError, StopIteration, IndexError):
        return None, None

def metrics():
    body = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    out = {"buckets": []}
    for l in body.splitlines():
        m = re.match(r'tally_commit_duration_seconds_bucket\{le="([^"]+)"\} (\d+)', l)
        if m:
            out["buckets"].append((float(m.group(1)), int(m.group(2))))
        m = re.match(r'tally_records_total\{.*outcome="(\w+)".*\} (\d+)', l)
        if m:
            out[m.group(1)] = int(m.group(2))
        m = re.match(r'tally_store_pruned_ids_total (\d+)', l)
        if m:
            out["pruned"] = int(m.group(1))
    total = max((c for _, c in out["buckets"]), default=0)
    # The slowest commit lies below the first bucket holding every commit.
    out["slowest_commit_le_s"] = next((le for le, c in out["buckets"] if c == total), None)
    out["commits"] = total
    del out["buckets"]
    return out

ev = {}
lines, sink, first_line, nth_line, last_growth, gap = 0, None, None, None, None, 0.0
rss_series = []
logpos, logbuf = 0, b""
deadline = time.time() + 900
phase = 1
p2_started = None
result = {}

def read_log():
    global logpos, logbuf
    with open(f"{d}/tally.log", "rb") as f:
        f.seek(logpos)
        chunk = f.read()
    logpos += len(chunk)
    logbuf += chunk
    *done, logbuf = logbuf.split(b"\n")
    for l in done:
        try:
            j = json.loads(l)
        except ValueError:
            continue
        msg, t = j.get("message"), ts(j["timestamp"])
        if msg == "tally starting":
            ev.setdefault("starting_s", t)
        elif msg == "opened tally store":
            ev["opened_s"], ev["rebuild_ms"], ev["ids_at_open"] = t, j.get("rebuild_ms"), j.get("ids")
            ev["snapshot"], ev["from_log"] = j.get("snapshot", "-"), j.get("from_log")
        elif msg == "wrote index snapshot":
            ev["snapshot_write_ms"], ev["snapshot_bytes"] = j.get("write_ms"), j.get("bytes")
        elif msg == "partition assigned":
            ev.setdefault("assigned_s", t)
        elif msg == "fetched":
            ev.setdefault("first_fetch_s", t)
        elif msg == "tracking-ID retention enabled":
            ev["prune_start_s"] = t
        elif msg == "pruned tracking-ID batches":
            ev["prune_end_s"], ev["pruned_ids"], ev["pruned_batches"] = t, j.get("ids"), j.get("batches")
        elif j.get("level") in ("ERROR", "WARN"):
            ev.setdefault("problems", []).append(j.get("message"))

last_sample = 0
while time.time() < deadline and p.poll() is None:
    now = time.time()
    if sink is None and os.path.exists(f"{d}/delivered.jsonl"):
        sink = open(f"{d}/delivered.jsonl", "rb")
    grew = False
    if sink is not None:
        chunk = sink.read(1 << 22)
        if chunk:
            grew = True
            lines += chunk.count(b"\n")
            if first_line is None:
                first_line = now - t0
                result["cpu_at_first_line_s"], result["rss_mb_at_first_line"] = proc()
            if last_growth is not None and phase == 1:
                gap = max(gap, now - last_growth)
            last_growth = now
            if nth_line is None and lines >= want:
                nth_line = now - t0
                result["cpu_at_nth_line_s"], result["rss_mb_at_nth_line"] = proc()
    if now - last_sample > 0.05:
        last_sample = now
        read_log()
        cpu, rss = proc()
        if rss is not None:
            rss_series.append((round(now - t0, 3), rss))
    if mode == "first-line" and first_line is not None:
        break
    if mode == "consume" and nth_line is not None:
        if not phase2:
            break
        # Correctness events only once the prune (if any) is done.
        if phase == 1 and ("prune_start_s" not in ev or "prune_end_s" in ev):
            result["phase1"] = metrics()
            phase, p2_started = 2, time.time()
            subprocess.run(["sh", "-c", phase2], check=True, stdout=subprocess.DEVNULL)
        if phase == 2:
            m = metrics()
            if lines >= want + phase2_want and m.get("duplicate", 0) >= result["phase1"].get("duplicate", 0) + phase2_dups:
                # Anything more would show in a second look.
                time.sleep(1.0)
                sink.seek(0, 2)
                result["phase2"] = metrics()
                break
    if not grew:
        time.sleep(0.01)

read_log()
result["metrics_end"] = metrics() if p.poll() is None else None
cpu_end, _ = proc()
p.send_signal(signal.SIGTERM)
try:
    rc = p.wait(timeout=120)
except subprocess.TimeoutExpired:
    p.kill()
    rc = p.wait()
read_log()  # the stop's lines (the index snapshot written at close)
result.update(ev)
result.update({
    "rc": rc, "lines": sum(1 for _ in open(f"{d}/delivered.jsonl", "rb")) if os.path.exists(f"{d}/delivered.jsonl") else 0,
    "first_line_s": first_line, "nth_line_s": nth_line, "longest_gap_s": round(gap, 3), "cpu_end_s": cpu_end,
    "rss_max_mb": max((r for _, r in rss_series), default=None),
})
# RSS right after the open and when the prune had finished.
def rss_at(t):
    after = [r for s, r in rss_series if s >= t]
    return after[0] if after else None
if "opened_s" in ev:
    result["rss_mb_after_open"] = rss_at(ev["opened_s"])
if "prune_end_s" in ev:
    result["rss_mb_after_prune"] = rss_at(ev["prune_end_s"] + 0.1)
    result["prune_s"] = ev["prune_end_s"] - ev.get("prune_start_s", ev["prune_end_s"])
result["rss_mb_end"] = rss_series[-1][1] if rss_series else None
print(json.dumps(result))
EOF
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { "$PY" -c 'import json,sys; v=json.loads(sys.stdin.read()).get(sys.argv[1]); print("-" if v is None else (f"{v:.3f}" if isinstance(v, float) else v))' "$1"; }

scenario_startup() {
    local base="$WORK/startup-base" out r dir bin bins
    log "startup: writing a $IDS-ID store (store_bench write, groups of 4 x 5000)"
    "$SB" write "$base" "$IDS" 5000 8 realistic 4 >"$WORK/startup-write.txt"
    sed 's/^/  /' "$WORK/startup-write.txt" >&2
    # With STORE_BENCH_BASE_TALLY, each run measures that binary first, then
    # the one under test, on fresh copies of the same store.
    bins=("$TALLY")
    [[ -n "${STORE_BENCH_BASE_TALLY:-}" ]] && bins=("$STORE_BENCH_BASE_TALLY" "$TALLY")
    printf '\n## startup: %s stored IDs, %s events on %s (%s partitions), cold page cache: %s\n' "$IDS" "$EVENTS" "$TOPIC" "$P" "$([[ $COLD -eq 1 ]] && echo yes || echo no)"
    printf '%-4s %-5s %-6s %9s %9s %9s %-9s %9s %11s %11s %8s %8s %9s\n' run bin load starting opened rebuild snapshot assigned first-fetch first-line cpu rss close-snap
    : >"$WORK/startup-base.jsonl"
    : >"$WORK/startup.jsonl"
    for r in $(seq 1 "$RUNS"); do
        for bin in "${bins[@]}"; do
            local label=test jsonl="$WORK/startup.jsonl"
            if [[ ${#bins[@]} -gt 1 && "$bin" == "${bins[0]}" ]]; then
                label=base jsonl="$WORK/startup-base.jsonl"
            fi
            dir="$WORK/startup-$r"
            copy_store "$base" "$dir"
            tally_config "$dir" "\"$TOPIC\"" ""
            local load
            load=$(cut -d' ' -f1 /proc/loadavg)
            out=$(RUN_BIN="$bin" run_tally "$dir" first-line)
            echo "$out" >>"$jsonl"
            printf '%-4s %-5s %-6s %9s %9s %9s %-9s %9s %11s %11s %8s %8s %9s\n' "$r" "$label" "$load" \
                "$(field starting_s <<<"$out")" "$(field opened_s <<<"$out")" "$(field rebuild_ms <<<"$out")ms" \
                "$(field snapshot <<<"$out")" \
                "$(field assigned_s <<<"$out")" "$(field first_fetch_s <<<"$out")" "$(field first_line_s <<<"$out")" \
                "$(field cpu_at_first_line_s <<<"$out")" "$(field rss_mb_at_first_line <<<"$out")MB" \
                "$(field snapshot_write_ms <<<"$out")ms"
            [[ "$(field ids_at_open <<<"$out")" == "$IDS" ]] || die "run $r opened $(field ids_at_open <<<"$out") IDs, not $IDS (see $dir/tally.log)"
            rm -rf "$dir"
        done
    done
    local f j
    for j in "$WORK/startup-base.jsonl" "$WORK/startup.jsonl"; do
        [[ -s "$j" ]] || continue
        for f in rebuild_ms first_fetch_s first_line_s; do
            printf '%s%s: min %s, median %s\n' "$([[ "$j" == *base* ]] && echo "base ")" "$f" \
                "$(while read -r l; do field "$f" <<<"$l"; done <"$j" | sort -g | head -1)" \
                "$(while read -r l; do field "$f" <<<"$l"; done <"$j" | median)"
        done
    done
    rm -rf "$base"
}

scenario_prune() {
    local base="$WORK/prune-base" r kind dir out p2topic retention expect_lines expect_dups
    log "prune: writing $OLD IDs committed a day ago, then $RECENT committed now"
    AGE_S=86400 "$SB" write "$base" "$OLD" 5000 8 realistic 4 >"$WORK/prune-write-old.txt"
    FIRST="$OLD" "$SB" write "$base" "$RECENT" 5000 8 realistic 4 >"$WORK/prune-write-recent.txt"
    tail -1 "$WORK/prune-write-recent.txt" | sed 's/^/  /' >&2
    printf '\n## prune: %s IDs a day old + %s recent, %s fresh events on %s (%s partitions); retention run: store.retention = "1h"\n' "$OLD" "$RECENT" "$EVENTS" "$TOPIC" "$P"
    printf '%-4s %-9s %-6s %8s %10s %9s %9s %8s %9s %9s %9s %9s %9s %13s %13s  %s\n' run kind load "to-M-th" "records/s" "cpu" "gap" "commit<=" "prune-s" "pruned" "rss-open" "rss-prune" "rss-end" "disk-before" "disk-after" check
    : >"$WORK/prune.jsonl"
    for r in $(seq 1 "$RUNS"); do
        for kind in no-prune prune; do
            dir="$WORK/prune-$r-$kind"
            copy_store "$base" "$dir"
            p2topic="store-bench.dups.$r.$kind"
            "$PY" "$KT" create-topic --broker "$BROKER" --topic "$p2topic" --partitions 2 >/dev/null
            retention=""
            [[ $kind == prune ]] && retention="1h"
            tally_config "$dir" "\"$TOPIC\", \"$p2topic\"" "$retention"
            # Pruned keys (0..D), retained keys (OLD..OLD+D), fresh markers.
            local phase2="{ '$SB' events 0 $DUPS; '$SB' events $OLD $DUPS; '$SB' events $MARKER $DUPS; } | '$PY' '$KT' produce --broker '$BROKER' --topic '$p2topic' --key-pointer /trackingId"
            if [[ $kind == prune ]]; then expect_lines=$((2 * DUPS)); expect_dups=$DUPS; else expect_lines=$DUPS; expect_dups=$((2 * DUPS)); fi
            local before load
            before=$(disk "$dir")
            load=$(cut -d' ' -f1 /proc/loadavg)
            out=$(run_tally "$dir" consume "$EVENTS" "$phase2" "$expect_lines" "$expect_dups")
            echo "{\"run\": $r, \"kind\": \"$kind\", \"disk_before\": \"$before\", \"disk_after\": \"$(disk "$dir")\", \"result\": $out}" >>"$WORK/prune.jsonl"
            local check
            check=$("$PY" - "$dir/delivered.jsonl" "$EVENTS" "$kind" "$SB" "$DUPS" "$OLD" "$MARKER" <<'EOF'
import json, subprocess, sys
sink, m, kind, sb, dups, old, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
def ids(first):
    out = subprocess.run([sb, "events", str(first), str(dups)], capture_output=True, check=True).stdout
    return {json.loads(l)["trackingId"] for l in out.splitlines()}
lines = open(sink, "rb").read().splitlines()
later = [json.loads(l) for l in lines[m:]]
got = {e.get("trackingId") or e.get("event", {}).get("trackingId") for e in later}
pruned, retained, fresh = ids(0), ids(old), ids(marker)
want = (pruned | fresh) if kind == "prune" else fresh
ok = got == want and len(later) == len(want) and len(lines) == m + len(want)
print(f"{'ok' if ok else 'FAILED'}: {len(later)} lines after the first {m}: pruned keys {len(got & pruned)}/{dups} delivered, retained keys {len(got & retained)}/{dups} delivered, fresh {len(got & fresh)}/{dups}")
EOF
)
            printf '%-4s %-9s %-6s %8s %10s %9s %9s %8s %9s %9s %9s %9s %9s %13s %13s  %s\n' "$r" "$kind" "$load" \
                "$(field nth_line_s <<<"$out")" "$(awk -v m="$EVENTS" -v t="$(field nth_line_s <<<"$out")" 'BEGIN{printf "%.0f", m/t}')" \
                "$(field cpu_at_nth_line_s <<<"$out")" "$(field longest_gap_s <<<"$out")" \
                "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["phase1"]["slowest_commit_le_s"])' "$out")" \
                "$(field prune_s <<<"$out")" \
                "$(field pruned_ids <<<"$out")" "$(field rss_mb_after_open <<<"$out")" "$(field rss_mb_after_prune <<<"$out")" "$(field rss_mb_end <<<"$out")" \
                "${before%% *}" "$(disk "$dir" | cut -d' ' -f1)" "$check"
            [[ $check == ok* ]] || die "run $r $kind: $check (see $dir)"
            rm -rf "$dir"
        done
    done
    rm -rf "$base"
}

for s in "${SCENARIOS[@]}"; do
    "scenario_$s"
done
log "done; load $(cut -d' ' -f1-3 /proc/loadavg); raw results in $WORK/*.jsonl (kept with --keep)"
