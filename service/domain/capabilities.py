"""What a provider allows, as the domain decides with it.

Each provider adapter declares its capabilities (`PaymentProvider.capabilities`); a
payment keeps those of its provider as they were when it was authorized, so the
rules for its captures, refunds and repeats follow what its provider does:

- `multicapture`: several partial captures on one authorization; without it, the
  first capture is the last (`final`);
- `partial_capture_releases_rest`: a final capture of less than what is left
  releases the rest at the provider (Stripe without multicapture): the books book
  it as released, and nothing is left to capture or cancel;
- `refunds_can_be_pending`: a refund may be accepted before it is money back
  (Stripe), and settle (or fail) later;
- `idempotency_window_s`: how long the provider remembers an idempotency key (Stripe:
  24 h). A call repeated under the same key after that is a new request, so an
  operation whose outcome is unknown is repeated only inside the window; after it,
  it needs a person (`needs_attention`), never a guess. None: for ever.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Capabilities(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    multicapture: bool = True
    partial_capture_releases_rest: bool = False
    refunds_can_be_pending: bool = False
    idempotency_window_s: float | None = None


LENIENT = Capabilities()
"""A provider that keeps its own books (manual, sandbox): several captures, nothing
pending, keys remembered for ever."""
