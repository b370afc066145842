"""`ProviderCaller.ask_status`: a question the provider refused for a moment is asked again.

Found by the fault suite on Apache Kafka in CI (`tests/faults/test_faults_provider.py`,
part B): with a provider that fails a quarter of its calls before acting, the
reconciler asked each unknown authorization once per pass, and a failed question
cost a pass plus a growing back-off (0.5 s, 1 s, 2 s, ...). One cart in a hundred
met five or six failures in a row and was still unsettled after a minute. A
transient refusal says nothing about the money; asking again within the retry
policy settles it in the same pass. A timeout is not asked again there: the
provider may be down, and the pass must not wait on it for every collection.
"""

from __future__ import annotations

from service.domain.calls import ProviderCall
from service.domain.outcomes import OutcomeKind, ProviderOutcome
from service.provider_calls import ProviderCaller, RetryPolicy
from tests.support.call_builders import provider_call

QUERY = provider_call("authorize", "scripted", "idem-1")
BUSY = ProviderOutcome.transient("busy")
NO_RECORD = ProviderOutcome.not_found("no record of this operation")
LOST = ProviderOutcome.unknown("timed out")
AUTHORIZED = ProviderOutcome.succeeded(data={"id": "pi_1"})


class ScriptedStatus:
    def __init__(self, statuses: list[ProviderOutcome]) -> None:
        self.statuses = statuses
        self.asked = 0

    async def get_status(self, call: ProviderCall) -> ProviderOutcome:
        self.asked += 1
        return self.statuses[min(self.asked, len(self.statuses)) - 1]


CALLER = ProviderCaller(RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0))


async def test_transient_refusals_of_a_status_query_are_asked_again() -> None:
    provider = ScriptedStatus([BUSY, BUSY, AUTHORIZED])
    outcome = await CALLER.ask_status(provider, QUERY)  # type: ignore[arg-type]
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert provider.asked == 3


async def test_a_status_query_is_asked_at_most_the_policys_attempts() -> None:
    provider = ScriptedStatus([BUSY])
    outcome = await CALLER.ask_status(provider, QUERY)  # type: ignore[arg-type]
    assert outcome.kind is OutcomeKind.TRANSIENT and not outcome.is_not_found
    assert provider.asked == 3


async def test_not_found_is_an_answer_not_a_refusal() -> None:
    provider = ScriptedStatus([NO_RECORD, AUTHORIZED])
    outcome = await CALLER.ask_status(provider, QUERY)  # type: ignore[arg-type]
    assert outcome.is_not_found
    assert provider.asked == 1


async def test_a_timed_out_status_query_is_left_to_the_next_pass() -> None:
    provider = ScriptedStatus([LOST, AUTHORIZED])
    outcome = await CALLER.ask_status(provider, QUERY)  # type: ignore[arg-type]
    assert outcome.kind is OutcomeKind.UNKNOWN
    assert provider.asked == 1
