"""A small research pipeline: the default application of ``serve run serve_app:app``.

It shows each way agents talk:

* request/response — the researcher asks the writer for a draft and the critic for a review;
* pub/sub — the researcher publishes each finished report on ``reports``; the archivist
  subscribes and counts them;
* shared state — ``reports_written`` and the last topic are visible to every agent and to the
  runtime (``rt.state``);
* a durable task — the researcher submits each report to the ``archive`` queue, which the
  archivist serves as a worker.

Example:
    >>> import asyncio
    >>> from agents.testing import ScriptedModel
    >>> from runtime import LocalRuntime
    >>> async def main():
    ...     model = ScriptedModel(["A draft.", "Looks fine."])
    ...     agents = [Researcher, Writer, Critic, Archivist]
    ...     async with LocalRuntime(agents, {"default": model}) as rt:
    ...         report = await rt.send("researcher", ResearchRequest("ring buffers"))
    ...         return report.draft, report.review
    >>> asyncio.run(main())
    ('A draft.', 'Looks fine.')
"""

from __future__ import annotations

from dataclasses import dataclass

from agents import Agent, Context, handler


@dataclass
class ResearchRequest:
    """What a user asks the researcher."""

    topic: str
    max_tokens: int = 64


@dataclass
class DraftRequest:
    topic: str
    max_tokens: int = 64


@dataclass
class ReviewRequest:
    topic: str
    draft: str
    max_tokens: int = 64


@dataclass
class Report:
    """The researcher's answer; also what goes out on the ``reports`` topic."""

    topic: str
    draft: str
    review: str
    archive_task: str = ""


@dataclass
class ArchiveTask:
    """A durable task: keep a report."""

    report: Report


class Writer(Agent):
    """Drafts a short text on a topic."""

    @handler
    async def draft(self, msg: DraftRequest, ctx: Context) -> str:
        prompt = f"Write a short paragraph about {msg.topic}."
        reply = await ctx.llm.chat(
            [{"role": "user", "content": prompt}], max_tokens=msg.max_tokens, temperature=0.0
        )
        return reply.text


class Critic(Agent):
    """Reviews a draft."""

    @handler
    async def review(self, msg: ReviewRequest, ctx: Context) -> str:
        reply = await ctx.llm.chat(
            [
                {"role": "system", "content": "You are a terse critic."},
                {"role": "user", "content": f"Review this text on {msg.topic}:\n{msg.draft}"},
            ],
            max_tokens=msg.max_tokens,
            temperature=0.0,
        )
        return reply.text


class Researcher(Agent):
    """Asks the writer, then the critic; publishes, counts and archives the report."""

    model = None  # it only coordinates; the writer and critic call the model

    @handler
    async def research(self, msg: ResearchRequest, ctx: Context) -> Report:
        draft = await ctx.send("writer", DraftRequest(msg.topic, msg.max_tokens))
        review = await ctx.send("critic", ReviewRequest(msg.topic, draft, msg.max_tokens))
        report = Report(msg.topic, draft, review)
        await ctx.state.set("reports_written", ctx.state.get("reports_written", 0) + 1)
        await ctx.state.set("last_topic", msg.topic)
        report.archive_task = await ctx.submit("archive", ArchiveTask(report))
        await ctx.publish("reports", report)
        ctx.span.set_attribute("research.topic", msg.topic)
        return report


class Archivist(Agent):
    """Keeps reports (a worker of the ``archive`` queue) and counts published ones."""

    model = None

    @handler(queue="archive")
    async def archive(self, msg: ArchiveTask, ctx: Context) -> str:
        key = f"archive:{msg.report.topic}"
        await ctx.state.set(key, {"draft": msg.report.draft, "review": msg.report.review})
        return key

    @handler(topic="reports")
    async def count(self, msg: Report, ctx: Context) -> None:
        await ctx.state.set("reports_seen", ctx.state.get("reports_seen", 0) + 1)
