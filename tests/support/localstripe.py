"""A localstripe server (a stateful Stripe API fake) for tests of the `stripe` provider.

Started like the embedded Kafka and MongoDB (:mod:`service.embedded`): on a free
loopback port, from the long-lived spawner thread, with ``PR_SET_PDEATHSIG`` so it
dies with the test process however that ends. Two things differ from running the
``localstripe`` console script, both to keep parallel test runs apart:

* it listens on 127.0.0.1 only (the script binds every interface, IPv6 included);
* its store stays in memory: the script pickles the whole store to the shared
  ``/tmp/localstripe.pickle`` after every write, so two servers would overwrite
  each other's file (and a later run could load a stale one).

What localstripe does and does not do, as far as these tests are concerned:
PaymentIntents with manual or automatic capture, confirmation, the test cards
(`pm_card_visa`, `pm_card_chargeCustomerFail`, 3-D Secure card 4000000000003220
via ``/_authenticate``), one capture per intent (partial captures release the
rest as a refund), refunds by intent, cancel, and signed webhook delivery. It
ignores ``Idempotency-Key``, has no multicapture (``final_capture``), rejects a
refund ``reason`` and a ``payment_method`` on confirm, and leaves
``amount_received``/``amount_capturable`` out of its PaymentIntents. It has no
disputes: the launcher answers ``GET /v1/disputes`` with an empty list, so the
audit's read (``read_objects``) works against it. Where a test needs Stripe's
documented behaviour that localstripe lacks, it uses
:class:`tests.fixtures.stripe.faithful.FaithfulStripe` instead.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from typing import Any

import httpx

from service.embedded import LOOPBACK, _EmbeddedServer

TEST_API_KEY = "sk_test_localstripe"
TEST_PUBLISHABLE_KEY = "pk_test_localstripe"

_LAUNCHER = """
import sys
from aiohttp import web
from localstripe import resources, server

# In memory only: see tests.support.localstripe.
resources.Store.dump_to_disk = lambda self: None


async def no_disputes(request):
    # localstripe has no disputes; Stripe lists a PaymentIntent's (none here).
    return web.json_response(
        {"object": "list", "data": [], "has_more": False, "url": "/v1/disputes"}
    )


server.app.router.add_get("/v1/disputes", no_disputes)
web.run_app(server.app, host=sys.argv[1], port=int(sys.argv[2]), access_log=None, print=None)
"""


class LocalStripe(_EmbeddedServer):
    """localstripe on a free loopback port; use as a context manager."""

    _label = "localstripe"

    @property
    def api_base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _command(self, port: int, workdir: Path) -> list[str]:
        return [sys.executable, "-c", _LAUNCHER, LOOPBACK, str(port)]

    def _probe(self, port: int) -> None:
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{port}/v1/balance",
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        )
        with urllib.request.urlopen(request, timeout=1.0) as response:
            if response.status != 200:
                raise ConnectionError(f"localstripe probe answered {response.status}")

    # -- what a storefront or the Stripe dashboard would do, for tests ---------------

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_base,
            headers={"Authorization": f"Bearer {TEST_API_KEY}"},
            timeout=10.0,
        )

    async def create_card_payment_method(self, number: str) -> str:
        """A card PaymentMethod for a test card number (e.g. 4000000000003220, 3-D Secure)."""
        async with self._client() as client:
            response = await client.post(
                "/v1/payment_methods",
                data={
                    "type": "card",
                    "card[number]": number,
                    "card[exp_month]": "12",
                    "card[exp_year]": "2034",
                    "card[cvc]": "123",
                },
            )
            response.raise_for_status()
            return str(response.json()["id"])

    async def complete_authentication(
        self, intent_id: str, client_secret: str, *, success: bool
    ) -> None:
        """The customer passes (or fails) 3-D Secure, as Stripe.js would report it."""
        async with httpx.AsyncClient(base_url=self.api_base, timeout=10.0) as client:
            response = await client.post(
                f"/v1/payment_intents/{intent_id}/_authenticate",
                data={
                    "client_secret": client_secret,
                    "success": "true" if success else "false",
                    "key": TEST_PUBLISHABLE_KEY,
                },
            )
            response.raise_for_status()

    async def payment_intent(self, intent_id: str) -> dict[str, Any]:
        async with self._client() as client:
            response = await client.get(f"/v1/payment_intents/{intent_id}")
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
            return answer

    async def payment_intents(self, **metadata: str) -> list[dict[str, Any]]:
        """Every PaymentIntent whose metadata holds `metadata` (e.g. ``cart_id=…``)."""
        found: list[dict[str, Any]] = []
        params: dict[str, str] = {"limit": "100"}
        async with self._client() as client:
            while True:
                response = await client.get("/v1/payment_intents", params=params)
                response.raise_for_status()
                page = response.json()
                found.extend(
                    pi
                    for pi in page["data"]
                    if all(pi["metadata"].get(k) == v for k, v in metadata.items())
                )
                if not page.get("has_more") or not page["data"]:
                    return found
                params["starting_after"] = page["data"][-1]["id"]

    async def refunds(self, intent_id: str) -> list[dict[str, Any]]:
        async with self._client() as client:
            response = await client.get("/v1/refunds", params={"payment_intent": intent_id})
            response.raise_for_status()
            return list(response.json()["data"])

    async def capture(self, intent_id: str, amount: int | None = None) -> dict[str, Any]:
        """Capture directly at "Stripe", as from the dashboard (not through the service)."""
        async with self._client() as client:
            data = {} if amount is None else {"amount_to_capture": str(amount)}
            response = await client.post(f"/v1/payment_intents/{intent_id}/capture", data=data)
            response.raise_for_status()
            answer: dict[str, Any] = response.json()
            return answer

    async def register_webhook(
        self, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """Have localstripe deliver its events, signed with `secret`, to `url`."""
        data: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            data["events[]"] = events
        async with httpx.AsyncClient(base_url=self.api_base, timeout=10.0) as client:
            response = await client.post("/_config/webhooks/payments", data=data)
            response.raise_for_status()


__all__ = ["TEST_API_KEY", "TEST_PUBLISHABLE_KEY", "LocalStripe"]
