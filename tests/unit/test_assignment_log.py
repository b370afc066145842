"""FastStream's partition assignment line becomes a short summary per topic."""

from __future__ import annotations

import logging

from aiokafka import TopicPartition

from service.observability.assignment_log import AssignmentSummary


def test_the_assignment_line_is_summarized_per_topic() -> None:
    assigned = [TopicPartition(f"p.topic{t}", p) for t in range(6) for p in range(8)]
    message = f"Consumer member-1 assigned to partitions: ({', '.join(str(tp) for tp in assigned)})"
    record = logging.LogRecord("faststream", logging.INFO, __file__, 1, message, None, None)
    assert AssignmentSummary().filter(record)
    text = record.getMessage()
    assert text.startswith("consumer member-1 assigned 48 partition(s): p.topic0 ×8")
    assert len(text) < 200


def test_other_lines_pass_unchanged() -> None:
    record = logging.LogRecord("faststream", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    assert AssignmentSummary().filter(record)
    assert record.getMessage() == "hello x"
