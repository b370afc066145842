"""The broker limit: a bare aiokafka consume → decode → produce loop (subprocess).

What any consumer of this broker could do at best with the same client library:
batched `getmany`, `orjson` decode of every value, one outbound message per
checkout (the size of the service's `payment.authorized`) sent without awaiting
each, one wait per batch, then a commit per batch — the service's cycle minus the
service. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def run(args: argparse.Namespace) -> None:
    consumer = AIOKafkaConsumer(
        args.prefix + "cart.updated",
        args.prefix + "checkout.completed",
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024 * 1024,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, linger_ms=5, enable_idempotence=False, acks="all"
    )
    await producer.start()
    await consumer.start()
    out_topic = args.prefix + "payment.authorized"
    checkout_topic = args.prefix + "checkout.completed"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    padding = "x" * max(0, args.out_size - 120)
    headers = [("content-type", b"application/cloudevents+json; charset=utf-8")]
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=args.max_records)
            if not batches:
                continue
            futures = []
            for tp, records in batches.items():
                for record in records:
                    event = orjson.loads(record.value)
                    if tp.topic != checkout_topic:
                        continue
                    data = event["data"]
                    value = orjson.dumps(
                        {
                            "id": event["id"],
                            "type": "payment.authorized",
                            "cart_id": data["cart_id"],
                            "amount": data["amount"],
                            "pad": padding,
                        }
                    )
                    futures.append(
                        await producer.send(out_topic, value, key=record.key, headers=headers)
                    )
            if futures:
                await asyncio.gather(*futures)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--out-size", type=int, default=900)
    parser.add_argument("--max-records", type=int, default=500)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
