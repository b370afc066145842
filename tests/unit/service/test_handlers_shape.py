"""The handlers stay the size of cosmicpython's: each describes its work in a few lines
and leaves the rest to the unit of work (`service/unit_of_work.py`)."""

from __future__ import annotations

import ast
from pathlib import Path

HANDLERS = Path(__file__).resolve().parents[3] / "service" / "handlers.py"
MAX_LINES = 15


def test_no_function_in_the_handlers_is_longer_than_the_limit() -> None:
    tree = ast.parse(HANDLERS.read_text(encoding="utf-8"))
    lengths = {
        node.name: (node.end_lineno or node.lineno) - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assert {"cart_updated", "checkout_completed", "payment_command"} <= set(lengths)
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}
