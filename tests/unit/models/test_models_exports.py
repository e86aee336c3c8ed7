"""``runtime.models`` does not import vLLM (its ``__all__`` is checked with every other
package's in test_exports.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("ray")


def test_importing_the_package_does_not_import_vllm_or_torch():
    code = (
        "import sys, runtime.models;"
        "bad=[m for m in ('vllm','torch','transformers') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
