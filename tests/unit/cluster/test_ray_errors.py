"""``runtime.cluster.ray_errors``: the one translator of Ray's and Serve's errors, for a call to an
agent and for a call to a model -- the same decision order, each callee's own SDK errors."""

from __future__ import annotations

import asyncio

import pytest

ray = pytest.importorskip("ray")

from ray import exceptions as rex  # noqa: E402
from ray.serve.exceptions import BackPressureError, RequestCancelledError  # noqa: E402

from agents.errors import (  # noqa: E402
    Backpressure,
    HandlerError,
    InvalidParameter,
    ModelError,
    ReplicaUnavailable,
)
from runtime.cluster.ray_errors import RAY_ERRORS, raise_sdk_error, sdk_error  # noqa: E402


def remote(cause: BaseException) -> BaseException:
    """A callee's exception as the caller gets it (see test_models_client_errors)."""
    return rex.RayTaskError(
        "call", "Traceback (most recent call last): ...", cause
    ).as_instanceof_cause()


def test_every_ray_and_serve_failure_is_caught_by_the_callers():
    for exc in (
        BackPressureError(num_queued_requests=5, max_queued_requests=5),
        RequestCancelledError(),
        rex.RayActorError(),
        remote(RuntimeError("boom")),
    ):
        assert isinstance(exc, RAY_ERRORS)


@pytest.mark.parametrize("kind", ["agent", "model"])
def test_a_callees_sdk_error_arrives_as_itself(kind):
    cause = InvalidParameter("prompt", "<9010 tokens>", "at most 8192 tokens")
    assert sdk_error(remote(cause), "t", kind) is cause
    with pytest.raises(InvalidParameter) as raised:
        raise_sdk_error(remote(cause), "t", kind)
    assert raised.value is cause and raised.value.__cause__ is None  # no Ray wrapper chained


def test_a_full_serve_queue_is_backpressure_naming_the_callee():
    full = BackPressureError(num_queued_requests=5, max_queued_requests=5)
    agent, model = sdk_error(full, "echo", "agent"), sdk_error(full, "m", "model")
    assert isinstance(agent, Backpressure) and "echo" in str(agent) and agent.retryable
    assert isinstance(model, Backpressure) and "model m" in str(model)


def test_a_cancelled_call_cancels_an_agent_caller_and_fails_a_model_call():
    cancelled = RequestCancelledError()  # Serve's: a TaskCancelledError and a RayServeException
    assert isinstance(sdk_error(cancelled, "echo", "agent"), asyncio.CancelledError)
    got = sdk_error(cancelled, "m", "model")
    assert isinstance(got, ModelError) and "cancelled" in str(got)


def test_any_other_callee_error_is_a_handler_error_or_a_model_error():
    agent = sdk_error(remote(RuntimeError("boom")), "echo", "agent")
    assert isinstance(agent, HandlerError) and "RuntimeError" in str(agent)
    assert "boom" in str(agent) and "echo" in str(agent)
    model = sdk_error(remote(RuntimeError("boom")), "m", "model")
    assert isinstance(model, ModelError) and "'m' failed: RuntimeError: boom" in str(model)
    on_replica = sdk_error(remote(asyncio.CancelledError()), "echo", "agent")
    assert isinstance(on_replica, ReplicaUnavailable) and on_replica.retryable


def test_a_dead_or_missing_replica_is_retryable_for_both():
    dead = rex.RayActorError()
    agent = sdk_error(dead, "echo", "agent")
    assert isinstance(agent, ReplicaUnavailable) and agent.retryable
    model = sdk_error(dead, "m", "model")
    assert isinstance(model, ModelError) and "retry" in str(model)
    with pytest.raises(ReplicaUnavailable) as raised:
        raise_sdk_error(dead, "echo", "agent")
    assert raised.value.__cause__ is dead  # chained to the Ray error, for the logs
