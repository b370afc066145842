"""Kafka TLS / SASL settings, the security objects built from them, and secrets
that never print (repr/str of Settings, the start-up summary)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import certifi
import pytest
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from service.adapters.kafka_security import build_kafka_security, kafka_client_options
from service.observability.tracing import build_tracer_provider, traces_endpoint
from service.settings import Settings, SettingsError, load_settings

SASL_PASSWORD = "sasl-pa55-Zq81"
ADMIN_SECRET = "admin-hmac-7f3a9c"
MONGO_PASSWORD = "m0ngo-s3cret"
STRIPE_KEY = "sk_live_51HabcDEFghiJKLmnoPQR"
KEY_PASSWORD = "key-pa55-x"
OTLP_TOKEN = "otlp-token-1234"


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": "kafka:9093",
        "mongodb_url": "mongodb://db:27017",
        **overrides,
    }
    return load_settings(**values)


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and its encrypted key."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "client.pem", directory / "client.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-days",
            "1",
            "-subj",
            "/CN=payments-test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-passout",
            f"pass:{KEY_PASSWORD}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_plaintext_has_no_security_object() -> None:
    settings = _settings()
    assert build_kafka_security(settings) is None
    assert kafka_client_options(settings) == {}


def test_ssl_with_ca_and_client_certificate(client_cert: tuple[Path, Path]) -> None:
    cert, key = client_cert
    settings = _settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=certifi.where(),
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
        kafka_ssl_key_password=KEY_PASSWORD,
    )
    security = build_kafka_security(settings)
    assert type(security) is BaseSecurity
    assert security.use_ssl is True
    assert isinstance(security.ssl_context, ssl.SSLContext)
    assert security.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert security.ssl_context.check_hostname is True
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"] is not None


def test_ssl_without_cafile_uses_system_roots_and_can_skip_hostname_check() -> None:
    settings = _settings(kafka_security_protocol="SSL", kafka_ssl_check_hostname=False)
    security = build_kafka_security(settings)
    assert security is not None and security.ssl_context is not None
    assert security.ssl_context.check_hostname is False
    assert security.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_wrong_key_password_fails_at_start_up(client_cert: tuple[Path, Path]) -> None:
    cert, key = client_cert
    settings = _settings(
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
        kafka_ssl_key_password="wrong",
    )
    with pytest.raises(ssl.SSLError):
        build_kafka_security(settings)


@pytest.mark.parametrize(
    ("mechanism", "cls"),
    [("PLAIN", SASLPlaintext), ("SCRAM-SHA-256", SASLScram256), ("SCRAM-SHA-512", SASLScram512)],
)
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_mechanisms(mechanism: str, cls: type[BaseSecurity], protocol: str) -> None:
    settings = _settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="payments",
        kafka_sasl_password=SASL_PASSWORD,
    )
    security = build_kafka_security(settings)
    assert type(security) is cls
    tls = protocol == "SASL_SSL"
    assert security.use_ssl is tls
    assert (security.ssl_context is not None) is tls
    options = parse_security(security)
    assert options["security_protocol"] == protocol
    assert options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "payments"
    assert options["sasl_plain_password"] == SASL_PASSWORD
    assert kafka_client_options(settings)["sasl_mechanism"] == mechanism


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "PAYMENTS_KAFKA_SASL_MECHANISM"),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
            },
            "PAYMENTS_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_mechanism": "PLAIN"}, "PAYMENTS_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
        ({"kafka_ssl_cafile": "/ca.pem"}, "PAYMENTS_KAFKA_SSL_* files"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/k.pem"},
            "PAYMENTS_KAFKA_SSL_CERTFILE",
        ),
        ({"kafka_security_protocol": "TLS"}, "PAYMENTS_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "PAYMENTS_KAFKA_SASL_MECHANISM"),
    ],
)
def test_inconsistent_security_settings_are_refused(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError) as excinfo:
        _settings(**overrides)
    assert message in str(excinfo.value)
    assert "PAYMENTS_?" not in str(excinfo.value)


def test_secrets_never_print() -> None:
    settings = _settings(
        mongodb_url=f"mongodb://payments:{MONGO_PASSWORD}@db:27017/?tls=true",
        admin_keys={"ops": ADMIN_SECRET},
        provider_options={"stripe": {"api_key": STRIPE_KEY, "capture": True}},
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="payments",
        kafka_sasl_password=SASL_PASSWORD,
        otlp_endpoint="http://otel:4318",
        otlp_headers=f"authorization=Bearer {OTLP_TOKEN}",
    )
    summary = settings.public_summary()
    for text in (repr(settings), str(settings), repr(summary), str(settings.model_fields_set)):
        for secret in (MONGO_PASSWORD, ADMIN_SECRET, STRIPE_KEY, SASL_PASSWORD, OTLP_TOKEN):
            assert secret not in text
    assert summary["mongodb"] == "mongodb://db:27017"
    assert summary["admin_key_ids"] == ["ops"]
    assert summary["provider_options"]["stripe"]["capture"] is True
    # The values are still there for the code that needs them ...
    assert settings.provider_options["stripe"]["api_key"] == STRIPE_KEY
    # ... and the log redactor is told about every one of them.
    secrets = settings.secret_values()
    for secret in (MONGO_PASSWORD, ADMIN_SECRET, STRIPE_KEY, SASL_PASSWORD, OTLP_TOKEN):
        assert any(secret in value for value in secrets), secret


def test_tracing_is_off_without_an_endpoint() -> None:
    assert build_tracer_provider(_settings()) is None
    provider = build_tracer_provider(_settings(otlp_endpoint="http://otel:4318"))
    assert provider is not None
    provider.shutdown()
    assert traces_endpoint("http://otel:4318") == "http://otel:4318/v1/traces"
    assert traces_endpoint("http://otel:4318/") == "http://otel:4318/v1/traces"
    assert traces_endpoint("https://otel.example/custom/path") == (
        "https://otel.example/custom/path"
    )
