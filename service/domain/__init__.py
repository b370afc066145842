"""The pure domain core: the payment collection aggregate, its statuses and its rules.

Nothing in this package performs I/O. Every decision is a function of the aggregate
and a command that returns the new aggregate, the provider calls to make and the
outbound events to publish, so the whole of the money logic is unit-testable
without a broker, a database or a provider.
"""
