"""runtime.observability.telemetry: spans exported with their own ids, OTEL_* configuration, GenAI
attributes, and the Prometheus metrics of /metrics. No Ray, no network: exporters are inspected,
never used, and spans go to the SDK's InMemorySpanExporter."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from agents.tracing import RecordingSpan, TraceContext
from runtime.config import TelemetryConfig
from runtime.errors import ConfigError
from runtime.observability.metrics import Metrics
from runtime.observability.telemetry import Telemetry, genai_attributes, genai_span_name, set_error

OTLP_ENDPOINT = "http://collector.invalid:4318"  # never contacted: no span is exported to it


def _otel_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("OtelBatch") and t.is_alive()]


@pytest.fixture(autouse=True)
def _no_leaked_processor_threads() -> Iterator[None]:
    """Every Telemetry a test builds is shut down: no BatchSpanProcessor worker survives."""
    before = set(_otel_threads())
    yield
    leaked = [t for t in _otel_threads() if t not in before]
    assert not leaked, f"test leaked span processor threads: {leaked}"


@pytest.fixture
def track() -> Iterator[Callable[[Telemetry], Telemetry]]:
    """Shut down, after the test whatever it asserted, every Telemetry passed to ``track``."""
    made: list[Telemetry] = []

    def track(telemetry: Telemetry) -> Telemetry:
        made.append(telemetry)
        return telemetry

    yield track
    for telemetry in made:
        telemetry.shutdown()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(exporter: InMemorySpanExporter, track: Callable[..., Telemetry]) -> Telemetry:
    return track(Telemetry([SimpleSpanProcessor(exporter)], component="gateway"))


def _from_env(track: Callable[..., Telemetry], env: dict[str, str], **config: object) -> Telemetry:
    return track(Telemetry.from_env(TelemetryConfig(**config), env, component="gateway"))


# -- on / off ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "config"),
    [
        ({}, {}),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT}, {}),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, {}),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT}, {"traces": False}),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "x"}, {}),
    ],
)
def test_tracing_is_off_unless_the_environment_asks(env, config, track):
    threads = threading.active_count()
    telemetry = _from_env(track, env, **config)
    assert not telemetry.enabled
    assert telemetry.processors == () and telemetry.resource is None
    assert threading.active_count() == threads


def test_off_span_still_records_and_continues_the_trace(track):
    telemetry = _from_env(track, {})
    parent = TraceContext.new_root()
    with telemetry.span("gateway", parent, {"http.route": "/v1/models"}) as span:
        span.add_event("routed")
    assert isinstance(span, RecordingSpan)
    assert span.context.trace_id == parent.trace_id and span.parent_span_id == parent.span_id
    assert span.attributes == {"http.route": "/v1/models"} and span.events == [("routed", {})]
    with pytest.raises(KeyError), telemetry.span("cache", span.context) as failing:
        raise KeyError("k")
    assert failing.events[0][0] == "exception" and failing.attributes["error.type"] == "KeyError"
    telemetry.export(failing)  # a no-op
    assert telemetry.force_flush()


@pytest.mark.parametrize(
    ("env", "module", "endpoint"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT + "/"},
            "http",
            OTLP_ENDPOINT + "/v1/traces",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT}, "http", OTLP_ENDPOINT + "/v1/traces"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c.invalid:9999/custom"},
            "http",
            "http://c.invalid:9999/custom",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c.invalid:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            "grpc",
            "c.invalid:4317",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c.invalid:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            },
            "grpc",
            "c.invalid:4317",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp_proto_grpc"}, "grpc", "localhost:4317"),
    ],
)
def test_otlp_exporter_of_the_configured_protocol(env, module, endpoint, track):
    telemetry = _from_env(track, env)
    assert telemetry.enabled
    (processor,) = telemetry.processors
    assert isinstance(processor, BatchSpanProcessor)
    exporter = processor.span_exporter
    assert type(exporter).__name__ == "OTLPSpanExporter"
    assert type(exporter).__module__.startswith(f"opentelemetry.exporter.otlp.proto.{module}.")
    assert exporter._endpoint == endpoint
    assert _otel_threads()  # the batch worker runs until shutdown (checked by the fixture)


def test_default_protocol_follows_the_spec_not_the_python_autoconfig(track):
    telemetry = _from_env(track, {"OTEL_TRACES_EXPORTER": "otlp"})
    exporter = telemetry.processors[0].span_exporter
    assert ".proto.http." in type(exporter).__module__
    assert exporter._endpoint == "http://localhost:4318/v1/traces"


def test_console_and_otlp_together_and_unknown_names_ignored(track):
    env = {"OTEL_TRACES_EXPORTER": "console, zipkin,otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}
    telemetry = _from_env(track, env)
    kinds = [type(p.span_exporter).__name__ for p in telemetry.processors]
    assert kinds == [ConsoleSpanExporter.__name__, "OTLPSpanExporter"]


def test_unsupported_protocol_is_a_config_error_naming_the_variable(track):
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
        _from_env(track, env)


def test_resource_service_name_and_attributes(track):
    env = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=a%20b,broken",
    }
    attrs = _from_env(track, env, service_name="svc").resource.attributes
    assert attrs["service.name"] == "svc" and attrs["raygent.component"] == "gateway"
    assert attrs["deployment.environment"] == "prod" and attrs["team"] == "a b"
    assert attrs["service.instance.id"]
    env["OTEL_RESOURCE_ATTRIBUTES"] += ",service.name=from-attrs"
    attrs = _from_env(track, env, service_name="svc").resource.attributes
    assert attrs["service.name"] == "from-attrs"
    env["OTEL_SERVICE_NAME"] = "from-env"
    attrs = _from_env(track, env, service_name="svc").resource.attributes
    assert attrs["service.name"] == "from-env"


def test_shutdown_stops_the_batch_worker_and_is_idempotent():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_ENDPOINT}
    telemetry = Telemetry.from_env(TelemetryConfig(), env, component="model")
    threads = _otel_threads()
    assert threads
    telemetry.shutdown()
    telemetry.shutdown()
    assert not any(t.is_alive() for t in threads)
    assert not telemetry.enabled
    telemetry.export(RecordingSpan.start("late", None))  # dropped, no error


# -- export ------------------------------------------------------------------------------------


def test_export_keeps_ids_attributes_events_times_and_status(telemetry, exporter):
    parent = TraceContext.new_root()
    span = RecordingSpan.start("agent.handle", parent)
    span.set_attribute("raygent.agent", "writer")
    span.set_attribute("count", 3)
    span.set_attribute("ratio", 0.5)
    span.set_attribute("tags", ["a", "b"])
    span.set_attribute("mixed", [1, "x"])
    span.set_attribute("numbers", (1, 2.5))
    span.set_attribute("huge", 2**70)
    span.set_attribute("mapping", {"b": 1, "a": [2]})
    span.set_attribute("nothing", None)
    start_ns = time.time_ns()
    span.add_event("tool", {"name": "search", "hits": 2})
    end_ns = time.time_ns()
    telemetry.export(span, start_ns=start_ns, end_ns=end_ns, error="boom", kind="consumer")

    (out,) = exporter.get_finished_spans()
    assert out.name == "agent.handle"
    assert out.context.trace_id == int(parent.trace_id, 16)
    assert out.context.span_id == int(span.context.span_id, 16)
    assert out.parent.span_id == int(parent.span_id, 16)
    assert out.parent.trace_id == out.context.trace_id
    assert out.context.trace_flags.sampled
    assert dict(out.attributes) == {
        "raygent.agent": "writer",
        "count": 3,
        "ratio": 0.5,
        "tags": ("a", "b"),
        "mixed": ("1", "x"),
        "numbers": (1.0, 2.5),
        "huge": str(2**70),
        "mapping": '{"a": [2], "b": 1}',
    }
    (event,) = out.events
    assert (event.name, dict(event.attributes)) == ("tool", {"name": "search", "hits": 2})
    assert (out.start_time, out.end_time) == (start_ns, end_ns)
    assert start_ns <= event.timestamp <= end_ns  # its own time, or the span's end without one
    assert out.status.status_code is StatusCode.ERROR and out.status.description == "boom"
    assert out.kind is SpanKind.CONSUMER
    assert out.resource.attributes["service.name"]
    assert out.instrumentation_scope.name == "raygent"
    assert out.to_json()  # the exporters' view of it is complete


def test_exported_spans_encode_to_otlp_with_our_ids(telemetry, exporter):
    """What the OTLP exporters send (encoded here; nothing is sent)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    parent = TraceContext.new_root()
    attrs = genai_attributes("tiny", output_tokens=4, finish_reasons=["stop", "length"])
    with telemetry.span("chat tiny", parent, attrs, kind="client") as span:
        span.add_event("first_token")
    request = encode_spans(exporter.get_finished_spans())
    (encoded,) = request.resource_spans[0].scope_spans[0].spans
    assert encoded.trace_id.hex() == parent.trace_id
    assert encoded.span_id.hex() == span.context.span_id
    assert encoded.parent_span_id.hex() == parent.span_id
    values = {a.key: a.value for a in encoded.attributes}
    assert values["gen_ai.usage.output_tokens"].int_value == 4
    reasons = values["gen_ai.response.finish_reasons"].array_value.values
    assert [v.string_value for v in reasons] == ["stop", "length"]
    assert encoded.events[0].name == "first_token"


def test_export_of_an_unended_span_ends_it_now(telemetry, exporter):
    """The executor's spans before RecordingSpan has timing: zero length, ending now."""
    span = RecordingSpan.start("on_span", None)
    before = time.time_ns()
    telemetry.export(span)
    (out,) = exporter.get_finished_spans()
    assert out.parent is None
    assert out.end_time >= before
    assert out.start_time == getattr(span, "start_ns", out.end_time)
    assert out.status.status_code is StatusCode.UNSET and out.kind is SpanKind.INTERNAL


@dataclass
class TimedSpan(RecordingSpan):
    """RecordingSpan with the timing fields proposed for agents/tracing.py."""

    start_ns: int = 0
    end_ns: int | None = None
    status_error: str | None = None
    kind: str = "internal"
    event_times_ns: list[int] = field(default_factory=list)


def test_export_reads_timing_fields_of_the_span_when_it_has_them(telemetry, exporter):
    ctx = TraceContext.new_root()
    span = TimedSpan("h", ctx.child(), ctx.span_id, start_ns=10, end_ns=30, kind="server")
    span.add_event("e")
    span.event_times_ns[:] = [20]
    span.status_error = "failed"
    telemetry.export(span)
    (out,) = exporter.get_finished_spans()
    assert (out.start_time, out.end_time, out.events[0].timestamp) == (10, 30, 20)
    assert out.kind is SpanKind.SERVER and out.status.description == "failed"


def test_unsampled_spans_are_not_exported(telemetry, exporter):
    parent = TraceContext.new_root()
    unsampled = TraceContext(parent.trace_id, parent.span_id, sampled=False)
    with telemetry.span("gateway", unsampled) as span:
        pass
    assert not span.context.sampled
    assert exporter.get_finished_spans() == ()


def test_span_context_manager_exports_and_records_errors(telemetry, exporter):
    with telemetry.span("POST /v1/chat/completions", None, kind="server") as ok:
        ok.set_attribute("http.response.status_code", 200)
    with pytest.raises(ValueError, match="bad"), telemetry.span("cache", ok.context) as bad:
        raise ValueError("bad")
    first, second = exporter.get_finished_spans()
    assert first.kind is SpanKind.SERVER and first.status.status_code is StatusCode.UNSET
    assert 0 < first.start_time <= first.end_time
    assert (ok.start_ns, ok.end_ns, ok.kind) == (first.start_time, first.end_time, "server")
    assert second.parent.span_id == first.context.span_id
    assert second.status.status_code is StatusCode.ERROR
    assert second.status.description == bad.status_error == "ValueError: bad"
    assert second.attributes["error.type"] == "ValueError"
    (event,) = second.events
    assert event.name == "exception" and event.attributes["exception.message"] == "bad"
    assert "raise ValueError" in event.attributes["exception.stacktrace"]


def test_an_sdk_error_is_recorded_without_a_stacktrace(telemetry, exporter):
    from agents.errors import Overloaded

    with pytest.raises(Overloaded), telemetry.span("model", None):
        raise Overloaded("m", inflight=1, queued=0, retry_after_s=1.0)
    (span,) = exporter.get_finished_spans()
    (event,) = span.events
    assert span.attributes["error.type"] == "Overloaded"
    assert "exception.stacktrace" not in event.attributes  # typed and expected: no traceback


async def test_span_works_in_async_code(telemetry, exporter):
    with telemetry.span("async", None) as span:
        set_error(span, "upstream 503")
    (out,) = exporter.get_finished_spans()
    assert out.status.description == "upstream 503"


def test_gateway_agent_model_chain_is_one_trace_across_processes(exporter, track):
    """Three processes (Telemetry instances) record their spans; the context travels as a
    traceparent string, as it does in message envelopes and headers."""
    gateway, agent, model = (
        track(Telemetry([SimpleSpanProcessor(exporter)], component=c))
        for c in ("gateway", "agent", "model")
    )
    incoming = TraceContext.new_root()  # the client's traceparent header
    with gateway.span("POST /v1/chat/completions", incoming, kind="server") as request:
        with gateway.span("cache.lookup", request.context) as cache:
            cache.set_attribute("raygent.cache.result", "miss")
        with gateway.span("call agent:writer", request.context, kind="client") as call:
            hop = TraceContext.parse(call.context.traceparent)  # into the envelope
            handler = RecordingSpan.start("writer.handle", hop)  # what the executor does
            wire = TraceContext.parse(handler.context.traceparent)
            attrs = genai_attributes("tiny", input_tokens=5, output_tokens=7)
            with model.span(genai_span_name("chat", "tiny"), wire, attrs, kind="server"):
                pass
            agent.export(handler)  # the executor's on_span

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert len(spans) == 5
    assert {s.context.trace_id for s in spans.values()} == {int(incoming.trace_id, 16)}

    def parent_of(name: str) -> int:
        return spans[name].parent.span_id

    assert parent_of("POST /v1/chat/completions") == int(incoming.span_id, 16)
    root = spans["POST /v1/chat/completions"].context.span_id
    assert parent_of("cache.lookup") == root
    assert parent_of("call agent:writer") == root
    assert parent_of("writer.handle") == spans["call agent:writer"].context.span_id
    assert parent_of("chat tiny") == spans["writer.handle"].context.span_id
    assert spans["chat tiny"].attributes["gen_ai.usage.output_tokens"] == 7
    components = {n: s.resource.attributes["raygent.component"] for n, s in spans.items()}
    assert components == {
        "POST /v1/chat/completions": "gateway",
        "cache.lookup": "gateway",
        "call agent:writer": "gateway",
        "writer.handle": "agent",
        "chat tiny": "model",
    }


# -- GenAI attributes --------------------------------------------------------------------------


def test_genai_attribute_names_follow_the_installed_semconv():
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as sc

    attrs = genai_attributes(
        "tiny",
        "text_completion",
        input_tokens=12,
        output_tokens=30,
        max_tokens=64,
        temperature=0.0,
        top_p=0.9,
        finish_reasons="length",
        response_model="tiny-fallback",
        response_id="cmpl-1",
    )
    assert attrs == {
        sc.GEN_AI_OPERATION_NAME: "text_completion",
        sc.GEN_AI_PROVIDER_NAME: "vllm",
        sc.GEN_AI_REQUEST_MODEL: "tiny",
        sc.GEN_AI_REQUEST_MAX_TOKENS: 64,
        sc.GEN_AI_REQUEST_TEMPERATURE: 0.0,
        sc.GEN_AI_REQUEST_TOP_P: 0.9,
        sc.GEN_AI_RESPONSE_MODEL: "tiny-fallback",
        sc.GEN_AI_RESPONSE_ID: "cmpl-1",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ("length",),
        sc.GEN_AI_USAGE_INPUT_TOKENS: 12,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 30,
    }
    assert "gen_ai.provider.name" in attrs and "gen_ai.usage.input_tokens" in attrs
    assert genai_attributes("m") == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "vllm",
        "gen_ai.request.model": "m",
    }
    assert genai_span_name("chat", "m") == "chat m"


# -- metrics -----------------------------------------------------------------------------------


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_metrics_render_every_metric_with_its_values():
    metrics = Metrics()
    metrics.observe_request("/v1/chat/completions", "tiny", 200, 0.3)
    metrics.observe_request("/v1/chat/completions", "tiny", 200, 42.0)
    metrics.observe_ttft("tiny", 0.07)
    metrics.observe_generation("tiny", 50, 2.0)
    metrics.observe_generation("tiny", 1, 0.0)  # counted; no rate from a zero duration
    metrics.observe_request("/v1/chat/completions", "chat", 200, 0.2, variant="b")
    metrics.observe_ttft("chat", 0.05, variant="b")
    metrics.observe_generation("chat", 8, 1.0, variant="b")
    metrics.cache_event("miss", lookup_seconds=0.0004)
    metrics.cache_event("bypass")
    metrics.set_queue_depth("mailbox", "writer", 3)
    depth = [7]
    metrics.watch_queue_depth("task_queue", "reports", lambda: depth[0])
    depth[0] = 9
    with metrics.in_flight():
        inside = _samples(metrics)
    samples = _samples(metrics)

    req = (
        ("route", "/v1/chat/completions"),
        ("status", "200"),
        ("target", "tiny"),
        ("variant", ""),
    )
    assert samples[("raygent_request_duration_seconds_count", req)] == 2
    assert samples[("raygent_request_duration_seconds_sum", req)] == pytest.approx(42.3)
    bucket = "raygent_request_duration_seconds_bucket"
    assert samples[(bucket, tuple(sorted((*req, ("le", "0.5")))))] == 1
    assert samples[(bucket, tuple(sorted((*req, ("le", "60.0")))))] == 2
    assert samples[(bucket, tuple(sorted((*req, ("le", "+Inf")))))] == 2
    tiny = (("target", "tiny"), ("variant", ""))
    assert samples[("raygent_time_to_first_token_seconds_sum", tiny)] == pytest.approx(0.07)
    assert samples[("raygent_output_tokens_total", tiny)] == 51
    assert samples[("raygent_output_tokens_per_second_count", tiny)] == 1
    assert samples[("raygent_output_tokens_per_second_sum", tiny)] == 25
    # an answer of a name with variants is counted apart per arm
    arm = (("target", "chat"), ("variant", "b"))
    routed = (("route", "/v1/chat/completions"), ("status", "200"), *arm)
    assert samples[("raygent_request_duration_seconds_count", routed)] == 1
    assert samples[("raygent_time_to_first_token_seconds_sum", arm)] == pytest.approx(0.05)
    assert samples[("raygent_output_tokens_total", arm)] == 8
    assert samples[("raygent_cache_events_total", (("result", "miss"),))] == 1
    assert samples[("raygent_cache_events_total", (("result", "bypass"),))] == 1
    assert samples[("raygent_cache_lookup_seconds_count", ())] == 1
    assert samples[("raygent_cache_hit_ratio", ())] == 0.0
    assert samples[("raygent_queue_depth", (("kind", "mailbox"), ("name", "writer")))] == 3
    assert samples[("raygent_queue_depth", (("kind", "task_queue"), ("name", "reports")))] == 9
    assert inside[("raygent_requests_in_flight", ())] == 1
    assert samples[("raygent_requests_in_flight", ())] == 0


def test_cache_hit_ratio_is_hits_over_hits_and_misses():
    metrics = Metrics()
    assert math.isnan(metrics.cache_hit_ratio())
    assert math.isnan(_samples(metrics)[("raygent_cache_hit_ratio", ())])
    for result in ("hit", "hit", "hit", "miss", "bypass", "error"):
        metrics.cache_event(result)
    assert metrics.cache_hit_ratio() == 0.75
    assert _samples(metrics)[("raygent_cache_hit_ratio", ())] == 0.75
    with pytest.raises(ValueError, match="'stale'"):
        metrics.cache_event("stale")  # type: ignore[arg-type]


def test_queue_depth_callback_failure_reads_nan_and_queues_can_be_forgotten():
    metrics = Metrics()
    metrics.watch_queue_depth("mailbox", "critic", lambda: 1 / 0)
    key = ("raygent_queue_depth", (("kind", "mailbox"), ("name", "critic")))
    assert math.isnan(_samples(metrics)[key])
    metrics.forget_queue("mailbox", "critic")
    metrics.forget_queue("mailbox", "critic")
    assert key not in _samples(metrics)
    with pytest.raises(ValueError, match="queue kind"):
        metrics.set_queue_depth("inbox", "x", 1)  # type: ignore[arg-type]


def test_each_metrics_has_its_own_registry_and_openmetrics_is_negotiated():
    a, b = Metrics(), Metrics()  # no "Duplicated timeseries": registries are private
    a.observe_ttft("tiny", 1.0)
    count = ("raygent_time_to_first_token_seconds_count", (("target", "tiny"), ("variant", "")))
    assert count in _samples(a) and count not in _samples(b)
    body, content_type = a.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert a.render()[1].startswith("text/plain; version=0.0.4")


def test_disabled_metrics_are_no_ops():
    metrics = Metrics.from_config(TelemetryConfig(metrics=False))
    metrics.observe_request("/v1/models", "-", 200, 0.1)
    metrics.observe_ttft("tiny", 0.1)
    metrics.observe_generation("tiny", 3, 1.0)
    metrics.cache_event("hit", 0.001)
    metrics.set_queue_depth("mailbox", "writer", 1)
    metrics.watch_queue_depth("mailbox", "writer", lambda: 1)
    metrics.forget_queue("mailbox", "writer")
    with metrics.in_flight():
        pass
    body, content_type = metrics.render()
    assert body == b"" and content_type.startswith("text/plain")
    assert metrics.registry is None
