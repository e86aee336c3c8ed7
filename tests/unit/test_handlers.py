"""@handler: discovery, routing by type hint, and errors at class definition."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pydantic
import pytest

from agents import Agent, Context, NoHandler, handler


@dataclass
class Question:
    text: str


@dataclass
class Other:
    n: int


class Answer(pydantic.BaseModel):
    text: str


class Router(Agent):
    @handler
    async def on_question(self, msg: Question, ctx: Context) -> str:
        return "question"

    @handler
    async def on_many(self, msg: Other | Answer, ctx: Context) -> str:
        return "union"

    @handler
    async def on_int(self, msg: int, ctx: Context) -> str:
        return "int"

    @handler
    async def on_bool(self, msg: bool, ctx: Context) -> str:
        return "bool"

    @handler
    async def on_dict(self, msg: dict[str, Any], ctx: Context) -> str:
        return "dict"

    @handler(topic="news")
    async def on_news(self, msg: Question, ctx: Context) -> None:
        return None

    @handler(queue="jobs")
    async def on_job(self, msg: Any, ctx: Context) -> None:
        return None


def route(msg, channel="direct", key=None):
    return Router.routes().find(channel, key, msg).name


def test_default_name_is_snake_case():
    class LLMResearchAssistant(Agent):
        pass

    assert Router.name == "router"
    assert LLMResearchAssistant.name == "llm_research_assistant"


def test_routes_by_type_hint_union_and_mro():
    assert route(Question("x")) == "on_question"
    assert route(Other(1)) == "on_many"
    assert route(Answer(text="a")) == "on_many"
    assert route(True) == "on_bool"  # bool is an int, but the closer class wins
    assert route(3) == "on_int"
    assert route({"a": 1}) == "on_dict"


def test_topic_and_queue_routes_are_separate_from_direct():
    assert route(Question("x"), "topic", "news") == "on_news"
    assert route(object(), "queue", "jobs") == "on_job"  # Any is the catch-all
    assert Router.routes().keys("topic") == ["news"]
    assert Router.routes().keys("queue") == ["jobs"]
    with pytest.raises(NoHandler) as e:
        route(Other(1), "topic", "news")
    assert "router" in str(e.value) and "Other" in str(e.value)


def test_unhandled_type_names_agent_type_and_alternatives():
    with pytest.raises(NoHandler) as e:
        route(1.5)
    assert e.value.agent == "router"
    assert e.value.message_type == "float"
    assert "Question" in str(e.value)


def test_handler_without_message_hint_fails_at_definition():
    with pytest.raises(TypeError, match=r"no type hint on its message parameter 'msg'.*msg: "):

        class Bad(Agent):
            @handler
            async def h(self, msg, ctx: Context) -> None: ...


def test_handler_without_return_hint_fails_at_definition():
    with pytest.raises(TypeError, match=r"no return type hint.*-> None"):

        class Bad(Agent):
            @handler
            async def h(self, msg: str, ctx: Context): ...


def test_non_async_handler_fails_at_definition():
    with pytest.raises(TypeError, match=r"not async: write `async def h"):

        class Bad(Agent):
            @handler
            def h(self, msg: str, ctx: Context) -> None: ...


def test_a_generator_handler_streams_and_needs_an_iterator_hint():
    class Streamer(Agent):
        @handler
        async def h(self, msg: str, ctx: Context) -> AsyncIterator[Question]:
            yield Question(msg)

    (info,) = Streamer.routes().handlers
    assert info.streams and info.channel == "direct"
    with pytest.raises(TypeError, match=r"-> AsyncIterator\[ItemType\]"):

        class Bad(Agent):
            @handler
            async def h(self, msg: str, ctx: Context) -> str:
                yield msg


@pytest.mark.parametrize("where", [{"topic": "t"}, {"queue": "q"}])
def test_topic_and_queue_handlers_cannot_stream(where):
    with pytest.raises(TypeError, match="no caller to stream to"):

        class Bad(Agent):
            @handler(**where)
            async def h(self, msg: str, ctx: Context) -> AsyncIterator[str]:
                yield msg


def test_two_handlers_for_one_type_fail_at_definition():
    with pytest.raises(TypeError, match=r"'a' and 'b' both take Question"):

        class Bad(Agent):
            @handler
            async def a(self, msg: Question, ctx: Context) -> None: ...

            @handler
            async def b(self, msg: Question, ctx: Context) -> None: ...


def test_same_type_on_different_channels_is_fine():
    class Fine(Agent):
        @handler
        async def a(self, msg: Question, ctx: Context) -> None: ...

        @handler(topic="t")
        async def b(self, msg: Question, ctx: Context) -> None: ...

    assert Fine.routes().find("topic", "t", Question("x")).name == "b"


def test_wrong_arity_fails_with_signature_to_write():
    with pytest.raises(TypeError, match=r"exactly \(self, msg, ctx\)"):

        class Bad(Agent):
            @handler
            async def h(self, msg: str) -> None: ...


def test_unresolvable_hint_fails_at_definition():
    with pytest.raises(TypeError, match="cannot resolve the type hints"):

        class Bad(Agent):
            @handler
            async def h(self, msg: NotDefinedAnywhere, ctx: Context) -> None: ...  # noqa: F821


def test_topic_and_queue_together_is_rejected():
    with pytest.raises(TypeError, match="not both"):
        handler(topic="a", queue="b")


def test_subclass_override_replaces_parent_handler():
    class Child(Router):
        @handler
        async def on_question(self, msg: Question, ctx: Context) -> str:
            return "child"

    assert Child.name == "child"
    assert Child.routes().find("direct", None, Question("q")).func is Child.on_question
    assert Child.routes().find("direct", None, 1).name == "on_int"


def test_invalid_agent_name_is_rejected():
    with pytest.raises(TypeError, match="lowercase"):

        class Bad(Agent):
            name = "Has Spaces"
