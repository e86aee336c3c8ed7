"""``runtime.models`` has one public import path and does not import vLLM (STYLE rule 1)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

pytest.importorskip("ray")


def test_all_is_complete_and_importable():
    import runtime.models as models

    public = {
        n
        for n, v in vars(models).items()
        if not n.startswith("_")
        and not inspect.ismodule(v)
        and (getattr(v, "__module__", "") or "").startswith("runtime.models")
    }
    assert public <= set(models.__all__)
    for name in models.__all__:
        assert hasattr(models, name), name


def test_importing_the_package_does_not_import_vllm_or_torch():
    code = (
        "import sys, runtime.models;"
        "bad=[m for m in ('vllm','torch','transformers') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
