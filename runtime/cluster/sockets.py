"""Calls to an agent replica on the same node over a Unix socket, beside Serve's handle.

Under Serve, a call to an agent goes through the deployment's handle: the caller's router picks a
replica and sends Serve's request, the replica's Serve wrapper accepts it, runs the method and
streams the results back as Ray objects. Measured on 2 cores (``bench suite``'s agent part,
16 concurrent streams, every item a handler yields already batched), that costs 3.0 ms of CPU
in the gateway and 2.7 ms in the agent's replica per request, and 58 ms p50 from the call to the
agent's first item, of which the agent's own work was 0.3 ms: an agent's answer ran at 0.74x of
the same model's throughput.

So an agent replica under Serve also listens on a Unix socket, announced with its membership
(``Member.socket``); a caller on the same node connects to it, one connection per call::

    caller                                              replica (CallServer)
      connect ───────────────────────────────────────▶ accept
      ["send" | "stream", payload, traceparent, priority, accepts_handoff]
                                                        deliver() / deliver_stream()
      ◀──── ["b", [item, ...]]   one per batch of a stream
      ◀──── ["r", reply] (a send) | ["e"] (a stream ends) | ["x", error class, args, attrs]
      close: after the last frame; or the caller gave up, and the replica cancels the handler

A frame is a 4-byte big-endian length and a msgpack array. The socket's buffer is a stream's
backpressure: a caller that does not read stops the replica's writes, then the handler's
``yield``. An error travels as the SDK error's class and attributes (what its pickle holds; no
pickle on the wire), and only a class the caller has imported is rebuilt. The socket sits in a
directory only this user can enter; a new server removes the sockets of processes that are gone.

What this leaves to Serve: a caller that cannot connect (the replica stopped, or is not
listening) sends through Serve's handle instead, and so does a call to another node. A
connection that breaks mid-call is ``ReplicaUnavailable``, as a Ray actor's death is. Serve's
own request metrics do not count these calls; the executor's spans and metrics do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import sys
import tempfile
import uuid
from collections.abc import AsyncGenerator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import msgpack

from agents.errors import AgentError, HandlerError, ReplicaUnavailable
from agents.errors import _rebuild as rebuild_error
from agents.runtime_api import Priority
from runtime.core.timeouts import within

__all__ = ["CallServer", "Connection", "socket_dir"]

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
CONNECT_TIMEOUT_S = 1.0
"""Longest a caller waits to connect before it goes through Serve's handle instead."""
_MAX_FRAME = 1 << 30
"""Longest frame either side reads; a longer length prefix is a broken peer."""
_BROKEN = (asyncio.IncompleteReadError, ConnectionError, ValueError)
"""What reading a frame raises when the peer hung up or sent something else (``_read_frame``)."""


class _Host(Protocol):
    """What a :class:`CallServer` serves: :class:`~runtime.cluster.host.AgentHost`'s calls."""

    def deliver(
        self, payload: bytes, traceparent: str | None, priority: Priority
    ) -> Awaitable[bytes]: ...

    # (payload, traceparent, priority, accepts_handoff) -> AsyncIterator[list[bytes]]; typed
    # Any because ``@ray.method`` hides the generator behind Ray's remote-method type.
    deliver_stream: Any


def socket_dir() -> Path | None:
    """This user's directory for the sockets (``$TMPDIR/raygent-<uid>``, mode 0700), or None
    when it cannot be made or is not private (then nothing listens, and calls go by Serve)."""
    path = Path(tempfile.gettempdir()) / f"raygent-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.stat()
    except OSError as exc:
        log.warning("no socket directory %s (%s): co-located calls go through Serve", path, exc)
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        log.warning("%s is not private to this user: co-located calls go through Serve", path)
        return None
    return path


def _sweep(directory: Path) -> None:
    """Remove the sockets of processes that are gone (a replica killed, or stopped with
    ``ray stop --force``, does not remove its own); a socket's name starts with its pid."""
    for entry in directory.glob("*.sock"):
        pid = entry.name.split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                entry.unlink()
        except OSError:  # alive, another user's
            continue


def _frame(msg: list[Any]) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return _LEN.pack(len(body)) + body


async def _read_frame(reader: asyncio.StreamReader) -> list[Any]:
    """The next frame; ``IncompleteReadError`` at the peer's close, ``ValueError`` when broken."""
    (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
    if n > _MAX_FRAME:
        raise ValueError(f"frame of {n} bytes")
    body = await reader.readexactly(n)
    try:
        msg = msgpack.unpackb(body, raw=False)
    except (ValueError, TypeError) as exc:  # msgpack's errors, an unhashable map key
        raise ValueError(f"frame does not decode: {exc}") from None
    if not isinstance(msg, list) or not msg:
        raise ValueError("frame is not a message")
    return msg


def _described(agent: str, cause_type: str, cause: str) -> HandlerError:
    """A callee's error that cannot travel as itself: what a caller through Ray gets for it."""
    return HandlerError(agent, "call", cause_type, cause)


def _error_frame(exc: BaseException, agent: str) -> bytes:
    """An error for the caller: the SDK's own as its pickle holds it (``AgentError.__reduce__``:
    class, args, attributes), anything else as ``HandlerError``
    (:mod:`runtime.cluster.ray_errors`)."""
    if not isinstance(exc, AgentError):
        exc = _described(agent, type(exc).__name__, str(exc))
    _, (cls, args, attrs) = exc.__reduce__()
    try:
        return _frame(["x", cls.__module__, cls.__qualname__, list(args), attrs])
    except (TypeError, ValueError):  # an attribute msgpack cannot carry
        return _error_frame(_described(agent, cls.__name__, str(exc)), agent)


def _error(msg: list[Any], agent: str) -> AgentError:
    """The error an ``"x"`` frame carries, rebuilt as its unpickling would. Its class must be
    an ``AgentError`` this process has imported (nothing is imported on a peer's word);
    otherwise it is described."""
    try:
        _, module, name, args, attrs = msg
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, AgentError):
            return rebuild_error(cls, tuple(args), attrs)
        return _described(agent, str(name), str(args[0] if args else ""))
    except (ValueError, TypeError, IndexError) as exc:  # a frame of another shape
        return _described(agent, "unreadable error", f"{type(exc).__name__}: {exc}")


class CallServer:
    """A replica's end: serves :meth:`deliver` and :meth:`deliver_stream` of ``host``.

    Args:
        host: the replica.
        agent: its agent's name (errors name it).
    """

    def __init__(self, host: _Host, agent: str) -> None:
        self._host = host
        self._agent = agent
        self._server: asyncio.AbstractServer | None = None
        self.path: str | None = None
        """Where it listens, once :meth:`start` succeeded."""
        self.calls = 0
        """Calls taken (tests, debugging)."""

    async def start(self) -> str | None:
        """Listen; returns the socket's path, or None when it cannot (no private directory, a
        path too long): the replica then takes calls through Serve alone."""
        directory = socket_dir()
        if directory is None:
            return None
        _sweep(directory)
        path = str(directory / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.sock")
        try:
            self._server = await asyncio.start_unix_server(self._serve, path)
        except OSError as exc:  # e.g. a $TMPDIR too long for a socket's path (108 bytes)
            log.warning("no socket at %s (%s): co-located calls go through Serve", path, exc)
            return None
        self.path = path
        return path

    def close(self) -> None:
        """Stop taking calls (calls under way run to their end) and remove the socket."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await _read_frame(reader)
            except _BROKEN:
                return
            self.calls += 1
            work = asyncio.ensure_future(self._run(request, writer))
            gone = asyncio.ensure_future(reader.read(1))  # b"" when the caller closes
            try:
                await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
                if not work.done():  # the caller left (or this replica is stopping)
                    work.cancel()
                    await asyncio.wait({work})
                elif not work.cancelled() and work.exception() is not None:
                    log.debug("call from a co-located caller ended: %r", work.exception())
        finally:
            writer.close()

    async def _run(self, request: list[Any], writer: asyncio.StreamWriter) -> None:
        kind, payload, traceparent, priority, accepts_handoff = request
        try:
            if kind == "send":
                reply = await self._host.deliver(payload, traceparent, priority)
                last = _frame(["r", reply])
            else:
                stream = self._host.deliver_stream(payload, traceparent, priority, accepts_handoff)
                async for batch in stream:
                    writer.write(_frame(["b", batch]))
                    await writer.drain()
                last = _frame(["e"])
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:
            last = _error_frame(exc, self._agent)
        writer.write(last)
        await writer.drain()


class Connection:
    """A caller's end: one call to one replica.

    Args:
        reader: the connection's reader.
        writer: the connection's writer.
        agent: the callee (errors name it).
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, agent: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._agent = agent

    @classmethod
    async def open(cls, path: str, agent: str) -> Connection:
        """Connect; ``OSError`` when nothing listens there (the replica stopped), or when the
        replica does not accept within :data:`CONNECT_TIMEOUT_S` (its loop is stuck)."""
        try:
            reader, writer = await within(asyncio.open_unix_connection(path), CONNECT_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ConnectionRefusedError(f"{path}: not accepted in {CONNECT_TIMEOUT_S} s") from None
        return cls(reader, writer, agent)

    def close(self) -> None:
        """Hang up: before the end, the replica cancels the handler."""
        self._writer.close()

    async def send(self, payload: bytes, traceparent: str | None, priority: Priority) -> bytes:
        """A ``send``: the encoded reply."""
        self._writer.write(_frame(["send", payload, traceparent, priority, False]))
        msg = await self._next()
        if msg[0] != "r":
            raise self._broken(f"unexpected {msg[0]!r} frame")
        reply: bytes = msg[1]
        return reply

    async def stream(
        self, payload: bytes, traceparent: str | None, priority: Priority, accepts_handoff: bool
    ) -> AsyncGenerator[list[bytes], None]:
        """A ``stream``: batches of encoded items, as the replica's handler yields them."""
        self._writer.write(_frame(["stream", payload, traceparent, priority, accepts_handoff]))
        while True:
            msg = await self._next()
            if msg[0] == "e":
                return
            if msg[0] != "b":
                raise self._broken(f"unexpected {msg[0]!r} frame")
            yield msg[1]

    async def _next(self) -> list[Any]:
        try:
            msg = await _read_frame(self._reader)
        except _BROKEN as exc:
            raise self._broken(f"connection lost ({type(exc).__name__})") from None
        if msg[0] == "x":
            raise _error(msg, self._agent)
        return msg

    def _broken(self, detail: str) -> ReplicaUnavailable:
        return ReplicaUnavailable(self._agent, f"co-located call: {detail}")
