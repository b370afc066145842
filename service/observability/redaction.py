"""Redaction of secrets and card data, for log lines and configuration summaries.

A payment service receives Stripe keys in its configuration and card data in
free-form `payment_data` and `context` objects; an exception message or a
dead-letter reason can echo any of it. :data:`REDACTOR` is the last processor of
the logging pipeline (:mod:`service.observability.logging`); the settings use the
same functions for their repr and their start-up summary. Kept apart from the
logging set-up so that code which only needs to hide secrets (the settings) does
not import structlog.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from structlog.types import EventDict, WrappedLogger

REDACTED = "[REDACTED]"

# -- patterns ------------------------------------------------------------------------

_STRIPE_KEY = re.compile(r"\b((?:sk|rk)_(?:live|test)_)[0-9A-Za-z]{4,}")
"""Stripe secret (`sk_`) and restricted (`rk_`) API keys."""
_WEBHOOK_SECRET = re.compile(r"\b(whsec_)[0-9A-Za-z+/=]{4,}")
_CLIENT_SECRET = re.compile(r"\b((?:pi|seti|src|cs)_[0-9A-Za-z]+_secret_)[0-9A-Za-z]+")
"""PaymentIntent / SetupIntent client secrets: `pi_…_secret_…`."""
_URL_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]+:)[^@\s/]+@")
"""`scheme://user:password@host`: MongoDB URLs carry credentials this way."""
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_PAN = re.compile(r"(?<![0-9A-Za-z])(?:\d[ -]?){12,18}\d(?![0-9A-Za-z])")
"""A card number: 13–19 digits, possibly grouped by spaces or dashes."""

_SENSITIVE_KEY = re.compile(
    r"(?i)(passw(or)?d|passphrase|secret|api_?key|private_?key|authorization|cookie|"
    r"card_?number|\bpan\b|cvc|cvv|sasl_plain_password|admin_keys|signature|credential)"
)
"""Keys whose values are never logged, whatever they look like."""

_PAYMENT_METHOD_KEYS = frozenset({"payment_method_details", "payment_method", "card", "source"})
"""Keys holding payment method details: only `type` and `last4` survive."""

MIN_SECRET_LENGTH = 4
"""Configured secrets shorter than this are not searched for in text (too many
false hits); they are still hidden wherever they appear under a sensitive key."""


def _mask_pan(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if not 13 <= len(digits) <= 19:
        return match.group(0)
    return f"****{digits[-4:]}"


def _payment_method_summary(value: Mapping[str, Any]) -> dict[str, Any]:
    """`{type, last4}` of a payment method object, wherever Stripe nests last4."""
    summary: dict[str, Any] = {}
    if isinstance(value.get("type"), str):
        summary["type"] = value["type"]
    last4 = value.get("last4")
    if last4 is None:
        for nested in value.values():
            if isinstance(nested, Mapping) and nested.get("last4") is not None:
                last4 = nested.get("last4")
                break
    if last4 is not None:
        summary["last4"] = str(last4)[-4:]
    return summary


class Redactor:
    """Removes secrets and card data from a log event; see the module docstring.

    Besides the fixed patterns it knows the configured secret values
    (:meth:`add_secrets`), so a webhook secret or an admin HMAC key that looks
    like nothing in particular is still found inside any text.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._secret_pattern: re.Pattern[str] | None = None

    def add_secrets(self, values: Iterable[str | None]) -> None:
        with self._lock:
            new = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
            if new <= self._secrets:
                return
            self._secrets |= new
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._secret_pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def clear_secrets(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._secret_pattern = None

    def text(self, value: str) -> str:
        pattern = self._secret_pattern
        if pattern is not None:
            value = pattern.sub(REDACTED, value)
        value = _STRIPE_KEY.sub(rf"\g<1>{REDACTED}", value)
        value = _WEBHOOK_SECRET.sub(rf"\g<1>{REDACTED}", value)
        value = _CLIENT_SECRET.sub(rf"\g<1>{REDACTED}", value)
        value = _URL_CREDENTIALS.sub(rf"\g<1>{REDACTED}@", value)
        value = _BEARER.sub(rf"\g<1>{REDACTED}", value)
        return _PAN.sub(_mask_pan, value)

    def value(self, value: Any, key: str | None = None, depth: int = 0) -> Any:
        if (
            key is not None
            and value is not None
            and not isinstance(value, bool)  # `signature_required: true` hides nothing
            and _SENSITIVE_KEY.search(key)
        ):
            return REDACTED
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth > 16:
            return REDACTED  # pathological nesting: do not walk it, do not show it
        if isinstance(value, Mapping):
            if key is not None and key.lower() in _PAYMENT_METHOD_KEYS:
                return _payment_method_summary(value)
            return {str(k): self.value(v, str(k), depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v, None, depth + 1) for v in value]
        # Anything else is rendered with str() later; redact that text now.
        return self.text(str(value))

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        for key in list(event_dict):
            if key.startswith("_"):  # structlog's own bookkeeping (_record, _from_structlog)
                continue
            event_dict[key] = self.value(event_dict[key], None if key == "event" else key)
        return event_dict


REDACTOR = Redactor()
"""The process-wide redactor every log line passes through."""


def register_secrets(values: Iterable[str | None]) -> None:
    """Teach the redactor configured secret values (admin keys, passwords, …)."""
    REDACTOR.add_secrets(values)


def secret_like_values(value: Any, key: str | None = None) -> list[str]:
    """Strings in a configuration object that are secrets: under a sensitive key,
    or shaped like a Stripe key or webhook secret. Fed to :func:`register_secrets`."""
    found: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            found.extend(secret_like_values(v, str(k)))
    elif isinstance(value, list | tuple):
        for item in value:
            found.extend(secret_like_values(item, key))
    elif isinstance(value, str):
        sensitive_key = key is not None and _SENSITIVE_KEY.search(key) is not None
        if sensitive_key or _STRIPE_KEY.search(value) or _WEBHOOK_SECRET.search(value):
            found.append(value)
    return found


def redact_mapping(values: MutableMapping[str, Any]) -> dict[str, Any]:
    """A redacted copy of `values`, for summaries logged outside the pipeline too."""
    return {k: REDACTOR.value(v, k) for k, v in values.items()}
