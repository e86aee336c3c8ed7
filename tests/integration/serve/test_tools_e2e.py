"""The concierge example (tools, an agent as a tool, typed output) end to end: Serve, agent
replicas, the gateway's vLLM engine with the random-weights tiny model.

The model's words are noise, so the first call is forced (``tool_choice`` naming a tool): the
engine constrains the call's arguments to the tool's schema, the agent runs the tool on them,
and the loop sends the result back to the model, which then answers (or calls again, up to
``max_rounds``). What is asserted is the shape of that round trip, which is what the engine and
the SDK must get right whatever the weights.
"""

from __future__ import annotations

import json

import httpx
import pytest

from examples.concierge import Plan, PlanTrip


def _ask(url: str, auth: dict, question: str, tool: str) -> dict:
    r = httpx.post(
        f"{url}/v1/agents/concierge/invoke",
        json={"message": {"question": question, "tool": tool}, "type": "Ask", "timeout_s": 55},
        headers=auth,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "Answer"
    return body["reply"]


def _first_call(answer: dict, name: str) -> tuple[dict, str]:
    call = answer["calls"][0]
    head, _, result = call.partition(") -> ")
    called, _, arguments = head.partition("(")
    assert called == name, call
    return json.loads(arguments), result


def test_a_forced_function_tool_runs_on_arguments_the_engine_kept_to_its_schema(gateway_url, auth):
    answer = _ask(gateway_url, auth, "What is the weather like?", "weather")
    arguments, result = _first_call(answer, "weather")
    assert arguments["city"] in ("Oslo", "Paris", "Lima", "Kyoto")
    assert arguments.get("unit", "C") in ("C", "F")
    weather = json.loads(result)  # the tool ran: no "error: ..." fed back
    assert weather["city"] == arguments["city"] and weather["sky"]
    assert isinstance(answer["text"], str)


def test_an_agent_is_a_tool_and_answers_with_typed_structured_output(gateway_url, auth):
    answer = _ask(gateway_url, auth, "Plan my trip.", "guide")
    arguments, result = _first_call(answer, "guide")
    PlanTrip(**arguments)  # the engine kept the call to PlanTrip's schema
    assert 1 <= arguments.get("days", 2) <= 7
    # The guide asked its model for JSON of a Plan (response_format): what came back is one
    plan = Plan(**json.loads(result))
    assert plan.pace in ("relaxed", "balanced", "packed") and 1 <= plan.days <= 7


@pytest.mark.parametrize("tool", ["nope", "weather; rm"])
def test_forcing_an_unknown_tool_is_a_400_naming_the_field(gateway_url, auth, tool):
    r = httpx.post(
        f"{gateway_url}/v1/agents/concierge/invoke",
        json={"message": {"question": "?", "tool": tool}, "type": "Ask"},
        headers=auth,
        timeout=60,
    )
    assert r.status_code == 400, r.text
    assert "tool_choice" in r.json()["error"]["message"]
