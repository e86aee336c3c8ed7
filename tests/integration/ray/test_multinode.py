"""Two Ray nodes on one machine: the shm path within a node, the Ray path across nodes, and an
HTTP request that enters the application on the second node's ingress."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def run_scenario(name: str) -> dict:
    """Run a scenario script in a process of its own (a Ray cluster of several nodes cannot
    share a process with the session's single-node Ray) and return what it printed."""
    script = Path(__file__).with_name(name)
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=script.parent,
    )
    skip = [ln for ln in proc.stdout.splitlines() if ln.startswith("SKIP ")]
    if proc.returncode == 0 and skip:
        pytest.skip(skip[-1].removeprefix("SKIP "))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.fixture(scope="module")
def result():
    return run_scenario("multinode_scenario.py")


@pytest.fixture(scope="module")
def http_result():
    return run_scenario("multinode_http_scenario.py")


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


# -- HTTP in on the second node (multinode_http_scenario.py: node B in a network namespace) ----


def test_serve_runs_an_ingress_on_each_node_and_the_replicas_where_they_are_pinned(http_result):
    a, b = http_result["host_ip"], http_result["ns_ip"]
    placed = http_result["placed"]
    assert ["HAProxyManager", a] in placed and ["HAProxyManager", b] in placed
    assert ["ServeReplica:multinode:Gateway", a] in placed
    assert ["ServeReplica:multinode:Agent-listener", b] in placed
    assert ["ServeReplica:multinode:Agent-words", b] in placed
    assert http_result["via_a"] == 200  # node A's ingress answers too


def test_a_request_entering_on_the_second_nodes_ingress_is_answered_across_both(http_result):
    """Sent to node B's address, which only node B's HAProxy listens on: HAProxy (B) ->
    gateway (A) -> agent (B) and back."""
    status, body = http_result["invoke"]
    assert status == 200 and body["agent"] == "listener"
    node_of = http_result["nodes"]
    assert node_of[body["reply"]["node"]] == http_result["ns_ip"]
    # a streamed chat with an agent takes the same way, chunk by chunk
    assert http_result["chat_status"] == 200
    assert http_result["chat"] == "in on node B"
