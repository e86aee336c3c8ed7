"""A throwaway Redis Cluster for tests: masters and replicas of Debian's ``redis-server`` on free
loopback ports, joined by ``redis-cli --cluster create``, killed on :meth:`LocalCluster.close`.

A short ``cluster-node-timeout`` (1 s) makes a killed master's replica take over in about 2 s,
so failover tests stay short. The nodes keep no data on disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

BUS_OFFSET = 10_000  # a cluster node also listens on port + 10000 (the cluster bus)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    for _ in range(200):
        base = random.randrange(20_000, 30_000 - n)
        ports = list(range(base, base + n))
        if all(_free(p) and _free(p + BUS_OFFSET) for p in ports):
            return ports
    raise RuntimeError(f"no {n} free consecutive ports (with their bus ports) in 20000-30000")


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the thread that started it (the test
    process's main thread) ends, however it ends."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each. Use as a context manager."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server/redis-cli not installed (make test installs them)")
        self.masters, self.replicas, self.node_timeout_ms = masters, replicas, node_timeout_ms
        self.ports = _free_ports(masters * (1 + replicas))
        self.dir = Path(tempfile.mkdtemp(prefix="raygent-redis-cluster-"))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The URL raygent takes: any one node, the client finds the rest."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        for port in self.ports:
            self.procs[port] = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    str(self.node_timeout_ms),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                    "--logfile",
                    f"redis-{port}.log",
                ],  # fmt: skip
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        for port in self.ports:
            self._wait(lambda p=port: self.node(p).ping(), f"node {port} to answer")
        subprocess.run(
            ["redis-cli", "--cluster", "create"]
            + [f"127.0.0.1:{p}" for p in self.ports]
            + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )
        self.wait_healthy()

    def node(self, port: int) -> redis.Redis:
        """A plain (not cluster-aware) client of one node."""
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def primaries(self) -> list[int]:
        """Ports of the masters, as the live nodes see them now."""
        return sorted(
            p for p in self.alive() if self.node(p).info("replication")["role"] == "master"
        )

    def alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def master_of(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot now."""
        some = self.node(self.alive()[0])
        slot = some.cluster("keyslot", key)
        for start, end, master, *_ in some.cluster("slots"):
            if start <= slot <= end:
                return int(master[1])
        raise LookupError(f"slot {slot} of {key!r} is not served")

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Every live node says the cluster is ok, and every live replica is in sync."""

        def healthy() -> bool:
            for port in self.alive():
                node = self.node(port)
                if node.cluster("info")["cluster_state"] != "ok":
                    return False
                repl = node.info("replication")
                if repl["role"] == "slave" and repl.get("master_link_status") != "up":
                    return False
            return len(self.primaries()) == self.masters

        self._wait(healthy, "the cluster to be ok with its replicas in sync", timeout_s)

    def replicate(self, port: int) -> None:
        """Wait until master ``port``'s writes so far reached its replicas (``WAIT``)."""
        got = self.node(port).execute_command("WAIT", self.replicas, 5000)
        assert got >= self.replicas, f"master {port}: {got} of {self.replicas} replicas acked"

    def move_slot(self, key: str, to_port: int, pause_s: float = 0.0) -> None:
        """Migrate ``key``'s slot to master ``to_port``, all keys ``pause_s`` apart."""
        move = SlotMove(self, key, to_port)
        move.migrate(pause_s=pause_s)
        move.finish()

    def kill(self, port: int) -> None:
        """SIGKILL node ``port`` (it stays dead)."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _wait(self, ready, what: str, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except (redis.RedisError, OSError) as exc:
                last = exc
            time.sleep(0.05)
        logs = "\n".join(
            f"{p}: {(self.dir / f'redis-{p}.log').read_text()[-400:]}"
            for p in self.ports
            if (self.dir / f"redis-{p}.log").exists()
        )
        raise RuntimeError(f"timed out after {timeout_s:g}s waiting for {what} ({last})\n{logs}")


class SlotMove:
    """Migrate one slot to another master the way ``redis-cli --cluster reshard`` does, in
    steps a test can interleave with traffic: the target imports and the source migrates
    (``CLUSTER SETSLOT``), :meth:`migrate` moves keys (``MIGRATE``), :meth:`finish` tells every
    master the new owner. Between the steps clients meet ``ASK`` and ``TRYAGAIN``."""

    def __init__(self, cluster: LocalCluster, key: str, to_port: int) -> None:
        self.cluster, self.to_port = cluster, to_port
        self.src = cluster.node(cluster.master_of(key))
        self.dst = cluster.node(to_port)
        self.slot = self.src.cluster("keyslot", key)
        self.dst_id = self.dst.cluster("myid")
        self.dst.execute_command(
            "CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.src.cluster("myid")
        )
        self.src.execute_command("CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.dst_id)

    def migrate(self, keys: list[str] | None = None, pause_s: float = 0.0) -> None:
        """Move ``keys`` (default: every key left in the slot), one ``MIGRATE`` each."""
        while keys or keys is None:
            batch = (
                [keys.pop(0)]
                if keys
                else self.src.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 1)
            )
            if not batch:
                return
            self.src.execute_command(
                "MIGRATE", "127.0.0.1", self.to_port, "", 0, 5000, "KEYS", *batch
            )
            time.sleep(pause_s)

    def finish(self) -> None:
        for port in [self.to_port] + [p for p in self.cluster.primaries() if p != self.to_port]:
            self.cluster.node(port).execute_command(
                "CLUSTER", "SETSLOT", self.slot, "NODE", self.dst_id
            )


__all__ = ["LocalCluster", "SlotMove"]

if __name__ == "__main__":  # a cluster to try things on by hand: python -m tests.rediscluster
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the nodes on kill, too
    with LocalCluster() as c:
        print(c.url, "pid", os.getpid(), "- Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
