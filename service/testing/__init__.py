"""The public test harness, shipped with the package for downstream suites and ours:
the harness, event builders, the `payments` pytest plugin, infrastructure selection
and the `payments run` launcher. What only this repository's suites use lives in
`tests/support/` (never imported from here)."""
