"""`ProviderCaller`: an unknown outcome stays unknown until the provider says otherwise.

Found by the fault suite (`tests/faults/test_faults_provider.py`): a capture
whose first answer was lost (the provider captured) and whose retries then met
transient errors was reported as failed; the back office retried it under a new
command id and the customer was captured twice. A transient error on a retry
says nothing about what the first attempt did.
"""

from __future__ import annotations

from service.domain.calls import ProviderCall
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.provider_calls import ProviderCaller, RetryPolicy
from tests.support.call_builders import provider_call

CALL = provider_call("capture", "scripted", "cmd-1", payment_id="pay_1")


class Scripted:
    """Answers capture and status calls from scripts, then repeats their last answer."""

    def __init__(self, answers: list[ProviderOutcome], statuses: list[ProviderOutcome]) -> None:
        self.answers = answers
        self.statuses = statuses
        self.calls = 0
        self.status_calls = 0

    async def capture(self, call: ProviderCall) -> ProviderOutcome:
        self.calls += 1
        return self.answers[min(self.calls, len(self.answers)) - 1]

    async def get_status(self, call: ProviderCall) -> ProviderOutcome:
        self.status_calls += 1
        return self.statuses[min(self.status_calls, len(self.statuses)) - 1]

    # The other calls of the port: the caller looks methods up by operation.
    initiate = update = update_data = delete = authorize = refund = cancel = capture


CALLER = ProviderCaller(RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0))
LOST = ProviderOutcome.unknown("lost")
BUSY = ProviderOutcome.transient("busy")
NO_RECORD = ProviderOutcome.transient("no record of this operation")


async def test_lost_answer_then_transient_errors_stays_unknown() -> None:
    provider = Scripted([LOST, BUSY], [BUSY])
    outcome = await CALLER.call(provider, CALL)  # type: ignore[arg-type]
    assert outcome.kind is OutcomeKind.UNKNOWN
    assert provider.calls == 3


async def test_transient_errors_only_ask_the_status_before_failing() -> None:
    # Someone else (the reconciler, another instance) captured under the same key.
    provider = Scripted([BUSY], [ProviderOutcome.succeeded({"id": "ch_1"}, amount=5000)])
    outcome = await CALLER.call(provider, CALL)  # type: ignore[arg-type]
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert provider.status_calls == 1


async def test_transient_errors_with_no_record_at_the_provider_fail_retryably() -> None:
    provider = Scripted([BUSY], [NO_RECORD])
    outcome = await CALLER.call(provider, CALL)  # type: ignore[arg-type]
    assert outcome.kind is OutcomeKind.TRANSIENT
    assert provider.calls == 3


async def test_lost_answer_is_settled_by_the_status_query() -> None:
    provider = Scripted([LOST], [ProviderOutcome.succeeded({"id": "ch_1"}, amount=5000)])
    outcome = await CALLER.call(provider, CALL)  # type: ignore[arg-type]
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert provider.calls == 1
