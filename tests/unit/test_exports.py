"""Each package has one public import path; ``__all__`` lists it completely (STYLE rule 1)."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys

import pytest

import agents
import agents.errors
import runtime.errors

# Every public package with an ``__all__`` (``bench`` itself has none: its entry point is
# ``python -m bench``; ``bench.harness`` is the library).
PACKAGES = [
    "agents",
    "agents.testing",
    "bench.harness",
    "runtime",
    "runtime.cache",
    "runtime.gateway",
    "runtime.models",
    "shm",
]


def _isort_key(name: str) -> tuple[int, list[int | str]]:
    """ruff's ``__all__`` order (RUF022, isort style): CONSTANTS, then Classes, then the rest;
    natural order within each (case-sensitive)."""
    kind = 0 if len(name) > 1 and name.isupper() else 1 if name[:1].isupper() else 2
    return kind, [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name) if t]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_complete_and_importable(name):
    module = importlib.import_module(name)
    is_package = hasattr(module, "__path__")

    def defined_here(v):
        home = getattr(v, "__module__", None) or ""
        return home.startswith(name + ".") if is_package else home == name

    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and not inspect.ismodule(v) and defined_here(v)
    }
    assert public <= set(module.__all__), f"{name} exposes names missing from __all__"
    for n in module.__all__:
        assert hasattr(module, n), f"{name}.__all__ lists missing {n}"


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_unique(name):
    names = list(importlib.import_module(name).__all__)
    assert len(set(names)) == len(names), f"{name}.__all__ lists a name twice"
    assert names == sorted(names, key=_isort_key), f"{name}.__all__ is not sorted (ruff RUF022)"


def test_runtime_exports_ray_runtime_lazily():
    """``import runtime`` stays free of Ray; ``from runtime import RayRuntime`` imports it."""
    code = (
        "import sys, runtime;"
        "assert 'ray' not in sys.modules, 'import runtime imported ray';"
        "assert 'RayRuntime' in dir(runtime) and 'RayRuntime' in runtime.__all__;"
        "from runtime import LocalRuntime, RayRuntime;"
        "from runtime.cluster.ray_runtime import RayRuntime as Direct;"
        "assert RayRuntime is Direct and 'ray' in sys.modules;"
        "import runtime as again; assert again.RayRuntime is Direct"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_runtime_refuses_unknown_attributes():
    with pytest.raises(AttributeError, match="NoSuchRuntime"):
        runtime.NoSuchRuntime  # noqa: B018


def test_every_sdk_error_is_exported_and_has_one_base():
    errors = [
        v
        for v in vars(agents.errors).values()
        if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == "agents.errors"
    ]
    assert len(errors) > 10
    for e in errors:
        assert issubclass(e, agents.AgentError)
        assert getattr(agents, e.__name__) is e, f"{e.__name__} not exported from agents"
        assert "retry" in (e.__doc__ or "").lower(), f"{e.__name__} must say if it is retryable"


def test_runtime_errors_share_one_base():
    assert issubclass(runtime.ConfigError, runtime.RaygentRuntimeError)
    assert runtime.errors.ConfigError is runtime.ConfigError


def test_sdk_imports_no_heavy_dependency():
    code = (
        "import sys, agents, agents.testing, runtime;"
        "bad=[m for m in ('ray','vllm','redis','torch','opentelemetry') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_sdk_error_survives_pickling_with_its_attributes():
    import pickle  # noqa: TID251 - Ray pickles errors between processes; this checks that

    err = agents.Backpressure("echo", 4, retry_after_s=2.0)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is agents.Backpressure and str(back) == str(err)
    assert back.agent == "echo" and back.capacity == 4 and back.retryable
    nested = pickle.loads(pickle.dumps(agents.HandlerError("a", "T", "ValueError", "boom")))
    assert nested.cause == "boom"
