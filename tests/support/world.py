"""The service layer wired to in-memory fakes: store, publisher, fake processors, a clock.

What the consumer does after a handler (publish what was saved, then mark it
sent) is done by :meth:`World.deliver`, so tests see exactly the events the
service would put on the wire.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from schemas.inbound import AdminCancel, AdminCapture, AdminRefund, CartUpdated, CheckoutCompleted
from schemas.topics import EVENT_TYPE_BY_DATA_MODEL
from service.admin_auth import AdminAuthenticator
from service.bus import Inbound, dispatch
from service.consumer import BatchProcessor, letter_budget
from service.domain.backoff import Backoff
from service.domain.model import PaymentCollection
from service.handlers import HandleResult, PaymentService
from service.metrics import Metrics
from service.outbox_relay import OutboxRelay
from service.ports.providers import PaymentProvider
from service.ports.store import CollectionStore
from service.provider_calls import ProviderCaller, RetryPolicy
from service.reconciler import Reconciler
from tests.support.memory import MemoryCollectionStore, RecordingPublisher
from tests.support.processor import Processor, Registry

P = TypeVar("P", bound=PaymentProvider)

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(timeout_s=10.0, max_attempts=2, base_delay_s=0.0, max_delay_s=0.0)
MIN_AGE = timedelta(seconds=5)


async def handle(
    service: PaymentService, event_id: str, data: Any, key_id: str | None = None
) -> HandleResult:
    """Handle one validated event's data as the consumer does (through the registry)."""
    return await dispatch(
        service, EVENT_TYPE_BY_DATA_MODEL[type(data)], Inbound(event_id, data, key_id)
    )


def claim_of(event_id: str, data: Any) -> tuple[str, str]:
    """The idempotency claim the consumer takes up front for an admin command."""
    from service.bus import route_for

    claim = route_for(EVENT_TYPE_BY_DATA_MODEL[type(data)]).claim
    assert claim is not None
    return claim(Inbound(event_id, data))


class World:
    def __init__(
        self, *provider_ids: str, capture: bool = False, store: CollectionStore | None = None
    ) -> None:
        """`store`: another store to run over (the Mongo adapter, in the store tests);
        `self.store` is the in-memory one otherwise."""
        self.now = T0
        self.store: Any = store or MemoryCollectionStore()
        self.publisher = RecordingPublisher()
        self.processors = {
            pid: Processor(pid, clock=self.clock, capture_on_authorize=capture)
            for pid in (provider_ids or ("fake",))
        }
        self.registry = Registry(dict(self.processors))
        self.caller = ProviderCaller(POLICY)
        self.service = PaymentService(self.store, self.registry, self.caller, clock=self.clock)
        self.metrics = Metrics()
        self.relay = OutboxRelay(self.store, self.publisher, self.metrics, clock=self.clock)
        self.reconciler = Reconciler(self.service, self.relay, self.metrics)
        self.seq = 0

    def clock(self) -> datetime:
        return self.now

    def batch_processor(
        self,
        publisher: RecordingPublisher,
        topic_prefix: str,
        authenticator: AdminAuthenticator | None = None,
        **options: Any,
    ) -> BatchProcessor:
        """The consumer's batch processor over this world (no retry waits, 1 MiB
        requests); admin signatures are not required unless `authenticator` says so."""
        return BatchProcessor(
            self.service,
            self.store,
            publisher,
            authenticator or AdminAuthenticator({}, required=False),
            self.metrics,
            topic_prefix=topic_prefix,
            max_concurrency=256,
            max_attempts=3,
            max_letter_bytes=letter_budget(1024 * 1024),
            retry_backoff=Backoff(initial_s=0.0, max_s=0.0),
            clock=self.clock,
            **options,
        )

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def install(self, provider: P) -> P:
        """Register another provider (e.g. the Stripe model of
        `tests/support/stripe_processor.py`, built with this world's clock)."""
        self.registry.providers = {**self.registry.providers, provider.id: provider}
        return provider

    @property
    def fake(self) -> Processor:
        return next(iter(self.processors.values()))

    def new_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}_{self.seq}"

    async def deliver(self, result: HandleResult) -> HandleResult:
        """Publish what the handler stored, as the consumer does, then mark it sent."""
        saved = [(c, v) for c, v in result.saved if c.unsent_events]
        events = [e for c, _ in saved for e in c.unsent_events]
        events += [e for o in result.orphans for e in o.events]
        if events:
            try:
                await self.publisher.publish(events)
            except ConnectionError:
                return result  # stored, so not lost: the relay publishes them later
            await self.store.mark_sent(saved)
            for orphan in result.orphans:
                await self.store.mark_orphan_sent(orphan.event_id)
        return result

    # -- inbound events --------------------------------------------------------------

    async def cart(
        self,
        cart_id: str,
        amount: int,
        *,
        region: str = "eu",
        version: int | None = None,
        event_id: str | None = None,
        **extra: Any,
    ) -> HandleResult:
        data = CartUpdated.model_validate(
            {
                "cart_id": cart_id,
                "region_id": region,
                "currency_code": "usd",
                "amount": amount,
                "version": version,
                **extra,
            }
        )
        return await self.deliver(await handle(self.service, event_id or self.new_id("cu"), data))

    async def checkout(
        self,
        cart_id: str,
        amount: int,
        key: str,
        *,
        provider: str = "fake",
        region: str = "eu",
        event_id: str | None = None,
        **extra: Any,
    ) -> HandleResult:
        data = CheckoutCompleted.model_validate(
            {
                "cart_id": cart_id,
                "idempotency_key": key,
                "region_id": region,
                "currency_code": "usd",
                "amount": amount,
                "provider_id": provider,
                **extra,
            }
        )
        return await self.deliver(await handle(self.service, event_id or self.new_id("co"), data))

    async def command(
        self,
        kind: str,
        payment_id: str,
        *,
        amount: int | None = None,
        command_id: str | None = None,
    ) -> HandleResult:
        body: dict[str, Any] = {"payment_id": payment_id, "requested_by": "ops"}
        model: Any = {"capture": AdminCapture, "refund": AdminRefund, "cancel": AdminCancel}[kind]
        if amount is not None and kind != "cancel":
            body["amount"] = amount
        data = model.model_validate(body)
        return await self.deliver(
            await handle(self.service, command_id or self.new_id("cmd"), data)
        )

    async def reconcile(self, min_age: timedelta = MIN_AGE) -> int:
        return await self.reconciler.run_once(min_age)

    # -- reading -----------------------------------------------------------------------

    async def collection(self, cart_id: str) -> PaymentCollection:
        loaded = await self.store.load_by_cart(cart_id)
        assert loaded is not None, f"no collection for {cart_id}"
        return loaded.collection

    def published(self, event_type: str, cart_id: str | None = None) -> list[Any]:
        return [
            e
            for e in self.publisher.published
            if e.type == event_type and (cart_id is None or e.key == cart_id)
        ]
