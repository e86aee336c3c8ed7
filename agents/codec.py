"""The one wire format of raygent: messages, replies, state values and tasks as msgpack bytes.

What travels:

* plain msgpack values — ``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes``, ``list``
  (tuples arrive as lists) and ``dict`` — as themselves;
* a ``@dataclass`` instance as ext type 1 holding ``[type name, {field: value}]``;
* a pydantic model as ext type 2 holding ``[type name, model_dump(mode="json")]``.

Nesting works in any direction (a dataclass field holding a pydantic model holding a list...).

The type name is ``module:QualName``. The receiving side rebuilds the class **only from its own
registry**: a type becomes known when a handler names it in a type hint, when a value of it is
encoded in this process, or by :func:`register` — and with it every message type its fields name
(``items: list[Item]`` registers ``Item``), so a nested reply decodes where only the outer type is
hinted. Decoding never imports a module or calls anything that the bytes name, so hostile input
can at worst raise :class:`MessageDecodeError` — which is why there is no pickle here.

That is also why a type defined in ``__main__`` (a script, a notebook) decodes on a Ray replica
at all: the replica never imports ``__main__`` (its own ``__main__`` is Ray's worker), it
registers the classes the driver shipped with the application
(``runtime.cluster.shipping``), under the same ``__main__:Name``.

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
import typing
from typing import Any

import msgpack
import pydantic

from agents.errors import MessageDecodeError, MessageEncodeError

__all__ = ["decode", "encode", "is_message_type", "register", "registered", "type_name"]

_EXT_DATACLASS = 1
_EXT_PYDANTIC = 2

# type name -> class. Written when a class is registered; read on every decode.
_registry: dict[str, type] = {}
# class -> (ext code, wire name, field names): what encoding a structured value needs, worked
# out once per class (type checks against pydantic's metaclass are slow on a hot path).
_encoders: dict[type, tuple[int, str, tuple[str, ...]]] = {}


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
    _register_tree(cls)
    return cls


def registered() -> tuple[type, ...]:
    """Every message type this process can decode (a snapshot), e.g. to ship to replicas."""
    return tuple(_registry.values())


def _register_tree(cls: type) -> None:
    name = type_name(cls)
    if _registry.get(name) is cls:
        return  # known already, and so are its fields' types (this also ends cycles)
    # Re-running a module (reload, notebooks) defines a new class under the same name; the
    # newest definition wins, as it would for any other module attribute.
    _registry[name] = cls
    for hint in _field_hints(cls):
        for t in _classes_in(hint):
            if typing.get_origin(t) is None and is_message_type(t):
                _register_tree(t)


def _field_hints(cls: type) -> list[Any]:
    """The annotations of a message type's fields, as far as they resolve here."""
    if not dataclasses.is_dataclass(cls):
        fields = cls.model_fields  # type: ignore[attr-defined]  # a pydantic model
        return [f.annotation for f in fields.values()]  # pydantic resolved them
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        # A name only imported under TYPE_CHECKING, or a class rebuilt from another process's
        # pickle whose module globals are not this one's: best effort, the unresolved fields'
        # types register when first encoded or by an explicit register().
        return [f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)]
    return [hints[f.name] for f in dataclasses.fields(cls) if f.name in hints]


def _classes_in(hint: Any) -> list[Any]:
    """``hint`` and every type argument in it: ``dict[str, list[Item] | None]`` -> ..., Item."""
    out = [hint]
    for arg in typing.get_args(hint):
        out.extend(_classes_in(arg))
    return out


def encode(value: Any) -> bytes:
    """Encode a message, reply, state value or task.

    Raises:
        MessageEncodeError: the value holds something that is not a dataclass, pydantic model or
            msgpack value; the message names the offending type.
    """
    try:
        return _pack(value)
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
    spec = _encoders.get(cls)
    if spec is None:
        spec = _encoders[cls] = _encoder_for(cls)
    code, name, names = spec
    if code == _EXT_DATACLASS:
        body = {n: getattr(obj, n) for n in names}
    else:
        body = obj.model_dump(mode="json", round_trip=True)
    return msgpack.ExtType(code, _pack_inner([name, body]))


def _encoder_for(cls: type) -> tuple[int, str, tuple[str, ...]]:
    if dataclasses.is_dataclass(cls):
        register(cls)
        return _EXT_DATACLASS, type_name(cls), tuple(f.name for f in dataclasses.fields(cls))
    if issubclass(cls, pydantic.BaseModel):
        register(cls)
        return _EXT_PYDANTIC, type_name(cls), ()
    raise MessageEncodeError(
        f"cannot encode a value of type {type_name(cls)}: messages are dataclasses, pydantic "
        "models or msgpack values (str, int, float, bool, None, bytes, list, dict)"
    )


def _pack_inner(value: Any) -> bytes:
    return _pack(value)


# Packers are reused: ``msgpack.packb`` makes a Packer (with a large buffer) per call, and a
# packb nested inside another's ``default`` hook -- as every structured message is -- measured
# ~17 us instead of ~1 us here, the buffer allocation going to mmap each time. One packer per
# nesting level, taken from and given back to this free list (list pop/append are atomic).
_free_packers: list[msgpack.Packer] = []


def _pack(value: Any) -> bytes:
    try:
        packer = _free_packers.pop()
    except IndexError:
        packer = msgpack.Packer(default=_encode_ext, use_bin_type=True, datetime=False)
    try:
        return packer.pack(value)
    except BaseException:
        packer.reset()
        raise
    finally:
        _free_packers.append(packer)


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
    late = _late_fields.get(cls)
    if late is None:
        late = _late_fields[cls] = frozenset(f.name for f in dataclasses.fields(cls) if not f.init)
    if not late:
        return cls(**fields)  # an unknown field is a TypeError naming it
    obj = cls(**{k: v for k, v in fields.items() if k not in late})
    for k in late & fields.keys():
        object.__setattr__(obj, k, fields[k])  # works for frozen dataclasses too
    return obj


# dataclass -> names of its init=False fields, which are set after construction.
_late_fields: dict[type, frozenset[str]] = {}
