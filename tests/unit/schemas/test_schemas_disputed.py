"""`payment.disputed` (contract section 4, issue 13): its data model and example."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas import OUTBOUND_TOPICS, PAYMENT_DISPUTED, PaymentDisputed, example_event


def _data(**changes: Any) -> dict[str, Any]:
    return {**example_event(PAYMENT_DISPUTED)["data"], **changes}


def test_it_is_an_outbound_topic_with_a_valid_example() -> None:
    assert PAYMENT_DISPUTED == "payment.disputed" and PAYMENT_DISPUTED in OUTBOUND_TOPICS
    disputed = PaymentDisputed.model_validate(_data())
    assert disputed.status == "open"
    assert PaymentDisputed.model_validate(_data(evidence_due_by=None)).evidence_due_by is None


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "needs_response"},  # the provider's status is not the contract's
        {"status": None},
        {"reason": ""},
        {"dispute_id": ""},
        {"amount": -1},
        {"amount": 1.5},
        {"evidence_due_by": "2026-01-01"},  # not RFC 3339 with a time
        {"extra": "field"},
    ],
)
def test_invalid_data_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PaymentDisputed.model_validate(_data(**changes))
