"""A chat assistant: the agent behind ``"model": "agent:assistant"`` on the HTTP API.

It answers a :class:`~agents.ChatRequest` with its model, passing the caller's sampling
parameters through and streaming the tokens on as they come (``rt.stream``, or SSE on the HTTP
API), and keeps a shared count of the chats it answered. Anything an OpenAI client
can send to a model, it can send to this agent, and it gets the same schema back.

Example:
    >>> import asyncio
    >>> from agents import ChatRequest
    >>> from agents.testing import ScriptedModel
    >>> from runtime import LocalRuntime
    >>> async def main():
    ...     async with LocalRuntime([Assistant], {"default": ScriptedModel(["Hi!"])}) as rt:
    ...         chat = ChatRequest([{"role": "user", "content": "Hey"}], stream=True)
    ...         *tokens, reply = [item async for item in rt.stream("assistant", chat)]
    ...         return tokens, reply.usage.completion_tokens, rt.state["chats_answered"]
    >>> asyncio.run(main())
    (['Hi!'], 1, 1)
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
        finish reason). A caller that does not stream, or several choices (``n > 1``), get
        the whole reply alone: one model call instead of a message per token."""
        if not msg.stream or msg.params.get("n", 1) > 1:
            reply = await ctx.llm.chat(msg.messages, **msg.params)
        else:
            stream = ctx.llm.stream(msg.messages, **msg.params)
            async for text in stream:
                yield text
            reply = stream.reply
        await ctx.state.set("chats_answered", ctx.state.get("chats_answered", 0) + 1)
        yield reply
