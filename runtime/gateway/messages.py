"""JSON in, typed messages out, and back: how HTTP callers reach agents that take dataclasses.

An agent's handlers are routed by the *type* of the message, so a JSON body has to become an
instance of one of the types the agent (or a queue's workers) accepts: the only one, or the one
the body names in ``type``. Dataclasses are built from the JSON object's fields (nested
dataclass fields too), pydantic models are validated with their own rules, and plain types
(``str``, ``dict``, ...) take the value as it is. A value that does not fit is a 422 naming the
type and the field, and nothing is sent.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

import pydantic

from runtime.gateway.errors import ApiError

__all__ = ["from_json", "to_json"]


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
        ApiError: 422 when no type fits or the value does not fit the type.
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
    return _build(chosen[0], data, field)


def _build(cls: Any, data: Any, path: str) -> Any:
    if isinstance(cls, type) and issubclass(cls, pydantic.BaseModel):
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join([path, *(str(p) for p in err["loc"])])
            raise ApiError(422, f"{where}: {err['msg']}", param=where) from None
    if dataclasses.is_dataclass(cls):
        return _build_dataclass(cls, data, path)
    origin = typing.get_origin(cls) or cls
    if not isinstance(origin, type) or isinstance(data, origin):
        return data  # Any, Literal, a TypeVar...: not second-guessed here
    if origin is float and isinstance(data, int) and not isinstance(data, bool):
        return float(data)
    raise ApiError(422, f"{path}: expected {getattr(cls, '__name__', cls)}", param=path)


def _build_dataclass(cls: Any, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ApiError(422, f"{path}: expected a JSON object for {cls.__name__}", param=path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}.{unknown[0]}"
        raise ApiError(422, f"{where}: {cls.__name__} has no field {unknown[0]!r}", param=where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required:
                where = f"{path}.{name}"
                raise ApiError(422, f"{where}: required by {cls.__name__}", param=where)
            continue
        kwargs[name] = _field(hints.get(name, Any), data[name], f"{path}.{name}")
    return cls(**kwargs)


def _field(hint: Any, value: Any, path: str) -> Any:
    """A field's value: nested dataclasses and models are built; other values are checked
    against simple hints (``int``, ``str``, ``list[...]``...) and passed through."""
    if value is None:
        return None
    for option in typing.get_args(hint) if _is_union(hint) else (hint,):
        if dataclasses.is_dataclass(option) or (
            isinstance(option, type) and issubclass(option, pydantic.BaseModel)
        ):
            if isinstance(value, dict):
                return _build(option, value, path)
            continue
        try:
            return _build(option, value, path)
        except ApiError:
            continue
    expected = getattr(hint, "__name__", str(hint))
    raise ApiError(422, f"{path}: expected {expected}, got {type(value).__name__}", param=path)


def _is_union(hint: Any) -> bool:
    import types as pytypes

    return typing.get_origin(hint) in (typing.Union, pytypes.UnionType)


def to_json(value: Any) -> Any:
    """A reply as JSON: dataclasses and pydantic models as objects, tuples as lists."""
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
