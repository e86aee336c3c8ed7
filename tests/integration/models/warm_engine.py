"""A front end whose vLLM engine is forked from the fork server (runtime.serve.engine_procs):
``python -m tests.integration.models.warm_engine`` prints one JSON line about the engine's
processes once it has answered, then waits to be killed (test_engine_procs)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _title(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def _pgroup(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


async def _main() -> None:
    from runtime.serve import engine_procs

    predicted = engine_procs._import_env()
    started = engine_procs.start_server()
    from agents.model import SamplingParams
    from runtime.config import LimitsConfig, ModelConfig
    from runtime.models.engine import ModelEngine

    engine = await ModelEngine.start("default", ModelConfig(), LimitsConfig())
    reply = await engine.generate([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=4))
    (core,) = engine.pids
    group = [p for p in _pgroup(core) if p != core]
    report = {
        "front": os.getpid(),
        "server_started": started,
        "server": engine_procs.forkserver._forkserver._forkserver_pid,
        "core": core,
        "core_parent": _parent(core),
        "group": group,
        "group_affinity": [sorted(os.sched_getaffinity(p)) for p in group],
        "group_titles": [_title(p) for p in group],
        "predicted_env": predicted,
        "vllm_env": {k: os.environ.get(k) for k in predicted},
        "finish_reason": reply.finish_reason,
    }
    print(json.dumps(report), flush=True)
    await asyncio.sleep(600)


if __name__ == "__main__":
    asyncio.run(_main())
    sys.exit(0)
