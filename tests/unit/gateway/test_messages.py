"""runtime.gateway.messages: HTTP JSON --> typed messages (strict JSON rules), and back."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
from typing import Any, Literal, Optional

import pydantic
import pytest

from runtime.gateway.errors import ApiError
from runtime.gateway.messages import _build_adapter, from_json, to_json


class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


@dataclasses.dataclass
class Item:
    name: str
    qty: int = 1


@dataclasses.dataclass
class Order:
    items: list[Item]
    mode: Literal["pickup", "delivery"] = "pickup"
    note: Optional[str] = None
    size: Size = Size.SMALL
    due: datetime.datetime | None = None
    price: float = 0.0
    by_name: dict[str, Item] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Ping:
    n: int


class Review(pydantic.BaseModel):
    stars: int
    order: Order | None = None


GOOD = {
    "items": [{"name": "tea", "qty": 2}, {"name": "cake"}],
    "mode": "delivery",
    "note": None,
    "size": "large",
    "due": "2026-01-02T03:04:05Z",
    "price": 3,
    "by_name": {"tea": {"name": "tea"}},
}


def invalid(data: Any, cls: type = Order, field: str = "message") -> ApiError:
    with pytest.raises(ApiError) as e:
        from_json([cls], data, None, "agent 'till'", field=field)
    return e.value


def test_good_input_builds_every_level():
    order = from_json([Order], GOOD, None, "agent 'till'")
    assert order == Order(
        items=[Item("tea", 2), Item("cake")],
        mode="delivery",
        note=None,
        size=Size.LARGE,
        due=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        price=3.0,
        by_name={"tea": Item("tea")},
    )
    assert all(type(i) is Item for i in order.items) and type(order.by_name["tea"]) is Item
    assert type(order.price) is float and order.size is Size.LARGE
    assert from_json([Order], {"items": [], "note": "ring"}, None, "a").note == "ring"


def test_pydantic_model_with_a_nested_dataclass():
    review = from_json([Review], {"stars": 5, "order": {"items": [{"name": "x"}]}}, None, "a")
    assert review == Review(stars=5, order=Order(items=[Item("x")]))


@pytest.mark.parametrize(
    ("cls", "data", "expected"),
    [
        (str, "hi", "hi"),
        (int, 3, 3),
        (float, 3, 3.0),
        (bool, True, True),
        (dict, {"a": [1, None]}, {"a": [1, None]}),
        (list, [1, "x"], [1, "x"]),
        (object, {"any": "thing"}, {"any": "thing"}),  # an ``Any`` handler takes any JSON
        (type(None), None, None),
    ],
)
def test_plain_types(cls, data, expected):
    value = from_json([cls], data, None, "a")
    assert value == expected and type(value) is type(expected)


def test_null_for_a_required_str_is_refused_with_its_path():
    err = invalid({"items": [{"name": None}]})
    assert err.status_code == 422 and err.param == "message.items.0.name"
    assert "message.items.0.name: Input should be a valid string" in err.message


def test_list_items_must_be_objects_of_the_dataclass():
    err = invalid({"items": ["tea"]})
    assert (err.status_code, err.param) == (422, "message.items.0")
    err = invalid({"items": [{"name": "tea", "colour": "red"}]})  # a field Item does not have
    assert (err.status_code, err.param) == (422, "message.items.0.colour")


def test_literal_and_enum_values_are_checked():
    err = invalid({"items": [], "mode": "teleport"})
    assert (err.status_code, err.param) == (422, "message.mode")
    assert "'pickup' or 'delivery'" in err.message
    err = invalid({"items": [], "size": "medium"})
    assert (err.status_code, err.param) == (422, "message.size")


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"items": [{"name": "a", "qty": "2"}]}, "message.items.0.qty"),  # no str -> int
        ({"items": [{"name": 5}]}, "message.items.0.name"),  # no int -> str
        ({"items": [], "due": "yesterday"}, "message.due"),
        ({"items": [], "price": "3"}, "message.price"),
        ({}, "message.items"),  # required
        ([], "message"),  # not an object at all
        ({"items": [], "by_name": {"x": {"qty": 1}}}, "message.by_name.x.name"),
    ],
)
def test_wrong_values_name_the_field(data, param):
    err = invalid(data)
    assert (err.status_code, err.param) == (422, param)
    assert err.message.startswith(param + ": ")


def test_unknown_field_is_named_as_the_e2e_test_expects():
    err = invalid({"m": 1}, Ping)
    assert (err.status_code, err.param) == (422, "message.m")
    assert invalid({"n": "x"}, Ping).param == "message.n"


def test_errors_are_under_the_bodys_field():
    assert invalid({"items": [{"name": None}]}, field="task").param == "task.items.0.name"


def test_choosing_among_several_types():
    assert from_json([Ping, Item], {"n": 1}, "Ping", "a") == Ping(1)
    with pytest.raises(ApiError) as e:
        from_json([Ping, Item], {"n": 1}, None, "agent 'a'")
    assert (e.value.status_code, e.value.param) == (422, "type")
    with pytest.raises(ApiError) as e:
        from_json([Ping, Item], {"n": 1}, "Pong", "agent 'a'")
    assert (e.value.status_code, e.value.param) == (422, "type")


class Opaque:
    """A class pydantic has no schema for."""


@dataclasses.dataclass
class HoldsOpaque:
    thing: Opaque


@dataclasses.dataclass
class Unresolved:
    ref: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821


def test_types_json_cannot_give_are_a_422_and_broken_hints_a_500():
    err = invalid({"thing": {}}, HoldsOpaque)
    assert (err.status_code, err.param) == (422, "message.thing")
    with pytest.raises(ApiError) as e:
        from_json([Unresolved], {"ref": 1}, None, "agent 'a'")
    assert e.value.status_code == 500 and "NotDefinedAnywhere" in e.value.message


def test_one_adapter_per_type():
    from_json([Order], GOOD, None, "a")
    hits = _build_adapter.cache_info().hits
    from_json([Order], GOOD, None, "a")
    assert _build_adapter.cache_info().hits == hits + 1


def test_to_json_writes_back_what_from_json_reads():
    order = from_json([Order], GOOD, None, "a")
    back = to_json(order)
    assert back == GOOD | {
        "items": [{"name": "tea", "qty": 2}, {"name": "cake", "qty": 1}],
        "price": 3.0,
        "by_name": {"tea": {"name": "tea", "qty": 1}},
    }
    assert from_json([Order], back, None, "a") == order


def test_to_json_plain_values():
    assert to_json({1: (1, 2), "s": Review(stars=1)}) == {
        "1": [1, 2],
        "s": {"stars": 1, "order": None},
    }
    assert to_json([Item("x")]) == [{"name": "x", "qty": 1}]
    assert to_json(b"text") == "text"
    assert to_json({"raw": b"\xff\xfe"}) == {"raw": base64.urlsafe_b64encode(b"\xff\xfe").decode()}
    assert to_json("plain") == "plain" and to_json(None) is None


# Through the gateway's real routes (conftest's app: the example agents, no Ray).


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/agents/researcher/invoke", {"message": {"topic": None}}, "message.topic"),
        (
            "/v1/tasks/archive",
            {"task": {"report": {"topic": "t", "draft": None, "review": "r"}}},
            "task.report.draft",
        ),
        ("/v1/tasks/archive", {"task": {"report": ["t"]}}, "task.report"),
    ],
)
def test_routes_answer_422_naming_the_field(client, auth, path, body, param):
    r = client.post(path, json=body, headers=auth)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param


def test_task_route_builds_the_nested_dataclass(client, auth):
    report = {"topic": "t", "draft": "d", "review": "r"}
    r = client.post("/v1/tasks/archive", json={"task": {"report": report}}, headers=auth)
    assert r.status_code == 202, r.text
