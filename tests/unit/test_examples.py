"""The example pipeline on LocalRuntime with a scripted model: every way agents talk."""

from __future__ import annotations

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
