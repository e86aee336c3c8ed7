"""A chat assistant: the agent behind ``"model": "agent:assistant"`` on the HTTP API.

It answers a :class:`~agents.ChatRequest` with its model, passing the caller's sampling
parameters through, and keeps a shared count of the chats it answered. Anything an OpenAI client
can send to a model, it can send to this agent, and it gets the same schema back.

Example:
    >>> import asyncio
    >>> from agents import ChatRequest
    >>> from agents.testing import ScriptedModel
    >>> from runtime import LocalRuntime
    >>> async def main():
    ...     async with LocalRuntime([Assistant], {"default": ScriptedModel(["Hi!"])}) as rt:
    ...         chat = ChatRequest([{"role": "user", "content": "Hey"}])
    ...         reply = await rt.send("assistant", chat)
    ...         return reply.text, rt.state["chats_answered"]
    >>> asyncio.run(main())
    ('Hi!', 1)
"""

from __future__ import annotations

from agents import Agent, ChatRequest, Context, ModelReply, handler


class Assistant(Agent):
    """Answers chats with the ``default`` model."""

    model = "default"

    @handler
    async def chat(self, msg: ChatRequest, ctx: Context) -> ModelReply:
        reply = await ctx.llm.chat(msg.messages, **msg.params)
        await ctx.state.set("chats_answered", ctx.state.get("chats_answered", 0) + 1)
        return reply
