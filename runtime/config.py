"""The one typed configuration tree of a raygent application.

Sources, later ones winning:

1. the embedded defaults — the example agents (``examples.research``) on the locally generated
   ``builtin:tiny`` model, with an in-process response cache and task queue;
2. a YAML file: the ``path`` argument, else ``$RAYGENT_CONFIG``;
3. the environment: ``REDIS_URL`` (cache and durable queues), ``RAYGENT_API_KEYS`` and
   ``RAYGENT_ADMIN_KEYS`` (comma-separated), and ``RAYGENT__<SECTION>__<FIELD>=value`` for any
   field, e.g. ``RAYGENT__MODELS__DEFAULT__LOAD=eager`` or ``RAYGENT__LIMITS__MAX_TOKENS=512``
   (values are parsed as YAML scalars, so numbers and booleans work).

One more variable is not part of the tree because it names a place on this machine rather than a
setting of the application: ``RAYGENT_MODEL_CACHE``, the directory where generated models
(``builtin:tiny``) are kept (default ``~/.cache/raygent/models``); see :func:`model_cache_dir`.

The environment is read here and nowhere else. Every field says its unit in its name and is
documented below; a bad file fails at start with :class:`ConfigError`, one line per problem
naming the field, the bad value and what is allowed.

Example:
    >>> cfg = load_config(env={})
    >>> cfg.models["default"].source
    'builtin:tiny'
    >>> load_config(env={"RAYGENT__LIMITS__MAX_TOKENS": "0"})
    Traceback (most recent call last):
    ...
    runtime.errors.ConfigError: invalid raygent config:
      environment: limits.max_tokens: Input should be greater than or equal to 1 (got 0)
"""

from __future__ import annotations

import importlib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from runtime.errors import ConfigError

if typing.TYPE_CHECKING:
    from agents import Agent

__all__ = [
    "AdmissionConfig",
    "AgentConfig",
    "AuthConfig",
    "AutoscalingConfig",
    "CacheConfig",
    "LimitsConfig",
    "ModelConfig",
    "QueuesConfig",
    "RaygentConfig",
    "ResourcesConfig",
    "TelemetryConfig",
    "VariantArmConfig",
    "VariantsConfig",
    "WarmupConfig",
    "import_agent",
    "load_config",
    "model_cache_dir",
]

ENV_CONFIG_PATH = "RAYGENT_CONFIG"
ENV_MODEL_CACHE = "RAYGENT_MODEL_CACHE"
ENV_PREFIX = "RAYGENT__"
_IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ResourcesConfig(_Section):
    """Ray resources of one replica."""

    num_cpus: float = Field(0.5, ge=0)
    """CPUs reserved per replica (fractions allowed)."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs reserved per replica (fractions allowed)."""
    memory_bytes: int | None = Field(None, ge=0)
    """Memory reserved per replica; None: not reserved."""
    custom: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources per replica, e.g. ``{"accelerator_a10": 1}`` or a node label
    resource to pin replicas to nodes."""


class AutoscalingConfig(_Section):
    """Serve autoscaling; replaces a fixed ``replicas`` count when set.

    Agents and ``placement: deployment`` models scale on the depth their replicas report
    (``runtime.serve.autoscaling``): an agent's mailbox, running handlers and task backlog; a
    model's admitted, queued and refused requests. The gateway scales on Serve's count of ongoing
    requests."""

    min_replicas: int = Field(1, ge=0)
    """Fewest replicas (0 allows scale to zero; an agent that only consumes tasks needs 1:
    no replica is left to report the backlog)."""
    max_replicas: int = Field(1, ge=1)
    """Most replicas."""
    target_ongoing_requests: float = Field(2.0, gt=0)
    """Work per replica that autoscaling aims for: requests in flight (the gateway), or
    messages, tasks and requests waiting and running (agents, models)."""
    upscale_delay_s: float = Field(30.0, ge=0)
    """How long demand must call for more replicas before Serve adds them (Serve's
    default)."""
    downscale_delay_s: float = Field(600.0, ge=0)
    """How long demand must call for fewer replicas before Serve removes some (Serve's
    default)."""
    look_back_period_s: float = Field(30.0, gt=0)
    """Window the reported depth is averaged over; replicas sample it every fifth of this
    and report at least every 10 s (every half window when that is shorter)."""

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        return self


class AgentConfig(_Section):
    """One agent class to run."""

    import_path: str = Field(pattern=_IMPORT_PATH)
    """Where the class is: ``package.module:ClassName``."""
    replicas: int = Field(1, ge=1)
    """Fixed replica count (ignored when ``autoscaling`` is set)."""
    autoscaling: AutoscalingConfig | None = None
    """Autoscale between bounds instead of a fixed count."""
    resources: ResourcesConfig = ResourcesConfig(num_cpus=0.1)
    """Ray resources per replica. Agents mostly wait on models and on each other, so the
    default reserves a tenth of a CPU; give CPU-heavy agents more."""
    model: str | None = None
    """Model for ``ctx.llm``, overriding the class's ``model`` attribute; a key of ``models``."""
    mailbox_size: int = Field(64, ge=1)
    """Messages a replica holds before callers get ``Backpressure`` (HTTP 429)."""
    max_concurrency: int = Field(8, ge=1)
    """Handlers a replica runs at once."""
    interactive_share: float = Field(0.7, gt=0, lt=1)
    """Share of dispatches that go to interactive messages when background work also waits."""
    max_restarts: int = Field(3, ge=-1)
    """Times Ray restarts a crashed replica (-1: forever); ``on_start`` runs again each time."""
    ring_bytes: int = Field(4 << 20, ge=1 << 16)
    """Size of the replica's shared-memory ring for pub/sub and state to co-located replicas."""


class WarmupConfig(_Section):
    """Requests a model replica serves to itself after loading, before it takes traffic."""

    requests: int = Field(4, ge=0)
    """How many warm-up requests (0: no warm-up)."""
    concurrency: int = Field(2, ge=1)
    """How many run at once."""
    max_tokens: int = Field(8, ge=1)
    """Tokens each generates."""
    prompts: list[str] = Field(default_factory=lambda: ["Hello!", "Write one sentence."])
    """Prompts, used in turn."""


class AdmissionConfig(_Section):
    """Load shedding in front of one engine (``runtime.models.admission``): requests beyond
    what the engine should work on at once wait only while a slot is predicted to free up
    soon; the rest are refused at once with 429 and ``Retry-After``."""

    max_inflight: int | None = Field(None, ge=1)
    """Requests one engine works on at once; more wait in a short queue. None: the
    engine's ``max_num_seqs`` on a GPU; on a CPU-only machine, 16 per core (the measured
    point past which the tiny model's throughput stops rising on 2 cores, where latency only
    grows -- see the README's overload figures)."""
    max_queue_wait_s: float = Field(0.5, ge=0)
    """Longest predicted wait for a slot that a request may queue for (0: no queue). The
    prediction is the queue ahead of it over the measured rate at which requests finish."""
    batch_queue_share: float = Field(0.5, gt=0, le=1)
    """Batch requests (``x-raygent-priority: batch``) queue only while the predicted wait is
    within this share of ``max_queue_wait_s``, so batch work is shed first."""
    interactive_share: float = Field(0.7, gt=0, le=1)
    """Share of freed slots that go to queued interactive requests while batch requests
    queue too (as an agent's ``interactive_share``); 1.0: interactive strictly first."""


class ModelConfig(_Section):
    """One model: a vLLM engine in every gateway replica, or in its own deployment."""

    placement: Literal["gateway", "deployment"] = "gateway"
    """gateway: each gateway replica holds the engine and answers the model's routes itself
    (HTTP -> engine with no Ray hop, as plain vLLM's API server; scale with
    ``gateway.replicas``); deployment: a ModelServer deployment of its own, reached over a Serve
    handle (one hop per request; scales apart from the gateway with ``replicas`` or
    ``autoscaling``, e.g. one replica per GPU)."""
    source: str = Field("builtin:tiny", min_length=1)
    """``builtin:tiny`` (generated locally), a local directory, or a hub id."""
    revision: str | None = None
    """Model revision; part of response-cache keys."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """Passed to vLLM's engine arguments untouched (dtype, max_model_len, max_num_seqs, ...)."""
    load: Literal["lazy", "background", "eager"] = "background"
    """lazy: on first request; background: at replica start, requests wait; eager: the
    replica is not ready until loaded."""
    warmup: WarmupConfig = WarmupConfig()
    """Warm-up before the replica reports ready."""
    idle_unload_s: float | None = Field(None, gt=0)
    """Free the engine after this long without requests; None: never."""
    fallback: str | None = None
    """Model (a key of ``models``) that answers when this one errors or times out."""
    request_timeout_s: float = Field(60.0, gt=0)
    """Longest one generation may take before the fallback (or an error) answers."""
    replicas: int = Field(1, ge=1)
    """Fixed replica count (ignored when ``autoscaling`` is set)."""
    autoscaling: AutoscalingConfig | None = None
    """Autoscale between bounds instead of a fixed count."""
    resources: ResourcesConfig = ResourcesConfig(num_cpus=1.0)
    """Ray resources per replica."""
    max_ongoing_requests: int = Field(64, ge=1)
    """Requests one replica takes at once (Serve's ``max_ongoing_requests``); the engine batches
    them, so this is usually well above Serve's default of 5."""
    health_check_period_s: float = Field(10.0, gt=0)
    """How often Serve checks a replica's health (each check generates one token unless the
    engine produced output within ``health_check_timeout_s``)."""
    health_check_timeout_s: float = Field(10.0, gt=0)
    """Longest the health check may wait for its one token; a slower engine counts as hung and
    Serve replaces the replica after three failed checks in a row."""
    routing_stats_period_s: float = Field(2.0, gt=0)
    """How often Serve collects each replica's readiness for routing; until a replica reports
    itself warm, requests go to warm replicas when there are any."""
    affinity: bool = True
    """Send each conversation to the replica that served its earlier turns (whose prefix cache
    holds them) while that replica is not overloaded (``runtime.models.router``); a
    conversation is the caller's ``x-raygent-session`` header, else its opening messages.
    False: power of two choices only. With ``placement: deployment`` and two replicas or
    more."""
    affinity_max_imbalance: int = Field(8, ge=0)
    """How many more requests than the least loaded replica a conversation's replica may have
    and still take it; beyond, the request goes to the less loaded replicas."""
    admission: AdmissionConfig = AdmissionConfig()
    """How much work each engine takes at once, and what it refuses (429) under overload."""
    engine_niceness: int | None = Field(None, ge=0, le=19)
    """Niceness of this engine's processes once loaded; None: the serving path's priority.
    19 for a model that only answers shadow copies on a CPU it shares with a serving engine:
    it then takes only the CPU the others leave (measured in the README's shadow figures)."""
    tool_call_parser: str | None = Field(None, min_length=1)
    """vLLM tool parser (a ``ToolParserManager`` name: ``hermes``, ``llama3_json``, ...) that
    reads tool calls out of a freely written answer, for ``tool_choice: "auto"`` (vLLM's
    ``--tool-call-parser``); None: ``auto`` is refused, named and ``required`` choices still
    work. Default ``hermes`` for ``builtin:tiny`` (its chat template writes Hermes calls). The
    name is checked when the engine starts (vLLM's registry takes seconds to import)."""

    @model_validator(mode="before")
    @classmethod
    def _tiny_speaks_hermes(cls, data: Any) -> Any:
        # builtin:tiny's chat template writes <tool_call>{...}</tool_call>: tool_choice "auto"
        # works out of the box. An explicit null still turns it off.
        tiny = isinstance(data, dict) and data.get("source", "builtin:tiny") == "builtin:tiny"
        if tiny and "tool_call_parser" not in data:
            data = {**data, "tool_call_parser": "hermes"}
        return data

    @model_validator(mode="after")
    def _scaled_where_placed(self) -> ModelConfig:
        if self.placement == "gateway":
            scaled = ("replicas", "autoscaling", "max_ongoing_requests")
            for name in (*scaled, "affinity", "affinity_max_imbalance"):
                if name in self.model_fields_set:
                    hint = (
                        "set gateway.replicas, gateway.autoscaling or "
                        "gateway.max_ongoing_requests instead"
                        if name in scaled
                        else "its requests are routed to a gateway replica by the ingress"
                    )
                    raise ValueError(
                        f"{name} applies to placement 'deployment'; a model with placement "
                        f"'gateway' runs in every gateway replica ({hint})"
                    )
        return self


class CacheConfig(_Section):
    """The response cache of the HTTP gateway."""

    url: str | None = None
    """Redis URL; None: ``redis_url`` if set, else an in-process LRU per gateway replica."""
    ttl_s: float = Field(3600.0, gt=0)
    """Absolute lifetime of an entry (never refreshed by reads)."""
    policy: Literal["deterministic", "always", "never"] = "deterministic"
    """deterministic: cache temperature-0 or fixed-seed requests only."""
    max_entries: int = Field(10_000, ge=1)
    """Entries the in-process LRU keeps."""
    shared: list[str] = Field(default_factory=list)
    """Model or agent names whose entries are shared across tenants (API keys)."""
    socket_timeout_ms: int = Field(100, ge=1)
    """How long Redis has to answer one call while the gateway's event loop is on time; time
    the loop spends on other work (engine output, HTTP) is not counted, up to ``max_wait_ms``.
    A call that runs out goes uncached. 100: 20 concurrent warm GETs with both cores busy and
    the loop on time took p99.9 24 ms, max 35 ms (``python -m bench.cache_load``, 2 cores); the
    old 50 ms, counted in wall time, cut off every read once the loop was busy (a GET resumes
    its caller only after 60-80 ms there) and a quarter to 40% of a loaded gateway's answers."""
    max_wait_ms: int | None = Field(None, ge=1)
    """Wall-clock bound of one Redis call however late the event loop is: what a hung Redis
    costs a request, at worst, before the breaker opens. None: 10 x ``socket_timeout_ms``
    (1 s): a new connection's first GET took 410-580 ms with the loop saturated (same bench)."""
    warm_connections: int = Field(4, ge=0)
    """Redis connections each gateway replica opens at start: on a busy loop a new connection
    costs its first call 400+ ms (connect, ``CLIENT SETNAME``, ``CLIENT SETINFO``; 2 ms idle),
    so the first burst of distinct requests should find some open."""
    policies: dict[str, Literal["deterministic", "always", "never"]] = Field(default_factory=dict)
    """Per model/agent policy overriding ``policy``, e.g. ``{"agent:writer": "always"}``."""
    flight_wait_s: float = Field(5.0, gt=0)
    """Longest a gateway replica waits for another replica computing the same response (also
    the lifetime of the single-flight lock) before computing itself."""
    breaker_threshold: int = Field(3, ge=1)
    """Consecutive Redis failures (timeouts, refused connections) that open the circuit
    breaker; while open, requests are served uncached without touching Redis."""
    breaker_cooldown_s: float = Field(1.0, gt=0)
    """How long the breaker stays open before one trial call checks whether Redis is back:
    a restarted Redis serves hits again within about this long. The price, while Redis hangs:
    one request per cool-down waits out the timeout (110 ms on an on-time loop, at most
    ``max_wait_ms``); a Redis that refuses connections costs the trial nothing."""
    max_connections: int = Field(64, ge=1)
    """Redis connection pool size per gateway replica: a call holds one connection for as long
    as its caller takes to resume (20 concurrent callers held 20, idle or busy), and identical
    requests share one call, so this is the distinct cacheable requests in flight at once;
    64 is three times the 20 measured. A call that finds the pool full waits for a free
    connection within its deadline (it used to fail at once, uncached)."""

    @model_validator(mode="after")
    def _bounds_fit(self) -> CacheConfig:
        if self.max_wait_ms is not None and self.max_wait_ms < self.socket_timeout_ms:
            raise ValueError(
                f"max_wait_ms ({self.max_wait_ms}) must be >= socket_timeout_ms "
                f"({self.socket_timeout_ms})"
            )
        if self.warm_connections > self.max_connections:
            raise ValueError(
                f"warm_connections ({self.warm_connections}) must be <= max_connections "
                f"({self.max_connections})"
            )
        return self


class QueuesConfig(_Section):
    """Durable task queues (``ctx.submit``)."""

    url: str | None = None
    """Redis URL for Redis Streams; None: ``redis_url`` if set, else an in-process queue."""
    visibility_timeout_s: float = Field(30.0, gt=0)
    """A task claimed by a worker that has not acked it after this long is redelivered."""
    max_attempts: int = Field(3, ge=1)
    """Handler runs before a task is dead-lettered."""
    max_pending: int = Field(10_000, ge=1)
    """Tasks a queue holds (waiting; with Redis, waiting or claimed and not yet finished)
    before ``submit`` raises ``Backpressure``."""
    finished_ttl_s: float = Field(7 * 24 * 3600.0, gt=0)
    """Redis: how long a DONE or DEAD task (its result or last error, and its dead-letter
    entry) stays readable by id after it finished. Unfinished tasks never expire."""
    socket_timeout_s: float = Field(5.0, gt=0)
    """Redis: connect and read timeout; a Redis slower than this counts as down and the call
    raises ``QueueUnavailable`` (retryable) instead of waiting."""


class LimitsConfig(_Section):
    """Request limits enforced by the gateway and the runtime."""

    max_body_bytes: int = Field(1 << 20, ge=1024)
    """Largest HTTP request body (413 above)."""
    max_prompt_tokens: int = Field(8192, ge=1)
    """Longest prompt (400 above)."""
    max_tokens: int = Field(1024, ge=1)
    """Largest ``max_tokens`` a request may ask for (400 above)."""
    max_n: int = Field(4, ge=1)
    """Largest ``n`` (choices per request)."""
    request_timeout_s: float = Field(120.0, gt=0)
    """Longest a request may take end to end (504 above)."""
    max_message_bytes: int = Field(1 << 20, ge=64)
    """Largest encoded message or task payload."""


class AuthConfig(_Section):
    """API keys; with none configured, every route is open."""

    api_keys: list[SecretStr] = Field(default_factory=list)
    """Accepted bearer tokens (also ``RAYGENT_API_KEYS``, comma-separated)."""
    admin_keys: list[SecretStr] = Field(default_factory=list)
    """Bearer tokens of the admin routes (``/admin/...``: variant weights), and only of them
    (also ``RAYGENT_ADMIN_KEYS``); none: the admin routes are closed."""


class TelemetryConfig(_Section):
    """OpenTelemetry. Exporters follow the standard ``OTEL_*`` variables; off when unset."""

    service_name: str = "raygent"
    """``service.name`` of exported spans and metrics."""
    traces: bool = True
    """Record spans (exported only when an OTLP endpoint is configured)."""
    metrics: bool = True
    """Record metrics (served at /metrics)."""


class GatewayConfig(_Section):
    """The HTTP gateway deployment: the application's ingress, and the host of its models."""

    ingress: Literal["haproxy", "proxy"] = "haproxy"
    """What accepts HTTP in front of the gateway replicas when ``serve run serve_app:app``
    starts Ray: ``haproxy``, Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``: HAProxy
    forwards each request straight to a gateway replica's own HTTP server), or ``proxy``, Serve's
    Python proxy actor (one more process and Ray call per request). Either way the listen host
    is Serve's ``http_options.host``: loopback unless ``RAY_SERVE_DEFAULT_HTTP_HOST`` (or
    ``http_options`` in a Serve config file) says otherwise. A cluster that is already running
    keeps the ingress it was started with."""

    replicas: int | Literal["auto"] = "auto"
    """Gateway replicas (Serve's ingress spreads requests over them). ``auto``: two when this
    machine has room for two -- a replica killed then drops only its own in-flight requests
    and the other keeps serving -- else one. Room means: no model is hosted in the gateway
    (it is thin), or every hosted model fits a GPU and the machine has two per replica. A CPU
    engine takes the machine's cores (all but one), so on a CPU-only machine a gateway that
    hosts a model runs once; for a replica kill to cost no outage there, put the model in a
    deployment of its own (``placement: deployment``) and set ``replicas: 2``: one more Ray
    hop per request (the README's serving-path figures)."""
    autoscaling: AutoscalingConfig | None = None
    """Scale the gateway with load instead of a fixed ``replicas``."""

    @field_validator("replicas")
    @classmethod
    def _at_least_one(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be >= 1 or 'auto' (got {value})")
        return value

    resources: ResourcesConfig = ResourcesConfig(num_cpus=0.1)
    """Ray resources per gateway replica."""
    max_ongoing_requests: int = Field(1000, ge=1)
    """Requests one gateway replica works on at once. The gateway mostly waits on agents and
    models, so this is high; agents' mailboxes and Serve's queues bound the real work."""


class VariantArmConfig(_Section):
    """One variant of a routed name: what answers, and its share of the traffic."""

    target: str = Field(min_length=1)
    """What answers: a key of ``models`` (a checkpoint or engine settings of its own) or
    ``agent:<name>``."""
    weight: float = Field(1.0, ge=0)
    """Relative share of the traffic (0: reached only through the override header)."""
    system_prompt: str | None = None
    """A prompt variant: sent before the client's messages as a system message (a text
    completion's prompt gets it as a first paragraph)."""
    shadow: float | None = Field(None, gt=0, le=1)
    """A shadow arm: this share of the name's requests is copied to it after the client's
    answer is done, and its outcome and latency recorded (``raygent_shadow_*``); it never
    answers a client (its weight is 0), nor delays or changes an answer."""

    @model_validator(mode="before")
    @classmethod
    def _shadows_take_no_traffic(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("shadow") is not None:
            if data.get("weight", 0) != 0:
                raise ValueError("a shadow arm answers no client: its weight must be 0")
            data = {**data, "weight": 0}
        return data


class VariantsConfig(_Section):
    """Weighted variants behind one ``model`` name (A/B tests, canaries).

    Each request is assigned by a stable hash of its sticky key -- the ``x-raygent-session``
    header, else the request's ``user`` field, else its tenant (``sticky: tenant`` skips the
    first two) -- so a caller stays on its variant across turns and replicas; requests with
    no key (no header, no ``user``, auth off) are spread by weight at random. The hash is
    rendezvous hashing weighted per arm: raising one arm's weight only moves callers onto that
    arm, never between the others, so a canary grows without reshuffling anyone. The
    ``x-raygent-variant`` header picks an arm by name (tests, debugging)."""

    arms: dict[str, VariantArmConfig] = Field(min_length=1)
    """The variants by name (the name is what responses, metrics and traces carry)."""
    sticky: Literal["session", "tenant"] = "session"
    """What keeps a caller on its variant: ``session`` (session header or ``user``, else the
    tenant) or ``tenant`` (the API key, with ``x-raygent-tenant``)."""
    shadow_max_inflight: int = Field(2, ge=1)
    """Copies to shadow arms one gateway replica runs at once; a copy that finds them all
    busy is dropped (counted), so shadows cannot pile up behind a slow arm. They also queue
    at the model as ``batch`` work, which its admission sheds before any client's request."""

    @field_validator("arms")
    @classmethod
    def _arms(cls, arms: dict[str, VariantArmConfig]) -> dict[str, VariantArmConfig]:
        bad = [n for n in arms if not n or not all(c.isalnum() or c in "-_." for c in n)]
        if bad:
            raise ValueError(f"arm names may hold letters, digits, '-', '_' and '.' (got {bad})")
        if not any(a.weight > 0 for a in arms.values()):
            raise ValueError("at least one arm needs a weight above 0")
        return arms


def _default_agents() -> list[AgentConfig]:
    return [
        AgentConfig(import_path=f"examples.research:{name}")
        for name in ("Researcher", "Writer", "Critic", "Archivist")
    ] + [AgentConfig(import_path="examples.assistant:Assistant")]


class RaygentConfig(_Section):
    """The whole application."""

    redis_url: str | None = None
    """Default Redis for the cache and the task queues (``REDIS_URL``): ``redis://``,
    ``rediss://``, ``unix://`` for one server, ``redis+cluster://host:port`` (any node) for a
    Redis Cluster (:mod:`runtime.redis_client`)."""
    agents: list[AgentConfig] = Field(default_factory=_default_agents)
    """Agents to run."""
    models: dict[str, ModelConfig] = Field(default_factory=lambda: {"default": ModelConfig()})
    """Models by name; agents refer to them by that name."""
    cache: CacheConfig = CacheConfig()
    """Response cache."""
    queues: QueuesConfig = QueuesConfig()
    """Durable task queues."""
    limits: LimitsConfig = LimitsConfig()
    """Request limits."""
    auth: AuthConfig = AuthConfig()
    """API keys."""
    telemetry: TelemetryConfig = TelemetryConfig()
    """Tracing and metrics."""
    gateway: GatewayConfig = GatewayConfig()
    """The HTTP ingress."""
    variants: dict[str, VariantsConfig] = Field(default_factory=dict)
    """``model`` names answered by weighted variants, e.g. ``{"chat": {"arms": {"a":
    {"target": "default", "weight": 9}, "b": {"target": "default-b", "weight": 1}}}}``. A
    name may be a key of ``models`` (that model is then reached directly only as an arm)."""

    @model_validator(mode="after")
    def _references(self) -> RaygentConfig:
        known = sorted(self.models)
        for i, agent in enumerate(self.agents):
            if agent.model is not None and agent.model not in self.models:
                raise ValueError(
                    f"agents[{i}].model = {agent.model!r} is not a configured model; "
                    f"configured: {known}"
                )
        for name, model in self.models.items():
            if model.fallback is not None and model.fallback not in self.models:
                raise ValueError(
                    f"models.{name}.fallback = {model.fallback!r} is not a configured model; "
                    f"configured: {known}"
                )
            if model.fallback == name:
                raise ValueError(f"models.{name}.fallback names the model itself")
        for name, variants in self.variants.items():
            for arm, spec in variants.arms.items():
                target = spec.target
                if not target.startswith("agent:") and target not in self.models:
                    raise ValueError(
                        f"variants.{name}.arms.{arm}.target = {target!r} is not a configured "
                        f"model or 'agent:<name>'; configured models: {known}"
                    )
        paths = [a.import_path for a in self.agents]
        dupes = sorted({p for p in paths if paths.count(p) > 1})
        if dupes:
            raise ValueError(f"agents lists {dupes} more than once; use replicas instead")
        return self

    @property
    def cache_url(self) -> str | None:
        """The Redis URL of the response cache, or None for the in-process LRU."""
        return self.cache.url or self.redis_url

    @property
    def queues_url(self) -> str | None:
        """The Redis URL of the task queues, or None for the in-process queue."""
        return self.queues.url or self.redis_url


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> RaygentConfig:
    """Build the config from defaults, a YAML file and the environment.

    Args:
        path: YAML file; default ``$RAYGENT_CONFIG``; neither: defaults and environment only.
        env: the environment to read (default ``os.environ``); tests pass a dict.

    Raises:
        ConfigError: the file is missing or not YAML, or a value is invalid. The message has one
            line per problem: where it came from, the field, the value, what is allowed.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    source = "defaults"
    path = path if path is not None else env.get(ENV_CONFIG_PATH) or None
    if path is not None:
        source = str(path)
        raw = _read_yaml(Path(path))
    overrides = _env_overrides(env)
    merged = _deep_merge(raw, overrides)
    try:
        return RaygentConfig.model_validate(merged)
    except ValidationError as exc:
        from_env = set(_flatten(overrides))
        raise ConfigError(_format_errors(exc, source, from_env)) from None


def model_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where generated models (``builtin:tiny``) live: ``$RAYGENT_MODEL_CACHE``, else
    ``~/.cache/raygent/models``.

    Args:
        env: the environment to read (default ``os.environ``); tests pass a dict.
    """
    env = os.environ if env is None else env
    value = env.get(ENV_MODEL_CACHE)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "raygent" / "models"


def import_agent(import_path: str) -> type[Agent]:
    """Import the agent class that an ``AgentConfig.import_path`` names.

    Raises:
        ConfigError: the module or attribute is missing, or it is not an ``Agent`` subclass.
    """
    from agents import Agent

    module_name, _, attr = import_path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"agents[].import_path {import_path!r} cannot be imported: {exc}"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        raise ConfigError(f"agents[].import_path {import_path!r} is not an Agent subclass")
    return obj


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping at the top level, got "
            f"{type(data).__name__}"
        )
    return data


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if env.get("REDIS_URL"):
        out["redis_url"] = env["REDIS_URL"]
    for var, field in (("RAYGENT_API_KEYS", "api_keys"), ("RAYGENT_ADMIN_KEYS", "admin_keys")):
        if env.get(var):
            keys = [k.strip() for k in env[var].split(",") if k.strip()]
            out.setdefault("auth", {})[field] = keys
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment: {name} conflicts with another override")
        node[parts[-1]] = parsed
    return out


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _flatten(d: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.extend(_flatten(v, (*prefix, k)))
        else:
            out.append((*prefix, k))
    return out


def _format_errors(exc: ValidationError, source: str, from_env: set[tuple[str, ...]]) -> str:
    lines = ["invalid raygent config:"]
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        where = ".".join(p if not p.isdigit() else f"[{p}]" for p in loc).replace(".[", "[")
        origin = "environment" if any(loc[: len(k)] == k for k in from_env) else source
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(err["loc"][:-1])
            msg = f"unknown field; allowed: {', '.join(allowed)}" if allowed else msg
            line = f"  {origin}: {where}: {msg}"
        elif not loc:
            line = f"  {origin}: {msg}"
        else:
            line = f"  {origin}: {where}: {msg} (got {err['input']!r})"
        lines.append(line)
    return "\n".join(lines)


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``loc`` (for 'unknown field' messages)."""
    node: Any = RaygentConfig
    for part in loc:
        if not (isinstance(node, type) and issubclass(node, BaseModel)):
            node = _element_type(node)
            continue
        field = node.model_fields.get(str(part))
        if field is None:
            return []
        node = _model_in(field.annotation)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return sorted(node.model_fields)
    node = _element_type(node)
    return sorted(node.model_fields) if isinstance(node, type) else []


def _model_in(annotation: Any) -> Any:
    """The annotation with ``X | None`` unwrapped."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _element_type(annotation: Any) -> Any:
    """The model inside ``list[M]`` or ``dict[str, M]``."""
    args = typing.get_args(annotation)
    return _model_in(args[-1]) if args else annotation
