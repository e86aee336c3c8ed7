"""Two Ray nodes on one machine: the shm path within a node, the Ray path across nodes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def result():
    script = Path(__file__).with_name("multinode_scenario.py")
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=script.parent,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_replicas_are_placed_on_two_nodes(result):
    r = result["replicas"]
    assert r["echo"]["node"] == r["tap"]["node"] != r["listener"]["node"] == r["worker"]["node"]
    # rings are attached only between replicas that share a node
    assert r["echo"]["attached"] == ["tap"] and r["tap"]["attached"] == ["echo"]
    assert r["listener"]["attached"] == ["worker"]


def test_send_and_submit_work_across_nodes(result):
    assert result["relay"] == 20  # echo (node A) asked listener (node B)
    assert result["stream"] == [0, 10, 20]  # listener (B) streamed echo's (A) stream on
    assert result["task"] == [True, 8]  # submitted on A, run by the worker on B


def test_publish_takes_shm_within_a_node_and_ray_across(result):
    r = result["replicas"]
    assert r["tap"]["paths"].get("topic:ring") == 1
    assert r["listener"]["paths"].get("topic:ray") == 1
    assert "topic:ray" not in r["tap"]["paths"] and "topic:ring" not in r["listener"]["paths"]
    assert result["seen_by_driver"] == {"heard": 1, "tapped": True}


def test_state_reaches_every_replica_on_both_nodes(result):
    assert result["tap_sees_state"] == "yes"
    assert result["listener_sees_state"] == "yes"
    assert result["replicas"]["tap"]["paths"].get("state:ring", 0) >= 1  # co-located: shm
