"""Validators for stretto's input files (plans, stretto.toml), built with pydantic-core.

They are pydantic's own validators, built from a core schema written here instead of from
``BaseModel`` classes. The difference is start-up time: importing pydantic and building the
models took 100-200 ms before the first agent of every run could start; pydantic-core alone
imports in about half that and builds a validator in under a millisecond. Error types and
locations are exactly pydantic's, so the located error messages do not change.

Import this module only when validating: it imports pydantic-core. Mappings validated by
:func:`model` become instances of plain :class:`Node` subclasses (attribute access);
:func:`table` gives plain dicts. pydantic itself is imported only to write the JSON Schema.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticKnownError, SchemaValidator, ValidationError
from pydantic_core import core_schema as cs

__all__ = [
    "Field",
    "Node",
    "ValidationError",
    "at_least",
    "build",
    "field",
    "json_schema",
    "literal",
    "model",
    "table",
    "validator",
]

_REQUIRED: Any = object()
_STRICT = cs.CoreConfig(strict=True)  # a table's keys use its own config, not the validator's


class Node:
    """What a validated :func:`model` mapping becomes: its keys are attributes."""

    __slots__ = (
        "__dict__",
        "__pydantic_extra__",
        "__pydantic_fields_set__",
        "__pydantic_private__",
    )
    model_config: dict[str, Any] = {}  # read by pydantic's JSON Schema generator

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a :func:`model` or :func:`table`."""

    schema: cs.CoreSchema
    required: bool
    description: str | None


def field(
    schema: cs.CoreSchema,
    default: Any = _REQUIRED,
    *,
    factory: Callable[[], Any] | None = None,
    description: str | None = None,
) -> Field:
    """A key: required unless ``default`` or ``factory`` is given. A default is validated
    too, so a table's default ``{}`` comes out filled with its own keys' defaults."""
    if factory is not None and default is not _REQUIRED:
        raise TypeError("give a default or a factory, not both")
    if factory is not None:
        schema = cs.with_default_schema(schema, default_factory=factory, validate_default=True)
    elif default is not _REQUIRED:
        schema = cs.with_default_schema(schema, default=default, validate_default=True)
    return Field(schema, default is _REQUIRED and factory is None, description)


def literal(values: Sequence[str]) -> cs.CoreSchema:
    return cs.literal_schema(list(values))


def validator(check: Callable[[Any], Any], schema: cs.CoreSchema) -> cs.CoreSchema:
    """``schema``, then ``check(value)``: a ``ValueError`` it raises is a ``value_error``."""
    return cs.no_info_after_validator_function(check, schema)


def at_least(bound: int, schema: cs.CoreSchema) -> cs.CoreSchema:
    """``schema``, then ``value >= bound`` and finite. For a union (``int | float``), where a
    bound on each member would report a type error from the other member instead of one range
    error."""

    def check(value: Any) -> Any:
        if not value >= bound:  # also refuses NaN
            raise PydanticKnownError("greater_than_equal", {"ge": bound})
        if value == math.inf:
            raise PydanticKnownError("finite_number")
        return value

    js = {"pydantic_js_updates": {"minimum": bound}}
    return cs.no_info_after_validator_function(check, schema, metadata=js)


def model(cls: type[Node], fields: dict[str, Field], *, title: str) -> cs.CoreSchema:
    """A mapping with exactly ``fields`` (no others), validated into a ``cls`` instance."""
    cls.model_config = {"title": title, "extra": "forbid"}
    body = cs.model_fields_schema(
        {name: _model_field(f) for name, f in fields.items()},
        model_name=title,
        extra_behavior="forbid",
    )
    config = cs.CoreConfig(title=title, strict=True, extra_fields_behavior="forbid")
    return cs.model_schema(cls, body, config=config, ref=title)


def table(fields: dict[str, Field]) -> cs.CoreSchema:
    """A mapping with exactly ``fields`` (no others), validated into a plain dict."""
    return cs.typed_dict_schema(
        {name: cs.typed_dict_field(f.schema, required=f.required) for name, f in fields.items()},
        extra_behavior="forbid",
        strict=True,
        config=_STRICT,
    )


def build(schema: cs.CoreSchema) -> SchemaValidator:
    """The validator of ``schema``, strict (no type coercion) throughout."""
    return SchemaValidator(schema, _STRICT)


def json_schema(schema: cs.CoreSchema) -> dict[str, Any]:
    """The JSON Schema of ``schema`` (this imports pydantic)."""
    from pydantic.json_schema import GenerateJsonSchema

    return GenerateJsonSchema().generate(schema)


def _model_field(f: Field) -> cs.ModelField:
    if f.description is None:
        return cs.model_field(f.schema)
    return cs.model_field(
        f.schema, metadata={"pydantic_js_updates": {"description": f.description}}
    )
