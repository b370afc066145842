"""HMAC signatures of admin commands (`payments-signature` header).

Commands move money, so each carries
`payments-signature: keyid=<key id>,v1=<hex HMAC-SHA256 of the exact value>`
made with a key from `PAYMENTS_ADMIN_KEYS`. The signature covers the raw Kafka
value, byte for byte: re-serializing the JSON would sign something else.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SIGNATURE_HEADER = "payments-signature"


def signature_header(value: bytes, key_id: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), value, hashlib.sha256).hexdigest()
    return f"keyid={key_id},v1={digest}"


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    key_id: str | None
    detail: str = ""


#: The whole header, as bytes: anything else is refused before any text decoding or
#: comparison happens, so no header a producer can send makes verification throw.
#: Hex digits are accepted in either case (producers have sent upper case).
_SIGNATURE = re.compile(rb"keyid=([A-Za-z0-9._-]{1,64}),v1=([0-9a-fA-F]{64})")


class AdminAuthenticator:
    def __init__(self, keys: Mapping[str, str], *, required: bool = True) -> None:
        self._keys = {k: v.encode() for k, v in keys.items()}
        self.required = required

    def verify(self, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> Verdict:
        """Total: every input gives a verdict, never an exception."""
        raw = next((v for k, v in headers if k.lower() == SIGNATURE_HEADER), None)
        if not raw:
            if not self.required:
                return Verdict(True, None, "signature check disabled")
            return Verdict(False, None, f"missing {SIGNATURE_HEADER} header")
        match = _SIGNATURE.fullmatch(raw)
        if match is None:
            if not self.required:
                return Verdict(True, None, "signature check disabled; malformed signature")
            return Verdict(
                False,
                None,
                f"malformed {SIGNATURE_HEADER} header: expected keyid=<id>,v1=<64 hex digits>",
            )
        key_id = match.group(1).decode("ascii")  # the pattern admits ASCII only
        given = match.group(2).lower()
        secret = self._keys.get(key_id)
        if secret is None:
            if not self.required:
                # Accepted, but the key id is only a claim: never record it as the signer.
                return Verdict(True, None, "signature check disabled; unknown key id")
            return Verdict(False, key_id, f"unknown key id {key_id!r}")
        expected = hmac.new(secret, value or b"", hashlib.sha256).hexdigest().encode("ascii")
        if not hmac.compare_digest(expected, given):
            if not self.required:
                return Verdict(True, None, "signature check disabled; signature does not match")
            return Verdict(False, key_id, f"signature does not match for key id {key_id!r}")
        return Verdict(True, key_id)
