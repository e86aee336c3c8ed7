"""SamplingParams validation and the ScriptedModel test double."""

from __future__ import annotations

import pytest

from agents import InvalidParameter, ModelClient, SamplingParams
from agents.testing import ScriptedModel, ScriptExhausted


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
        ({"seed": -1}, "seed"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stop": [""]}, "stop"),
        ({"temperature": "hot"}, "temperature"),
    ],
)
def test_out_of_range_parameters_name_the_field(kwargs, field):
    with pytest.raises(InvalidParameter) as e:
        SamplingParams(**kwargs)
    assert e.value.field == field and field in str(e.value)


def test_determinism_and_stop_normalisation():
    assert SamplingParams(temperature=0).is_deterministic
    assert SamplingParams(seed=3).is_deterministic
    assert not SamplingParams().is_deterministic
    assert SamplingParams(stop="\n").stop == ("\n",)
    assert SamplingParams(stop=["a", "b"]).to_dict()["stop"] == ["a", "b"]


async def test_scripted_model_replies_in_order_records_and_exhausts():
    model = ScriptedModel(["one", "two words"])
    assert isinstance(model, ModelClient)
    assert (await model.chat([{"role": "user", "content": "a b c"}])).text == "one"
    reply = await model.complete("p", max_tokens=5, temperature=0)
    assert reply.text == "two words" and reply.usage.completion_tokens == 2
    assert model.calls[1].kind == "complete" and model.calls[1].params.max_tokens == 5
    with pytest.raises(ScriptExhausted, match="has 2 replies"):
        await model.chat([])
    with pytest.raises(InvalidParameter):
        await ScriptedModel(["x"]).chat([], max_tokens=-1)


async def test_scripted_model_streams_and_cycles():
    model = ScriptedModel(["hello big world"], cycle=True)
    stream = model.stream("p")
    assert stream.reply is None
    chunks = [c async for c in stream]
    assert chunks == ["hello", " big", " world"] and "".join(chunks) == "hello big world"
    assert stream.reply.text == "hello big world" and stream.reply.usage.completion_tokens == 3
    assert (await model.chat([])).text == "hello big world"
    echo = ScriptedModel(lambda prompt: f"echo {prompt}")
    assert (await echo.complete("x")).text == "echo x"
