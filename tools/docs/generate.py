"""The generated parts of the documentation: write them, or tell which drifted.

    python tools/docs/generate.py           # rewrite every generated block (make docs-gen)
    python tools/docs/generate.py --check   # exit 1 naming each block that drifted

A page holds generated blocks between `<!-- generated: NAME -->` and
`<!-- /generated: NAME -->`; the text between the markers is what this module renders
from the code (the `Settings` fields and their docstrings, the contract's reason codes,
one example per event type), everything around them is written by hand. The unit
tests (`tests/unit/test_docs_generated.py`) fail when a committed block differs from
what the code renders now, so a new setting or reason code cannot go undocumented.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from schemas.dead_letter import DeadLetterKind  # noqa: E402
from schemas.examples import example_event  # noqa: E402
from schemas.outbound import (  # noqa: E402
    REASONS_BY_OPERATION,
    RETRYABLE_BY_REASON,
    FailureReason,
)
from schemas.topics import ALL_DATA_MODELS  # noqa: E402
from service.adapters.providers.manual import ManualOptions  # noqa: E402
from service.adapters.providers.sandbox import SandboxOptions  # noqa: E402
from service.adapters.providers.stripe import StripeOptions  # noqa: E402
from service.settings import ENV_PREFIX, Settings  # noqa: E402

BLOCK = re.compile(
    r"(?P<open><!-- generated: (?P<name>[\w.:-]+) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- /generated: (?P=name) -->)",
    re.S,
)


# -- reading docstrings ------------------------------------------------------------------


def attribute_docstrings(cls: type) -> dict[str, str]:
    """The string literal under each attribute of `cls`'s own body, by attribute name.

    Python keeps no such docstrings at run time; pydantic and the enums carry them in the
    source only, which is where the docs read them.
    """
    source = inspect.getsource(cls)
    body = ast.parse(inspect.cleandoc(source) if source[0].isspace() else source).body[0]
    assert isinstance(body, ast.ClassDef)
    found: dict[str, str] = {}
    for node, following in zip(body.body, [*body.body[1:], None], strict=True):
        target = None
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            target = node.target.id
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
        if (
            target is not None
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            found[target] = inspect.cleandoc(following.value.value)
    return found


def _one_line(text: str) -> str:
    """A docstring as one table cell: joined lines, Markdown code spans for the
    reStructuredText ones (``x``, :class:`~a.B`), and no `|` to break the row."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", text)
    text = text.replace("``", "`")
    return " ".join(text.split()).replace("|", "\\|")


# -- configuration -----------------------------------------------------------------------


def _type_name(annotation: Any, list_name: str = "list (comma-separated)") -> str:
    if get_origin(annotation) in (Union, types.UnionType):
        kept = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(_type_name(a, list_name) for a in kept)
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    origin = get_origin(annotation)
    if origin is list:
        return list_name
    if origin is dict or annotation is dict:
        return "JSON object"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if annotation is SecretStr:
        return "string, secret"
    if annotation in names:
        return names[annotation]
    for arg in get_args(annotation):  # Annotated[list[str], NoDecode]
        return _type_name(arg, list_name)
    raise ValueError(f"no documentation type for {annotation!r}")


def _bounds(field: FieldInfo) -> str:
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = []
    for item in field.metadata:
        if isinstance(
            item, annotated_types.Ge | annotated_types.Gt | annotated_types.Le | annotated_types.Lt
        ):
            attribute = type(item).__name__.lower()
            parts.append(f"{signs[attribute]} {getattr(item, attribute):,}".replace(",", " "))
    return ", ".join(parts)


def _default(field: FieldInfo, as_env: bool = True) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{','.join(map(str, value))}`" if as_env else f"`{json.dumps(value)}`"
    if isinstance(value, dict):
        return f"`{json.dumps(value)}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    return f"`{value}`"


def settings_table() -> str:
    docs = attribute_docstrings(Settings)
    missing = [name for name in Settings.model_fields if name not in docs]
    if missing:
        raise ValueError(f"Settings fields without a docstring: {missing}")
    rows = [
        "| variable | default | type | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        kind = _type_name(field.annotation)
        bounds = _bounds(field)
        rows.append(
            f"| `{ENV_PREFIX}{name.upper()}` | {_default(field)} "
            f"| {kind}{', ' + bounds if bounds else ''} | {_one_line(docs[name])} |"
        )
    return "\n".join(rows) + "\n"


def provider_options_tables() -> str:
    """One table per provider: the options of `PAYMENTS_PROVIDER_OPTIONS["<id>"]`."""
    out = []
    for options in (ManualOptions, SandboxOptions, StripeOptions):
        docs = attribute_docstrings(options)
        out += [
            f"`{options.provider_id}` (`{options.__name__}`):",
            "",
            "| option | default | type | meaning |",
            "|---|---|---|---|",
        ]
        for name, field in options.model_fields.items():
            bounds = _bounds(field)
            kind = _type_name(field.annotation, list_name="JSON array")
            out.append(
                f"| `{name}` | {_default(field, as_env=False)} "
                f"| {kind}{', ' + bounds if bounds else ''} | {_one_line(docs[name])} |"
            )
        out.append("")
    return "\n".join(out)


# -- the contract ------------------------------------------------------------------------

OPERATIONS = ("authorize", "capture", "refund", "cancel")


def reason_table() -> str:
    docs = attribute_docstrings(FailureReason)
    rows = [
        "| `reason` | " + " | ".join(OPERATIONS) + " | `retryable` | meaning |",
        "|---|" + "---|" * len(OPERATIONS) + "---|---|",
    ]
    for reason in FailureReason:
        marks = " | ".join("✓" if reason in REASONS_BY_OPERATION[op] else "" for op in OPERATIONS)
        fixed = RETRYABLE_BY_REASON.get(reason)
        retryable = "as the case may be" if fixed is None else f"always `{str(fixed).lower()}`"
        rows.append(
            f"| `{reason.value}` | {marks} | {retryable} | {_one_line(docs[reason.name])} |"
        )
    return "\n".join(rows) + "\n"


def dead_letter_kinds() -> str:
    return ", ".join(f"`{kind.value}`" for kind in DeadLetterKind) + "\n"


def example(event_type: str) -> str:
    body = json.dumps(example_event(event_type), indent=2, ensure_ascii=False)
    return f"```json\n{body}\n```\n"


# -- the registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    page: str
    """Path under `docs/`."""
    name: str
    render: Callable[[], str]


def blocks() -> Iterator[Block]:
    yield Block("operate/configuration.md", "settings", settings_table)
    yield Block("operate/configuration.md", "provider-options", provider_options_tables)
    yield Block("contract.md", "reasons", reason_table)
    yield Block("contract.md", "dead-letter-kinds", dead_letter_kinds)
    for event_type in ALL_DATA_MODELS:
        yield Block("contract.md", f"example:{event_type}", lambda t=event_type: example(t))


def render_page(text: str, page: str) -> str:
    """`text` with each of its generated blocks rendered anew; raises on a block the
    page lacks or one it has that nothing renders."""
    wanted = {b.name: b for b in blocks() if b.page == page}
    present = [m["name"] for m in BLOCK.finditer(text)]
    if sorted(present) != sorted(wanted):
        missing = sorted(set(wanted) - set(present))
        unknown = sorted(set(present) - set(wanted))
        raise ValueError(f"docs/{page}: blocks missing {missing}, unknown {unknown}")

    def replace(match: re.Match[str]) -> str:
        return match["open"] + wanted[match["name"]].render() + match["close"]

    return BLOCK.sub(replace, text)


def pages() -> list[str]:
    return sorted({b.page for b in blocks()})


def drifted(docs: Path = ROOT / "docs") -> list[str]:
    """The pages whose committed generated blocks differ from what the code renders."""
    return [
        page
        for page in pages()
        if (docs / page).read_text(encoding="utf-8")
        != render_page((docs / page).read_text(encoding="utf-8"), page)
    ]


def main(argv: list[str]) -> int:
    docs = ROOT / "docs"
    if "--check" in argv:
        stale = drifted(docs)
        for page in stale:
            print(f"docs/{page}: generated blocks differ; run `make docs-gen`", file=sys.stderr)
        return 1 if stale else 0
    for page in pages():
        path = docs / page
        path.write_text(render_page(path.read_text(encoding="utf-8"), page), encoding="utf-8")
        print(f"wrote docs/{page}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
