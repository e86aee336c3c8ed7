"""Incremental Server-Sent Events parsing: network chunks in, ``data`` payloads out.

A stream's bytes arrive in arbitrary pieces: one network read may hold half an event, or three.
The parser keeps the unfinished tail and returns each *complete* event's data as soon as its
blank line arrives, so the caller can timestamp it with the read that completed it (the
token-timing metrics depend on exactly that). Per the SSE specification: lines end in LF, CRLF
or CR (a CR at the end of a read is held back, it may be half a CRLF); ``:`` starts a comment
(servers' keep-alive pings); several ``data`` lines of one event are joined with LF; one space
after the colon is dropped; other fields (``event``, ``id``, ``retry``) are ignored.

Unlike the specification, :meth:`SSEParser.finish` also returns an event left without its
closing blank line when the stream ends -- servers that end on ``data: [DONE]\\n`` exist.

Example:
    >>> p = SSEParser()
    >>> p.feed(b'data: {"a": 1}\\n\\ndata: [DO')
    [b'{"a": 1}']
    >>> p.feed(b"NE]\\n\\n")
    [b'[DONE]']
"""

from __future__ import annotations

__all__ = ["SSEParser"]


class SSEParser:
    """One stream's parser state: the unfinished line and the current event's data lines."""

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add one network read; return the data of every event it completed, in order."""
        if (  # fast path: the read is exactly one single-line event, the common case
            not self._buf
            and not self._data
            and chunk[:6] == b"data: "
            and chunk[-2:] == b"\n\n"
            and chunk.find(b"\n") == len(chunk) - 2
            and b"\r" not in chunk
        ):
            return [chunk[6:-2]]
        buf = self._buf + chunk if self._buf else chunk
        tail = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):
                buf, tail = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out: list[bytes] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if not line:
                if self._data:
                    out.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                    self._data = []
                continue
            if line[0] == 58:  # b":" -- a comment
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                self._data.append(value[1:] if value[:1] == b" " else value)
        self._buf = buf[start:] + tail if start < len(buf) else tail
        return out

    def finish(self) -> list[bytes]:
        """End of stream: the last event if it lacked its blank line (leniency, see above)."""
        out = self.feed(b"\n\n") if self._buf.strip() or self._data else []
        self._buf = b""
        self._data = []
        return out
