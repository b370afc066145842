"""Running the service in production: structured logs with redaction, tracing.

Metrics live in :mod:`service.metrics`; health and readiness in
:mod:`service.entrypoints.http` and :class:`service.entrypoints.app.PaymentsApp`.
"""
