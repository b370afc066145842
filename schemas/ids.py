"""Identifier types shared by the inbound and outbound event data.

The limits come from the contract (sections 1 and 3). Ids that end up in Kafka keys,
MongoDB keys and log lines (cart, payment, collection, session, capture and refund ids)
are restricted to a conservative charset so they never need quoting or escaping
anywhere; ids the contract leaves free-form (event ids, idempotency keys) only get a
length bound.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import StringConstraints

RESOURCE_ID_PATTERN: Final[str] = r"^[A-Za-z0-9_.:-]+$"
"""Charset of cart ids and of the ids of the service's own resources."""

PROVIDER_ID_PATTERN: Final[str] = r"^[a-z0-9_-]+$"
"""Charset of provider ids (`sandbox`, `manual`, `system`, `pp_stripe_stripe`)."""

_ResourceId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=RESOURCE_ID_PATTERN)
]
"""The cart id and the service's resource ids below: one rule, each name says which id."""

CartId = _ResourceId
"""The storefront's cart id: 1-128 chars of `[A-Za-z0-9_.:-]`; the Kafka key of cart events."""

PaymentId = _ResourceId
"""Id of a payment (an authorized session); the Kafka key of admin commands."""

CollectionId = _ResourceId
"""Id of a payment collection (one per cart)."""

SessionId = _ResourceId
"""Id of a payment session (one per provider in a collection)."""

CaptureId = _ResourceId
"""Id of one capture on a payment."""

RefundId = _ResourceId
"""Id of one refund on a payment."""

EventId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""A CloudEvent `id`: 1-128 chars, the de-duplication key of every event."""

IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]
"""The storefront's checkout idempotency key: 1-255 chars, re-sent on retries."""

ProviderId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=PROVIDER_ID_PATTERN)
]
"""A payment provider id: 1-64 chars of `[a-z0-9_-]`."""

RegionId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""The storefront's region id; decides which providers a cart may use."""
