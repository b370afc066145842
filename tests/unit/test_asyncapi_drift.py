"""The committed AsyncAPI document matches the code, and covers the whole contract.

`docs/asyncapi.json` is what other teams read; regenerating it from the models
(FastStream's generator over the contract models) must give the same bytes, or
the document has drifted. Regenerate with `payments asyncapi export docs/asyncapi.json
--html docs/asyncapi.html`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from schemas.examples import example_event
from schemas.parse import parse_event
from schemas.topics import (
    ADMIN_COMMAND_TYPES,
    ALL_TOPICS,
    DLQ_TOPIC,
    INBOUND_TOPICS,
    OUTBOUND_TOPICS,
    PAYMENTS_DEAD_LETTER,
)
from service.entrypoints.cli import app
from service.tools.asyncapi import (
    ASYNCAPI_PAGE,
    asyncapi_document,
    make_docs_server,
    render_asyncapi_json,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
REGENERATE = "payments asyncapi export docs/asyncapi.json --html docs/asyncapi.html"


def test_committed_document_matches_the_generated_one() -> None:
    committed = (DOCS / "asyncapi.json").read_text(encoding="utf-8")
    assert committed == render_asyncapi_json(), f"docs/asyncapi.json drifted; run `{REGENERATE}`"


def test_committed_page_matches() -> None:
    committed = (DOCS / "asyncapi.html").read_text(encoding="utf-8")
    assert committed == ASYNCAPI_PAGE, f"docs/asyncapi.html drifted; run `{REGENERATE}`"


def _messages_by_topic(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name.split(":", 1)[0]: message
        for name, message in document["components"]["messages"].items()
    }


def _resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("%5B", "[").replace("%5D", "]")]
    assert isinstance(node, dict)
    return node


def test_every_topic_has_a_channel_operation_and_message() -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    assert set(document["channels"]) == set(ALL_TOPICS)
    for topic in INBOUND_TOPICS:
        assert document["operations"][topic]["action"] == "receive"
    for topic in (*OUTBOUND_TOPICS, DLQ_TOPIC):
        assert document["operations"][topic]["action"] == "send"
    assert set(_messages_by_topic(document)) == set(ALL_TOPICS)


def test_messages_carry_the_contract_schema_and_a_valid_example() -> None:
    document = asyncapi_document()
    for topic, message in _messages_by_topic(document).items():
        event_type = PAYMENTS_DEAD_LETTER if topic == DLQ_TOPIC else topic
        payload = _resolve(document, message["payload"]["$ref"])
        assert set(payload["required"]) >= {"specversion", "id", "source", "type", "data"}
        data_schema = _resolve(document, payload["properties"]["data"]["$ref"])
        example = message["examples"][0]["payload"]
        assert example == example_event(event_type)
        # The data schema names every field the example's data uses.
        assert set(example["data"]) <= set(data_schema["properties"]), topic
        assert message["contentType"] == "application/cloudevents+json; charset=utf-8"
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        if topic in INBOUND_TOPICS:
            # The example is accepted by the service's own parser.
            parsed = parse_event(json.dumps(example).encode(), topic)
            assert getattr(parsed, "id", None) == example["id"], parsed
        if topic in ADMIN_COMMAND_TYPES:
            assert message["headers"]["required"] == ["payments-signature"]


def test_export_command_writes_the_document(tmp_path: Path) -> None:
    target = tmp_path / "out" / "asyncapi.json"
    page = tmp_path / "out" / "asyncapi.html"
    result = CliRunner().invoke(app, ["asyncapi", "export", str(target), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert target.read_text(encoding="utf-8") == render_asyncapi_json()
    assert page.read_text(encoding="utf-8") == ASYNCAPI_PAGE


def test_docs_server_serves_page_and_document() -> None:
    server = make_docs_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and 'fetch("asyncapi.json")' in page.text
        doc = httpx.get(f"{base}/asyncapi.json", timeout=10)
        assert doc.status_code == 200
        assert doc.json() == json.loads(render_asyncapi_json())
        assert httpx.get(f"{base}/nothing", timeout=10).status_code == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
