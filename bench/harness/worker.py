"""``python -m bench.harness.worker``: one client process of a ``--workers N`` run.

Spoken over stdin/stdout, one line per message (the parent is :mod:`bench.harness.driver`)::

    parent -> worker   {"config": RunConfig JSON, "index": i, "tmp": dir}     once
    worker -> parent   READY
    parent -> worker   {"step": k, "start_at": perf_counter, "shape": {...}}  per step
    worker -> parent   P <done> <errors> <inflight>                           every 0.2 s
    worker -> parent   DONE <records.json | -> <started> <ended>              step over
    parent -> worker   BYE  (or end of stdin)                                 exit
    worker -> parent   ERROR <message>                                        a fatal error

Each worker takes its share of every step (:func:`~bench.harness.runner.split_shape`) and
draws its workload with seed ``seed + 1000 * index`` so workers never send identical prompts
by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from bench.harness.client import ClientConfig, make_client
from bench.harness.errors import BenchError
from bench.harness.loop import run_loop
from bench.harness.runner import Counters, RunOptions, run_step, split_shape
from bench.harness.workload import WorkloadConfig, load_tokenizer, make_workload

_PERIOD_S = 0.2


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _report(counters: Counters) -> None:
    while True:
        _say(f"P {counters.done} {counters.errors} {counters.inflight}")
        await asyncio.sleep(_PERIOD_S)


async def _serve(init: dict[str, Any], lines: asyncio.StreamReader) -> None:
    from bench.harness.driver import shape_from_dict

    cfg, index = init["config"], init["index"]
    workers = cfg["workers"]
    wl = dict(cfg["workload"])
    wl["dataset"] = Path(wl["dataset"]) if wl["dataset"] else None
    wl["seed"] = wl["seed"] + 1000 * index
    wcfg = WorkloadConfig(**wl)
    opts_d = dict(cfg["options"])
    opts_d["seed"] = opts_d["seed"] + 1000 * index
    opts = RunOptions(**opts_d)
    tokenizer = load_tokenizer(wcfg.tokenizer) if wcfg.tokenizer else None
    workload = make_workload(wcfg, tokenizer)
    steps = [shape_from_dict(s) for s in cfg["steps"]]
    biggest = max((s.concurrency or s.max_concurrency or 0) for s in steps)
    conns = 0 if any(s.rate and not s.max_concurrency for s in steps) else -(-biggest // workers)
    client = make_client(
        ClientConfig(
            cfg["url"],
            api_key=cfg.get("api_key"),
            headers=cfg["headers"],
            timeout_s=cfg["timeout_s"],
            connect_timeout_s=cfg["connect_timeout_s"],
            max_connections=conns,
            tokenizer=tokenizer,
        ),
        cfg["client"],
    )
    tmp = Path(init["tmp"])
    _say("READY")
    try:
        while True:
            raw = await lines.readline()
            if not raw or raw.strip() == b"BYE":
                return
            msg = json.loads(raw)
            share = split_shape(shape_from_dict(msg["shape"]), workers, index)
            if share is None:
                _say(f"DONE - {msg['start_at']} {msg['start_at']}")
                continue
            counters = Counters()
            reporter = asyncio.create_task(_report(counters))
            try:
                res = await run_step(
                    client,
                    workload,
                    share,
                    opts,
                    counters,
                    step=msg["step"],
                    worker=index,
                    warmup=msg["step"] < 0,
                    start_at=msg["start_at"],
                )
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            _say(f"P {counters.done} {counters.errors} {counters.inflight}")
            path = tmp / f"w{index}-s{msg['step']}.json"
            path.write_text(json.dumps([r.to_dict(0.0, opts.keep_text) for r in res.records]))
            _say(f"DONE {path} {res.started} {res.ended}")
    finally:
        await client.close()


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    init = json.loads(await reader.readline())
    await _serve(init, reader)


def main() -> None:
    try:
        run_loop(_main())
    except (BenchError, ValueError, OSError) as exc:
        _say(f"ERROR {type(exc).__name__}: {exc}".replace("\n", " "))
        sys.exit(1)


if __name__ == "__main__":
    main()
