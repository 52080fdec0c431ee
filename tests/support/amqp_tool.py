#!/usr/bin/env python3
"""Independent AMQP client (pika) for tally's amqp sink tests.

  amqp_tool.py setup --url URL --exchange X --type topic --queue Q [--binding '#']
      declare the exchange (durable) and a durable queue bound to it
  amqp_tool.py drain --url URL --queue Q [--max N]
      take every message now in Q (auto-ack); print one JSON object per line:
      {exchange, routing_key, message_id, content_type, delivery_mode, app_id, headers, redelivered, body}
  amqp_tool.py count --url URL --queue Q     # {"messages": N} ready in Q
  amqp_tool.py delete-exchange --url URL --exchange X
  amqp_tool.py publish --url URL --exchange X --count N [--size B]
      benchmark baseline: publish N persistent messages of B bytes with
      publisher confirms (pika waits for each confirm); print
      {"count": N, "seconds": S}

Exit 0 on success; errors go to stderr with exit 1.
"""
import argparse
import json
import sys

import pika


def connect(url):
    params = pika.URLParameters(url)
    params.connection_attempts = 3
    params.retry_delay = 0.5
    return pika.BlockingConnection(params)


def setup(a):
    conn = connect(a.url)
    ch = conn.channel()
    ch.exchange_declare(exchange=a.exchange, exchange_type=a.type, durable=True)
    ch.queue_declare(queue=a.queue, durable=True)
    ch.queue_bind(queue=a.queue, exchange=a.exchange, routing_key=a.binding)
    conn.close()
    print(json.dumps({"ok": True}))


def publish(a):
    import time

    conn = connect(a.url)
    ch = conn.channel()
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    body = b"x" * a.size
    t0 = time.monotonic()
    for i in range(a.count):
        props.message_id = f"baseline-{i}"
        ch.basic_publish(exchange=a.exchange, routing_key="baseline", body=body, properties=props, mandatory=True)
    seconds = time.monotonic() - t0
    conn.close()
    print(json.dumps({"count": a.count, "seconds": seconds}))


def delete_exchange(a):
    conn = connect(a.url)
    ch = conn.channel()
    ch.exchange_delete(exchange=a.exchange)
    conn.close()
    print(json.dumps({"ok": True}))


def count(a):
    conn = connect(a.url)
    ch = conn.channel()
    q = ch.queue_declare(queue=a.queue, passive=True)
    conn.close()
    print(json.dumps({"messages": q.method.message_count}))


def drain(a):
    conn = connect(a.url)
    ch = conn.channel()
    n = 0
    out = sys.stdout
    while a.max is None or n < a.max:
        method, props, body = ch.basic_get(queue=a.queue, auto_ack=True)
        if method is None:
            break
        out.write(json.dumps({
            "exchange": method.exchange,
            "routing_key": method.routing_key,
            "redelivered": method.redelivered,
            "message_id": props.message_id,
            "content_type": props.content_type,
            "delivery_mode": props.delivery_mode,
            "app_id": props.app_id,
            "headers": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (props.headers or {}).items()},
            "body": body.decode("utf-8"),
        }) + "\n")
        n += 1
    out.flush()
    conn.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--url", required=True)
    s.add_argument("--exchange", required=True)
    s.add_argument("--type", default="topic")
    s.add_argument("--queue", required=True)
    s.add_argument("--binding", default="#")
    d = sub.add_parser("drain")
    d.add_argument("--url", required=True)
    d.add_argument("--queue", required=True)
    d.add_argument("--max", type=int)
    c = sub.add_parser("count")
    c.add_argument("--url", required=True)
    c.add_argument("--queue", required=True)
    x = sub.add_parser("delete-exchange")
    x.add_argument("--url", required=True)
    x.add_argument("--exchange", required=True)
    b = sub.add_parser("publish")
    b.add_argument("--url", required=True)
    b.add_argument("--exchange", required=True)
    b.add_argument("--count", type=int, required=True)
    b.add_argument("--size", type=int, default=300)
    a = p.parse_args()
    try:
        {"setup": setup, "drain": drain, "delete-exchange": delete_exchange, "count": count, "publish": publish}[a.cmd](a)
    except Exception as e:  # noqa: BLE001 - report any failure to the test
        print(f"amqp_tool: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
