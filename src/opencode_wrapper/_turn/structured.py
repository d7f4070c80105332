"""Structured output: the JSON schema sent to opencode, and checking the model's answer against it.

opencode does not validate what the model returns (a wrong type or a missing property is stored
as is), so the answer is checked here: with ``jsonschema`` (the draft the schema names, every
keyword) or, for a pydantic model class, by the model itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from opencode_wrapper.errors import OpenCodeConfigError

__all__ = ["StructuredSpec", "structured_spec"]


@dataclass(frozen=True)
class StructuredSpec:
    """A requested structured output.

    Attributes:
        schema: the JSON schema (an object schema; the model fills it as tool arguments).
        model: a pydantic model class, when one was given (the answer becomes an instance).
    """

    schema: dict[str, Any]
    model: Any = None

    def check(self, value: Any) -> tuple[Any, list[str]]:
        """``(validated value, [])`` or ``(None, [reasons])``."""
        if self.model is not None:
            try:
                return self.model.model_validate(value), []
            except Exception as exc:  # pydantic.ValidationError, without importing pydantic
                return None, [str(exc)]
        validator = jsonschema.validators.validator_for(self.schema)(self.schema)
        problems = [
            f"{_path(error.absolute_path)}: {error.message}"
            for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
        ]
        return (value, []) if not problems else (None, problems)


def structured_spec(output_schema: object) -> StructuredSpec:
    """Read ``output_schema`` (a JSON schema dict or a pydantic model class).

    Raises:
        OpenCodeConfigError: anything else, a schema that is not JSON, not an object schema, or not
            a valid JSON schema.
    """
    make_schema = getattr(output_schema, "model_json_schema", None)
    if isinstance(output_schema, type) and callable(make_schema):
        return StructuredSpec(schema=_checked_schema(make_schema()), model=output_schema)
    if isinstance(output_schema, Mapping):
        return StructuredSpec(schema=_checked_schema(output_schema))
    raise OpenCodeConfigError(
        f"output_schema must be a JSON schema dict or a pydantic model class, got {output_schema!r:.200}"
    )


def _checked_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    try:
        copied = json.loads(json.dumps(schema, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise OpenCodeConfigError(f"output_schema is not JSON-serialisable: {exc}") from exc
    if not isinstance(copied, dict):
        raise OpenCodeConfigError("output_schema must be a JSON object")
    if copied.get("type", "object") != "object":
        raise OpenCodeConfigError(
            f'output_schema must describe an object ("type": "object"): the model answers with tool '
            f"arguments, which are always an object; got type {copied.get('type')!r}"
        )
    try:
        jsonschema.validators.validator_for(copied).check_schema(copied)
    except jsonschema.SchemaError as exc:
        raise OpenCodeConfigError(f"output_schema is not a valid JSON schema: {exc.message}") from exc
    return copied


def _path(parts: Any) -> str:
    out = "$"
    for item in parts:
        out += f"[{item}]" if isinstance(item, int) else f".{item}"
    return out
