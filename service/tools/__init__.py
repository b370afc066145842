"""Operator tools behind the `payments` CLI: dead letters, replay, republish,
inspect, send, demo and the AsyncAPI document.

Each module holds the logic of one command as plain async functions over a
:class:`~service.tools.connection.Connection`, so tests and scripts can call them
without going through the CLI; `service.entrypoints.cli` only parses options and
renders results.
"""
