"""The hand-written HTTP/1.1 client: framing split at every byte, keep-alive, failures."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from bench.harness.rawhttp import (
    HttpConnectionError,
    HttpProtocolError,
    HttpTimeout,
    RawHttpPool,
    _Exchange,
)

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Raygent-Cache: hit\r\n\r\n"
    b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n"
)
LENGTH = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\nRetry-After: 2\r\n\r\nbusy"


def _run(raw: bytes, cuts: list[int]):
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()
        heads, body = [], []
        ex = _Exchange(fut, lambda s, h: heads.append((s, h)), lambda d, t: body.append(d))
        prev = 0
        for c in [*cuts, len(raw)]:
            ex.feed(raw[prev:c], 0.0)
            prev = c
        return heads, b"".join(body), fut
    finally:
        loop.close()


@pytest.mark.parametrize("cut", range(1, len(CHUNKED)))
def test_chunked_split_anywhere(cut):
    heads, body, fut = _run(CHUNKED, [cut])
    assert heads[0][0] == 200 and heads[0][1][b"x-raygent-cache"] == b"hit"
    assert body == b"hello, world"
    assert fut.done() and fut.result() is True  # keep-alive


@pytest.mark.parametrize("cut", range(1, len(LENGTH)))
def test_content_length_split_anywhere(cut):
    heads, body, fut = _run(LENGTH, [cut])
    assert heads[0][0] == 429 and heads[0][1][b"retry-after"] == b"2"
    assert body == b"busy" and fut.result() is True


def test_connection_close_and_http10_are_not_reused():
    _, _, fut = _run(LENGTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1), [])
    assert fut.result() is False
    _, _, fut = _run(LENGTH.replace(b"HTTP/1.1", b"HTTP/1.0"), [])
    assert fut.result() is False


def test_interim_100_continue_is_skipped():
    heads, body, fut = _run(b"HTTP/1.1 100 Continue\r\n\r\n" + LENGTH, [])
    assert [h[0] for h in heads] == [429] and body == b"busy"


def test_garbage_is_a_protocol_error():
    _, _, fut = _run(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", [])
    assert isinstance(fut.exception(), HttpProtocolError)


@contextlib.asynccontextmanager
async def server(handler):
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    finally:
        srv.close()
        await srv.wait_closed()


async def _read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(n)


async def test_keep_alive_reuse_and_stale_connection_retry():
    conns = []

    async def handler(reader, writer):
        conns.append(writer)
        head, body = await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        if len(conns) == 1:  # keep the first connection for a second request
            head, body = await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()  # then close it while the client holds it idle

    got = []
    async with server(handler) as url:
        pool = RawHttpPool(url, {"content-type": "application/json"}, limit=1)
        try:
            for i in range(3):
                await pool.request("POST", "/x", b"abc%d" % i, lambda s, h: None,
                                   lambda d, t: got.append(d), 5)  # fmt: skip
                await asyncio.sleep(0.05)
        finally:
            await pool.close()
    assert got == [b"abc0", b"ok", b"abc2"]
    assert len(conns) == 2  # one reuse, one fresh connection after the server closed


async def test_timeout_and_refused():
    release = asyncio.Event()

    async def silent(reader, writer):
        await release.wait()
        writer.close()

    async with server(silent) as url:
        pool = RawHttpPool(url, {})
        try:
            with pytest.raises(HttpTimeout):
                await pool.request("POST", "/", b"", lambda s, h: None, lambda d, t: None, 0.1)
        finally:
            release.set()
            await pool.close()
    from bench.harness.servers import free_port

    pool = RawHttpPool(f"http://127.0.0.1:{free_port()}", {})
    with pytest.raises(HttpConnectionError):
        await pool.request("GET", "/", b"", lambda s, h: None, lambda d, t: None, 1)
    await pool.close()
