"""Provider options (`PAYMENTS_PROVIDER_OPTIONS`): the base model and its errors.

Options arrive as free-form JSON, so a typo (`"captrue": true`) or a wrong type
(`"capture": "yes"`) would otherwise be silently ignored and change how money
moves. Each provider declares its options as a :class:`ProviderOptions` model
(strict types, unknown keys forbidden) and parses them with :meth:`parse` at
construction, which is start-up; the error names the environment variable and the
option to fix, in the operator's words rather than pydantic's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

OPTIONS_VARIABLE = "PAYMENTS_PROVIDER_OPTIONS"


class ProviderConfigError(ValueError):
    """A provider is misconfigured; the message names the variable to fix."""


_MUST_BE = {
    "bool_type": "true or false",
    "float_type": "a number",
    "int_type": "an integer",
    "string_type": "a non-empty string",
    "string_too_short": "a non-empty string",
    "list_type": "a list of strings",
    "too_short": "non-empty",
}
"""What a value must be, by pydantic error type, in the words an operator reads."""


class ProviderOptions(BaseModel):
    """One provider's options. Strict: `"yes"` is no bool and `true` no number."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    provider_id: ClassVar[str]
    """The provider these options belong to; errors read `<provider_id>.<option>`."""
    secret_options: ClassVar[frozenset[str]] = frozenset()
    """Options whose value an error message must not repeat."""

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> Self:
        """The options from their JSON form, or :class:`ProviderConfigError`."""
        try:
            return cls.model_validate(dict(options or {}))
        except ValidationError as exc:
            raise ProviderConfigError(
                f"{OPTIONS_VARIABLE}: " + "; ".join(cls._problems(exc.errors()))
            ) from None

    @classmethod
    def _problems(cls, errors: list[ErrorDetails]) -> list[str]:
        unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
        problems = []
        if unknown:
            problems.append(
                f"unknown option(s) {', '.join(map(repr, unknown))} for provider "
                f"{cls.provider_id!r}; allowed: {', '.join(sorted(cls.model_fields)) or 'none'}"
            )
        for error in errors:
            if error["type"] != "extra_forbidden":
                problems.append(cls._problem(error))
        return problems

    @classmethod
    def _problem(cls, error: ErrorDetails) -> str:
        field, *inner = error["loc"]
        name = f"{cls.provider_id}.{field}" + "".join(f"[{i}]" for i in inner)
        if error["type"] == "missing":
            return f"{name} is required"
        if error["type"] in ("greater_than_equal", "less_than_equal"):
            return f"{name} must be {cls._bounds(str(field))}, got {error['input']!r}"
        must_be = _MUST_BE.get(error["type"], error["msg"])
        if field in cls.secret_options:
            return f"{name} must be {must_be}"
        return f"{name} must be {must_be}, got {error['input']!r}"

    @classmethod
    def _bounds(cls, field: str) -> str:
        low = high = None
        for constraint in cls.model_fields[field].metadata:
            if isinstance(constraint, annotated_types.Ge):
                low = constraint.ge
            elif isinstance(constraint, annotated_types.Le):
                high = constraint.le
        if low is None:
            return f"<= {high:g}"
        if high is None:
            return f">= {low:g}"
        return f"between {low:g} and {high:g}"
