"""The one wire format of raygent: messages, replies, state values and tasks as msgpack bytes.

What travels:

* plain msgpack values — ``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes``, ``list``
  (tuples arrive as lists) and ``dict`` — as themselves;
* a ``@dataclass`` instance as ext type 1 holding ``[type name, {field: value}]``;
* a pydantic model as ext type 2 holding ``[type name, model_dump(mode="json")]``.

Nesting works in any direction (a dataclass field holding a pydantic model holding a list...).

The type name is ``module:QualName``. The receiving side rebuilds the class **only from its own
registry**: a type becomes known when a handler names it in a type hint, when a value of it is
encoded in this process, or by :func:`register`. Decoding never imports a module or calls anything
that the bytes name, so hostile input can at worst raise :class:`MessageDecodeError` — which is why
there is no pickle here.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Ping:
    ...     n: int
    >>> decode(encode(Ping(3)))
    Ping(n=3)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pydantic

from agents.errors import MessageDecodeError, MessageEncodeError

__all__ = ["decode", "encode", "is_message_type", "register", "type_name"]

_EXT_DATACLASS = 1
_EXT_PYDANTIC = 2

# type name -> class. Written when a class is registered; read on every decode.
_registry: dict[str, type] = {}


def type_name(value_or_type: Any) -> str:
    """The wire name of a type (or of a value's type): ``module:QualName``."""
    cls = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    return f"{cls.__module__}:{cls.__qualname__}"


def is_message_type(cls: Any) -> bool:
    """Whether ``cls`` is a structured message type: a dataclass or a pydantic model class."""
    return isinstance(cls, type) and (
        dataclasses.is_dataclass(cls) or issubclass(cls, pydantic.BaseModel)
    )


def register(cls: type) -> type:
    """Make a dataclass or pydantic model decodable in this process. Usable as a decorator.

    Handlers register the types in their hints, so most code never calls this; a process that
    only *receives* a type no handler of its names (say, a reply type) needs it.

    Raises:
        TypeError: ``cls`` is neither a dataclass nor a pydantic model.
    """
    if not is_message_type(cls):
        raise TypeError(
            f"{cls!r} is not a message type: decorate it with @dataclass or subclass "
            "pydantic.BaseModel"
        )
    # Re-running a module (reload, notebooks) defines a new class under the same name; the
    # newest definition wins, as it would for any other module attribute.
    _registry[type_name(cls)] = cls
    return cls


def encode(value: Any) -> bytes:
    """Encode a message, reply, state value or task.

    Raises:
        MessageEncodeError: the value holds something that is not a dataclass, pydantic model or
            msgpack value; the message names the offending type.
    """
    try:
        return msgpack.packb(value, default=_encode_ext, use_bin_type=True, datetime=False)
    except MessageEncodeError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise MessageEncodeError(f"cannot encode {type_name(value)}: {exc}") from exc


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Decode bytes made by :func:`encode`.

    Raises:
        MessageDecodeError: malformed bytes, trailing bytes, an unknown ext code, an unregistered
            type name, or fields that the registered class does not accept.
    """
    try:
        return msgpack.unpackb(
            data, ext_hook=_decode_ext, raw=False, strict_map_key=False, use_list=True
        )
    except MessageDecodeError:
        raise
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise MessageDecodeError(f"malformed message bytes: {exc}") from exc


def _encode_ext(obj: Any) -> msgpack.ExtType:
    cls = type(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        register(cls)
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return msgpack.ExtType(_EXT_DATACLASS, _pack_inner([type_name(cls), fields]))
    if isinstance(obj, pydantic.BaseModel):
        register(cls)
        body = obj.model_dump(mode="json", round_trip=True)
        return msgpack.ExtType(_EXT_PYDANTIC, _pack_inner([type_name(cls), body]))
    raise MessageEncodeError(
        f"cannot encode a value of type {type_name(obj)}: messages are dataclasses, pydantic "
        "models or msgpack values (str, int, float, bool, None, bytes, list, dict)"
    )


def _pack_inner(value: Any) -> bytes:
    return msgpack.packb(value, default=_encode_ext, use_bin_type=True, datetime=False)


def _decode_ext(code: int, data: bytes) -> Any:
    if code not in (_EXT_DATACLASS, _EXT_PYDANTIC):
        raise MessageDecodeError(f"unknown msgpack ext code {code}")
    inner = msgpack.unpackb(
        data, ext_hook=_decode_ext, raw=False, strict_map_key=False, use_list=True
    )
    if (
        not isinstance(inner, list)
        or len(inner) != 2
        or not isinstance(inner[0], str)
        or not isinstance(inner[1], dict)
    ):
        raise MessageDecodeError("malformed structured message: expected [type name, fields]")
    name, fields = inner
    cls = _registry.get(name)
    if cls is None:
        raise MessageDecodeError(
            f"unknown message type {name!r}: no handler in this process names it; "
            "call agents.register_message() on the class where it is received"
        )
    try:
        if code == _EXT_PYDANTIC:
            if not issubclass(cls, pydantic.BaseModel):
                raise MessageDecodeError(f"{name!r} is registered but is not a pydantic model")
            return cls.model_validate(fields)
        if not dataclasses.is_dataclass(cls):
            raise MessageDecodeError(f"{name!r} is registered but is not a dataclass")
        return _build_dataclass(cls, fields)
    except pydantic.ValidationError as exc:
        raise MessageDecodeError(f"invalid fields for {name!r}: {exc}") from exc
    except TypeError as exc:
        raise MessageDecodeError(f"invalid fields for {name!r}: {exc}") from exc


def _build_dataclass(cls: type, fields: dict[str, Any]) -> Any:
    declared = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(fields) - set(declared)
    if unknown:
        raise TypeError(f"unexpected field(s) {sorted(unknown)}")
    init_args = {k: v for k, v in fields.items() if declared[k].init}
    obj = cls(**init_args)
    for k, v in fields.items():
        if not declared[k].init:
            object.__setattr__(obj, k, v)  # works for frozen dataclasses too
    return obj
