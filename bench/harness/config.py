"""One typed description of a run, built by the CLI and sent as JSON to worker processes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.errors import ConfigError
from bench.harness.metrics import DEFAULT_PERCENTILES, Gate
from bench.harness.runner import LoadShape, RunOptions
from bench.harness.workload import WorkloadConfig

__all__ = ["RunConfig"]


@dataclass
class RunConfig:
    """Everything ``raygent-bench run`` was asked to do.

    Attributes:
        url: base URL of the OpenAI-compatible endpoint.
        steps: one load shape per step (one step unless ``--sweep``).
        workers: client processes; each takes an even share of every step.
        client: ``raw`` (default), ``aiohttp`` or ``httpx`` (see :mod:`bench.harness.client`).
        stop_at_saturation: end a sweep once a step no longer raises throughput by
            ``saturation_gain`` (or misses its offered rate, or errors exceed 5 %).
    """

    url: str
    steps: list[LoadShape]
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    options: RunOptions = field(default_factory=RunOptions)
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 300.0
    connect_timeout_s: float = 10.0
    workers: int = 1
    client: str = "raw"
    slo: dict[str, float] = field(default_factory=dict)
    percentiles: list[float] = field(default_factory=lambda: list(DEFAULT_PERCENTILES))
    gates: list[Gate] = field(default_factory=list)
    out: Path | None = None
    label: str = ""
    progress: bool = True
    stop_at_saturation: bool = False
    saturation_gain: float = 0.1

    def validate(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--url must start with http:// or https:// (got {self.url!r})")
        if not self.steps:
            raise ConfigError("no load step: give --concurrency, --rate or --sweep")
        for s in self.steps:
            s.validate()
        self.workload.validate()
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1 (got {self.workers})")
        if self.timeout_s <= 0:
            raise ConfigError(f"--timeout must be > 0 s (got {self.timeout_s})")
        if self.options.endpoint != self.workload.endpoint:
            raise ConfigError("options.endpoint and workload.endpoint differ")

    def to_json(self) -> dict[str, Any]:
        """JSON-able (the worker processes' config; ``meta.config`` of a result)."""
        out = asdict(self)
        out["steps"] = [s.to_dict() for s in self.steps]
        out["gates"] = [str(g) for g in self.gates]
        out["out"] = str(self.out) if self.out else None
        out["workload"]["dataset"] = str(self.workload.dataset) if self.workload.dataset else None
        out.pop("api_key")  # never written to a result file
        out["headers"] = {k: ("<redacted>" if _secret(k) else v) for k, v in self.headers.items()}
        return out


def _secret(header: str) -> bool:
    return header.lower() in ("authorization", "x-api-key", "api-key", "cookie")
