"""The whole application on real Ray Serve, started once for every test in this package.

What runs: Serve's HAProxy ingress on 127.0.0.1 (the default of ``serve run serve_app:app``),
the Gateway hosting the vLLM engine of ``builtin:tiny``, one deployment per agent (the example
assistant and concierge plus test agents), the registry and in-process task queue, and a
redis-server of its own as the response cache (its own process, so tests can stop and restart
it without disturbing other tests' Redis).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.servekit import shutdown_serve

collect_ignore_glob = (
    [] if find_spec("vllm") and find_spec("ray") and shutil.which("redis-server") else ["test_*"]
)

# The test agents (tests/integration/ray) are importable by Ray workers through the session's
# runtime env; the gateway's driver imports them here too.
sys.path.insert(0, str(Path(__file__).parents[1] / "ray"))

API_KEYS = ("sk-test-one", "sk-test-two")
ADMIN_KEY = "sk-test-admin"
APP = "raygent-e2e"
VARIANTS = "tiny-ab"  # a name answered by two variants: the default model and VARIANT_MODEL
VARIANT_MODEL = "tiny-b"
SHADOWED = "tiny-shadowed"  # the default model answers; every request is copied to tiny-b
PAIR = "tiny-pair"  # two replicas of a deployment of its own (test_affinity_e2e)
AUTO = "tiny-auto"  # a deployment of its own, 1-2 replicas on its depth (test_autoscaling_e2e)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A redis-server the tests own: stop (SIGSTOP: hung), resume, kill, start again."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="package")
def cache_redis(tmp_path_factory):
    r = RedisProcess(_free_port(), tmp_path_factory.mktemp("redis"))
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="package")
def app_config(cache_redis):
    from runtime.config import (
        AdmissionConfig,
        AutoscalingConfig,
        ModelConfig,
        ResourcesConfig,
        VariantArmConfig,
        VariantsConfig,
        load_config,
    )

    agents = "examples.assistant:Assistant"
    cfg = load_config(
        env={"RAYGENT_API_KEYS": ",".join(API_KEYS), "RAYGENT_ADMIN_KEYS": ADMIN_KEY},
    )
    cfg = cfg.model_copy(
        update={
            "agents": [
                cfg.agents[-1].model_copy(update={"import_path": agents}),
                *[
                    type(cfg.agents[0])(import_path=f"examples.concierge:{name}")
                    for name in ("Concierge", "Guide")
                ],
                *[
                    type(cfg.agents[0])(import_path=f"ray_test_agents:{name}", **extra)
                    for name, extra in (
                        ("Echo", {"mailbox_size": 2, "max_concurrency": 1}),
                        ("Listener", {}),
                        ("Worker", {}),
                        ("Flaky", {}),
                        ("Words", {}),
                        # test_autoscaling_e2e: one turn at a time, scaled on its depth
                        (
                            "Crawler",
                            {
                                "max_concurrency": 1,
                                "resources": ResourcesConfig(num_cpus=0),
                                "autoscaling": AutoscalingConfig(
                                    min_replicas=1,
                                    max_replicas=2,
                                    target_ongoing_requests=4,
                                    upscale_delay_s=0,
                                    downscale_delay_s=4,
                                    look_back_period_s=2,
                                ),
                            },
                        ),
                    )
                ],
            ],
            # The default Redis deadline: it holds on a busy 2-core machine (the cache counts
            # only time the gateway's event loop was on time; see runtime/cache/deadline.py).
            "cache": cfg.cache.model_copy(update={"url": cache_redis.url}),
            "queues": cfg.queues.model_copy(update={"visibility_timeout_s": 5.0}),
            "limits": cfg.limits.model_copy(
                update={"max_body_bytes": 64 * 1024, "max_tokens": 64, "request_timeout_s": 60}
            ),
            # Variants (test_variants_e2e): the tiny model with other engine settings, loaded
            # by the first request that needs it (no other test pays its start) and freed
            # after two idle minutes; no CPU of its own, as the gateway's reservation is all
            # the machine has.
            "models": {
                **cfg.models,
                VARIANT_MODEL: ModelConfig(
                    engine_args={"max_num_seqs": 8},
                    engine_niceness=19,  # it serves the shadow too: it yields the CPU
                    load="lazy",
                    idle_unload_s=120.0,
                    resources=ResourcesConfig(num_cpus=0),
                ),
                # Affinity (test_affinity_e2e): two ModelServer replicas of the tiny model,
                # loaded as the application starts (an idle engine costs only its health
                # checks, one token per 10 s)
                PAIR: ModelConfig(
                    placement="deployment",
                    replicas=2,
                    engine_args={"max_num_seqs": 8},
                    resources=ResourcesConfig(num_cpus=0),
                ),
                # Autoscaling (test_autoscaling_e2e): two requests at a time, no queue, so
                # what it turns away (429) is the demand that scales it out
                AUTO: ModelConfig(
                    placement="deployment",
                    load="eager",
                    engine_args={"max_num_seqs": 8},
                    admission=AdmissionConfig(max_inflight=2, max_queue_wait_s=0),
                    autoscaling=AutoscalingConfig(
                        min_replicas=1,
                        max_replicas=2,
                        target_ongoing_requests=4,
                        upscale_delay_s=0,
                        downscale_delay_s=5,
                        look_back_period_s=2,
                    ),
                    resources=ResourcesConfig(num_cpus=0),
                ),
            },
            "variants": {
                VARIANTS: VariantsConfig(
                    arms={
                        "a": VariantArmConfig(target="default"),
                        "b": VariantArmConfig(target=VARIANT_MODEL),
                    }
                ),
                SHADOWED: VariantsConfig(
                    arms={
                        "live": VariantArmConfig(target="default"),
                        "next": VariantArmConfig(target=VARIANT_MODEL, shadow=1.0),
                    }
                ),
            },
        }
    )
    return cfg


@pytest.fixture(scope="package")
def gateway_url(ray_session, app_config):
    """Base URL of the running application, with its model warm."""
    import httpx
    from ray import serve

    from runtime.gateway import build_app

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    try:
        serve.run(build_app(app_config), name=APP, route_prefix="/", blocking=False)
        deadline = time.monotonic() + 240
        body = None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{url}/readyz", timeout=5)
                body = r.json()
                if r.status_code == 200:
                    break
            except httpx.HTTPError as exc:
                body = repr(exc)
            time.sleep(1)
        else:
            raise RuntimeError(f"the application did not become ready: {body}")
        yield url
    finally:
        shutdown_serve()


@pytest.fixture
def auth():
    return {"Authorization": f"Bearer {API_KEYS[0]}"}


@pytest.fixture(scope="package")
def model_stats(ray_session):
    """The default model's stats (request counters), from the gateway replica hosting it."""
    from ray import serve

    handle = serve.get_deployment_handle("Gateway", app_name=APP)

    def stats():
        return handle.model_stats.remote("default").result(timeout_s=30)

    return stats
