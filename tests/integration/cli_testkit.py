"""Running `payments` commands from async integration tests.

The commands call `asyncio.run`, which cannot run inside the test's event loop, so
each invocation runs on a worker thread while the harness keeps serving on the
loop. Connection options are passed as flags (never through the process
environment, which other tests share).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import TopicPartition
from click.testing import Result
from typer.testing import CliRunner

from service.entrypoints.cli import app
from service.testing.harness import ServiceHarness
from service.tools.kafka_io import throwaway_consumer, topic_partitions


async def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, app, list(args), input=input, env=env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (
        f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
        f"exception: {result.exception!r}"
    )
    return result


def json_of(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def kafka_args(h: ServiceHarness) -> list[str]:
    return ["--bootstrap-servers", h.kafka_bootstrap, "--topic-prefix", h.prefix]


def mongo_args(h: ServiceHarness) -> list[str]:
    return ["--mongodb-url", h.mongodb_url, "--database", h.database_name]


async def end_offsets(h: ServiceHarness, event_type: str) -> dict[int, int]:
    """End offset per partition of a harness topic: what was ever written to it."""
    topic = h.prefix + event_type
    async with throwaway_consumer(h.kafka_bootstrap) as consumer:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        ends = await consumer.end_offsets(tps)
    return {tp.partition: offset for tp, offset in ends.items()}
