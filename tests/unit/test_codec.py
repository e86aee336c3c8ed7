"""agents.codec: round trips and hostile input."""

from __future__ import annotations

import dataclasses
import datetime
import os

import msgpack
import pydantic
import pytest

from agents import MessageDecodeError, MessageEncodeError, codec


@dataclasses.dataclass
class Inner:
    x: int
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner
    blob: bytes = b""
    computed: int = dataclasses.field(default=0, init=False)


class PModel(pydantic.BaseModel):
    title: str
    score: float
    inner: Inner | None = None
    when: datetime.datetime | None = None


class PNested(pydantic.BaseModel):
    items: list[PModel]


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**63),
        2**64 - 1,
        1.5,
        "",
        "héllo",
        b"\x00\xff",
        [],
        [1, [2, "x"]],
        {"a": 1, "b": {"c": None}},
        {1: "int keys"},
    ],
)
def test_plain_values_round_trip(value):
    assert codec.decode(codec.encode(value)) == value


def test_tuples_arrive_as_lists():
    assert codec.decode(codec.encode((1, 2))) == [1, 2]


def test_dataclass_round_trip_rebuilds_the_class():
    value = Outer("n", Inner(3, ["a"]), b"\x01")
    object.__setattr__(value, "computed", 42)
    back = codec.decode(codec.encode(value))
    assert type(back) is Outer and type(back.inner) is Inner
    assert back == value and back.computed == 42


def test_pydantic_round_trip_with_nested_dataclass_and_datetime():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    value = PNested(items=[PModel(title="t", score=0.5, inner=Inner(1), when=when)])
    back = codec.decode(codec.encode(value))
    assert type(back) is PNested and back == value
    assert type(back.items[0].inner) is Inner


def test_values_nest_in_plain_containers():
    value = {"q": [Inner(1), PModel(title="x", score=1)]}
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize("bad", [datetime.date(2026, 1, 1), {1, 2}, object(), 2**70])
def test_unencodable_values_raise_typed_error_naming_the_type(bad):
    with pytest.raises(MessageEncodeError) as e:
        codec.encode({"field": bad})
    assert isinstance(e.value, TypeError)  # also a TypeError, for generic handlers


def test_unencodable_field_inside_dataclass():
    @dataclasses.dataclass
    class WithSet:
        s: set

    with pytest.raises(MessageEncodeError, match="set"):
        codec.encode(WithSet({1}))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x92\x01",
        codec.encode([1, 2])[:-1],
        codec.encode("ok") + b"\x00",
        b"\xd9\x05abc",
    ],
)
def test_malformed_bytes_raise_decode_error(data):
    with pytest.raises(MessageDecodeError):
        codec.decode(data)


def test_random_bytes_never_raise_anything_but_decode_error():
    rng = os.urandom
    for _ in range(2000):
        data = rng(int.from_bytes(rng(1), "big") % 64)
        try:
            codec.decode(data)
        except MessageDecodeError:
            pass


def test_unknown_type_name_is_refused_without_importing_anything():
    payload = msgpack.packb(["os:system", {"command": "touch /tmp/pwned"}], use_bin_type=True)
    data = msgpack.packb(msgpack.ExtType(1, payload), use_bin_type=True)
    with pytest.raises(MessageDecodeError, match="unknown message type 'os:system'"):
        codec.decode(data)


def test_unknown_ext_code_and_bad_structure():
    with pytest.raises(MessageDecodeError, match="ext code 7"):
        codec.decode(msgpack.packb(msgpack.ExtType(7, b"\x90")))
    bad_inner = msgpack.packb(msgpack.ExtType(1, msgpack.packb([1, 2])))
    with pytest.raises(MessageDecodeError, match="expected"):
        codec.decode(bad_inner)


def test_fields_the_class_does_not_take_are_refused():
    good = codec.encode(Inner(1))
    name = codec.type_name(Inner)
    forged = msgpack.packb(
        msgpack.ExtType(1, msgpack.packb([name, {"x": 1, "evil": 2}])), use_bin_type=True
    )
    assert codec.decode(good) == Inner(1)
    with pytest.raises(MessageDecodeError, match="evil"):
        codec.decode(forged)
    invalid = msgpack.packb(
        msgpack.ExtType(2, msgpack.packb([codec.type_name(PModel), {"title": 1}])),
        use_bin_type=True,
    )
    with pytest.raises(MessageDecodeError, match="invalid fields"):
        codec.decode(invalid)


def test_register_rejects_non_message_types():
    with pytest.raises(TypeError, match="not a message type"):
        codec.register(int)


def test_a_failed_encode_leaves_the_codec_usable():
    # Packers are reused; one that failed half-way must not leak bytes into the next message.
    with pytest.raises(MessageEncodeError):
        codec.encode([Inner(1), {"bad": {1, 2}}])
    assert codec.decode(codec.encode([Inner(2)])) == [Inner(2)]


# Never encoded anywhere: only registering Basket can make the others known.
@dataclasses.dataclass
class Line:
    sku: str


class Meta(pydantic.BaseModel):
    source: str


@dataclasses.dataclass
class Node:  # a cycle through a field must end
    children: list[Node]


@dataclasses.dataclass
class Basket:
    lines: list[Line]
    by_id: dict[str, Line | None]
    meta: Meta | None = None
    tree: Node | None = None


def test_register_also_registers_the_message_types_its_fields_name():
    assert Line not in codec.registered()
    codec.register(Basket)
    assert {Basket, Line, Meta, Node} <= set(codec.registered())
    payload = msgpack.packb(
        msgpack.ExtType(1, msgpack.packb([codec.type_name(Line), {"sku": "a"}])), use_bin_type=True
    )
    assert codec.decode(payload) == Line("a")


def test_register_tolerates_field_hints_that_do_not_resolve():
    @dataclasses.dataclass
    class Later:
        ref: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821

    assert codec.register(Later) is Later
    assert Later in codec.registered()
