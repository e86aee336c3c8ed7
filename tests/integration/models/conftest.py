"""Fixtures of the model-server tests: Serve on the session's Ray, and one shared warm model.

Every engine start costs ~30 s on the 2-core test box, so the suite starts few: ``main`` here
(package scope, also the fallback of other tests' models), plus one or two per module. vLLM and
torch caches go to a temporary directory passed to the replicas through their runtime env.
"""

from __future__ import annotations

import time
from importlib.util import find_spec

import pytest

from tests.servekit import shutdown_serve

# Without vLLM (the `cpu` or `gpu` extra) there is nothing to test here; vLLM itself is only
# imported inside the model replicas, never in the test process.
collect_ignore_glob = [] if find_spec("vllm") and find_spec("ray") else ["test_*.py"]

from .modelkit import (  # noqa: E402
    ENGINE_PIDS,
    MAIN,
    MainModel,
    alive,
    deploy,
    release,
    small_model,
    wait_released,
)


@pytest.fixture(scope="package")
def model_env(tmp_path_factory) -> dict[str, str]:
    """Environment of every model replica: caches in a temporary directory."""
    root = tmp_path_factory.mktemp("models")
    return {
        "RAYGENT_MODEL_CACHE": str(root / "raygent"),
        "VLLM_CACHE_ROOT": str(root / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
    }


@pytest.fixture(scope="package")
def serve_instance(ray_session):
    """Serve without an HTTP proxy (tests use handles). Shut down only if started here."""
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        started_here = False
    except ValueError:
        started_here = True
    serve.start(proxy_location="Disabled")
    yield serve
    wait_released(serve)
    if started_here:
        shutdown_serve()
    # Nothing leaks: every engine process the tests saw has exited with its replica.
    deadline = time.monotonic() + 60
    while any(alive(p) for p in ENGINE_PIDS) and time.monotonic() < deadline:
        time.sleep(0.2)
    leaked = sorted(p for p in ENGINE_PIDS if alive(p))
    assert not leaked, f"engine processes outlived their replicas: {leaked}"


@pytest.fixture(scope="package")
def main_model(serve_instance, model_env):
    """``main``: background load with warm-up. A chat is sent the moment ``serve.run``
    returns (the replica has started; its engine has not), for the background-load test."""
    # The early chat waits for the whole background load, which on a slow day of the 2-core
    # box takes longer than the default 60 s: test_loading's 180 s, as for its lazy load.
    cfg = small_model(load="background", request_timeout_s=180.0)
    d = deploy(serve_instance, MAIN, cfg, model_env)
    early = d.handle.chat.remote([{"role": "user", "content": "Are you there?"}], {"max_tokens": 4})
    yield MainModel(d.name, d.app, d.handle, d.client, early.result(timeout_s=240))
    release(serve_instance, d.app)
