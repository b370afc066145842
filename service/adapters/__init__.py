"""Adapters: the ports implemented over MongoDB, Kafka and payment providers."""
