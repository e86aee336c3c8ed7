"""Co-located calls over a replica's Unix socket, server and caller in one process.

What a caller through Serve's handle gets must hold here too: every batch in order, the
reply, the callee's SDK error with its attributes (anything else as ``HandlerError``), a
hang-up that cancels the handler, ``ReplicaUnavailable`` when the replica goes mid-call, and
``OSError`` at connect when nothing listens (the caller then goes by Serve).
"""

import asyncio
import os
import shutil
import struct
import tempfile
import uuid
from pathlib import Path

import pytest

from agents.errors import Backpressure, HandlerError, ReplicaUnavailable
from runtime.cluster import sockets
from runtime.cluster.sockets import CallServer, Connection


class Host:
    """A replica's two calls, scripted."""

    def __init__(self) -> None:
        self.batches = [[b"a"], [b"b", b"c"]]
        self.fail: BaseException | None = None
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.hold = False  # the stream waits after its first batch until cancelled
        self.seen: list = []

    async def deliver(self, payload, traceparent, priority):
        self.seen.append((payload, traceparent, priority))
        if self.fail is not None:
            raise self.fail
        return b"reply:" + payload

    async def deliver_stream(self, payload, traceparent, priority, accepts_handoff):
        self.seen.append((payload, traceparent, priority, accepts_handoff))
        self.entered.set()
        try:
            if self.fail is not None:
                raise self.fail
            for batch in self.batches:
                yield batch
                if self.hold:
                    await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.fixture
def tmp_path():
    """A short one: a socket's path must fit in 108 bytes."""
    path = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def served(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(sockets.tempfile, "tempdir", None)  # re-read TMPDIR
    host = Host()
    server = CallServer(host, "echo")
    path = await server.start()
    assert path is not None and os.path.dirname(path).startswith(str(tmp_path))
    yield host, server
    server.close()


async def test_a_stream_arrives_batch_by_batch_with_the_call_s_arguments(served):
    host, server = served
    conn = await Connection.open(server.path, "echo")
    got = [b async for b in conn.stream(b"msg", "00-tp", "background", True)]
    conn.close()
    assert got == [[b"a"], [b"b", b"c"]]
    assert host.seen == [(b"msg", "00-tp", "background", True)]
    assert server.calls == 1


async def test_a_send_returns_the_reply(served):
    host, server = served
    conn = await Connection.open(server.path, "echo")
    assert await conn.send(b"x", None, "interactive") == b"reply:x"
    conn.close()
    assert host.seen == [(b"x", None, "interactive")]


async def test_the_callee_s_sdk_error_arrives_with_its_attributes(served):
    host, server = served
    host.fail = Backpressure("echo", 64)
    conn = await Connection.open(server.path, "echo")
    with pytest.raises(Backpressure) as err:
        await conn.send(b"x", None, "interactive")
    conn.close()
    assert str(err.value) == str(Backpressure("echo", 64)) and err.value.retryable
    assert err.value.__dict__ == Backpressure("echo", 64).__dict__


async def test_any_other_error_is_a_handler_error_naming_its_type(served):
    host, server = served
    host.fail = ValueError("bad thing")
    conn = await Connection.open(server.path, "echo")
    with pytest.raises(HandlerError) as err:
        _ = [b async for b in conn.stream(b"x", None, "interactive", False)]
    conn.close()
    assert err.value.agent == "echo" and err.value.cause_type == "ValueError"
    assert "bad thing" in str(err.value)


async def test_an_error_class_the_caller_has_not_imported_is_described_not_rebuilt():
    frame = sockets._error_frame(HandlerError("echo", "call", "X", "y"), "echo")
    msg = sockets.msgpack.unpackb(frame[4:], raw=False)
    msg[1] = "no.such.module"
    err = sockets._error(msg, "echo")
    assert type(err) is HandlerError and err.cause_type == "HandlerError"
    err = sockets._error(["x", ["not", "a", "module"], 1, None, 7], "echo")
    assert type(err) is HandlerError and err.cause_type == "unreadable error"


async def test_hanging_up_mid_stream_cancels_the_handler(served):
    host, server = served
    host.hold = True
    conn = await Connection.open(server.path, "echo")
    stream = conn.stream(b"x", None, "interactive", False)
    assert await anext(stream) == [b"a"]
    await stream.aclose()
    conn.close()
    await asyncio.wait_for(host.cancelled.wait(), 5)


async def test_a_replica_that_goes_mid_call_is_replica_unavailable(tmp_path):
    """A peer that reads the request and hangs up without an answer (a replica killed)."""
    path = str(tmp_path / "dead.sock")

    async def hang_up(reader, writer):
        (n,) = struct.unpack(">I", await reader.readexactly(4))
        await reader.readexactly(n)
        writer.close()

    server = await asyncio.start_unix_server(hang_up, path)
    try:
        conn = await Connection.open(path, "echo")
        with pytest.raises(ReplicaUnavailable, match="connection lost"):
            _ = [b async for b in conn.stream(b"x", None, "interactive", False)]
        conn.close()
    finally:
        server.close()


async def test_a_closed_server_refuses_and_leaves_no_socket(served):
    _, server = served
    path = server.path
    server.close()
    assert not await asyncio.to_thread(os.path.exists, path)
    with pytest.raises(OSError):
        await Connection.open(path, "echo")


async def test_a_new_server_removes_the_sockets_of_processes_that_are_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(sockets.tempfile, "tempdir", None)
    directory = sockets.socket_dir()
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    stale = directory / f"{dead.pid}-aaaa.sock"
    mine = directory / f"{os.getpid()}-bbbb.sock"
    other = directory / "notes.sock"
    for f in (stale, mine, other):
        f.touch()
    server = CallServer(Host(), "echo")
    await server.start()
    server.close()
    assert sorted(p.name for p in directory.iterdir()) == sorted([mine.name, other.name])


async def test_a_socket_directory_others_can_enter_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(sockets.tempfile, "tempdir", None)
    shared = tmp_path / f"raygent-{os.getuid()}"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    assert sockets.socket_dir() is None
    assert await CallServer(Host(), "echo").start() is None
    shared.chmod(0o700)
    assert sockets.socket_dir() == shared


async def test_a_path_too_long_for_a_socket_leaves_the_replica_on_serve(monkeypatch, tmp_path):
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setenv("TMPDIR", str(deep))
    monkeypatch.setattr(sockets.tempfile, "tempdir", None)
    server = CallServer(Host(), "echo")
    assert await server.start() is None and server.path is None


async def test_garbage_on_the_socket_is_dropped_and_the_server_serves_on(served):
    _, server = served
    reader, writer = await asyncio.open_unix_connection(server.path)
    writer.write(struct.pack(">I", 1 << 31) + uuid.uuid4().bytes)  # a length past the limit
    assert await reader.read() == b""  # hung up
    writer.close()
    reader, writer = await asyncio.open_unix_connection(server.path)
    writer.write(struct.pack(">I", 2) + b"\xc1\xc1")  # not msgpack
    assert await reader.read() == b""
    writer.close()
    conn = await Connection.open(server.path, "echo")
    assert await conn.send(b"y", None, "interactive") == b"reply:y"
    conn.close()
