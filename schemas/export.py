"""JSON Schema of every event type, for the teams that produce or consume them.

The schemas are generated from the pydantic models, so they cannot drift from what the
service actually accepts; the copies committed under `schemas/json/` are checked
against `render_schema_files()` by a unit test and regenerated with
`payments schemas export schemas/json`. Inbound types are exported in validation mode
(what the service accepts), outbound ones in serialization mode (what it publishes).
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

from schemas.examples import example_event
from schemas.topics import ALL_DATA_MODELS, EVENT_MODELS, INBOUND_DATA_MODELS

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_PREFIX: Final = "urn:payments-service:schema:v1:"

_ENVELOPE_NOTE: Final = (
    "CloudEvents 1.0 envelope (structured mode). Other top-level attributes are "
    "CloudEvents extensions, accepted and ignored on input."
)


def json_schemas() -> dict[str, dict[str, Any]]:
    """Return the JSON Schema of the full CloudEvent of each event type, keyed by type."""
    schemas: dict[str, dict[str, Any]] = {}
    for event_type in ALL_DATA_MODELS:
        inbound = event_type in INBOUND_DATA_MODELS
        mode: Literal["validation", "serialization"] = "validation" if inbound else "serialization"
        schema = EVENT_MODELS[event_type].model_json_schema(mode=mode)
        schema["properties"]["type"] = {"const": event_type, "type": "string"}
        if not inbound:
            # Outbound events always carry time; payment.* events also carry the subject.
            always_set = (
                ["time", "subject"]
                if "cart_id" in ALL_DATA_MODELS[event_type].model_fields
                else ["time"]
            )
            schema["required"] = sorted({*schema.get("required", []), *always_set})
        direction = "consumed" if inbound else "published"
        schema.update(
            {
                "$schema": JSON_SCHEMA_DIALECT,
                "$id": SCHEMA_ID_PREFIX + event_type,
                "title": event_type,
                "description": f"{event_type} event, {direction} by the payments service. "
                + _ENVELOPE_NOTE,
                "examples": [example_event(event_type)],
            }
        )
        schemas[event_type] = schema
    return schemas


def render_schema_files() -> dict[str, str]:
    """Return `{file name: exact file text}` of the schema files, e.g. `cart.updated.json`.

    The text is deterministic (sorted keys, two-space indent, trailing newline) so
    the committed files diff cleanly.
    """
    return {
        f"{event_type}.json": json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False)
        + "\n"
        for event_type, schema in json_schemas().items()
    }
