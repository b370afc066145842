"""Kafka client security (TLS, SASL PLAIN / SCRAM) from the settings.

Why a FastStream security object: the broker, its consumers and producer all
take their connection arguments from it, and `parse_security` turns the same
object into aiokafka keyword arguments for the clients the service creates
itself (the topic admin client), so the two can never disagree.

MongoDB needs nothing here: TLS and credentials go in `PAYMENTS_MONGODB_URL`
(`mongodb+srv://user:pass@host/?tls=true&tlsCAFile=/etc/ssl/ca.pem`), which is a
secret and never printed.
"""

from __future__ import annotations

import ssl
from typing import Any

from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from service.settings import Settings

_SASL_CLASSES: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
    "PLAIN": SASLPlaintext,
    "SCRAM-SHA-256": SASLScram256,
    "SCRAM-SHA-512": SASLScram512,
}


def build_ssl_context(settings: Settings) -> ssl.SSLContext:
    """A verifying client context: the given CA (or the system's), optional client cert."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_cafile or None
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile:
        password = (
            settings.kafka_ssl_key_password.get_secret_value()
            if settings.kafka_ssl_key_password is not None
            else None
        )
        context.load_cert_chain(
            settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None, password
        )
    return context


def build_kafka_security(settings: Settings) -> BaseSecurity | None:
    """The FastStream security object for `PAYMENTS_KAFKA_SECURITY_PROTOCOL`, or None."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    tls = protocol in ("SSL", "SASL_SSL")
    context = build_ssl_context(settings) if tls else None
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    # SASL_PLAINTEXT / SASL_SSL; Settings guarantees mechanism, user and password.
    assert settings.kafka_sasl_mechanism is not None
    assert settings.kafka_sasl_username is not None
    assert settings.kafka_sasl_password is not None
    cls = _SASL_CLASSES[settings.kafka_sasl_mechanism]
    return cls(
        settings.kafka_sasl_username,
        settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=tls,
    )


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for clients the service creates outside the broker."""
    return parse_security(build_kafka_security(settings))
