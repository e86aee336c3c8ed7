"""Agents and plain Ray actors measured by ``python -m bench.runtime`` (importable by workers).

Timestamps are ``time.monotonic_ns()``: CLOCK_MONOTONIC is one clock for every process of a
machine, so a stamp taken in one actor can be subtracted in another.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from agents import Agent, Context, handler


@dataclass
class Stamp:
    t_ns: int
    seq: int


@dataclass
class Pump:
    """Ask the source to publish (or send) ``n`` stamps, ``gap_us`` apart (0: a burst)."""

    mode: str  # "publish" | "send"
    n: int
    gap_us: int = 0


@dataclass
class Collect:
    expected: int
    timeout_s: float = 30.0


class _Sink:
    """Receive-side bookkeeping shared by the agent and the plain actor."""

    def __init__(self) -> None:
        self.lat_ns: list[int] = []
        self.last_ns = 0
        self.arrived = asyncio.Event()

    def record(self, stamp: Stamp) -> None:
        now = time.monotonic_ns()
        self.lat_ns.append(now - stamp.t_ns)
        self.last_ns = now
        self.arrived.set()

    async def collect(self, expected: int, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while len(self.lat_ns) < expected and time.monotonic() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        out = {"lat_ns": self.lat_ns, "last_ns": self.last_ns}
        self.lat_ns, self.last_ns = [], 0
        return out


async def _pump(msg: Pump, emit) -> dict:
    rtts: list[int] = []
    start = time.monotonic_ns()
    for i in range(msg.n):
        t0 = time.monotonic_ns()
        await emit(Stamp(t0, i))
        rtts.append(time.monotonic_ns() - t0)
        if msg.gap_us:
            await asyncio.sleep(msg.gap_us / 1e6)
    return {"start_ns": start, "end_ns": time.monotonic_ns(), "rtt_ns": rtts}


class BenchSource(Agent):
    model = None

    @handler
    async def pump(self, msg: Pump, ctx: Context) -> dict:
        if msg.mode == "publish":
            return await _pump(msg, lambda s: ctx.publish("bench", s))
        return await _pump(msg, lambda s: ctx.send("bench_sink", s))


class BenchSink(Agent):
    model = None

    def __init__(self) -> None:
        self._sink = _Sink()

    @handler(topic="bench")
    async def on_stamp(self, msg: Stamp, ctx: Context) -> None:
        self._sink.record(msg)

    @handler
    async def echo(self, msg: Stamp, ctx: Context) -> int:
        return msg.seq

    @handler
    async def collect(self, msg: Collect, ctx: Context) -> dict:
        return await self._sink.collect(msg.expected, msg.timeout_s)


class PlainSink:
    """The peer: a plain async Ray actor."""

    def __init__(self) -> None:
        self._sink = _Sink()

    async def recv(self, stamp: Stamp) -> None:
        self._sink.record(stamp)

    async def echo(self, stamp: Stamp) -> int:
        return stamp.seq

    async def collect(self, expected: int, timeout_s: float = 30.0) -> dict:
        return await self._sink.collect(expected, timeout_s)

    def stamp_in(self, t_ns: int) -> int:
        """Compiled-graph receive: one-way latency of the hop that delivered ``t_ns``."""
        return time.monotonic_ns() - t_ns


class PlainSource:
    """The peer's sender: calls the sink actor's methods directly."""

    def __init__(self, sink) -> None:
        self._sink = sink

    async def pump(self, mode: str, n: int, gap_us: int = 0) -> dict:
        if mode == "publish":  # one-way: fire the call, do not wait for the reply
            refs = []

            async def emit(s: Stamp) -> None:
                refs.append(self._sink.recv.remote(s))

            out = await _pump(Pump(mode, n, gap_us), emit)
            await asyncio.gather(*refs)
            return out

        async def call(s: Stamp) -> None:
            await self._sink.echo.remote(s)

        return await _pump(Pump(mode, n, gap_us), call)

    def stamp_out(self, _: int) -> int:
        """Compiled-graph send: the time the hop to the sink starts."""
        return time.monotonic_ns()
