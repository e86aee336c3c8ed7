"""A chat assistant: the agent behind ``"model": "agent:assistant"`` on the HTTP API.

It answers a :class:`~agents.ChatRequest` with its model, passing the caller's sampling
parameters through and streaming the tokens on as they come (``rt.stream``, or SSE on the HTTP
API, where the gateway runs the stream the agent hands it). Anything an OpenAI client can send
to a model, it can send to this agent, and it gets the same schema back.

It keeps no shared state on purpose: it is the agent of the benchmark of the agent path
(``bench suite``'s agent part), and a ``ctx.state.set`` per chat costs about 40 ms of CPU
across the node (the registry's write plus every co-located replica applying it; measured on
2 cores), which would measure the state layer rather than the path. ``examples/research.py``
shows shared state.

Example:
    >>> import asyncio
    >>> from agents import ChatRequest
    >>> from agents.testing import ScriptedModel
    >>> from runtime import LocalRuntime
    >>> async def main():
    ...     async with LocalRuntime([Assistant], {"default": ScriptedModel(["Hi!"])}) as rt:
    ...         chat = ChatRequest([{"role": "user", "content": "Hey"}], stream=True)
    ...         *tokens, reply = [item async for item in rt.stream("assistant", chat)]
    ...         return tokens, reply.usage.completion_tokens
    >>> asyncio.run(main())
    (['Hi!'], 1)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from agents import Agent, ChatRequest, Context, ModelReply, handler


class Assistant(Agent):
    """Answers chats with the ``default`` model."""

    model = "default"

    @handler
    async def chat(self, msg: ChatRequest, ctx: Context) -> AsyncIterator[str | ModelReply]:
        """Streams the model's tokens as they come, then the whole reply (its usage and
        finish reason). It passes the stream on unread, so a caller that holds the model (the
        HTTP gateway) runs it itself and the tokens skip this replica. A caller that does not
        stream, or several choices (``n > 1``), get the whole reply alone: one model call
        instead of a message per token."""
        if not msg.stream or msg.params.get("n", 1) > 1:
            yield await ctx.llm.chat(msg.messages, **msg.params)
        else:
            yield ctx.llm.stream(msg.messages, **msg.params)  # its tokens, then its reply
