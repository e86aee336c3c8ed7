"""The raygent agent SDK: write agents as plain async classes, test them without Ray.

Example:
    >>> from dataclasses import dataclass
    >>> from agents import Agent, Context, handler
    >>> @dataclass
    ... class Question:
    ...     text: str
    >>> class Assistant(Agent):
    ...     @handler
    ...     async def answer(self, msg: Question, ctx: Context) -> str:
    ...         reply = await ctx.llm.chat([{"role": "user", "content": msg.text}], max_tokens=64)
    ...         return reply.text
"""

from agents.agent import Agent
from agents.codec import register as register_message
from agents.context import Context
from agents.errors import (
    AgentError,
    Backpressure,
    HandlerError,
    InvalidParameter,
    MessageDecodeError,
    MessageEncodeError,
    MessageTooLarge,
    ModelError,
    NoHandler,
    Overloaded,
    QueueUnavailable,
    ReplicaUnavailable,
    RuntimeClosed,
    SendTimeout,
    TaskNotFound,
    ToolLoopExceeded,
    UnknownAgent,
    UnknownModel,
    UnknownQueue,
    UnknownTopic,
)
from agents.handlers import handler
from agents.model import (
    ChatMessage,
    ChatRequest,
    ModelClient,
    ModelReply,
    SamplingParams,
    TextStream,
    ToolCall,
    Usage,
)
from agents.runtime_api import Priority, Runtime, SharedState, TaskInfo, TaskState
from agents.tools import Tool, agent_tool, run_tools, tool
from agents.tracing import Span, TraceContext

__all__ = [
    "Agent",
    "AgentError",
    "Backpressure",
    "ChatMessage",
    "ChatRequest",
    "Context",
    "HandlerError",
    "InvalidParameter",
    "MessageDecodeError",
    "MessageEncodeError",
    "MessageTooLarge",
    "ModelClient",
    "ModelError",
    "ModelReply",
    "NoHandler",
    "Overloaded",
    "Priority",
    "QueueUnavailable",
    "ReplicaUnavailable",
    "Runtime",
    "RuntimeClosed",
    "SamplingParams",
    "SendTimeout",
    "SharedState",
    "Span",
    "TaskInfo",
    "TaskNotFound",
    "TaskState",
    "TextStream",
    "Tool",
    "ToolCall",
    "ToolLoopExceeded",
    "TraceContext",
    "UnknownAgent",
    "UnknownModel",
    "UnknownQueue",
    "UnknownTopic",
    "Usage",
    "agent_tool",
    "handler",
    "register_message",
    "run_tools",
    "tool",
]
