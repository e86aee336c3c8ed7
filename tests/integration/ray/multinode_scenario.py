"""Two Ray nodes on one machine (ray.cluster_utils.Cluster): which path each message takes.

Run by test_multinode.py in a process of its own (a Cluster cannot share a process with the
session's single-node Ray). Prints one JSON object: what each replica saw and how.

Placement (custom resources pin replicas to nodes):
    node A: echo (publisher), tap (subscriber)       -> echo→tap through shm
    node B: listener (subscriber), worker            -> echo→listener through Ray
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path


async def scenario(address: str) -> dict:
    from ray_test_agents import Count, Echo, Job, Listener, Note, Tap, Worker

    from agents import TaskState
    from runtime.cluster.ray_runtime import RayRuntime
    from runtime.config import AgentConfig, RaygentConfig

    def on(node: str, cls: type) -> AgentConfig:
        return AgentConfig(
            import_path=f"{cls.__module__}:{cls.__qualname__}",
            resources={"num_cpus": 0.1, "custom": {node: 1}},
        )

    cfg = RaygentConfig(
        agents=[on("node_a", Echo), on("node_a", Tap), on("node_b", Listener), on("node_b", Worker)]
    )
    out: dict = {}
    async with RayRuntime([Echo, Tap, Listener, Worker], cfg, address=address) as rt:
        out["relay"] = await rt.send("echo", Note("hi"))  # echo → listener across nodes
        # a stream across nodes: listener (B) streams on what echo (A) streams to it
        out["stream"] = [i async for i in rt.stream("listener", Count(3))]
        await rt.send("echo", {"shared": "yes"})  # a state write on node A
        task = await rt.send("echo", Job(4))  # echo submits; the worker on B runs it
        info = await rt.wait_task(task, timeout_s=30)
        out["task"] = [info.state == TaskState.DONE, info.result]
        for _ in range(500):
            if rt.state.get("heard:hi") and rt.state.get("tapped:hi"):
                break
            await asyncio.sleep(0.02)
        out["seen_by_driver"] = {
            "heard": rt.state.get("heard:hi"),
            "tapped": rt.state.get("tapped:hi") is not None,
        }
        # every replica, on either node, sees the state written on node A
        for name in ("tap", "listener"):
            for _ in range(500):
                got = (
                    await rt.send(name, "shared")
                    if name == "tap"
                    else ((await rt.send("listener", "where"))["state"].get("shared"))
                )
                if got == "yes":
                    break
                await asyncio.sleep(0.02)
            out[f"{name}_sees_state"] = got
        stats = await asyncio.gather(*[h.stats.remote() for h in rt.replicas])
        out["replicas"] = {
            s["replica_id"].split("/")[0]: {
                "node": s["node_id"],
                "paths": s["paths"],
                "attached": [a.split("/")[0] for a in s["attached"]],
            }
            for s in stats
        }
    return out


if __name__ == "__main__":
    import ray
    from ray.cluster_utils import Cluster

    here = str(Path(__file__).parent)
    sys.path.insert(0, here)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"node_a": 10}, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=2, resources={"node_b": 10})
    try:
        ray.init(
            address=cluster.address,
            runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
        )
        result = asyncio.run(scenario(cluster.address))
        print("RESULT " + json.dumps(result))
    finally:
        ray.shutdown()
        cluster.shutdown()
