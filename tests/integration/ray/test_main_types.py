"""Agents and messages defined in ``__main__`` (a script, a notebook) run on RayRuntime.

Each case starts its own Ray in another process, as a user would: a script run with
``python``, and the same code executed cell by cell in a Jupyter kernel (nbclient + ipykernel).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).with_name("main_types_script.py")
REPO = Path(__file__).resolve().parents[3]

EXPECTED = [
    "RESULT __main__ Receipt(total=3, items=[Item(name='cake', qty=1), Item(name='tea', qty=2)], "
    "seen_as='__main__:Item')",
    "RESULT scratch Ping(n=42)",
]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["RAY_ADDRESS"] = "local"  # a Ray of its own, never another test's cluster
    return env


def test_script_types_decode_on_replicas_and_replies_on_the_driver(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # not the script's directory: nothing there is importable by workers
        env=_env(),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines == EXPECTED, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_notebook_types_decode_on_replicas(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    definitions, _ = SCRIPT.read_text().split("\n# -- run --\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(definitions), nbformat.v4.new_code_cell("await main()")]
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=240, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env=_env())  # passed on to the kernel's process
    out = "".join(
        o.get("text", "") for o in nb.cells[1].outputs if o.get("output_type") == "stream"
    )
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert lines == EXPECTED, out
