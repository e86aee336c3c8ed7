"""A minimal HTTP/1.1 keep-alive client on asyncio protocols: the harness's fast transport.

Why it exists: the harness must never be the bottleneck. With aiohttp every network read of a
stream goes through a ``StreamReader`` and a resumed coroutine; against a server streaming one
token per write that costs ~100 us per chunk, and at 2,000 streamed requests/s of 8 chunks the
client ran out of its core (``python -m bench.selfcheck`` measures both). Here a read is one
``data_received`` call that parses in place and hands the body bytes to the SSE parser, and it
is timestamped *when the bytes arrive*, not when a coroutine gets round to them.

What it speaks: ``POST`` and ``GET`` with a ``Content-Length`` body; responses framed by
``Content-Length``, ``Transfer-Encoding: chunked`` (extensions and trailers skipped) or the end
of the connection; keep-alive unless the server says ``Connection: close`` or speaks HTTP/1.0;
``http`` and ``https``. No redirects, proxies, compression (it does not ask for any), or
pipelining. A reused connection the server closed while idle is retried once on a new one if
not a byte of the answer had arrived.

Response parsing states (one exchange per request)::

    HEAD --blank line--> LENGTH (Content-Length) ---------------------> DONE
                     \\-> CHUNK_SIZE -> CHUNK_DATA -> CHUNK_END -> CHUNK_SIZE ... size 0
                     |                                          -> TRAILER -> DONE
                     \\-> UNTIL_CLOSE (no framing: the body ends with the connection)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["HttpConnectionError", "HttpProtocolError", "HttpTimeout", "RawHttpPool"]

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)
_MAX_HEAD = 64 * 1024


class HttpConnectionError(ConnectionError):
    """Refused, reset or closed before the answer was complete. Recoverable: a new request."""


class HttpProtocolError(Exception):
    """The bytes are not HTTP/1.1 this client understands. Fatal for the connection."""


class HttpTimeout(TimeoutError):
    """No complete answer within the request's timeout."""


OnHead = Callable[[int, dict[bytes, bytes]], None]
OnData = Callable[[bytes, float], None]


class _Exchange:
    """One request's response parser; fed by the connection's ``data_received``."""

    __slots__ = (
        "buf",
        "fut",
        "got_bytes",
        "keep_alive",
        "on_data",
        "on_head",
        "remaining",
        "state",
    )

    def __init__(self, fut: asyncio.Future[bool], on_head: OnHead, on_data: OnData) -> None:
        self.fut = fut
        self.on_head = on_head
        self.on_data = on_data
        self.buf = b""
        self.state = _HEAD
        self.remaining = 0
        self.keep_alive = True
        self.got_bytes = False

    def _finish(self) -> None:
        self.state = _DONE
        if not self.fut.done():
            self.fut.set_result(self.keep_alive)

    def fail(self, exc: BaseException) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)

    def feed(self, data: bytes, now: float) -> None:
        self.got_bytes = True
        buf = self.buf + data if self.buf else data
        try:
            buf = self._parse(buf, now)
        except (ValueError, IndexError) as exc:
            self.fail(HttpProtocolError(f"malformed response: {exc}"))
            return
        self.buf = buf

    def _parse(self, buf: bytes, now: float) -> bytes:
        while buf:
            st = self.state
            if st == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise ValueError("response head over 64 KiB")
                    return buf
                self._head(buf[:end])
                buf = buf[end + 4 :]
                if self.state == _DONE:
                    return buf
            elif st in (_LENGTH, _CHUNK_DATA):
                take = min(len(buf), self.remaining)
                self.on_data(buf[:take] if take < len(buf) else buf, now)
                buf = buf[take:]
                self.remaining -= take
                if not self.remaining:
                    if st == _LENGTH:
                        self._finish()
                        return buf
                    self.state = _CHUNK_END
            elif st == _CHUNK_SIZE:
                i = buf.find(b"\r\n")
                if i < 0:
                    return buf
                size = int(buf[:i].split(b";", 1)[0], 16)
                buf = buf[i + 2 :]
                if size:
                    self.remaining = size
                    self.state = _CHUNK_DATA
                else:
                    self.state = _TRAILER
            elif st == _CHUNK_END:
                if len(buf) < 2:
                    return buf
                if buf[:2] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                buf = buf[2:]
                self.state = _CHUNK_SIZE
            elif st == _TRAILER:
                i = buf.find(b"\r\n")
                if i < 0:
                    return buf
                line, buf = buf[:i], buf[i + 2 :]
                if not line:
                    self._finish()
                    return buf
            elif st == _UNTIL_CLOSE:
                self.on_data(buf, now)
                return b""
            else:  # _DONE: bytes after the answer -- the connection is not reusable
                self.keep_alive = False
                return b""
        return buf

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, status_s = lines[0].split(b" ", 2)[:2]
        status = int(status_s)
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real head follows
            return
        self.keep_alive = (
            version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
        )
        self.on_head(status, headers)
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self.state = _CHUNK_SIZE
        elif b"content-length" in headers:
            self.remaining = int(headers[b"content-length"])
            self.state = _LENGTH
            if not self.remaining:
                self._finish()
        elif status in (204, 304):
            self._finish()
        else:
            self.keep_alive = False
            self.state = _UNTIL_CLOSE

    def lost(self, exc: BaseException | None) -> None:
        if self.state == _UNTIL_CLOSE:
            self._finish()
        else:
            self.fail(HttpConnectionError(f"connection closed mid-answer ({exc or 'EOF'})"))


class _Conn(asyncio.Protocol):
    """One TCP connection; routes bytes to the current exchange."""

    __slots__ = ("closed", "ex", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.ex: _Exchange | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.ex is None:  # nothing was asked: the connection is out of step
            self.close()
            return
        self.ex.feed(data, now)

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.ex is not None:
            self.ex.lost(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class RawHttpPool:
    """Keep-alive connections to one ``base_url``, at most ``limit`` open (0 = unbounded).

    Example (inside a coroutine; ``on_head(status, headers)``, ``on_data(bytes, t)``)::

        pool = RawHttpPool("http://127.0.0.1:8000", {"content-type": "application/json"})
        await pool.request("POST", "/v1/completions", b"{}", on_head, on_data, timeout_s=30)
        await pool.close()
    """

    def __init__(self, base_url: str, headers: dict[str, str], limit: int = 0) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl = u.scheme == "https"
        self.prefix = u.path.rstrip("/")
        host_header = u.netloc.encode()
        extra = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        self._fixed = b"Host: " + host_header + b"\r\n" + extra
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._sem = asyncio.Semaphore(limit) if limit else None

    async def _connect(self, timeout_s: float) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Conn, self.host, self.port, ssl=self.ssl or None),
                timeout_s,
            )
        except asyncio.TimeoutError as exc:
            raise HttpTimeout(f"connect to {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise HttpConnectionError(f"connect to {self.host}:{self.port}: {exc}") from exc
        self._all.add(conn)
        return conn

    def _release(self, conn: _Conn, reusable: bool) -> None:
        conn.ex = None
        if reusable and not conn.closed:
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes,
        on_head: OnHead,
        on_data: OnData,
        timeout_s: float,
        connect_timeout_s: float = 10.0,
    ) -> None:
        """Send one request and feed its answer to the callbacks as bytes arrive; returns when
        the answer is complete. Raises HttpConnectionError, HttpProtocolError or HttpTimeout."""
        if self._sem is not None:
            await self._sem.acquire()
        try:
            await self._request(method, path, body, on_head, on_data, timeout_s, connect_timeout_s)
        finally:
            if self._sem is not None:
                self._sem.release()

    async def _request(
        self,
        method: str,
        path: str,
        body: bytes,
        on_head: OnHead,
        on_data: OnData,
        timeout_s: float,
        connect_timeout_s: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        data = (
            b"%s %s%s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n"
            % (method.encode(), self.prefix.encode(), path.encode(), self._fixed, len(body))
            + body
        )
        for attempt in range(2):
            reused = False
            conn = None
            while self._idle:
                c = self._idle.pop()
                if not c.closed:
                    conn, reused = c, True
                    break
                self._all.discard(c)
            if conn is None:
                conn = await self._connect(connect_timeout_s)
            fut: asyncio.Future[bool] = loop.create_future()
            ex = _Exchange(fut, on_head, on_data)
            conn.ex = ex
            assert conn.transport is not None
            conn.transport.write(data)
            timer = loop.call_later(timeout_s, ex.fail, HttpTimeout(f"no answer in {timeout_s}s"))
            try:
                keep = await fut
            except HttpConnectionError:
                self._release(conn, False)
                if reused and not ex.got_bytes and attempt == 0:
                    continue  # the server had closed the idle connection: once more, fresh
                raise
            except BaseException:
                self._release(conn, False)
                raise
            finally:
                timer.cancel()
            self._release(conn, keep)
            return

    async def close(self) -> None:
        """Close every connection. Safe to call twice."""
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run their connection_lost callbacks
