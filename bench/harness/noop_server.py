"""A no-op OpenAI-style HTTP server: the load generator's baseline and test double.

``python -m bench.selfcheck`` measures how fast the harness itself goes, so the server on the
other end must cost next to nothing: this is a raw :class:`asyncio.Protocol` (uvloop when
installed) that parses just enough HTTP/1.1 (request line, ``Content-Length``, keep-alive) and
answers every ``POST`` with a canned body -- no framework, no JSON decoding of the request.

* ``"stream": true`` in the body -> ``text/event-stream`` with ``Transfer-Encoding: chunked``:
  ``--tokens`` completion chunks (``choices[0].text`` and ``delta.content``, so both endpoints
  parse), then a ``usage`` chunk, then ``data: [DONE]``, exactly what vLLM and the raygent
  gateway send;
* otherwise one JSON completion with ``usage``;
* ``x-raygent-cache: hit`` when the exact request body was seen before, else ``miss`` -- so
  ``--repeat-fraction`` is checked end to end;
* ``--ttft-ms`` / ``--itl-ms`` delay the first chunk and space the others with the loop's
  timers: known timings for checking the harness's percentiles;
* a body containing ``"fail"`` as the model name gets a ``429`` with ``Retry-After: 1``;
* ``GET /stats`` -- with delays, what the *server* saw: per request, from the request's arrival
  to the write of its first chunk (server-side TTFT) and of its last token chunk (server-side
  E2E), on ``time.perf_counter`` (the client's clock too, on one machine); percentiles in ms.
  Its timers fire late (uvloop's are millisecond timers), so these, not the configured delays,
  are the truth a client's measurement is checked against. ``GET /stats?skip=N`` leaves out
  the first N requests (a client's warm-up); ``GET /reset`` clears them.

Run it in its own process so it never shares a core's time with the client under test:

    python -m bench.harness.noop_server --port 8765 --tokens 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from bench.harness.loop import run_loop

_MAX_SEEN = 100_000


def _sse_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def build_bodies(tokens: int) -> tuple[list[bytes], bytes, bytes]:
    """The canned answers: ``(stream chunk events, stream tail, JSON body)``. Each event is
    already framed as one HTTP chunk, so a reply is a handful of ``write`` calls."""
    base = {"id": "cmpl-noop", "object": "text_completion", "created": 0, "model": "noop"}
    events = []
    for i in range(tokens):
        choice = {"index": 0, "text": f" t{i}", "delta": {"content": f" t{i}"}}
        choice["finish_reason"] = "length" if i == tokens - 1 else None
        events.append(_sse_chunk(_event({**base, "choices": [choice]})))
    usage = {
        "prompt_tokens": 16,
        "completion_tokens": tokens,
        "total_tokens": 16 + tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    tail = _sse_chunk(_event({**base, "choices": [], "usage": usage}) + b"data: [DONE]\n\n")
    tail += b"0\r\n\r\n"
    body = json.dumps(
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "text": "".join(f" t{i}" for i in range(tokens)),
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "length",
                }
            ],
            "usage": usage,
        }
    ).encode()
    return events, tail, body


class NoopProtocol(asyncio.Protocol):
    """One connection: parse pipelined requests out of the byte stream, answer each."""

    def __init__(self, server: NoopServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio and uvloop both set TCP_NODELAY on TCP transports already.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            low = head.lower()
            i = low.find(b"content-length:")
            length = 0
            if i >= 0:
                j = low.find(b"\r\n", i)
                length = int(low[i + 15 : j if j >= 0 else len(low)])
            total = end + 4 + length
            if len(buf) < total:
                break
            body = buf[end + 4 : total]
            buf = buf[total:]
            self.server.answer(self, head, body)
        self.buf = buf

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class NoopServer:
    """The canned replies and the optional timing, shared by every connection."""

    def __init__(self, tokens: int, ttft_ms: float, itl_ms: float) -> None:
        self.events, self.tail, self.json_body = build_bodies(tokens)
        self.delay_first_s = ttft_ms / 1000
        self.itl_s = itl_ms / 1000
        self.seen: set[int] = set()
        self.loop = asyncio.get_event_loop()
        self.ttft_s: list[float] = []
        self.e2e_s: list[float] = []

    def stats(self, skip: int = 0) -> bytes:
        def pct(xs: list[float], p: float) -> float | None:
            if not xs:
                return None
            s = sorted(xs)
            k = (len(s) - 1) * p / 100
            lo = int(k)
            hi = min(lo + 1, len(s) - 1)
            return (s[lo] + (s[hi] - s[lo]) * (k - lo)) * 1000

        out = {
            name: {"count": len(xs), "median": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99)}
            for name, xs in (("ttft_ms", self.ttft_s[skip:]), ("e2el_ms", self.e2e_s[skip:]))
        }
        return json.dumps(out).encode()

    def _cache(self, body: bytes) -> bytes:
        key = hash(body)
        if key in self.seen:
            return b"hit"
        if len(self.seen) < _MAX_SEEN:
            self.seen.add(key)
        return b"miss"

    def answer(self, proto: NoopProtocol, head: bytes, body: bytes) -> None:
        t = proto.transport
        if t is None:
            return
        if not head.startswith(b"POST"):
            reply = b"ok"
            if head.startswith(b"GET /stats"):
                line = head.split(b"\r\n", 1)[0]
                _, _, skip = line.split(b" ")[1].partition(b"skip=")
                reply = self.stats(int(skip or 0))
            elif head.startswith(b"GET /reset"):
                self.ttft_s.clear()
                self.e2e_s.clear()
            t.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply))
            return
        if b'"model":"fail"' in body or b'"model": "fail"' in body:
            t.write(
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
            )
            return
        cache = self._cache(body)
        if b'"stream":true' in body or b'"stream": true' in body:
            t.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\nx-raygent-cache: " + cache + b"\r\n\r\n"
            )
            if self.delay_first_s or self.itl_s:
                self._timed(proto, 0, self.delay_first_s, time.perf_counter())
            else:
                t.writelines([*self.events, self.tail])
            return
        t.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-raygent-cache: "
            + cache
            + b"\r\ncontent-length: %d\r\n\r\n" % len(self.json_body)
            + self.json_body
        )

    def _timed(self, proto: NoopProtocol, i: int, delay: float, arrived: float) -> None:
        def send() -> None:
            t = proto.transport
            if t is None:
                return
            if i < len(self.events):
                t.write(self.events[i])
                if i == 0 and len(self.ttft_s) < _MAX_SEEN:
                    self.ttft_s.append(time.perf_counter() - arrived)
                if i == len(self.events) - 1 and len(self.e2e_s) < _MAX_SEEN:
                    self.e2e_s.append(time.perf_counter() - arrived)
                self._timed(proto, i + 1, self.itl_s, arrived)
            else:
                t.write(self.tail)

        if i == len(self.events):
            send()
        else:
            self.loop.call_at(self.loop.time() + delay, send)


async def serve(host: str, port: int, tokens: int, ttft_ms: float, itl_ms: float) -> None:
    """Serve until cancelled; prints ``READY <port>`` once listening (the parent waits on it)."""
    server_state = NoopServer(tokens, ttft_ms, itl_ms)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: NoopProtocol(server_state), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="no-op OpenAI-style server for the harness")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--tokens", type=int, default=8, help="completion chunks per stream")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="delay of the first chunk")
    parser.add_argument("--itl-ms", type=float, default=0.0, help="gap between later chunks")
    args = parser.parse_args(argv)
    try:
        run_loop(serve(args.host, args.port, args.tokens, args.ttft_ms, args.itl_ms))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
