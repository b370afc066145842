"""`AdminAuthenticator`: who may move money with an admin command.

Commands carry `payments-signature: keyid=<id>,v1=<hex HMAC-SHA256 of the value>`.
Anything but a correct signature by a known key is refused (and then
dead-lettered as `unauthorized` by the consumer), unless the check was turned
off explicitly for development (`required=False`).
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.admin_auth import SIGNATURE_HEADER, AdminAuthenticator, signature_header

KEYS = {"ops-2024": "s3cret", "tool": "other-secret"}
VALUE = b'{"specversion":"1.0","id":"cmd-1","type":"admin.payment.capture","data":{}}'


def signed(value: bytes = VALUE, key_id: str = "ops-2024", secret: str = "s3cret") -> bytes:
    return signature_header(value, key_id, secret).encode()


@pytest.fixture
def auth() -> AdminAuthenticator:
    return AdminAuthenticator(KEYS)


def test_signature_header_is_hex_hmac_sha256_of_the_exact_value() -> None:
    digest = hmac.new(b"s3cret", VALUE, hashlib.sha256).hexdigest()
    assert signature_header(VALUE, "ops-2024", "s3cret") == f"keyid=ops-2024,v1={digest}"


def test_correct_signature_is_accepted_with_its_key_id(auth: AdminAuthenticator) -> None:
    verdict = auth.verify(VALUE, [(SIGNATURE_HEADER, signed())])
    assert verdict.ok
    assert verdict.key_id == "ops-2024"


def test_every_configured_key_signs(auth: AdminAuthenticator) -> None:
    verdict = auth.verify(VALUE, [(SIGNATURE_HEADER, signed(key_id="tool", secret="other-secret"))])
    assert verdict.ok and verdict.key_id == "tool"


def test_header_name_and_hex_case_do_not_matter(auth: AdminAuthenticator) -> None:
    keyid, digest = signed().decode().split(",v1=")
    upper = f"{keyid},v1={digest.upper()}".encode()
    verdict = auth.verify(VALUE, [("other", b"x"), ("Payments-Signature", upper)])
    assert verdict.ok and verdict.key_id == "ops-2024"


def test_unsigned_command_is_refused(auth: AdminAuthenticator) -> None:
    verdict = auth.verify(VALUE, [("content-type", b"application/cloudevents+json")])
    assert not verdict.ok
    assert verdict.key_id is None
    assert "missing" in verdict.detail


def test_header_without_a_value_counts_as_unsigned(auth: AdminAuthenticator) -> None:
    assert not auth.verify(VALUE, [(SIGNATURE_HEADER, None)]).ok


def test_tampered_value_is_refused(auth: AdminAuthenticator) -> None:
    tampered = VALUE.replace(b'"data":{}', b'"data":{"amount":999999}')
    verdict = auth.verify(tampered, [(SIGNATURE_HEADER, signed())])
    assert not verdict.ok
    assert verdict.key_id == "ops-2024"
    assert "does not match" in verdict.detail


def test_one_changed_byte_is_enough_to_refuse(auth: AdminAuthenticator) -> None:
    for position in range(len(VALUE)):
        changed = bytearray(VALUE)
        changed[position] ^= 0x01
        assert not auth.verify(bytes(changed), [(SIGNATURE_HEADER, signed())]).ok


def test_wrong_secret_is_refused(auth: AdminAuthenticator) -> None:
    verdict = auth.verify(VALUE, [(SIGNATURE_HEADER, signed(secret="guess"))])
    assert not verdict.ok


def test_unknown_key_id_is_refused_and_named(auth: AdminAuthenticator) -> None:
    verdict = auth.verify(VALUE, [(SIGNATURE_HEADER, signed(key_id="former-employee"))])
    assert not verdict.ok
    assert verdict.key_id == "former-employee"
    assert "unknown key id" in verdict.detail


@pytest.mark.parametrize(
    "header",
    [
        b"garbage",
        b"",
        b"keyid=ops-2024",  # no v1
        b"v1=00",  # no keyid
        b"keyid=,v1=00",
        b"keyid=ops-2024;v1=00",
        b"\xff\xfe\x00",  # not UTF-8
        b"keyid=ops-2024,v1=not-hex",
    ],
)
def test_malformed_headers_are_refused(auth: AdminAuthenticator, header: bytes) -> None:
    verdict = auth.verify(VALUE, [(SIGNATURE_HEADER, header)])
    assert not verdict.ok
    assert verdict.detail


def test_no_keys_configured_refuses_everything() -> None:
    auth = AdminAuthenticator({})
    assert not auth.verify(VALUE, [(SIGNATURE_HEADER, signed())]).ok


def test_check_disabled_accepts_unsigned_commands() -> None:
    auth = AdminAuthenticator(KEYS, required=False)
    verdict = auth.verify(VALUE, [])
    assert verdict.ok
    assert verdict.key_id is None
    assert "disabled" in verdict.detail


def test_check_disabled_still_records_a_valid_signers_key_id() -> None:
    auth = AdminAuthenticator(KEYS, required=False)
    verdict = auth.verify(VALUE, [(SIGNATURE_HEADER, signed())])
    assert verdict.ok and verdict.key_id == "ops-2024"


@settings(deadline=None)
@given(header=st.binary(max_size=120), value=st.binary(max_size=200))
def test_arbitrary_headers_never_raise_and_never_pass(header: bytes, value: bytes) -> None:
    """500 random headers: refused, never an exception (a consumer must not stop)."""
    verdict = AdminAuthenticator(KEYS).verify(value, [(SIGNATURE_HEADER, header)])
    assert not verdict.ok


@pytest.mark.parametrize("header", [signed(secret="guess"), signed(key_id="nobody")])
def test_check_disabled_never_records_an_unverified_key_id(header: bytes) -> None:
    """The history's key id says who signed; a signature that does not verify says nobody."""
    verdict = AdminAuthenticator(KEYS, required=False).verify(VALUE, [(SIGNATURE_HEADER, header)])
    assert verdict.ok
    assert verdict.key_id is None


@pytest.mark.parametrize(
    "header",
    [
        "keyid=ops-2024,v1=éé".encode(),  # a known key id and non-ASCII text
        b"keyid=acc,v1=\xff\xfe\x00",  # bytes that are not UTF-8
        b"keyid=ops-2024,v1=" + "é".encode() * 64,
        b"keyid=ops-2024,v1=" + b"0" * 65,
        b"keyid=ops-2024,v1=" + b"0" * 63,
        b"keyid=" + b"k" * 65 + b",v1=" + b"0" * 64,
        b" keyid=ops-2024,v1=" + b"0" * 64,
        b"keyid=ops-2024,v1=" + b"0" * 64 + b"\n",
    ],
)
def test_regression_signatures_that_once_raised_are_refused(
    auth: AdminAuthenticator, header: bytes
) -> None:
    verdict = auth.verify(VALUE, [(SIGNATURE_HEADER, header)])
    assert not verdict.ok
    assert verdict.detail


_HEX = "0123456789abcdefABCDEF"


@settings(deadline=None)
@given(
    key_id=st.sampled_from([*KEYS, "nobody"]) | st.text(max_size=70),
    digest=st.text(alphabet=_HEX, min_size=60, max_size=68) | st.text(max_size=80),
    noise=st.binary(max_size=4),
)
def test_near_valid_signatures_never_raise_and_never_pass(
    key_id: str, digest: str, noise: bytes
) -> None:
    """Headers one step from valid, with known key ids: refused, never an exception."""
    header = f"keyid={key_id},v1={digest}".encode(errors="surrogatepass") + noise
    verdict = AdminAuthenticator(KEYS).verify(VALUE, [(SIGNATURE_HEADER, header)])
    assert not verdict.ok
