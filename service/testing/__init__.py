"""Helpers shared by the test suite (not used by the service at runtime)."""
