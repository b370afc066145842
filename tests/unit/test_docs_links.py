"""Every link in the README and the docs leads somewhere, and nowhere outside.

`mkdocs build --strict` (`make docs-build`, in CI) checks the links between pages of
`docs/`; this test checks them too, and the README's, in `make test`: a relative link
must name a file of this repository (and a heading of it, when it has an anchor), and
any other link must be a public web address. The README's short forms of the topics
and promises must say what the contract says.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from markdown.extensions.toc import slugify

from schemas.topics import ADMIN_COMMAND_TYPES, DLQ_TOPIC, INBOUND_TOPICS, OUTBOUND_TOPICS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
HEADING = re.compile(r"^#{1,6} (.+)$", re.M)
MAX_README_LINES = 200


def _text(path: Path) -> str:
    """The page without its fenced code blocks, where brackets are code, not links."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def _anchors(path: Path) -> set[str]:
    return {
        slugify(re.sub(r"[`*]", "", heading).strip(), "-")
        for heading in HEADING.findall(_text(path))
    }


def _problems(path: Path, text: str | None = None) -> list[str]:
    """What is wrong with the links of `path` (of `text`, read as if it were there)."""
    problems = []
    for target in LINK.findall(_text(path) if text is None else FENCE.sub("", text)):
        parts = urlsplit(target)
        if parts.scheme:
            if parts.scheme != "https" and not target.startswith("http://127.0.0.1"):
                problems.append(f"{target}: not a public https address")
            continue
        linked = (path.parent / parts.path).resolve() if parts.path else path
        if not linked.is_relative_to(ROOT):
            problems.append(f"{target}: leaves the repository")
        elif not linked.exists():
            problems.append(f"{target}: no such file")
        elif parts.fragment and linked.suffix == ".md" and parts.fragment not in _anchors(linked):
            problems.append(f"{target}: {linked.name} has no heading #{parts.fragment}")
    return problems


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository_or_is_public(path: Path) -> None:
    assert _problems(path) == []


def test_the_checker_sees_a_broken_link() -> None:
    page = ROOT / "docs" / "index.md"
    assert LINK.findall(_text(page)), "the home page links nothing?"
    found = _problems(page, "[x](contract.md#nope) [y](../../outside.md) [z](http://example.com)")
    assert found == [
        "contract.md#nope: contract.md has no heading #nope",
        "../../outside.md: leaves the repository",
        "http://example.com: not a public https address",
    ]


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README has {lines} lines; move detail into docs/"


def _promise_titles(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    start = text.index("## The promises")
    return re.findall(r"^\d+\. \*\*(.+?)\*\*", text[start : text.index("\n## ", start)], re.M)


def test_the_readme_promises_are_the_contracts() -> None:
    assert _promise_titles(README) == _promise_titles(ROOT / "docs" / "contract.md")
    assert len(_promise_titles(README)) == 10


def test_the_readme_topic_table_is_the_registry() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Topics at a glance")
    table = text[start : text.index("\n## ", start)]
    rows = re.findall(r"^\|\s*(`[\w.]+`)?\s*\|\s*([\w ]*?)\s*\|\s*\|\s*`([\w.]+)`", table, re.M)
    inbound = {name.strip("`"): key for name, key, _ in rows if name}
    assert set(inbound) == set(INBOUND_TOPICS)
    for topic, key in inbound.items():
        expected = "payment id" if topic in ADMIN_COMMAND_TYPES else "cart id"
        assert key == ("provider id" if "webhook" in topic else expected), topic
    assert [out for *_, out in rows] == [*OUTBOUND_TOPICS, DLQ_TOPIC]
