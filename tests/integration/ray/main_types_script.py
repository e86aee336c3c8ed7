"""A user's script: agents and messages defined at top level (``__main__``), run on Ray.

Run by test_main_types.py as ``python main_types_script.py`` and, cell by cell, in a Jupyter
kernel (everything above the "run" marker is one cell, ``await main()`` the next).
Prints one ``RESULT`` line per check; the test compares them.

Also defines a message type and an agent in ``scratch``, a module made at run time that exists
only in the driver's ``sys.modules`` (what a notebook extension or an ``exec``-ed config would
make): a worker cannot import it either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import types

from agents import Agent, Context, handler
from runtime import RayRuntime


@dataclasses.dataclass
class Item:
    name: str
    qty: int


@dataclasses.dataclass
class Order:
    items: list[Item]


@dataclasses.dataclass
class Receipt:  # the reply: its nested Item list must decode on the driver too
    total: int
    items: list[Item]
    seen_as: str


class Till(Agent):
    model = None

    @handler
    async def order(self, msg: Order, ctx: Context) -> Receipt:
        # What the replica decoded: the shipped __main__ class, not a dict.
        seen = f"{type(msg).__module__}:{type(msg.items[0]).__qualname__}"
        return Receipt(sum(i.qty for i in msg.items), list(reversed(msg.items)), seen)


scratch = types.ModuleType("scratch")  # no __file__, no spec: not importable anywhere else
sys.modules["scratch"] = scratch
exec(
    """
import dataclasses
from agents import Agent, Context, handler

@dataclasses.dataclass
class Ping:
    n: int

class Scratch(Agent):
    model = None

    @handler
    async def ping(self, msg: Ping, ctx: Context) -> Ping:
        return Ping(msg.n * 2)
""",
    scratch.__dict__,
)


async def main() -> None:
    ray_init = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}
    async with RayRuntime([Till, scratch.Scratch], ray_init=ray_init) as rt:
        receipt = await rt.send("till", Order([Item("tea", 2), Item("cake", 1)]))
        print("RESULT", type(receipt).__module__, repr(receipt), flush=True)
        pong = await rt.send("scratch", scratch.Ping(21))
        print("RESULT", type(pong).__module__, repr(pong), flush=True)


# -- run --
if __name__ == "__main__":
    asyncio.run(main())
