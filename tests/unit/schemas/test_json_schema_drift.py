"""The committed JSON Schemas in `schemas/json/` must equal what the models generate.

Other teams validate against the committed files, so a model change that is not
re-exported would silently break the published contract.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas import ALL_DATA_MODELS, example_event, json_schemas, render_schema_files

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas" / "json"
REGENERATE = (
    "The committed JSON Schemas are out of date. Regenerate them with "
    "`payments schemas export schemas/json` and commit the result."
)


def test_committed_schema_files_match_the_models() -> None:
    expected = render_schema_files()
    committed = {path.name: path.read_text(encoding="utf-8") for path in SCHEMA_DIR.glob("*.json")}

    missing = sorted(expected.keys() - committed.keys())
    stale = sorted(committed.keys() - expected.keys())
    changed = sorted(
        name for name in expected.keys() & committed.keys() if expected[name] != committed[name]
    )

    assert not (missing or stale or changed), (
        f"{REGENERATE}\n  missing: {missing}\n  no longer generated: {stale}\n  changed: {changed}"
    )


def test_there_is_one_schema_per_event_type() -> None:
    assert set(json_schemas()) == set(ALL_DATA_MODELS)
    assert set(render_schema_files()) == {f"{event_type}.json" for event_type in ALL_DATA_MODELS}


def test_schema_files_are_deterministic_json() -> None:
    for name, text in render_schema_files().items():
        schema = json.loads(text)
        assert text.endswith("}\n")
        assert text == json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        event_type = name.removesuffix(".json")
        assert schema["$id"].endswith(event_type)
        assert schema["title"] == event_type
        assert schema["properties"]["type"]["const"] == event_type
        assert schema["examples"] == [example_event(event_type)]


def test_outbound_schemas_require_what_the_service_always_sets() -> None:
    schemas = json_schemas()

    assert {"time", "subject"} <= set(schemas["payment.authorized"]["required"])
    assert "time" in schemas["payments.dead_letter"]["required"]
    assert "time" not in schemas["cart.updated"]["required"]
