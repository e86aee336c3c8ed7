"""Two Ray nodes, the second behind a network of its own: HTTP entering on the second node.

Run by test_multinode_http.py in a process of its own. Prints ``RESULT <json>`` (what each
request got, and where Serve placed its proxies and replicas), or ``SKIP <reason>`` when this
machine cannot make a network namespace (it needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN).

Why a namespace: on one machine, two nodes share one network, so both nodes' Serve proxies
would bind the same host and port and the second would fail. Here node B runs in a Linux
network namespace joined to the host by a veth pair (``10.231.x.1`` host side, ``10.231.x.2``
node B), so each node has its own address and its own port space, as two machines do:

    node A (host network):  Ray head (GCS), its HAProxy, the Gateway replica
    node B (namespace):     a worker node started with ``ray start --address`` (the recipe of
                            deploy/ray-start.md), its HAProxy, the agents Listener and Words

The ingress is the one ``serve run serve_app:app`` picks by default, Serve's HAProxy
(``RAY_SERVE_ENABLE_HA_PROXY=1``, set here whatever the caller's environment says): one HAProxy
per node forwards each request to a gateway replica's own HTTP server. A request sent to
``10.231.x.2:<port>`` can only be taken by node B's HAProxy; it goes on to the gateway on node A,
which sends to the agent on node B: two node crossings per request.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BOUND_S = 180.0  # only there so that a failure ends the run instead of hanging it


@dataclass(frozen=True)
class Namespace:
    name: str
    host_ip: str  # the host's end of the veth pair
    ip: str  # the namespace's end: node B's address


def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    """A network namespace with a veth pair to the host and a default route through it (so
    node B reaches the head at the host's address); removed, with every process left in it,
    on exit."""
    pid = os.getpid()
    ns = Namespace(f"rg{pid}", f"10.231.{pid % 250}.1", f"10.231.{pid % 250}.2")
    host_end, ns_end = f"rgh{pid}", f"rgn{pid}"
    _ip("netns", "add", ns.name)
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
        _ip("link", "set", ns_end, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", host_end)
        _ip("link", "set", host_end, "up")
        _ip("addr", "add", f"{ns.ip}/30", "dev", ns_end, ns=ns.name)
        _ip("link", "set", ns_end, "up", ns=ns.name)
        _ip("link", "set", "lo", "up", ns=ns.name)
        _ip("route", "add", "default", "via", ns.host_ip, ns=ns.name)
        yield ns
    finally:
        left = subprocess.run(
            ["ip", "netns", "pids", ns.name], capture_output=True, text=True
        ).stdout.split()
        for p in left:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(p), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)


def _until(ready, what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {BOUND_S:g}s")
        time.sleep(0.5)


def scenario(ns: Namespace, port: int) -> dict:
    """Deploy the application (Gateway on node A, agents on node B) and send it requests."""
    from ray import serve

    from runtime.config import AgentConfig, GatewayConfig, RaygentConfig, ResourcesConfig
    from runtime.gateway import build_app

    def on_b(path: str) -> AgentConfig:
        return AgentConfig(
            import_path=path, resources=ResourcesConfig(num_cpus=0.1, custom={"node_b": 1})
        )

    cfg = RaygentConfig(
        models={},
        agents=[on_b("ray_test_agents:Listener"), on_b("ray_test_agents:Words")],
        gateway=GatewayConfig(
            ingress="haproxy",
            replicas=1,
            resources=ResourcesConfig(num_cpus=0.1, custom={"node_a": 1}),
        ),
    )
    # 0.0.0.0: each node's ingress listens on its own node's addresses (node B's only in its
    # namespace); one host for every node is all Serve's http_options can say
    serve.start(http_options={"host": "0.0.0.0", "port": port})
    try:  # Serve stopped gracefully, whatever happens: its HAProxy processes go with it
        return _requests(ns, port, build_app(cfg))
    finally:
        serve.shutdown()


def _requests(ns: Namespace, port: int, app: object) -> dict:
    """What each request got through node B's ingress and node A's, and where Serve placed
    its ingresses and replicas."""
    import httpx
    import ray
    from ray import serve
    from ray._private.state import actors  # the GCS's actor table (the state API needs a dashboard)

    serve.run(app, name="multinode", route_prefix="/", blocking=False)
    b_url, a_url = f"http://{ns.ip}:{port}", f"http://{ns.host_ip}:{port}"

    def ready(url: str) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        return False

    _until(lambda: ready(b_url), "node B's ingress answering /readyz")
    out: dict = {}
    r = httpx.post(
        f"{b_url}/v1/agents/listener/invoke",
        json={"message": {}, "type": "Where"},
        timeout=30,
    )
    out["invoke"] = [r.status_code, r.json()]
    chunks = []
    with httpx.stream(
        "POST",
        f"{b_url}/v1/chat/completions",
        json={
            "model": "agent:words",
            "messages": [{"role": "user", "content": "in on node B"}],
            "stream": True,
        },
        timeout=30,
    ) as stream:
        out["chat_status"] = stream.status_code
        for line in stream.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[len("data: ") :])["choices"]:
                    chunks.append(choice["delta"].get("content") or "")
    out["chat"] = "".join(chunks)
    out["via_a"] = httpx.get(f"{a_url}/v1/models", timeout=10).status_code
    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    out["nodes"] = nodes
    out["placed"] = sorted(
        [a["ActorClassName"], nodes.get(a["Address"]["NodeID"], a["Address"]["NodeID"])]
        for a in actors().values()
        if a["State"] == "ALIVE"
        and ("Proxy" in a["ActorClassName"] or "multinode" in a["ActorClassName"])
    )
    return out


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    here = str(Path(__file__).parent)
    root = str(Path(__file__).parents[3])
    sys.path[:0] = [here, root]
    from bench.harness.servers import free_port

    path = os.pathsep.join(p for p in (here, root, os.environ.get("PYTHONPATH")) if p)
    os.environ["PYTHONPATH"] = path
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"  # before any Ray process starts: they inherit it
    with contextlib.ExitStack() as stack:  # undone in reverse: Ray, node B, the head, the net
        try:
            ns = stack.enter_context(namespace())
        except (OSError, subprocess.CalledProcessError) as exc:
            err = getattr(exc, "stderr", "") or exc
            print(f"SKIP no network namespace here: {str(err).strip()}")
            return
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 2,
                "resources": {"node_a": 10},
                "include_dashboard": False,
                "node_ip_address": ns.host_ip,
            },
        )
        stack.callback(cluster.shutdown)
        ray_cli = str(Path(sys.executable).with_name("ray"))
        node_b = subprocess.Popen(
            [
                *("ip", "netns", "exec", ns.name, ray_cli, "start", "--block"),
                *("--address", cluster.address, "--node-ip-address", ns.ip),
                *("--num-cpus", "2", "--resources", json.dumps({"node_b": 10})),
                "--disable-usage-stats",
            ],
            env={**os.environ, "PYTHONPATH": path},
            start_new_session=True,
        )
        stack.callback(_stop, node_b)
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": path}})
        stack.callback(ray.shutdown)
        _until(lambda: sum(n["Alive"] for n in ray.nodes()) == 2, "node B joining")
        result = scenario(ns, free_port())
        result["host_ip"], result["ns_ip"] = ns.host_ip, ns.ip
        print("RESULT " + json.dumps(result))


def _stop(node: subprocess.Popen) -> None:
    """Stop a ``ray start --block`` node: SIGTERM to its group, which stops its processes."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        node.wait(timeout=30)


if __name__ == "__main__":
    main()
