"""One short INFO line per partition assignment instead of FastStream's list of all.

FastStream logs every assigned partition on one line at INFO: with 8 partitions of
six topics that is a line of several kilobytes on every rebalance, which drowns
the rest. This filter rewrites it to counts per topic; the full list stays
available at DEBUG.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

_ASSIGNED = re.compile(r"^Consumer (?P<member>\S+) assigned to partitions: \((?P<list>.*)\)$", re.S)
_PARTITION = re.compile(r"topic='(?P<topic>[^']*)', partition=(?P<partition>\d+)")


class AssignmentSummary(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str):
            return True
        match = _ASSIGNED.match(record.msg)
        if match is None:
            return True
        topics = Counter(m["topic"] for m in _PARTITION.finditer(match["list"]))
        total = sum(topics.values())
        record.msg = "consumer %s assigned %d partition(s): %s" % (  # noqa: UP031
            match["member"],
            total,
            ", ".join(f"{topic} ×{count}" for topic, count in sorted(topics.items())) or "none",
        )
        record.args = None
        logging.getLogger("payments.assignment").debug("assigned: %s", match["list"])
        return True
