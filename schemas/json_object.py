"""Free-form JSON objects (provider data, context, actions) and their encoded size.

Such objects are passed through to providers untouched, so they are typed as plain
`dict[str, Any]`; the only rule the contract puts on some of them is a size limit,
measured as the compact JSON encoding because that is what is stored and forwarded.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import orjson

JsonObject: TypeAlias = dict[str, Any]
"""A JSON object with arbitrary content."""


def compact_json_size(obj: JsonObject) -> int:
    """Return the byte length of `obj` encoded as compact UTF-8 JSON.

    orjson is used for speed; it refuses integers beyond 64 bits, which valid JSON may
    contain, so those fall back to the stdlib encoder with the same compact layout.
    Raises `ValueError` if `obj` holds something that is not JSON.
    """
    try:
        return len(orjson.dumps(obj))
    except orjson.JSONEncodeError:
        pass
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a JSON object: {exc}") from exc
    return len(text.encode("utf-8"))
