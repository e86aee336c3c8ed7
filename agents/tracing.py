"""W3C trace context, carried in every message envelope, and the span a handler sees.

The SDK does not import OpenTelemetry (it is a heavy dependency and lives behind
``runtime/observability/telemetry.py``); it only needs to *carry* a trace across agents and give
handlers a place to record attributes and events. :class:`TraceContext` is the ``traceparent``
header as a value; :class:`Span` is the small part of a span's interface that handlers use, which
both the in-process :class:`RecordingSpan` and the runtime's OpenTelemetry adapter implement.

Example:
    >>> root = TraceContext.new_root()
    >>> child = root.child()
    >>> child.trace_id == root.trace_id and child.span_id != root.span_id
    True
    >>> TraceContext.parse(child.traceparent) == child
    True
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["RecordingSpan", "Span", "TraceContext"]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_SAMPLED = frozenset(f"{flags:02x}" for flags in range(256) if flags & 1)
_ID_FORMATS = {64: "%016x", 128: "%032x"}


@dataclass(frozen=True)
class TraceContext:
    """A position in a trace: W3C ``traceparent`` version 00.

    Attributes:
        trace_id: 32 lowercase hex digits, shared by every span of one request.
        span_id: 16 lowercase hex digits, this span.
        sampled: the W3C ``sampled`` flag.
    """

    trace_id: str
    span_id: str
    sampled: bool = True

    @classmethod
    def new_root(cls) -> TraceContext:
        """A new trace (used when a request arrives without a ``traceparent``)."""
        return cls(_new_id(128), _new_id(64))

    @classmethod
    def parse(cls, traceparent: str) -> TraceContext:
        """Parse a ``traceparent`` header.

        Raises:
            ValueError: not a version-00 traceparent, or an all-zero id (invalid per W3C).
        """
        # Every hop parses one, so the canonical form (what this module writes) is tried as
        # is before the lenient one.
        m = _TRACEPARENT.match(traceparent) or _TRACEPARENT.match(traceparent.strip().lower())
        if not m or m[1] == _ZERO_TRACE or m[2] == _ZERO_SPAN:
            raise ValueError(f"invalid traceparent {traceparent!r}")
        return cls(m[1], m[2], m[3] in _SAMPLED)

    def child(self) -> TraceContext:
        """A new span in the same trace, for the next hop (send, publish, submit, model call)."""
        return TraceContext(self.trace_id, _new_id(64), self.sampled)

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` header value."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def _new_id(bits: int) -> str:
    """A random non-zero id in hex. ``random``, not ``secrets``: ids need to be unique, not
    unguessable (OpenTelemetry's RandomIdGenerator does the same), and this runs per message."""
    return _ID_FORMATS[bits] % (random.getrandbits(bits) or 1)


@runtime_checkable
class Span(Protocol):
    """What a handler may do with the current span (``ctx.span``)."""

    @property
    def context(self) -> TraceContext: ...

    def set_attribute(self, key: str, value: Any) -> None: ...

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None: ...


@dataclass
class RecordingSpan:
    """A span that keeps what it is told in memory: the in-process runtime's span, and what
    tests inspect. ``runtime.observability.telemetry`` exports finished ones as OpenTelemetry
    spans."""

    name: str
    context: TraceContext
    parent_span_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    start_ns: int = field(default_factory=time.time_ns, compare=False)
    """Wall-clock start, ``time.time_ns()``."""
    end_ns: int | None = field(default=None, compare=False)
    """Wall-clock end, set by :meth:`end`; None while the span runs."""
    status_error: str | None = field(default=None, compare=False)
    """Why the span failed (the error status description); None: it did not fail."""
    kind: str = field(default="internal", compare=False)
    """OpenTelemetry span kind: internal, server, client, producer or consumer."""
    event_times_ns: list[int] = field(default_factory=list, compare=False, repr=False)
    """``time.time_ns()`` of each event, parallel to ``events``."""

    @classmethod
    def start(cls, name: str, parent: TraceContext | None) -> RecordingSpan:
        """A span continuing ``parent``, or the root of a new trace."""
        if parent is None:
            return cls(name, TraceContext.new_root())
        return cls(name, parent.child(), parent.span_id)

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def add_event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        self.events.append((name, dict(attributes or {})))
        self.event_times_ns.append(time.time_ns())

    def end(self, error: str | None = None) -> None:
        """Mark the span finished (the first call sets the end time); ``error`` marks it
        failed."""
        if self.end_ns is None:
            self.end_ns = time.time_ns()
        if error is not None:
            self.status_error = error
