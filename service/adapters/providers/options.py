"""Validation of `PAYMENTS_PROVIDER_OPTIONS` entries.

Options arrive as free-form JSON, so a typo (`"captrue": true`) or a wrong type
(`"capture": "yes"`) would otherwise be silently ignored and change how money
moves. Every provider checks its options at construction, which is start-up, and
the error names the environment variable to fix.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

OPTIONS_VARIABLE = "PAYMENTS_PROVIDER_OPTIONS"


class ProviderConfigError(ValueError):
    """A provider is misconfigured; the message names the variable to fix."""


def check_known(provider_id: str, options: Mapping[str, Any], allowed: Collection[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ProviderConfigError(
            f"{OPTIONS_VARIABLE}: unknown option(s) {', '.join(map(repr, unknown))} "
            f"for provider {provider_id!r}; allowed: {', '.join(sorted(allowed)) or 'none'}"
        )


def option_bool(provider_id: str, options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise ProviderConfigError(
            f"{OPTIONS_VARIABLE}: {provider_id}.{name} must be true or false, got {value!r}"
        )
    return value


def option_float(
    provider_id: str,
    options: Mapping[str, Any],
    name: str,
    default: float,
    *,
    minimum: float = 0.0,
    maximum: float | None = None,
) -> float:
    value = options.get(name, default)
    # bool is an int subclass; `"fail_rate": true` is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderConfigError(
            f"{OPTIONS_VARIABLE}: {provider_id}.{name} must be a number, got {value!r}"
        )
    number = float(value)
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
        raise ProviderConfigError(
            f"{OPTIONS_VARIABLE}: {provider_id}.{name} must be {bound}, got {value!r}"
        )
    return number


def option_int_or_none(provider_id: str, options: Mapping[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProviderConfigError(
            f"{OPTIONS_VARIABLE}: {provider_id}.{name} must be an integer, got {value!r}"
        )
    return value
