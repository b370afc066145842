"""Fault injection for the fault suite: what it takes to break the service honestly.

The service itself runs as a child process that a test can SIGKILL at any
instruction and start again: :class:`service.testing.service_process.ServiceProcess`.

* :class:`TcpProxy` sits between the service and a broker and can cut every
  connection and refuse new ones: the broker becomes unreachable for the service
  while the test's own clients (in the test process) keep talking to it.
* :class:`ProxiedKafka` is an embedded Tansu broker that *advertises* the proxy's
  address. Kafka clients only use the bootstrap address for the first metadata
  request and then connect to the advertised listener, so a proxy in front of a
  broker that advertises itself would be bypassed after the first round trip.
  :func:`proxied_test_kafka` picks it, or Apache Kafka, by the session's choice.
* :class:`CheckoutWorkload` plays the storefront and the back office: it checks
  carts out, captures and refunds (or cancels) their payments as the service
  answers, retries like a real client, and knows the amounts every cart must end
  with, which the test compares with the provider's ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.topics import ADMIN_COMMAND_TYPES, topic_for
from service.adapters.stored_document import log_entries
from service.embedded import LOOPBACK, EmbeddedKafka
from service.testing import builders
from service.testing.harness import ReceivedEvent
from service.testing.infrastructure import selected_infrastructure
from tests.support.real_servers import JvmKafka

__all__ = [
    "FAULT_VOLUME",
    "CartPlan",
    "CheckoutWorkload",
    "ProxiedKafka",
    "TcpProxy",
    "eventually",
    "proxied_test_kafka",
    "sized",
]

ENV_FAULT_VOLUME = "PAYMENTS_FAULT_VOLUME"
FAULT_VOLUMES = ("small", "soak")
FAULT_VOLUME = os.environ.get(ENV_FAULT_VOLUME, "small").strip() or "small"
"""How much work each fault test drives: ``small`` (`make test`, CI) is enough to
cross every code path once (a kill mid-batch, a restart, a rebalance, an outage
mid-stream); ``soak`` (`make soak`) is the stress-test size, many times over."""
if FAULT_VOLUME not in FAULT_VOLUMES:
    raise ValueError(f"{ENV_FAULT_VOLUME}={FAULT_VOLUME!r}: use one of {', '.join(FAULT_VOLUMES)}")


def sized(small: int, soak: int) -> int:
    """The figure for this run's fault volume (`PAYMENTS_FAULT_VOLUME`)."""
    return soak if FAULT_VOLUME == "soak" else small


async def eventually(
    check: Callable[[], Awaitable[bool]],
    what: str | Callable[[], str],
    timeout: float = 30.0,
    poll_s: float = 0.2,
) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout` seconds.

    For conditions in another process or server (a database count, a port): there
    is no event to wait on, so polling is the honest way. `what` may be a callable,
    to say in the failure what was last seen.
    """
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"not within {timeout:g}s: {said}")
        await asyncio.sleep(poll_s)


# --------------------------------------------------------------------------------------
# A cuttable TCP proxy
# --------------------------------------------------------------------------------------


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """Inode of the established loopback TCP socket ``local_port → remote_port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) <= 9 or fields[3] != "01":  # 01: TCP_ESTABLISHED
                continue
            local = int(fields[1].rsplit(":", 1)[1], 16)
            remote = int(fields[2].rsplit(":", 1)[1], 16)
            if local == local_port and remote == remote_port:
                return fields[9]
    return None


def _own_process_has_socket(inode: str) -> bool:
    target = f"socket:[{inode}]"
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                return True
    return False


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None
    exempt: bool

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.transport.abort()


class TcpProxy:
    """A loopback TCP forwarder on its own thread and event loop, with a switch.

    `cut()` aborts every forwarded connection and answers new ones by closing
    them at once (a broker that resets connections); `restore()` forwards again.
    With ``exempt_own_process=True`` connections opened by the process that runs
    the proxy (the test's producer and observer) are never cut: only the service
    loses the broker, while the world keeps producing. It runs on its own thread
    so blocking calls in the test (starting servers) never stall the traffic.
    """

    def __init__(
        self,
        target_port: int | None = None,
        *,
        listen_port: int | None = None,
        exempt_own_process: bool = False,
    ) -> None:
        self.target_port = target_port
        self.exempt_own_process = exempt_own_process
        self._listen_port = listen_port
        self._cut = False
        self._links: set[_Link] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self.accepted = 0
        self.refused = 0
        self.aborted = 0

    @property
    def port(self) -> int:
        if self._listen_port is None:
            raise RuntimeError("the proxy is not started")
        return self._listen_port

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # this thread's own loop
        self._loop = loop
        self._stopped = asyncio.Event()
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, LOOPBACK, self._listen_port or 0)
            )
            self._listen_port = int(self._server.sockets[0].getsockname()[1])
            self._ready.set()
            loop.run_until_complete(self._wait_stopped())
        finally:
            for link in list(self._links):
                link.abort()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()
        if self._server is not None:
            self._server.close()

    def _is_exempt(self, writer: asyncio.StreamWriter) -> bool:
        if not self.exempt_own_process:
            return False
        peer = writer.get_extra_info("peername")
        if not peer:
            return False
        inode = _socket_inode(int(peer[1]), self.port)
        return inode is not None and _own_process_has_socket(inode)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        exempt = self._is_exempt(writer)
        if (self._cut and not exempt) or self.target_port is None:
            self.refused += 1
            writer.transport.abort()
            return
        self.accepted += 1
        link = _Link(writer, None, exempt)
        self._links.add(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            self._links.discard(link)
            writer.transport.abort()
            return
        link.upstream = up_writer
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._links.discard(link)
            link.abort()

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.transport.abort()

    def _call(self, function: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:
            function()
            return
        done = threading.Event()

        def run() -> None:
            try:
                function()
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(10)

    def cut(self) -> None:
        """Drop every non-exempt connection and refuse new ones until `restore()`."""

        def do() -> None:
            self._cut = True
            for link in list(self._links):
                if not link.exempt:
                    self.aborted += 1
                    self._links.discard(link)
                    link.abort()

        self._call(do)

    def restore(self) -> None:
        def do() -> None:
            self._cut = False

        self._call(do)

    def close(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join(10)


class ProxiedKafka(EmbeddedKafka):
    """An embedded Tansu broker whose metadata names the proxy as its address.

    Clients then reach it only through the proxy, whatever they bootstrapped
    from, so cutting the proxy really makes the broker unreachable to them.
    Storage is in memory: the broker itself must not be restarted (it would
    forget every topic); outages are made with the proxy instead.
    """

    def __init__(self, advertised_port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.advertised_port = advertised_port

    def _command(self, port: int, workdir: Path) -> list[str]:
        command = super()._command(port, workdir)
        index = command.index("--advertised-listener-url")
        command[index + 1] = f"tcp://{LOOPBACK}:{self.advertised_port}"
        return command


def proxied_test_kafka(
    advertised_port: int, environ: Mapping[str, str] | None = None
) -> EmbeddedKafka | JvmKafka:
    """A broker of the session's kind (not started) that advertises ``advertised_port``.

    For fault tests that put a cuttable proxy in front of their own broker: Apache
    Kafka when ``PAYMENTS_TEST_INFRA`` names ``kafka-jvm``, else Tansu.
    """
    if selected_infrastructure(environ)[0] == "kafka-jvm":
        return JvmKafka(advertised_port=advertised_port)
    return ProxiedKafka(advertised_port=advertised_port)


# --------------------------------------------------------------------------------------
# The workload: a storefront and a back office against the running service
# --------------------------------------------------------------------------------------


@dataclass
class CartPlan:
    """What happens to one cart, and so what the provider's ledger must end with.

    ``captures`` are published together once the payment is authorized (they
    race each other for the authorized amount); ``refunds`` together once all
    captures are confirmed. ``cancel`` carts are canceled instead of captured.
    """

    cart_id: str
    amount: int
    idempotency_key: str
    update_first: bool
    resend_checkout: bool
    cancel: bool
    captures: list[int]
    refunds: list[int]
    payment_id: str | None = None
    authorized_event_id: str | None = None
    # command id → amount of the commands issued (retries get new ids)
    capture_ids: dict[str, int] = field(default_factory=dict)
    refund_ids: dict[str, int] = field(default_factory=dict)
    cancel_ids: list[str] = field(default_factory=list)
    captured: set[str] = field(default_factory=set)
    refunded: set[str] = field(default_factory=set)
    canceled: bool = False
    refunds_issued: bool = False
    checkouts_sent: int = 0
    commands_sent: int = 0
    """Numbers command ids: a retry is a new command, so it needs a new id."""
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        if self.cancel:
            return self.canceled
        return len(self.refunded) == len(self.refunds) and len(self.captured) == len(self.captures)

    @property
    def expected_captured(self) -> int:
        return 0 if self.cancel else sum(self.captures)

    @property
    def expected_refunded(self) -> int:
        return 0 if self.cancel else sum(self.refunds)


class CheckoutWorkload:
    """Drive `carts` carts through checkout → captures → refunds (or cancel).

    Reacts to what the service publishes, as the storefront and an ops tool
    would: a retryable `payment.failed` is retried (a checkout with the same
    idempotency key, a command with a new id), anything else is recorded as a
    failure for the test to judge. All commands are signed with `admin_key`.
    """

    def __init__(
        self,
        kafka_bootstrap: str,
        prefix: str,
        received: Sequence[ReceivedEvent],
        *,
        carts: int,
        seed: int = 7,
        admin_key: tuple[str, str] = ("harness", "harness-secret"),
        region_id: str = "eu",
        cancel_share: float = 0.1,
        update_share: float = 0.3,
        resend_share: float = 0.1,
        payment_data: Mapping[str, Any] | None = None,
        retry_failures: bool = False,
    ) -> None:
        self.kafka_bootstrap = kafka_bootstrap
        self.prefix = prefix
        self.received = received
        self.admin_key = admin_key
        self.region_id = region_id
        self.payment_data = dict(payment_data) if payment_data else None
        self.retry_failures = retry_failures
        self.random = random.Random(seed)
        run = f"{seed:x}{int(time.time() * 1000) % 0xFFFFFF:x}"
        self.plans: dict[str, CartPlan] = {}
        for n in range(carts):
            cart_id = f"cart_{run}_{n:05d}"
            amount = self.random.randrange(1_000, 100_000)
            first = self.random.randrange(1, amount // 2)
            second = self.random.randrange(1, amount - first + 1)
            captured = first + second
            refund_one = self.random.randrange(1, captured // 2 + 1)
            refund_two = self.random.randrange(0, captured - refund_one + 1)
            cancel = self.random.random() < cancel_share
            self.plans[cart_id] = CartPlan(
                cart_id=cart_id,
                amount=amount,
                idempotency_key=f"idem_{cart_id}",
                update_first=self.random.random() < update_share,
                # Not for carts to be canceled: the re-sent checkout could arrive
                # after the cancel (the topics are not ordered against each other),
                # and a checkout of a canceled collection fails, rightly.
                resend_checkout=not cancel and self.random.random() < resend_share,
                cancel=cancel,
                captures=[first, second],
                refunds=[refund_one] + ([refund_two] if refund_two else []),
            )
        self._by_payment: dict[str, CartPlan] = {}
        self._scanned = 0
        self._reacted: set[str] = set()
        self._producer: AIOKafkaProducer | None = None
        self._pending_sends: list[asyncio.Future[Any]] = []
        self.published = 0
        self.unexpected: list[str] = []

    # -- producing -------------------------------------------------------------------

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.kafka_bootstrap, linger_ms=5, acks="all"
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self.flush()
            await self._producer.stop()
            self._producer = None

    async def send(
        self, event_type: str, data: dict[str, Any], *, key: str, event_id: str | None = None
    ) -> str:
        """Queue one event (admin commands signed); `flush()` waits for the acks."""
        assert self._producer is not None, "start() the workload first"
        event = builders.envelope(event_type, data, event_id=event_id)
        value = builders.encode(event)
        headers = []
        if event_type in ADMIN_COMMAND_TYPES:
            headers.append(builders.sign(value, *self.admin_key))
        future = await self._producer.send(
            topic_for(event_type, self.prefix), value, key=key.encode(), headers=headers
        )
        self._pending_sends.append(future)
        self.published += 1
        return str(event["id"])

    async def flush(self) -> None:
        sends, self._pending_sends = self._pending_sends, []
        if sends:
            await asyncio.gather(*sends)

    def _checkout_data(self, plan: CartPlan) -> dict[str, Any]:
        return builders.checkout_completed(
            plan.cart_id,
            plan.amount,
            idempotency_key=plan.idempotency_key,
            region_id=self.region_id,
            payment_data=self.payment_data,
        )

    async def send_checkout(self, plan: CartPlan) -> None:
        plan.checkouts_sent += 1
        await self.send("checkout.completed", self._checkout_data(plan), key=plan.cart_id)

    async def send_update(self, plan: CartPlan) -> None:
        await self.send(
            "cart.updated",
            builders.cart_updated(plan.cart_id, plan.amount, region_id=self.region_id, version=1),
            key=plan.cart_id,
        )

    async def publish_updates(self) -> None:
        """Only the `cart.updated` events (of carts with `update_first`), at once."""
        for plan in self.plans.values():
            if plan.update_first:
                await self.send_update(plan)
        await self.flush()

    async def publish_carts(
        self,
        *,
        chunk: int = 50,
        pause_s: float = 0.05,
        on_chunk: Callable[[int], Any] | None = None,
        updates: bool = True,
    ) -> None:
        """Publish every cart's `cart.updated` (some) and `checkout.completed`, in chunks.

        The pause between chunks makes a stream rather than one burst, so faults
        injected meanwhile land in the middle of processing.
        """
        plans = list(self.plans.values())
        self.random.shuffle(plans)
        for start in range(0, len(plans), chunk):
            for plan in plans[start : start + chunk]:
                if updates and plan.update_first:
                    await self.send_update(plan)
                await self.send_checkout(plan)
            await self.flush()
            await self.react()
            if on_chunk is not None:
                result = on_chunk(start + chunk)
                if asyncio.iscoroutine(result):
                    await result
            await asyncio.sleep(pause_s)

    # -- reacting -------------------------------------------------------------------

    def _plan_for(self, received: ReceivedEvent) -> CartPlan | None:
        data = received.data
        cart_id = data.get("cart_id") or received.key
        plan = self.plans.get(str(cart_id)) if cart_id else None
        if plan is None and data.get("payment_id"):
            plan = self._by_payment.get(str(data["payment_id"]))
        return plan

    async def react(self) -> None:
        """Handle the events observed since the last call; publish what follows."""
        new = self.received[self._scanned :]
        self._scanned += len(new)
        for received in new:
            if received.type == "payments.dead_letter":
                continue
            # Delivery is at-least-once: a republished event (same id) is no new
            # answer, so it must not trigger a second retry (issue 16).
            if received.id in self._reacted:
                continue
            self._reacted.add(received.id)
            plan = self._plan_for(received)
            if plan is None:
                continue
            await self._on_event(plan, received)
        await self.flush()

    async def _on_event(self, plan: CartPlan, received: ReceivedEvent) -> None:
        data = received.data
        cause = str(received.event.get("causationid", ""))
        if received.type == "payment.authorized":
            if plan.payment_id is None:
                plan.payment_id = str(data["payment_id"])
                plan.authorized_event_id = received.id
                self._by_payment[plan.payment_id] = plan
                await self._after_authorized(plan)
            elif data.get("payment_id") != plan.payment_id:
                self.unexpected.append(
                    f"{plan.cart_id}: second payment {data.get('payment_id')} "
                    f"after {plan.payment_id}"
                )
        elif received.type == "payment.captured":
            if cause in plan.capture_ids:
                plan.captured.add(cause)
                if len(plan.captured) == len(plan.captures) and not plan.refunds_issued:
                    plan.refunds_issued = True
                    for amount in plan.refunds:
                        await self._command(plan, "refund", amount)
        elif received.type == "payment.refunded":
            if cause in plan.refund_ids:
                plan.refunded.add(cause)
        elif received.type == "payment.canceled":
            plan.canceled = True
        elif received.type == "payment.failed":
            await self._on_failed(plan, received, cause)
        elif received.type == "payment.requires_action":
            self.unexpected.append(f"{plan.cart_id}: unexpected requires_action")

    async def _after_authorized(self, plan: CartPlan) -> None:
        if plan.resend_checkout:
            # The storefront retries: same idempotency key, new event id. The
            # service must answer with the same payment.authorized (same id).
            await self.send_checkout(plan)
        if plan.cancel:
            await self._command(plan, "cancel", None)
        else:
            for amount in plan.captures:
                await self._command(plan, "capture", amount)

    async def _command(self, plan: CartPlan, operation: str, amount: int | None) -> str:
        assert plan.payment_id is not None
        issued = {"capture": plan.capture_ids, "refund": plan.refund_ids}.get(operation)
        plan.commands_sent += 1
        command_id = f"{operation}_{plan.cart_id}_{plan.commands_sent}"
        if operation == "cancel":
            data = builders.cancel(plan.payment_id)
        elif operation == "refund":
            data = builders.refund(plan.payment_id, amount)
        else:
            data = builders.capture(plan.payment_id, amount)
        await self.send(
            f"admin.payment.{operation}", data, key=plan.payment_id, event_id=command_id
        )
        if issued is not None:
            assert amount is not None
            issued[command_id] = amount
        else:
            plan.cancel_ids.append(command_id)
        return command_id

    async def _on_failed(self, plan: CartPlan, received: ReceivedEvent, cause: str) -> None:
        data = received.data
        plan.failures.append(data)
        if not (self.retry_failures and data.get("retryable")):
            return
        operation = data.get("operation")
        if operation == "authorize":
            await self.send_checkout(plan)
        elif operation == "capture" and cause in plan.capture_ids:
            amount = plan.capture_ids.pop(cause)
            await self._command(plan, "capture", amount)
        elif operation == "refund" and cause in plan.refund_ids:
            amount = plan.refund_ids.pop(cause)
            await self._command(plan, "refund", amount)
        elif operation == "cancel":
            await self._command(plan, "cancel", None)

    def outstanding(self) -> list[CartPlan]:
        return [plan for plan in self.plans.values() if not plan.done]

    async def run_until_done(
        self,
        timeout: float,
        *,
        tick: Callable[[], Any] | None = None,
        poll_s: float = 0.25,
        database: Any | None = None,
    ) -> None:
        """React until every cart is done; fail naming what is outstanding.

        With `database`, the failure also shows what is stored about each
        unfinished cart (collection, sessions, outbox, provider ledger), so a
        rare failure in CI explains itself.
        """
        deadline = time.monotonic() + timeout
        while True:
            await self.react()
            if not self.outstanding():
                return
            if time.monotonic() > deadline:
                left = self.outstanding()
                sample = [
                    f"{p.cart_id}: payment={p.payment_id} captured={sorted(p.captured)} "
                    f"refunded={sorted(p.refunded)} canceled={p.canceled} "
                    f"failures={p.failures[-2:]} checkouts_sent={p.checkouts_sent}"
                    for p in left[:10]
                ]
                stored = ""
                if database is not None:
                    try:
                        stored = await self.stored_state(database, [p.cart_id for p in left[:3]])
                    except Exception as exc:  # the failure above matters more
                        stored = f"\n(stored state unavailable: {exc!r})"
                raise AssertionError(
                    f"{len(left)} of {len(self.plans)} carts unfinished after {timeout:g}s "
                    f"(observed {len(self.received)} events):\n  " + "\n  ".join(sample) + stored
                )
            if tick is not None:
                result = tick()
                if asyncio.iscoroutine(result):
                    await result
            await asyncio.sleep(poll_s)

    async def stored_state(self, database: Any, cart_ids: list[str]) -> str:
        """What MongoDB holds about these carts: the collection's state in brief
        and the provider's ledger (for a failure message)."""
        lines = []
        now = datetime.now(UTC)
        for cart_id in cart_ids:
            document = await database["payment_collections"].find_one({"cart_id": cart_id})
            if document is None:
                lines.append(f"{cart_id}: no collection stored")
                continue
            state = document.get("state", {})
            sessions = [
                {
                    k: s.get(k)
                    for k in (
                        "status",
                        "needs_reconcile",
                        "lease_until",
                        "authorization_key",
                        "initiated",
                        "updated_at",
                    )
                }
                for s in state.get("sessions", [])
            ]
            attempts = [
                {k: a.get(k) for k in ("outcome", "tries", "updated_at")}
                for a in state.get("checkout_attempts", [])
            ]
            # Unsent events (schema 2: a map beside the state; 1: a list inside it).
            unsent = document.get("outbox") or {}
            outbox = [(e.get("type"), e.get("sent")) for e in state.get("outbox", [])]
            outbox += [(e.get("type"), False) for e in unsent.values()]
            ledger = [
                (e.get("operation"), e.get("outcome"), str(e.get("created_at", "")))
                async for e in database["sandbox_ledger"].find({"cart_id": cart_id})
            ]
            lines.append(
                f"{cart_id} (now {now.isoformat()}): version={document.get('version')} "
                f"status={state.get('status')} reconcile={document.get('reconcile')} "
                f"reconcile_at={document.get('reconcile_at')} "
                f"reconcile_after={state.get('reconcile_after')} "
                f"processed={len(log_entries(state.get('processed')))}\n"
                f"    sessions={sessions}\n    attempts={attempts}\n"
                f"    outbox={outbox} payment={bool(state.get('payment'))}\n"
                f"    ledger={ledger}"
            )
        return "\nstored:\n  " + "\n  ".join(lines)

    async def ledger_mismatches(self, database: Any) -> list[str]:
        """Carts whose provider ledger differs from what the workload asked for.

        Exactly one authorization per cart, and per payment exactly the amounts of
        the captures and refunds confirmed to the workload: not one cent more
        (a double charge) nor less (a confirmed operation that never happened).
        """
        ledger: dict[str, list[dict[str, Any]]] = {}
        async for entry in database["sandbox_ledger"].find({}):
            ledger.setdefault(str(entry.get("cart_id")), []).append(entry)
        problems = []
        for plan in self.plans.values():
            entries = ledger.get(plan.cart_id, [])
            authorized = [
                e for e in entries if e["operation"] == "authorize" and e["outcome"] == "authorized"
            ]
            captured = sum(e["amount"] for e in entries if e["operation"] == "capture")
            refunded = sum(e["amount"] for e in entries if e["operation"] == "refund")
            canceled = [e for e in entries if e["operation"] == "cancel"]
            confirmed_captured = sum(plan.capture_ids[c] for c in plan.captured)
            confirmed_refunded = sum(plan.refund_ids[r] for r in plan.refunded)
            got = (len(authorized), captured, refunded, len(canceled))
            want = (1, confirmed_captured, confirmed_refunded, 1 if plan.canceled else 0)
            if got != want:
                problems.append(
                    f"{plan.cart_id}: ledger (authorizations, captured, refunded, cancels) "
                    f"= {got}, expected {want}"
                )
        return problems

    def failures(self) -> list[dict[str, Any]]:
        """Every `payment.failed` the workload saw (its `data`), cart by cart."""
        return [f for plan in self.plans.values() for f in plan.failures]

    def failures_beyond_unavailable(
        self, operations: Collection[str] = ("authorize", "capture", "refund", "cancel")
    ) -> list[dict[str, Any]]:
        """The failures that are not "try again later": a retryable
        `provider_unavailable` of one of `operations` is the provider's outage, which
        the workload retries (`retry_failures`); anything else is a real failure."""
        return [
            f
            for f in self.failures()
            if not (
                f.get("retryable") is True
                and f.get("reason") == "provider_unavailable"
                and f.get("operation") in operations
            )
        ]

    def failure_kinds(self) -> Counter[str]:
        """The failures counted by operation and the start of their message, for a report."""
        return Counter(f"{f['operation']}: {f['message'][:60]}" for f in self.failures())

    def progress(self) -> dict[str, int]:
        plans = self.plans.values()
        return {
            "carts": len(self.plans),
            "authorized": sum(1 for p in plans if p.payment_id),
            "done": sum(1 for p in plans if p.done),
            "published": self.published,
            "observed": len(self.received),
        }
