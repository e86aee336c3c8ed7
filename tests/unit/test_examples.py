"""The example pipeline on LocalRuntime with a scripted model: every way agents talk."""

from __future__ import annotations

import json

from agents import TaskState
from agents.testing import ScriptedModel
from examples.research import Archivist, Critic, Report, Researcher, ResearchRequest, Writer
from runtime import LocalRuntime

AGENTS = [Researcher, Writer, Critic, Archivist]


async def test_research_pipeline_uses_send_publish_state_and_tasks():
    model = ScriptedModel(["Draft on rings.", "Too short.", "Draft on queues.", "Fine."])
    async with LocalRuntime(AGENTS, {"default": model}) as rt:
        first = await rt.send("researcher", ResearchRequest("rings", max_tokens=16))
        assert first == Report("rings", "Draft on rings.", "Too short.", first.archive_task)
        second = await rt.send("researcher", ResearchRequest("queues"))
        task = await rt.wait_task(first.archive_task, timeout_s=5)
        assert task.state is TaskState.DONE and task.result == "archive:rings"
        await rt.wait_task(second.archive_task, timeout_s=5)
        await rt.shutdown()
        assert rt.state["reports_written"] == 2
        assert rt.state["reports_seen"] == 2
        assert rt.state["last_topic"] == "queues"
        assert rt.state["archive:rings"] == {"draft": "Draft on rings.", "review": "Too short."}
    writer_prompt, critic_prompt = model.calls[0], model.calls[1]
    assert writer_prompt.params.max_tokens == 16 and writer_prompt.params.temperature == 0
    assert "Draft on rings." in critic_prompt.prompt[-1]["content"]
    by_name = {}
    for span in rt.spans:
        by_name.setdefault(span.name, []).append(span)
    research = by_name["researcher.research"][0]
    draft, review = by_name["writer.draft"][0], by_name["critic.review"][0]
    # One trace per request, across agents: writer and critic are children of the researcher.
    assert draft.parent_span_id == review.parent_span_id == research.context.span_id
    assert draft.context.trace_id == research.context.trace_id
    assert research.attributes["research.topic"] == "rings"


async def test_concierge_uses_two_tools_and_the_guide_agent_as_a_tool():
    from agents.testing import tool_calls
    from examples.concierge import Answer, Ask, Concierge, Guide

    plan = {"city": "Kyoto", "days": 3, "pace": "relaxed", "outdoors": True}
    model = ScriptedModel(
        [
            tool_calls(
                ("weather", {"city": "Oslo", "unit": "F"}),
                ("convert", {"amount": 100, "source": "EUR", "target": "NOK"}),
                ("guide", {"city": "Kyoto", "days": 3}),
            ),
            json.dumps(plan),  # the guide's own model call: JSON of a Plan
            "Cold in Oslo; 100 EUR is 1170 NOK; a relaxed Kyoto plan.",
        ]
    )
    async with LocalRuntime([Concierge, Guide], {"default": model}) as rt:
        answer = await rt.send("concierge", Ask("Oslo weather, EUR to NOK, 3 days in Kyoto?"))
    assert isinstance(answer, Answer)
    assert answer.text == "Cold in Oslo; 100 EUR is 1170 NOK; a relaxed Kyoto plan."
    weather, convert, guide = answer.calls
    assert weather.startswith("weather(") and weather.endswith(
        '-> {"city":"Oslo","temperature":39,"unit":"F","sky":"cloudy"}'
    )
    assert convert.endswith("-> 1170.0")
    assert guide.endswith("-> " + json.dumps(plan, separators=(",", ":")))
    concierge_call, guide_call, _ = model.calls
    assert [t["function"]["name"] for t in concierge_call.params.tools] == [
        "weather",
        "convert",
        "guide",
    ]
    # the guide asked for JSON of a Plan: the engine enforces that schema
    schema = guide_call.params.response_format["json_schema"]["schema"]
    assert set(schema["required"]) == {"city", "days", "pace", "outdoors"}


async def test_concierge_forces_its_first_tool_when_asked():
    from agents.testing import tool_calls
    from examples.concierge import Ask, Concierge, Guide

    model = ScriptedModel([tool_calls(("weather", {"city": "Lima"})), "Sunny."])
    async with LocalRuntime([Concierge, Guide], {"default": model}) as rt:
        answer = await rt.send("concierge", Ask("Lima?", tool="weather"))
    assert answer.calls == [
        'weather({"city": "Lima"}) -> {"city":"Lima","temperature":19,"unit":"C","sky":"sunny"}'
    ]
    assert model.calls[0].params.tool_choice == {
        "type": "function",
        "function": {"name": "weather"},
    }
