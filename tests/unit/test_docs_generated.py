"""The generated parts of the docs are what the code renders now.

`tools/docs/generate.py` renders the configuration table from `Settings` (every
field, its variable, default, type and docstring) and, into the contract, the
reason codes of `payment.failed`, the dead-letter kinds and one example per event
type. A setting, reason or example changed without `make docs-gen` fails here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "docs"))
import generate  # noqa: E402

from schemas.examples import example_event  # noqa: E402
from service.settings import ENV_PREFIX, Settings  # noqa: E402


def test_the_committed_generated_blocks_are_current() -> None:
    assert generate.drifted() == [], "run `make docs-gen` and commit the pages"


def test_every_setting_has_a_docstring_and_a_row() -> None:
    page = (ROOT / "docs" / "operate" / "configuration.md").read_text(encoding="utf-8")
    assert generate.attribute_docstrings(Settings).keys() >= Settings.model_fields.keys()
    for name in Settings.model_fields:
        assert f"| `{ENV_PREFIX}{name.upper()}` |" in page, name


def test_a_block_the_page_lacks_is_an_error() -> None:
    with pytest.raises(ValueError, match="blocks missing"):
        generate.render_page("# no blocks here\n", "contract.md")


def test_an_example_block_is_the_example_event() -> None:
    rendered = generate.example("checkout.completed")
    assert '"idempotency_key"' in rendered
    assert example_event("checkout.completed")["id"] in rendered
