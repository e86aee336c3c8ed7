"""A travel concierge: an agent that uses tools, another agent as a tool, and typed output.

* ``weather`` and ``convert`` are plain typed functions made tools with ``@tool``: the model
  sees a JSON schema built from their signatures and docstrings, and its arguments are validated
  by the same types before they run;
* ``guide`` is another agent used as a tool (``agent_tool``): the model's arguments become a
  ``PlanTrip`` message, sent to the guide like any ``ctx.send``;
* the guide answers with a typed :class:`Plan`: it asks the model for JSON that matches
  ``Plan``'s schema (``response_format``, enforced by the engine's structured output) and parses
  the answer into a ``Plan``.

``run_tools`` runs the loop: the concierge's model calls tools, the calls run in parallel, their
results go back to the model, until it answers. ``Ask.tool`` forces the first call to one tool
(``tool_choice``), which is how the end-to-end tests drive this agent on a random-weights model.

Serve it by adding both agents to the application's config (``RAYGENT_CONFIG``)::

    agents:
      - import_path: examples.concierge:Concierge
      - import_path: examples.concierge:Guide

Example:
    >>> import asyncio
    >>> from agents.testing import ScriptedModel, tool_calls
    >>> from runtime import LocalRuntime
    >>> async def main():
    ...     model = ScriptedModel([
    ...         tool_calls(("weather", {"city": "Oslo"}), ("convert", {"amount": 100,
    ...             "source": "EUR", "target": "NOK"})),
    ...         "Oslo is 4 C and cloudy; 100 EUR is 1170 NOK.",
    ...     ])
    ...     async with LocalRuntime([Concierge, Guide], {"default": model}) as rt:
    ...         return await rt.send("concierge", Ask("Weather in Oslo? And 100 EUR in NOK?"))
    >>> asyncio.run(main()).text
    'Oslo is 4 C and cloudy; 100 EUR is 1170 NOK.'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field

from agents import Agent, Context, agent_tool, handler, run_tools, tool
from agents.tools import parse_json, response_format

City = Literal["Oslo", "Paris", "Lima", "Kyoto"]
Currency = Literal["EUR", "USD", "NOK", "JPY", "PEN"]

# Example data: a real concierge would call a weather service and a rates feed here.
_WEATHER = {
    "Oslo": (4, "cloudy"),
    "Paris": (12, "rain"),
    "Lima": (19, "sunny"),
    "Kyoto": (9, "clear"),
}
_PER_EUR = {"EUR": 1.0, "USD": 1.08, "NOK": 11.7, "JPY": 162.0, "PEN": 4.05}


@tool
def weather(city: City, unit: Literal["C", "F"] = "C") -> dict[str, object]:
    """Today's weather in a city.

    Args:
        city: the city.
        unit: degrees Celsius (C) or Fahrenheit (F).
    """
    degrees, sky = _WEATHER[city]
    if unit == "F":
        degrees = round(degrees * 9 / 5 + 32)
    return {"city": city, "temperature": degrees, "unit": unit, "sky": sky}


@tool
def convert(amount: Annotated[float, Field(ge=0)], source: Currency, target: Currency) -> float:
    """Convert an amount of money between currencies at today's rate.

    Args:
        amount: how much, in the source currency.
        source: the currency the amount is in.
        target: the currency to convert to.
    """
    return round(amount / _PER_EUR[source] * _PER_EUR[target], 2)


@dataclass
class PlanTrip:
    """Plan days in a city: what to see, at which pace."""

    city: City
    days: Annotated[int, Field(ge=1, le=7)] = 2


@dataclass
class Plan:
    """The guide's answer: a typed plan, generated as JSON that matches this schema."""

    city: City
    days: Annotated[int, Field(ge=1, le=7)]
    pace: Literal["relaxed", "balanced", "packed"]
    outdoors: bool


@dataclass
class Ask:
    """A traveller's question. ``tool`` forces the first tool call (``tool_choice``)."""

    question: str
    tool: str | None = None
    max_tokens: int = 48


@dataclass
class Answer:
    """The concierge's answer, and the tool calls it took to get there."""

    text: str
    calls: list[str] = field(default_factory=list)


class Guide(Agent):
    """Plans a trip; answers with a typed ``Plan`` (structured output)."""

    @handler
    async def plan(self, msg: PlanTrip, ctx: Context) -> Plan:
        reply = await ctx.llm.chat(
            [
                {"role": "system", "content": "You plan city trips. Answer in JSON."},
                {"role": "user", "content": f"Plan {msg.days} days in {msg.city}."},
            ],
            response_format=response_format(Plan),
            max_tokens=64,
            temperature=0.0,
        )
        return parse_json(Plan, reply.text)


class Concierge(Agent):
    """Answers travellers with the weather, currency conversion and the guide's plans."""

    tools = (weather, convert, agent_tool("guide", PlanTrip, timeout_s=60))

    @handler
    async def ask(self, msg: Ask, ctx: Context) -> Answer:
        transcript: list[dict] = []
        choice = {"type": "function", "function": {"name": msg.tool}} if msg.tool else None
        reply = await run_tools(
            ctx,
            [
                {"role": "system", "content": "You are a travel concierge. Use the tools."},
                {"role": "user", "content": msg.question},
            ],
            self.tools,
            transcript=transcript,
            tool_choice=choice,
            max_rounds=3,
            max_tokens=msg.max_tokens,
            temperature=0.0,
        )
        results = {t["tool_call_id"]: t["content"] for t in transcript if t["role"] == "tool"}
        calls = [
            f"{c['function']['name']}({c['function']['arguments']}) -> {results[c['id']]}"
            for t in transcript
            for c in t.get("tool_calls", ())
        ]
        return Answer(reply.text, calls)
