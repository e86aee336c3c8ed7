"""HTTP clients that send one request and fill a :class:`RequestRecord` with its timings.

Chosen by measurement (``python -m bench.selfcheck`` repeats it; one core, 64 connections,
streamed 8-chunk answers from the no-op server; quiet 2-core machine, median of 3 trials): the
hand-written HTTP/1.1 client (:mod:`bench.harness.rawhttp`) 7,100 requests/s (6,500 per
CPU-second), aiohttp (``TCPConnector`` with a connection limit, uvloop) 3,500 (3,300 per
CPU-second), httpx 340 (190). Under other people's load the raw client still did 3,000+.
Against a server that writes every token as its own network packet, aiohttp's per-read cost (a
``StreamReader`` and a resumed coroutine per read) kept it near 1,000 requests/s at 8 chunks
each; the raw client parses each read where it arrives and timestamps it then.

The variants sit behind :class:`Client`; :func:`make_client` builds one:

* ``"raw"`` -- :class:`RawClient`, the default;
* ``"aiohttp"`` -- :class:`AiohttpClient`, the well-trodden alternative;
* ``"httpx"`` -- :class:`HttpxClient`, for comparison only.

Errors of the server are recorded, never raised, with a *kind*: ``http_<status>`` (with the
``Retry-After`` of a 429/503), ``timeout`` (``--timeout``), ``connection`` (refused, reset,
closed early), ``protocol`` (a body that is not the JSON/SSE the API promises),
``stream_error`` (an ``{"error": ...}`` event inside a 200 stream) and ``no_tokens`` (a
stream cut off before its first token chunk, which vLLM also counts as failed). A stream that
ends properly (``[DONE]``, ``usage`` or a ``finish_reason``) with an empty answer is a success
with 0 output tokens and no TTFT -- unlike vLLM, which counts every token-less stream as failed.
"""

from __future__ import annotations

import abc
import asyncio
import json
import time
from typing import Any

from bench.harness.metrics import RequestRecord
from bench.harness.rawhttp import HttpConnectionError, HttpProtocolError, HttpTimeout, RawHttpPool
from bench.harness.sse import SSEParser

__all__ = ["AiohttpClient", "Client", "ClientConfig", "HttpxClient", "RawClient", "make_client"]

_DONE = b"[DONE]"
_decode = json.JSONDecoder().decode
_DETAIL_BYTES = 300


class ClientConfig:
    """Connection settings shared by every request of a run.

    Args:
        base_url: ``http://host:port`` of the endpoint (a trailing ``/v1`` is tolerated).
        api_key: sent as ``Authorization: Bearer <key>`` when set.
        headers: extra headers for every request.
        timeout_s: total time allowed for one request (``--timeout``).
        connect_timeout_s: time allowed to open a connection.
        max_connections: the connection pool's size (0 = unbounded).
        tokenizer: counts output tokens when the server sends no ``usage``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 10.0,
        max_connections: int = 0,
        tokenizer: Any = None,
    ) -> None:
        base = base_url.rstrip("/")
        self.base_url = base[:-3] if base.endswith("/v1") else base
        self.headers = {"content-type": "application/json", **(headers or {})}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self.tokenizer = tokenizer


class _Response:
    """Folds one response's events into the record; shared by both client variants."""

    __slots__ = ("complete", "first", "last", "parts", "rec", "sse", "t0", "usage_out")

    def __init__(self, rec: RequestRecord, t0: float) -> None:
        self.rec = rec
        self.t0 = t0
        self.sse = SSEParser()
        self.first: float | None = None
        self.last = t0
        self.parts: list[str] = []
        self.usage_out: int | None = None
        self.complete = False  # [DONE], usage or a finish_reason arrived: the stream was whole

    def feed(self, chunk: bytes, now: float) -> None:
        for data in self.sse.feed(chunk):
            self.event(data, now)

    def event(self, data: bytes, now: float) -> None:
        if data == _DONE:
            self.complete = True
            return
        try:
            obj = _decode(data.decode())  # str in: json.loads(bytes) sniffs the encoding first
        except ValueError:
            if not self.rec.error:
                self.rec.error = "protocol"
                self.rec.error_detail = data[:_DETAIL_BYTES].decode(errors="replace")
            return
        if not isinstance(obj, dict):
            return
        choices = obj.get("choices")
        if choices:
            c = choices[0]
            if c.get("finish_reason"):
                self.complete = True
            text = c.get("text")
            if text is not None:
                token = True  # a completions chunk is a token chunk even with text "" (vLLM)
            else:
                delta = c.get("delta") or c.get("message") or {}
                text = (
                    delta.get("content")
                    or delta.get("reasoning_content")
                    or delta.get("reasoning")
                    or ""
                )
                token = bool(text) or bool(delta.get("tool_calls"))
            if token:
                if self.first is None:
                    self.first = now
                else:
                    self.rec.itl_s.append(now - self.last)
                self.last = now
                self.rec.output_tokens += 1  # chunks; replaced by usage when it comes
                if text:
                    self.parts.append(text)
        usage = obj.get("usage")
        if usage:
            self.complete = True
            if usage.get("prompt_tokens") is not None:
                self.rec.input_tokens = usage["prompt_tokens"]
            self.rec.cached_tokens = _cached(usage)
            self.usage_out = usage.get("completion_tokens")
        err = obj.get("error")
        if err and not self.rec.error:
            self.rec.error = "stream_error"
            self.rec.error_detail = json.dumps(err)[:_DETAIL_BYTES]

    def finish_stream(self, now: float, tokenizer: Any) -> None:
        for data in self.sse.finish():
            self.event(data, now)
        rec = self.rec
        rec.done_s = now - self.t0
        rec.text = "".join(self.parts)
        if self.first is None:
            if rec.error:
                return
            if not self.complete:  # cut off before any token: vLLM counts it as failed too
                rec.error = "no_tokens"
                return
            # A whole stream with an empty answer (an agent may reply ""): a success with
            # no TTFT; E2E is the whole response.
            rec.e2el_s = rec.done_s
            rec.output_tokens = 0
            self._count(tokenizer)
            return
        rec.ttft_s = self.first - self.t0
        rec.e2el_s = self.last - self.t0
        self._count(tokenizer)

    def finish_json(self, body: bytes, now: float, tokenizer: Any) -> None:
        rec = self.rec
        rec.done_s = rec.e2el_s = now - self.t0
        try:
            obj = json.loads(body)
            c = obj["choices"][0]
            text = c.get("text")
            if text is None:
                text = (c.get("message") or {}).get("content") or ""
            usage = obj.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            rec.error = "protocol"
            rec.error_detail = body[:_DETAIL_BYTES].decode(errors="replace")
            return
        rec.text = text
        self.parts = [text]
        if usage:
            rec.input_tokens = usage.get("prompt_tokens", rec.input_tokens)
            rec.cached_tokens = _cached(usage)
            self.usage_out = usage.get("completion_tokens")
        rec.output_tokens = 1 if text else 0
        self._count(tokenizer)

    def _count(self, tokenizer: Any) -> None:
        rec = self.rec
        if self.usage_out is not None:
            rec.output_tokens = int(self.usage_out)
            rec.tokens_source = "usage"
        elif tokenizer is not None:
            rec.output_tokens = len(tokenizer.encode(rec.text, add_special_tokens=False))
            rec.tokens_source = "tokenizer"
        else:
            rec.tokens_source = "chunks"


class Client(abc.ABC):
    """Sends requests over a pooled connection set; one instance per event loop."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config

    @abc.abstractmethod
    async def send(self, path: str, body: bytes, stream: bool, rec: RequestRecord) -> None:
        """POST ``body`` to ``path`` and fill ``rec`` (``start_s``, timings, tokens, error).
        Never raises for the server's failures (see the module docstring); cancellation
        propagates."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every pooled connection. Safe to call twice."""

    async def get(self, path: str) -> int:
        """Status of ``GET path`` (readiness probes); 0 when it cannot connect."""
        raise NotImplementedError


class AiohttpClient(Client):
    """aiohttp with one ``ClientSession`` and a bounded ``TCPConnector`` (keep-alive)."""

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        import aiohttp

        self._aiohttp = aiohttp
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=config.timeout_s, sock_connect=config.connect_timeout_s
        )

    def _sess(self) -> Any:
        if self._session is None:  # created lazily: it must be made inside the running loop
            aiohttp = self._aiohttp
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.config.max_connections,
                    limit_per_host=self.config.max_connections,
                    keepalive_timeout=60,
                ),
                timeout=self._timeout,
                headers=self.config.headers,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(self, path: str, body: bytes, stream: bool, rec: RequestRecord) -> None:
        aiohttp = self._aiohttp
        session = self._sess()
        url = self.config.base_url + path
        perf = time.perf_counter
        t0 = perf()
        rec.start_s = t0
        resp_state = _Response(rec, t0)
        try:
            async with session.post(url, data=body) as resp:
                rec.status = resp.status
                rec.cache = resp.headers.get("x-raygent-cache", "")
                rec.variant = resp.headers.get("x-raygent-variant", "")
                if resp.status != 200:
                    rec.error = f"http_{resp.status}"
                    rec.retry_after = resp.headers.get("retry-after", "")
                    detail = await resp.content.read(_DETAIL_BYTES)
                    rec.error_detail = detail.decode(errors="replace")
                    rec.done_s = perf() - t0
                    return
                if stream:
                    async for chunk in resp.content.iter_any():
                        resp_state.feed(chunk, perf())
                    resp_state.finish_stream(perf(), self.config.tokenizer)
                else:
                    data = await resp.read()
                    resp_state.finish_json(data, perf(), self.config.tokenizer)
        except (asyncio.TimeoutError, TimeoutError):
            _fail(rec, "timeout", f"no answer within --timeout {self.config.timeout_s:g}s", t0)
        except (aiohttp.ClientConnectionError, OSError) as exc:
            _fail(rec, "connection", repr(exc), t0)
        except aiohttp.ClientError as exc:
            _fail(rec, "protocol", repr(exc), t0)

    async def get(self, path: str) -> int:
        try:
            async with self._sess().get(self.config.base_url + path) as resp:
                await resp.read()
                return resp.status
        except (self._aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return 0

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class RawClient(Client):
    """The hand-written HTTP/1.1 client (:mod:`bench.harness.rawhttp`): bytes are parsed and
    timestamped inside ``data_received``, with no stream reader or coroutine per read."""

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        self._pool: RawHttpPool | None = None

    def _p(self) -> RawHttpPool:
        if self._pool is None:  # made lazily: its semaphore belongs to the running loop
            self._pool = RawHttpPool(
                self.config.base_url, self.config.headers, self.config.max_connections
            )
        return self._pool

    async def send(self, path: str, body: bytes, stream: bool, rec: RequestRecord) -> None:
        perf = time.perf_counter
        t0 = perf()
        rec.start_s = t0
        state = _Response(rec, t0)
        parts: list[bytes] = []

        def on_head(status: int, headers: dict[bytes, bytes]) -> None:
            rec.status = status
            rec.cache = headers.get(b"x-raygent-cache", b"").decode()
            rec.variant = headers.get(b"x-raygent-variant", b"").decode()
            if status != 200:
                rec.error = f"http_{status}"
                rec.retry_after = headers.get(b"retry-after", b"").decode()

        def on_data(data: bytes, now: float) -> None:
            if stream and rec.status == 200:
                state.feed(data, now)
            else:
                parts.append(data)

        cfg = self.config
        try:
            await self._p().request(
                "POST", path, body, on_head, on_data, cfg.timeout_s, cfg.connect_timeout_s
            )
        except HttpTimeout:
            _fail(rec, "timeout", f"no answer within --timeout {cfg.timeout_s:g}s", t0)
            return
        except HttpConnectionError as exc:
            _fail(rec, "connection", str(exc), t0)
            return
        except HttpProtocolError as exc:
            _fail(rec, "protocol", str(exc), t0)
            return
        now = perf()
        if rec.status != 200:
            rec.error_detail = b"".join(parts)[:_DETAIL_BYTES].decode(errors="replace")
            rec.done_s = now - t0
        elif stream:
            state.finish_stream(now, cfg.tokenizer)
        else:
            state.finish_json(b"".join(parts), now, cfg.tokenizer)

    async def get(self, path: str) -> int:
        status = [0]

        def on_head(code: int, headers: dict[bytes, bytes]) -> None:
            status[0] = code

        try:
            await self._p().request(
                "GET", path, b"", on_head, lambda d, t: None, self.config.connect_timeout_s
            )
        except (HttpTimeout, HttpConnectionError, HttpProtocolError):
            return 0
        return status[0]

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


class HttpxClient(Client):
    """httpx's ``AsyncClient``: measured against aiohttp, not the default (see above)."""

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        import httpx

        self._httpx = httpx
        limit = config.max_connections or None
        self._client = httpx.AsyncClient(
            headers=config.headers,
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
        )

    async def send(self, path: str, body: bytes, stream: bool, rec: RequestRecord) -> None:
        httpx = self._httpx
        perf = time.perf_counter
        t0 = perf()
        rec.start_s = t0
        state = _Response(rec, t0)
        try:
            async with self._client.stream(
                "POST", self.config.base_url + path, content=body
            ) as resp:
                rec.status = resp.status_code
                rec.cache = resp.headers.get("x-raygent-cache", "")
                rec.variant = resp.headers.get("x-raygent-variant", "")
                if resp.status_code != 200:
                    rec.error = f"http_{resp.status_code}"
                    rec.retry_after = resp.headers.get("retry-after", "")
                    rec.done_s = perf() - t0
                    return
                if stream:
                    async for chunk in resp.aiter_raw():
                        state.feed(chunk, perf())
                    state.finish_stream(perf(), self.config.tokenizer)
                else:
                    data = await resp.aread()
                    state.finish_json(data, perf(), self.config.tokenizer)
        except httpx.TimeoutException:
            _fail(rec, "timeout", f"no answer within --timeout {self.config.timeout_s:g}s", t0)
        except (httpx.TransportError, OSError) as exc:
            _fail(rec, "connection", repr(exc), t0)

    async def close(self) -> None:
        await self._client.aclose()


def _fail(rec: RequestRecord, kind: str, detail: str, t0: float) -> None:
    rec.error = kind
    rec.error_detail = detail[:_DETAIL_BYTES]
    rec.done_s = time.perf_counter() - t0


CLIENTS = ("raw", "aiohttp", "httpx")


def make_client(config: ClientConfig, kind: str = "raw") -> Client:
    """The client for ``kind`` (see the module docstring): ``"raw"`` (default), ``"aiohttp"``
    or ``"httpx"``."""
    if kind == "raw":
        return RawClient(config)
    if kind == "aiohttp":
        return AiohttpClient(config)
    if kind == "httpx":
        return HttpxClient(config)
    raise ValueError(f"unknown client {kind!r}: use one of {', '.join(CLIENTS)}")


def _cached(usage: dict[str, Any]) -> int | None:
    """OpenAI's ``usage.prompt_tokens_details.cached_tokens``, when the server sends it."""
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) else None
