"""Every error an agent, or a caller of an agent, can see.

One base, :class:`AgentError`, so that ``except AgentError`` catches everything raygent raises
on purpose. Each class says in its docstring, and in its ``retryable`` attribute, whether a caller
may try the same call again: the gateway turns retryable errors into 429/503 with Retry-After and
the rest into 4xx/5xx that a retry would not fix.

Runtimes translate the errors of the things they sit on (Ray, Redis, vLLM) into these at one
boundary, with ``raise ... from exc``, so agent code never needs to import those libraries to
handle a failure.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "Backpressure",
    "HandlerError",
    "InvalidParameter",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageTooLarge",
    "ModelError",
    "NoHandler",
    "Overloaded",
    "QueueUnavailable",
    "ReplicaUnavailable",
    "RuntimeClosed",
    "SendTimeout",
    "TaskNotFound",
    "ToolLoopExceeded",
    "UnknownAgent",
    "UnknownModel",
    "UnknownQueue",
    "UnknownTopic",
]


def _rebuild(cls: type[AgentError], args: tuple, attrs: dict) -> AgentError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(attrs)
    return err


class AgentError(Exception):
    """Base of every raygent SDK error.

    Errors cross process boundaries (a replica's error reaches its caller through Ray), so
    they pickle by their attributes rather than by re-running ``__init__``.

    Attributes:
        retryable: whether repeating the same call may succeed. Subclasses set it.
    """

    retryable: bool = False

    def __reduce__(self) -> tuple:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class UnknownAgent(AgentError):
    """No agent of that name is registered with the runtime. Not retryable: fix the name."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...] = ()) -> None:
        self.name = name
        hint = f"; known agents: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown agent {name!r}{hint}")


class UnknownTopic(AgentError):
    """No agent subscribes to that topic. Not retryable: a topic exists once a handler declares
    ``@handler(topic=...)``, so a publish to any other name is almost always a typo."""

    def __init__(self, topic: str, known: list[str] | tuple[str, ...] = ()) -> None:
        self.topic = topic
        hint = f"; topics with subscribers: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"no agent subscribes to topic {topic!r}{hint}")


class UnknownQueue(AgentError):
    """No worker agent serves that task queue. Not retryable: declare a worker with
    ``@handler(queue=...)``."""

    def __init__(self, queue: str, known: list[str] | tuple[str, ...] = ()) -> None:
        self.queue = queue
        hint = f"; queues with workers: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"no worker agent serves task queue {queue!r}{hint}")


class UnknownModel(AgentError):
    """The agent names a model that is not configured. Not retryable: fix the config."""

    def __init__(self, model: str, known: list[str] | tuple[str, ...] = ()) -> None:
        self.model = model
        hint = f"; configured models: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown model {model!r}{hint}")


class NoHandler(AgentError):
    """The agent has no handler for the message's type. Not retryable: send a type the agent
    handles (its handlers are listed in the message)."""

    def __init__(self, agent: str, message_type: str, accepted: list[str] | tuple[str, ...] = ()):
        self.agent = agent
        self.message_type = message_type
        hint = f"; it handles: {', '.join(accepted)}" if accepted else ""
        super().__init__(f"agent {agent!r} has no handler for message type {message_type}{hint}")


class Backpressure(AgentError):
    """The target's mailbox is full. Retryable after ``retry_after_s``.

    Raised at once instead of queueing without bound, so that overload is visible to the caller
    (the gateway answers 429 with Retry-After) rather than growing memory and latency.
    """

    retryable = True

    def __init__(self, agent: str, capacity: int, retry_after_s: float = 1.0) -> None:
        self.agent = agent
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        if capacity:
            what = f"agent {agent!r} mailbox is full ({capacity} messages)"
            fix = "raise agents[].mailbox_size in the config"
        else:  # capacity unknown: Serve's request queue in front of the replicas is full
            what = f"{agent!r} is at capacity (its request queue is full)"
            fix = "add replicas"
        super().__init__(f"{what}; retry after {retry_after_s:g}s or {fix}")


class ReplicaUnavailable(AgentError):
    """The agent has no live replica right now, or the one serving the call died mid-call
    (it is being restarted). Retryable: a retry goes to a live or restarted replica; the
    failed call may or may not have run."""

    retryable = True

    def __init__(self, agent: str, detail: str = "") -> None:
        self.agent = agent
        super().__init__(f"no live replica of agent {agent!r}" + (f": {detail}" if detail else ""))


class SendTimeout(AgentError):
    """The target did not answer within ``timeout_s``; its handler was cancelled. Retryable."""

    retryable = True

    def __init__(self, agent: str, message_type: str, timeout_s: float) -> None:
        self.agent = agent
        self.message_type = message_type
        self.timeout_s = timeout_s
        super().__init__(
            f"agent {agent!r} did not answer {message_type} within {timeout_s:g}s "
            "(raise it with send(..., timeout_s=...))"
        )


class HandlerError(AgentError):
    """The target's handler raised. Not retryable by default: the same message would most
    likely fail the same way. ``cause_type`` and the message carry the original error, which may
    come from another process and so is described rather than re-raised."""

    def __init__(self, agent: str, message_type: str, cause_type: str, cause: str) -> None:
        self.agent = agent
        self.message_type = message_type
        self.cause_type = cause_type
        self.cause = cause
        super().__init__(f"agent {agent!r} failed on {message_type}: {cause_type}: {cause}")


class MessageEncodeError(AgentError, TypeError):
    """A message (or reply, state value, task) cannot be encoded. Not retryable: use a
    dataclass, a pydantic model or plain msgpack values (str, int, float, bool, None, bytes,
    list, dict)."""


class MessageDecodeError(AgentError, ValueError):
    """Bytes that are not a valid raygent message, or that name a type this process does not
    know. Not retryable. Decoding never imports modules or runs code named by the input."""


class MessageTooLarge(AgentError, ValueError):
    """An encoded message, task or state value exceeds ``limits.max_message_bytes``. Not
    retryable: send less, or pass a reference (a key, a URL) instead of the bytes."""

    def __init__(self, what: str, size_bytes: int, limit_bytes: int) -> None:
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes
        super().__init__(
            f"{what} is {size_bytes} bytes encoded, over the limit of {limit_bytes} "
            "(limits.max_message_bytes)"
        )


class InvalidParameter(AgentError, ValueError):
    """A request parameter is out of range. Not retryable: the message names the field, the
    value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={value!r} is not allowed: {allowed}")


class ModelError(AgentError):
    """The model failed to answer (engine error, unloaded, overloaded). Retryable: another
    replica or a later attempt may succeed."""

    retryable = True


class Overloaded(AgentError):
    """A model is working at capacity and its short queue is full: refused at once rather
    than queued behind work it could not start in time. Retryable after ``retry_after_s``
    (the wait its host predicts from how fast it finishes requests now).

    Attributes:
        model: the model that refused.
        inflight: requests it was working on.
        queued: requests waiting for it.
        retry_after_s: when a retry is likely to be admitted.
    """

    retryable = True

    def __init__(self, model: str, inflight: int, queued: int, retry_after_s: float) -> None:
        self.model = model
        self.inflight = inflight
        self.queued = queued
        self.retry_after_s = retry_after_s
        super().__init__(
            f"model {model!r} is at capacity ({inflight} requests running, {queued} waiting); "
            f"retry after {retry_after_s:g}s, or raise models.{model}.admission.max_inflight "
            "(or add replicas) if the hardware has room"
        )


class TaskNotFound(AgentError):
    """No task with that id is known (never submitted, or expired). Not retryable."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"unknown task id {task_id!r}")


class QueueUnavailable(AgentError):
    """The durable task queue's store (Redis) could not be reached or did not answer in time.
    Retryable: the operation may succeed once the store is back (the gateway answers 503 with
    Retry-After). ``retryable`` is False only when the store refused the command itself (say, a
    key of the wrong type), which an operator has to fix.

    Attributes:
        queue: the task queue concerned, or None when the error is not about one queue.
    """

    retryable = True

    def __init__(self, queue: str | None, reason: str, *, retryable: bool = True) -> None:
        self.queue = queue
        self.retryable = retryable
        what = f"task queue {queue!r}" if queue is not None else "the task queue store"
        super().__init__(f"{what} is unavailable: {reason}")


class RuntimeClosed(AgentError):
    """The runtime is shutting down or shut down. Not retryable on this runtime."""


class ToolLoopExceeded(AgentError):
    """The model kept calling tools for ``max_rounds`` rounds of
    :func:`agents.tools.run_tools` without answering. Not retryable as is: raise
    ``max_rounds``, or tell the model (the prompt, ``tool_choice``) to answer.

    Attributes:
        rounds: how many rounds of calls ran.
        reply: the model's last answer (a :class:`~agents.model.ModelReply` with the
            ``tool_calls`` nobody ran).
    """

    def __init__(self, rounds: int, reply: object) -> None:
        self.rounds = rounds
        self.reply = reply
        super().__init__(f"the model still called tools after {rounds} rounds (max_rounds)")
