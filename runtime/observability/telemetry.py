"""Telemetry: OpenTelemetry traces of one raygent process (metrics: :mod:`.metrics`).

The only module that imports OpenTelemetry. :class:`Telemetry` turns the SDK's
:class:`~agents.tracing.RecordingSpan` into OpenTelemetry spans and hands them to the exporters
that the standard ``OTEL_*`` variables ask for.

Traces::

    gateway replica                      agent replica                 model replica
    telemetry.span("POST /v1/chat")      executor: RecordingSpan       telemetry.span("chat tiny")
      └─ span.context ──traceparent──►     .start(name, env.trace) ─►   parent = ctx from message
                 │                          on_span(span)                       │
                 ▼                               ▼                              ▼
         Telemetry.export(span) ──► ReadableSpan (same trace/span/parent ids) ──► BatchSpanProcessor
                                                                                 ──► OTLP / console

One span model. Every process records spans as ``RecordingSpan`` (the SDK's, which carries the
W3C ids and does not import OpenTelemetry) and exports them here when they finish. There is no
second, OpenTelemetry-side span to keep in step: the ids are decided once, by
``TraceContext.child()``, in the process that starts the hop, and they travel in the message
envelope. A span recorded in the gateway and one recorded in an agent actor join into one trace
because they carry the ids that the other side already used.

Why ``ReadableSpan`` and not a custom ``IdGenerator``. The OpenTelemetry API picks span ids
itself; to make it use ours, an ``IdGenerator`` would have to be told "the next id is X" through
shared state just before ``start_span`` — racy with concurrent requests and threads, and tied
to the SDK's internal order of id calls. A finished ``RecordingSpan`` already has every field
of a span, so this module builds the SDK's ``ReadableSpan`` (the type exporters read) directly
and calls ``SpanProcessor.on_end``: no tracer, no context API, no id juggling, and start/end
times, status and events are set exactly. The price: the SDK's span limits and attribute
cleaning are not applied for us, so :func:`_readable` applies them (``SpanLimits`` from the
``OTEL_*_LIMIT`` variables, ``BoundedAttributes``) and coerces values to the types OTLP
carries.

Why no ``TracerProvider`` (and no global one). Nothing here goes through the OpenTelemetry
API, so a provider would be an unused object; setting the global provider from a library would
also fight with the application's own (``opentelemetry-instrument``, vLLM's tracing), since the
global can be set once per process. Processors are owned by the ``Telemetry`` instance and shut
down with it (``shutdown()``, or at interpreter exit through ``weakref.finalize``).

When is tracing on: only when the standard environment asks for it — ``OTEL_TRACES_EXPORTER``
names an exporter (``otlp``, ``console``; ``none`` turns it off) or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) — and
``OTEL_SDK_DISABLED`` is not ``true`` and ``TelemetryConfig.traces`` is true. Unlike the spec's
default (``otlp``), an unset ``OTEL_TRACES_EXPORTER`` alone does not export: a development
cluster must not spend time failing to reach ``localhost:4318``. Off, ``export`` returns at once
and no SDK object exists; ``span()`` still yields a working ``RecordingSpan``, because the trace
context must keep flowing to processes that may export.

The OTLP protocol follows the specification: ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else
``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``. (The Python SDK's own auto-configuration
still defaults to ``grpc`` for backward compatibility; the spec, and the other languages' SDKs,
default to ``http/protobuf``, port 4318.) The exporter package is imported only when used, so a
process without tracing never loads grpc.

Example:
    >>> telemetry = Telemetry.from_env(TelemetryConfig(), {}, component="gateway")
    >>> telemetry.enabled
    False
    >>> with telemetry.span("POST /v1/chat/completions", None, kind="server") as span:
    ...     span.set_attribute("http.route", "/v1/chat/completions")
    >>> span.parent_span_id is None  # no traceparent came in: the root of a new trace
    True
"""

from __future__ import annotations

import inspect
import json
import logging
import numbers
import os
import time
import traceback
import uuid
import weakref
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal
from urllib.parse import unquote

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agents.errors import AgentError
from agents.tracing import RecordingSpan, TraceContext
from runtime.config import TelemetryConfig
from runtime.errors import ConfigError

try:  # the GenAI names moved to their own semconv repository; keep the strings if they go
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai
except ImportError:  # pragma: no cover - depends on the installed semconv version
    _gen_ai = None

__all__ = [
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_REQUEST_TEMPERATURE",
    "GEN_AI_REQUEST_TOP_P",
    "GEN_AI_RESPONSE_FINISH_REASONS",
    "GEN_AI_RESPONSE_ID",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_USAGE_INPUT_TOKENS",
    "GEN_AI_USAGE_OUTPUT_TOKENS",
    "SpanKindName",
    "Telemetry",
    "genai_attributes",
    "genai_span_name",
    "set_error",
]

log = logging.getLogger(__name__)

SpanKindName = Literal["internal", "server", "client", "producer", "consumer"]
GenAIOperation = Literal["chat", "text_completion"]

_KINDS: dict[str, SpanKind] = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}

# -- environment (the standard OpenTelemetry variables) ----------------------------------------

OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"

_DEFAULT_PROTOCOL = "http/protobuf"  # the spec's default (the Python SDK's autoconfig: grpc)
_PROTOCOLS = ("http/protobuf", "grpc")
# Exporter names: the spec's, plus the Python SDK's entry-point names that fix the protocol.
_EXPORTER_ALIASES: dict[str, tuple[str, str | None]] = {
    "otlp": ("otlp", None),
    "otlp_proto_http": ("otlp", "http/protobuf"),
    "otlp_proto_grpc": ("otlp", "grpc"),
    "console": ("console", None),
}

# -- GenAI semantic conventions ----------------------------------------------------------------


def _semconv(name: str, default: str) -> str:
    value = getattr(_gen_ai, name, None)
    return value if isinstance(value, str) else default


GEN_AI_OPERATION_NAME = _semconv("GEN_AI_OPERATION_NAME", "gen_ai.operation.name")
# gen_ai.provider.name replaced gen_ai.system; older semconv packages only know the latter.
GEN_AI_PROVIDER_NAME = _semconv(
    "GEN_AI_PROVIDER_NAME", _semconv("GEN_AI_SYSTEM", "gen_ai.provider.name")
)
GEN_AI_REQUEST_MODEL = _semconv("GEN_AI_REQUEST_MODEL", "gen_ai.request.model")
GEN_AI_REQUEST_MAX_TOKENS = _semconv("GEN_AI_REQUEST_MAX_TOKENS", "gen_ai.request.max_tokens")
GEN_AI_REQUEST_TEMPERATURE = _semconv("GEN_AI_REQUEST_TEMPERATURE", "gen_ai.request.temperature")
GEN_AI_REQUEST_TOP_P = _semconv("GEN_AI_REQUEST_TOP_P", "gen_ai.request.top_p")
GEN_AI_RESPONSE_MODEL = _semconv("GEN_AI_RESPONSE_MODEL", "gen_ai.response.model")
GEN_AI_RESPONSE_ID = _semconv("GEN_AI_RESPONSE_ID", "gen_ai.response.id")
GEN_AI_RESPONSE_FINISH_REASONS = _semconv(
    "GEN_AI_RESPONSE_FINISH_REASONS", "gen_ai.response.finish_reasons"
)
GEN_AI_USAGE_INPUT_TOKENS = _semconv("GEN_AI_USAGE_INPUT_TOKENS", "gen_ai.usage.input_tokens")
GEN_AI_USAGE_OUTPUT_TOKENS = _semconv("GEN_AI_USAGE_OUTPUT_TOKENS", "gen_ai.usage.output_tokens")

GENAI_PROVIDER = "vllm"
"""``gen_ai.provider.name`` of raygent's models: not one of the well-known values, so the
product name, as the convention asks."""


def genai_attributes(
    model: str,
    operation: GenAIOperation = "chat",
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    finish_reasons: str | Sequence[str] | None = None,
    response_model: str | None = None,
    response_id: str | None = None,
    provider: str = GENAI_PROVIDER,
) -> dict[str, Any]:
    """GenAI semantic-convention attributes of one model call; ``None`` values are left out.

    Args:
        model: the model the request named (``gen_ai.request.model``).
        operation: ``chat`` (``/v1/chat/completions``) or ``text_completion``
            (``/v1/completions``).
        input_tokens: prompt tokens (OpenAI ``usage.prompt_tokens``).
        output_tokens: generated tokens (OpenAI ``usage.completion_tokens``).
        max_tokens: temperature: top_p: the request's sampling parameters.
        finish_reasons: one reason per choice (``stop``, ``length`` ...).
        response_model: the model that answered (a fallback model may answer).
        response_id: the completion's id.
        provider: ``gen_ai.provider.name``.

    Example:
        >>> genai_attributes("tiny", input_tokens=3)["gen_ai.usage.input_tokens"]
        3
    """
    if isinstance(finish_reasons, str):
        finish_reasons = (finish_reasons,)
    values: dict[str, Any] = {
        GEN_AI_OPERATION_NAME: operation,
        GEN_AI_PROVIDER_NAME: provider,
        GEN_AI_REQUEST_MODEL: model,
        GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
        GEN_AI_REQUEST_TEMPERATURE: temperature,
        GEN_AI_REQUEST_TOP_P: top_p,
        GEN_AI_RESPONSE_MODEL: response_model,
        GEN_AI_RESPONSE_ID: response_id,
        GEN_AI_RESPONSE_FINISH_REASONS: tuple(finish_reasons) if finish_reasons else None,
        GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
        GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
    }
    return {k: v for k, v in values.items() if v is not None}


def genai_span_name(operation: GenAIOperation, model: str) -> str:
    """The convention's span name of a model call: ``"{operation} {model}"``."""
    return f"{operation} {model}"


# -- spans -------------------------------------------------------------------------------------


def set_error(span: RecordingSpan, error: BaseException | str, stacktrace: bool = True) -> str:
    """Mark ``span`` as failed: an ``exception`` event and ``error.type`` for an exception,
    and the error status. Returns the status description.

    ``stacktrace`` adds ``exception.stacktrace``: worth it for a bug, not for an expected,
    typed outcome (an SDK error's message says what happened), and costly -- Python 3.11
    re-reads and re-parses the source of every frame for its error positions, which under a
    burst of refusals (429s) took a fifth of the gateway's CPU.

    Writes ``span.status_error``, a field of ``RecordingSpan`` once it has timing (on the
    current dataclass, which has no ``__slots__``, it is set as a plain attribute).
    """
    if isinstance(error, BaseException):
        kind = type(error).__qualname__
        message = str(error)
        event = {"exception.type": kind, "exception.message": message}
        if stacktrace:
            event["exception.stacktrace"] = "".join(traceback.format_exception(error))[-8192:]
        span.add_event("exception", event)
        span.set_attribute("error.type", kind)
        description = f"{kind}: {message}" if message else kind
    else:
        description = error
    span.status_error = description  # type: ignore[attr-defined]  # until RecordingSpan has it
    return description


class _SpanScope:
    """``with telemetry.span(...) as span``: start, yield, end, export."""

    __slots__ = ("_attributes", "_kind", "_name", "_parent", "_span", "_start_ns", "_telemetry")

    def __init__(
        self,
        telemetry: Telemetry,
        name: str,
        parent: TraceContext | None,
        attributes: Mapping[str, Any] | None,
        kind: SpanKindName,
    ) -> None:
        self._telemetry = telemetry
        self._name = name
        self._parent = parent
        self._attributes = attributes
        self._kind = kind
        self._span: RecordingSpan | None = None
        self._start_ns = 0

    def __enter__(self) -> RecordingSpan:
        span = RecordingSpan.start(self._name, self._parent)
        if self._attributes:
            span.attributes.update(self._attributes)
        span.kind = self._kind  # type: ignore[attr-defined]  # a field once RecordingSpan has it
        self._start_ns = getattr(span, "start_ns", None) or time.time_ns()
        self._span = span
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        assert span is not None, "__exit__ without __enter__"
        end_ns = time.time_ns()
        if exc is not None:
            set_error(span, exc, self._telemetry.enabled and not isinstance(exc, AgentError))
        # Keep the times on the span too (fields of RecordingSpan once it has timing).
        span.start_ns = self._start_ns  # type: ignore[attr-defined]
        span.end_ns = end_ns  # type: ignore[attr-defined]
        self._telemetry.export(span, start_ns=self._start_ns, end_ns=end_ns, kind=self._kind)


class Telemetry:
    """Exports finished ``RecordingSpan``\\ s as OpenTelemetry spans of one process.

    Build it with :meth:`from_env` (the standard ``OTEL_*`` variables); tests pass their own
    processors. Without processors it is off: every call is a no-op.

    Args:
        processors: where finished spans go (``BatchSpanProcessor`` around an exporter).
        resource: ``service.name`` and the other resource attributes; default from the
            process environment (``Resource.create``) plus ``raygent.component``.
        component: which part of raygent this process is (``gateway``, ``agent``, ``model``).
        shutdown_timeout_s: the longest ``shutdown()`` waits for the processors' workers.

    Example:
        >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        ...     InMemorySpanExporter,
        ... )
        >>> exporter = InMemorySpanExporter()
        >>> telemetry = Telemetry([SimpleSpanProcessor(exporter)], component="gateway")
        >>> with telemetry.span("gateway", None) as span:
        ...     pass
        >>> exporter.get_finished_spans()[0].context.span_id == int(span.context.span_id, 16)
        True
        >>> telemetry.shutdown()
    """

    def __init__(
        self,
        processors: Sequence[SpanProcessor] = (),
        *,
        resource: Resource | None = None,
        component: str = "raygent",
        shutdown_timeout_s: float = 5.0,
    ) -> None:
        self.component = component
        self._processors = tuple(processors)
        self._resource: Resource | None = None
        self._limits: SpanLimits | None = None
        self._scope: InstrumentationScope | None = None
        if self._processors:
            if resource is None:
                resource = Resource.create({"raygent.component": component})
            self._resource = resource
            self._limits = SpanLimits()
            self._scope = InstrumentationScope("raygent")
        # Runs once: from shutdown(), at garbage collection, or at interpreter exit.
        self._finalizer = weakref.finalize(
            self, _shutdown_processors, self._processors, shutdown_timeout_s
        )

    @classmethod
    def from_env(
        cls,
        config: TelemetryConfig,
        env: Mapping[str, str] = os.environ,
        *,
        component: str,
    ) -> Telemetry:
        """The telemetry that ``config`` and the standard ``OTEL_*`` variables ask for.

        Read from ``env``: ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER``,
        ``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT``, ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL``,
        ``OTEL_SERVICE_NAME`` (else ``config.service_name``), ``OTEL_RESOURCE_ATTRIBUTES``. The
        exporters and processor read their other settings (headers, TLS, compression, timeout,
        ``OTEL_BSP_*``, ``OTEL_*_LIMIT``) from the process environment themselves.

        Args:
            config: the ``telemetry`` section; ``traces: false`` turns tracing off.
            env: the environment (default ``os.environ``); tests pass a dict.
            component: ``gateway``, ``agent`` or ``model`` (resource ``raygent.component``).

        Raises:
            ConfigError: an unsupported OTLP protocol, or its exporter package is missing.
        """
        exporters = _exporter_names(config, env)
        if not exporters:
            log.debug("tracing off in %s (no OTEL_TRACES_EXPORTER or OTLP endpoint)", component)
            return cls(component=component)
        made = [_make_exporter(name, protocol, env) for name, protocol in exporters]
        processors = [BatchSpanProcessor(exporter) for exporter in made]
        resource = _resource(config, env, component)
        log.info(
            "tracing on in %s: service.name=%s, exporters %s",
            component,
            resource.attributes.get("service.name"),
            ", ".join(f"{type(e).__module__}.{type(e).__name__}" for e in made),
        )
        return cls(processors, resource=resource, component=component)

    @property
    def enabled(self) -> bool:
        """True when spans are exported somewhere."""
        return bool(self._processors) and self._finalizer.alive

    @property
    def processors(self) -> tuple[SpanProcessor, ...]:
        """The span processors (empty when off)."""
        return self._processors

    @property
    def resource(self) -> Resource | None:
        """The resource of exported spans (None when off)."""
        return self._resource

    def span(
        self,
        name: str,
        parent: TraceContext | None,
        attributes: Mapping[str, Any] | None = None,
        *,
        kind: SpanKindName = "internal",
    ) -> AbstractContextManager[RecordingSpan]:
        """A span around a block: a child of ``parent`` (or a new trace's root), ended and
        exported when the block exits; an exception marks it failed and propagates.

        Synchronous, so it works in sync and async code alike (it does no I/O; the processor
        exports in its own thread). Pass ``span.context`` on as the next hop's parent.

        Args:
            name: the span name (GenAI model calls: :func:`genai_span_name`).
            parent: where the span hangs (the request's ``traceparent``, a message's trace).
            attributes: initial attributes.
            kind: ``server`` for the gateway's request span, ``client`` for calls out.
        """
        return _SpanScope(self, name, parent, attributes, kind)

    def export(
        self,
        span: RecordingSpan,
        *,
        start_ns: int | None = None,
        end_ns: int | None = None,
        error: str | None = None,
        kind: SpanKindName | None = None,
    ) -> None:
        """Export a finished span with its own trace, span and parent ids.

        Times, error and kind come from the arguments, else from the span's ``start_ns``,
        ``end_ns``, ``status_error`` and ``kind`` when it has them; a span without times is
        exported as ending now, with zero length. Unsampled spans (W3C flag) are dropped. Never
        raises: a span that cannot be converted is logged and dropped.

        Args:
            span: the finished span (``on_span`` of the executor, or any RecordingSpan).
            start_ns: end_ns: ``time.time_ns()`` of its start and end.
            error: the error status description; None: not an error.
            kind: the span kind; default ``internal``.
        """
        if not self._processors or not span.context.sampled or not self._finalizer.alive:
            return
        try:
            readable = self._readable(span, start_ns, end_ns, error, kind)
        except Exception:
            log.warning("dropping span %r: cannot convert it", span.name, exc_info=True)
            return
        for processor in self._processors:
            processor.on_end(readable)

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Export what the processors hold. Blocks (the export runs in this thread): from
        async code, ``await asyncio.to_thread(telemetry.force_flush)``."""
        if not self.enabled:
            return True
        millis = int(timeout_s * 1000)
        flushed = [p.force_flush(millis) for p in self._processors]  # every one, no short cut
        return all(flushed)

    def shutdown(self) -> None:
        """Flush and stop the processors (their worker threads). Safe to call twice. Blocks up
        to ``shutdown_timeout_s`` per processor."""
        self._finalizer()

    def _readable(
        self,
        span: RecordingSpan,
        start_ns: int | None,
        end_ns: int | None,
        error: str | None,
        kind: SpanKindName | None,
    ) -> ReadableSpan:
        assert self._limits is not None and self._resource is not None
        end = end_ns or getattr(span, "end_ns", None) or time.time_ns()
        start = start_ns or getattr(span, "start_ns", None) or end
        error = error if error is not None else getattr(span, "status_error", None)
        kind = kind or getattr(span, "kind", None) or "internal"
        ctx = span.context
        flags = TraceFlags(TraceFlags.SAMPLED if ctx.sampled else TraceFlags.DEFAULT)
        trace_id = int(ctx.trace_id, 16)
        parent = None
        if span.parent_span_id:
            parent = SpanContext(trace_id, int(span.parent_span_id, 16), False, flags)
        return ReadableSpan(
            name=span.name,
            context=SpanContext(trace_id, int(ctx.span_id, 16), False, flags),
            parent=parent,
            resource=self._resource,
            attributes=self._attributes(span.attributes, self._limits.max_span_attributes),
            events=self._events(span, end),
            kind=_KINDS.get(kind, SpanKind.INTERNAL),
            status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET),
            start_time=start,
            end_time=max(start, end),
            instrumentation_scope=self._scope,
        )

    def _attributes(self, values: Mapping[str, Any], maxlen: int | None) -> BoundedAttributes:
        assert self._limits is not None
        return BoundedAttributes(
            maxlen,
            _coerce_attributes(values),
            immutable=True,
            max_value_len=self._limits.max_span_attribute_length,
        )

    def _events(self, span: RecordingSpan, end_ns: int) -> BoundedList:
        """The span's events; timed by ``span.event_times_ns`` when it has one per event,
        else at the span's end."""
        assert self._limits is not None
        times = getattr(span, "event_times_ns", None)
        if not isinstance(times, Sequence) or len(times) != len(span.events):
            times = [end_ns] * len(span.events)
        maxlen = self._limits.max_event_attributes
        return BoundedList.from_seq(
            self._limits.max_events,
            [
                Event(name, self._attributes(attrs, maxlen), timestamp=t)
                for (name, attrs), t in zip(span.events, times, strict=True)
            ],
        )


def _shutdown_processors(processors: tuple[SpanProcessor, ...], timeout_s: float) -> None:
    for processor in processors:
        try:
            _shutdown_processor(processor, timeout_s)
        except Exception:
            log.warning("span processor %r failed to shut down", processor, exc_info=True)


def _shutdown_processor(processor: SpanProcessor, timeout_s: float) -> None:
    # BatchSpanProcessor.shutdown() takes no timeout and joins its worker for up to 30 s (an
    # export to an unreachable collector retries that long); its inner BatchProcessor takes one.
    inner = getattr(getattr(processor, "_batch_processor", None), "shutdown", None)
    if inner is not None and "timeout_millis" in inspect.signature(inner).parameters:
        inner(timeout_millis=int(timeout_s * 1000))
    else:
        processor.shutdown()


# -- attribute values --------------------------------------------------------------------------

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_Primitive = str | bool | int | float


def _coerce_attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as OTLP carries them: str, bool, int64, float and homogeneous sequences of
    those. Other values become strings (JSON for mappings); ``None`` values are left out."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        coerced = _coerce_value(value)
        if coerced is not None:
            out[str(key)] = coerced
    return out


def _coerce_value(value: Any) -> _Primitive | tuple[_Primitive, ...] | None:
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        number = int(value)
        return number if _INT64_MIN <= number <= _INT64_MAX else str(number)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return _coerce_sequence(value)
    if isinstance(value, Mapping):
        try:
            return json.dumps(value, default=str, sort_keys=True)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _coerce_sequence(values: Any) -> tuple[_Primitive, ...]:
    items = [v for v in (_coerce_value(x) for x in values) if v is not None]
    scalars = [v for v in items if not isinstance(v, tuple)]
    types = {type(v) for v in scalars}
    if len(scalars) == len(items) and len(types) <= 1:
        return tuple(scalars)  # type: ignore[arg-type]
    if len(scalars) == len(items) and types == {int, float}:
        return tuple(float(v) for v in scalars)
    return tuple(v if isinstance(v, str) else json.dumps(v, default=str) for v in items)


# -- configuration from the environment --------------------------------------------------------


def _exporter_names(
    config: TelemetryConfig, env: Mapping[str, str]
) -> list[tuple[str, str | None]]:
    """The exporters to run as (name, protocol) — empty when tracing is off."""
    if not config.traces or env.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get(OTEL_TRACES_EXPORTER, "").split(",") if n.strip()]
    if "none" in names:
        return []
    if not names:
        endpoint = env.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or env.get(
            OTEL_EXPORTER_OTLP_ENDPOINT
        )
        names = ["otlp"] if endpoint else []
    out: list[tuple[str, str | None]] = []
    for name in dict.fromkeys(names):
        if name not in _EXPORTER_ALIASES:
            log.warning(
                "%s=%s: exporter %r is not supported, ignored (supported: %s)",
                OTEL_TRACES_EXPORTER,
                env.get(OTEL_TRACES_EXPORTER),
                name,
                ", ".join(["none", *_EXPORTER_ALIASES]),
            )
            continue
        kind, protocol = _EXPORTER_ALIASES[name]
        out.append((kind, _otlp_protocol(env) if kind == "otlp" and not protocol else protocol))
    return out


def _otlp_protocol(env: Mapping[str, str]) -> str:
    for var in (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL):
        value = env.get(var, "").strip().lower()
        if not value:
            continue
        if value not in _PROTOCOLS:
            raise ConfigError(
                f"environment: {var}={env[var]!r} is not a supported OTLP protocol; "
                f"use one of {', '.join(_PROTOCOLS)} (or unset it for {_DEFAULT_PROTOCOL})"
            )
        return value
    return _DEFAULT_PROTOCOL


def _make_exporter(kind: str, protocol: str | None, env: Mapping[str, str]) -> SpanExporter:
    """Make exporter ``kind``: ``console``, or ``otlp`` over ``protocol``."""
    if kind == "console":
        return ConsoleSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise _missing_exporter("grpc", "opentelemetry-exporter-otlp-proto-grpc") from exc
        # gRPC takes host:port (or a URL) with no signal path.
        endpoint = env.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or env.get(
            OTEL_EXPORTER_OTLP_ENDPOINT
        )
        return GrpcExporter(endpoint=endpoint or None)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )
    except ImportError as exc:
        raise _missing_exporter("http/protobuf", "opentelemetry-exporter-otlp-proto-http") from exc
    return HttpExporter(endpoint=_http_traces_endpoint(env))


def _http_traces_endpoint(env: Mapping[str, str]) -> str | None:
    """OTLP/HTTP: the traces endpoint is used as is; the generic one gets ``/v1/traces``."""
    if traces := env.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT):
        return traces
    if base := env.get(OTEL_EXPORTER_OTLP_ENDPOINT):
        return f"{base.rstrip('/')}/v1/traces"
    return None  # the exporter's default, http://localhost:4318/v1/traces


def _missing_exporter(protocol: str, package: str) -> ConfigError:
    return ConfigError(
        f"environment: OTLP protocol {protocol} needs the package {package}; "
        f"install it or choose another protocol ({OTEL_EXPORTER_OTLP_PROTOCOL})"
    )


def _resource(config: TelemetryConfig, env: Mapping[str, str], component: str) -> Resource:
    """``service.name``: ``OTEL_SERVICE_NAME``, else ``OTEL_RESOURCE_ATTRIBUTES``, else the
    config; plus ``raygent.component`` and a ``service.instance.id`` per process."""
    attributes: dict[str, Any] = {}
    for item in env.get(OTEL_RESOURCE_ATTRIBUTES, "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    attributes["service.name"] = (
        env.get(OTEL_SERVICE_NAME) or attributes.get("service.name") or config.service_name
    )
    attributes.setdefault("service.instance.id", str(uuid.uuid4()))
    attributes["raygent.component"] = component
    return Resource.create(attributes)
