"""JSON in, typed messages out, and back: how HTTP callers reach agents that take dataclasses.

An agent's handlers are routed by the *type* of the message, so a JSON body has to become an
instance of one of the types the agent (or a queue's workers) accepts: the only one, or the one
the body names in ``type``. A value that does not fit is a 422 whose ``param`` is the path of
the first field at fault (``message.items.0.name``), and nothing is sent.

Converting JSON --> message is pydantic's job (one ``TypeAdapter`` per type, built on first use
and cached), for dataclasses, pydantic models and plain types alike, rather than a hand-written
walk over type hints, which let wrong input through (``null`` for a ``str``, a
``list[Item]`` left as dicts, a ``Literal`` unchecked). The rules are JSON's, strictly:

* the body is validated as JSON text (``validate_json``), in strict mode: a JSON string is not an
  ``int`` and ``null`` is not a ``str``, but the types JSON spells as strings parse from them
  (``datetime``, ``UUID``, ``Enum`` values, ``bytes`` as UTF-8) and an integer is a ``float``;
* dataclasses are built all the way down (nested, in lists and dicts, in ``Optional``), reject
  fields they do not have, and ``Literal`` and ``Enum`` values are checked;
* a pydantic model keeps its own configuration (its ``extra``, its validators), as it would
  anywhere else;
* a field of a class pydantic does not know is checked with ``isinstance`` (JSON never makes
  one: a 422, not a crash).

Message --> JSON (:func:`to_json`) is pydantic's serializer too (``dump_python(mode="json")``),
so what a route accepts and what it answers are spelled the same way.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import pydantic

from runtime.gateway.errors import ApiError

__all__ = ["from_json", "to_json"]

_STRICT_JSON = pydantic.ConfigDict(strict=True, extra="forbid", arbitrary_types_allowed=True)
_UNKNOWN_FIELD = frozenset({"unexpected_keyword_argument", "extra_forbidden"})


def from_json(
    types: Sequence[type], data: Any, type_name: str | None, what: str, field: str = "message"
) -> Any:
    """Build a message of one of ``types`` from JSON ``data``.

    Args:
        types: what the receiver accepts.
        data: the decoded JSON value.
        type_name: the class name the caller chose, or None to use the only accepted type.
        what: the receiver, for messages (``agent 'writer'``).
        field: the body's field ``data`` came from (``message``, ``task``): errors name the
            fields under it (``task.report.topic``).

    Raises:
        ApiError: 422 when no type fits or the value does not fit the type (``param`` is the
            path of the field at fault); 500 when the receiver's type cannot be validated from
            JSON at all (the agent's bug, not the caller's).

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Item:
        ...     name: str
        >>> from_json([Item], {"name": "tea"}, None, "agent 'till'")
        Item(name='tea')
    """
    names = sorted(t.__name__ for t in types)
    if type_name is not None:
        chosen = [t for t in types if t.__name__ == type_name]
        if not chosen:
            raise ApiError(422, f"{what} accepts {names}, not {type_name!r}", param="type")
    elif len(types) == 1:
        chosen = list(types)
    else:
        raise ApiError(422, f"{what} accepts {names}: name one in 'type'", param="type")
    cls = chosen[0]
    adapter = _adapter(cls, what)
    try:
        # Back to JSON text: JSON mode is what parses datetimes, enums and bytes from strings
        # while staying strict about everything else. ``data`` came from JSON, so it dumps.
        (value,) = adapter.validate_json(json.dumps([data]))
    except pydantic.ValidationError as exc:
        raise _invalid(exc, field) from None
    return value


@functools.cache
def _build_adapter(cls: type) -> pydantic.TypeAdapter[Any]:
    # A one-item tuple around the type: pydantic takes a config only for a type that has none
    # of its own, and stdlib dataclasses nested in it inherit that config (so every level
    # forbids unknown fields); pydantic models keep theirs.
    adapter = pydantic.TypeAdapter(tuple[cls], config=_STRICT_JSON)  # type: ignore[valid-type]
    if not adapter.pydantic_complete:  # a hint that does not resolve: fail here, not per call
        adapter.rebuild(raise_errors=True)
    return adapter


def _adapter(cls: type, what: str) -> pydantic.TypeAdapter[Any]:
    try:
        return _build_adapter(cls)
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, NameError) as exc:
        # e.g. a field hint naming a class imported only under TYPE_CHECKING
        raise ApiError(
            500,
            f"{what}: message type {cls.__name__} cannot be built from JSON: "
            f"{str(exc).splitlines()[0]}",
            type="server_error",
        ) from exc


def _invalid(exc: pydantic.ValidationError, field: str) -> ApiError:
    """A 422 naming one error's field path under ``field`` (the tuple's index dropped): a field
    the type does not have if there is one (often a misspelling of a missing one), else the
    first."""
    errors = exc.errors(include_url=False)
    err = min(errors, key=lambda e: e["type"] not in _UNKNOWN_FIELD)  # min keeps the first
    where = ".".join([field, *(str(p) for p in err["loc"][1:])])
    msg = err["msg"]
    if err["type"] == "needs_python_object":  # pydantic's wording speaks to the type's author
        msg = "this field's type is not one JSON can give (no JSON value is an instance of it)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ApiError(422, f"{where}: {msg}{more}", param=where)


_ANY: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Any)
# JSON has no bytes: pydantic writes them as UTF-8 text, or as (URL-safe) base64.
_ANY_BASE64: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
    Any, config=pydantic.ConfigDict(ser_json_bytes="base64")
)


def to_json(value: Any) -> Any:
    """A reply as JSON values: dataclasses and pydantic models as objects, tuples and sets as
    lists, datetimes as ISO 8601, enums as their values, dict keys as strings; ``bytes`` as
    UTF-8 text (URL-safe base64, for the whole reply, if any of them is not UTF-8).

    Serialized by each value's own type (pydantic's inference), not by declared field types, so
    a reply that does not match its hints is still written as it is rather than warned about.
    """
    try:
        return _ANY.dump_python(value, mode="json")
    except UnicodeDecodeError:
        return _ANY_BASE64.dump_python(value, mode="json")
