"""Writes the broker test's fixture with confluent-kafka (librdkafka), an
independent producer, so interop is tested rather than assumed.

usage: produce.py BOOTSTRAP TOPIC [bulk N SIZE | keyed PARTITIONS | open]

Default mode creates TOPIC (1 partition) and writes, in order: plain records
(one with a null header value, one tombstone, one null key), a committed
transaction, an aborted transaction, one batch per codec, and another
committed transaction. Prints JSON {"committed": [values in offset order],
"aborted": [...], "null_header_value": "..."} on stdout.

bulk mode writes N records of about SIZE bytes (for throughput checks);
keyed mode writes 100 keyed records with librdkafka's Java-compatible
partitioner and prints which partition each key went to; open mode leaves
a transaction open until stdin closes, then commits it.
"""
import json
import sys
import time

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap, topic, partitions=1):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for f in fut.values():
        try:
            f.result(15)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise


def check(err, _msg):
    if err is not None:
        raise RuntimeError(f"delivery failed: {err}")


def producer(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 50, "enable.idempotence": True}
    conf.update(extra)
    return Producer(conf)


def flush(p):
    left = p.flush(30)
    if left:
        raise RuntimeError(f"{left} messages not delivered")


def fixture(bootstrap, topic):
    create_topic(bootstrap, topic)
    committed, aborted = [], []

    p = producer(bootstrap)
    for i in range(10):
        v = f"plain-{i}"
        headers = [("trace", b"t-%d" % i)]
        if i == 3:
            headers.append(("nullable", None))
        p.produce(topic, key=None if i == 5 else f"k{i}", value=v, headers=headers, partition=0, on_delivery=check)
        committed.append(v)
    # A tombstone: value null.
    p.produce(topic, key="tomb", value=None, partition=0, on_delivery=check)
    committed.append(None)
    flush(p)

    tx = producer(bootstrap, **{"transactional.id": f"{topic}-tx", "transaction.timeout.ms": 30000})
    tx.init_transactions(30)
    tx.begin_transaction()
    for i in range(5):
        v = f"txc-{i}"
        tx.produce(topic, key=f"c{i}", value=v, partition=0)
        committed.append(v)
    tx.commit_transaction(30)

    tx.begin_transaction()
    for i in range(5):
        v = f"txa-{i}"
        tx.produce(topic, key=f"a{i}", value=v, partition=0)
        aborted.append(v)
    tx.flush(30)  # make sure the aborted records reach the log before the marker
    tx.abort_transaction(30)

    for codec in ("gzip", "snappy", "lz4", "zstd"):
        cp = producer(bootstrap, **{"compression.type": codec, "linger.ms": 200})
        for i in range(20):
            v = f"{codec}-{i}-" + "x" * (i * 7)
            cp.produce(topic, key=f"{codec}{i}", value=v, headers=[("codec", codec), ("n", None)], partition=0, on_delivery=check)
            committed.append(v)
        flush(cp)

    tx.begin_transaction()
    for i in range(3):
        v = f"txc2-{i}"
        tx.produce(topic, key=None, value=v, partition=0)
        committed.append(v)
    tx.commit_transaction(30)

    print(json.dumps({"committed": committed, "aborted": aborted, "null_header_value": "plain-3"}))


def bulk(bootstrap, topic, n, size):
    create_topic(bootstrap, topic)
    p = producer(bootstrap, **{"linger.ms": 20, "batch.size": 256 * 1024, "queue.buffering.max.messages": 1000000})
    pad = "p" * max(0, size - 40)
    for i in range(n):
        while True:
            try:
                p.produce(topic, key=f"key-{i}", value=f'{{"i":{i},"pad":"{pad}"}}', partition=0)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    flush(p)
    print(json.dumps({"produced": n}))


def keyed(bootstrap, topic, partitions):
    """Java-compatible partitioning (murmur2_random): key -> partition chosen."""
    create_topic(bootstrap, topic, partitions)
    p = producer(bootstrap, partitioner="murmur2_random")
    chosen = {}

    def record(err, msg):
        check(err, msg)
        chosen[msg.key().decode()] = msg.partition()

    for i in range(100):
        p.produce(topic, key=f"key-{i}", value=b"v", on_delivery=record)
    flush(p)
    print(json.dumps({"partitions": chosen}))


def open_txn(bootstrap, topic):
    """3 plain records, then a transaction left open until stdin closes, then committed."""
    create_topic(bootstrap, topic)
    p = producer(bootstrap)
    for i in range(3):
        p.produce(topic, value=f"before-{i}", partition=0, on_delivery=check)
    flush(p)
    tx = producer(bootstrap, **{"transactional.id": f"{topic}-open", "transaction.timeout.ms": 60000})
    tx.init_transactions(30)
    tx.begin_transaction()
    for i in range(2):
        tx.produce(topic, value=f"open-{i}", partition=0)
    tx.flush(30)
    print("open", flush=True)
    sys.stdin.read()
    tx.commit_transaction(30)
    print("committed", flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[3] == "open":
        open_txn(sys.argv[1], sys.argv[2])
    elif len(sys.argv) >= 5 and sys.argv[3] == "keyed":
        keyed(sys.argv[1], sys.argv[2], int(sys.argv[4]))
    elif len(sys.argv) >= 5 and sys.argv[3] == "bulk":
        bulk(sys.argv[1], sys.argv[2], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 300)
    else:
        fixture(sys.argv[1], sys.argv[2])
