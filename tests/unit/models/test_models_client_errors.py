"""How a model deployment's errors reach the caller: Ray's wrapping taken off, so the SDK error
(and the HTTP error the gateway makes of it) says what was wrong, not where Ray raised it."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from agents.errors import InvalidParameter, ModelError  # noqa: E402
from runtime.cluster.ray_errors import sdk_error  # noqa: E402


def _remote(cause: BaseException) -> BaseException:
    """What a replica's exception is when it reaches the caller: Ray's RayTaskError, made an
    instance of the cause's class too, whose message is the remote traceback."""
    err = ray.exceptions.RayTaskError("chat", "Traceback (most recent call last): ...", cause)
    return err.as_instanceof_cause()


def test_a_replicas_sdk_error_arrives_as_itself_with_its_own_message():
    cause = InvalidParameter("prompt", "<9010 tokens>", "at most 8192 tokens")
    wrapped = _remote(cause)
    assert isinstance(wrapped, InvalidParameter)  # what made the traceback leak before
    assert "8192" not in str(wrapped)  # its message is where Ray raised it
    got = sdk_error(wrapped, "m", "model")
    assert got is cause
    assert "Traceback" not in str(got) and "8192" in str(got)


def test_any_other_replica_error_is_a_model_error_naming_the_model():
    got = sdk_error(_remote(RuntimeError("boom")), "m", "model")
    assert isinstance(got, ModelError)
    assert "'m'" in str(got) and "RuntimeError: boom" in str(got)


def test_an_sdk_error_raised_here_is_kept():
    err = InvalidParameter("n", 0, "at least 1")
    assert sdk_error(err, "m", "model") is err
