"""``python -m bench.tools_peer``: tool calls and structured output, raygent vs plain vLLM.

The same requests against each server, started alone on the machine in turn: plain vLLM's
OpenAI server on ``builtin:tiny`` with the engine arguments raygent gives it
(``raygent_engine_flags``) plus what raygent configures for tools on that model (the ``hermes``
tool parser, xgrammar without free whitespace), then ``serve run serve_app:app``. Each kind of
request runs closed-loop at ``--concurrency`` for ``--requests`` requests, non-streaming,
``no-store`` (the response cache would answer repeats):

* ``json_schema`` -- ``response_format`` with a small object schema (enum, bounded integer,
  boolean): the answer must be JSON that validates;
* ``named_tool`` -- ``tool_choice`` forcing one of two tools: the call's arguments must
  validate against that tool's parameters;
* ``required`` -- ``tool_choice: "required"``: at least one call of a known tool.

Reported per server and kind: requests/s, latency p50/p95, and the share of answers of the
right shape (both servers constrain decoding the same way, so both should be 1.0 unless
``max_tokens`` cuts an answer off).

Example::

    python -m bench.tools_peer --concurrency 4 --requests 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from bench.harness.servers import ManagedServer, raygent_engine_flags, start_raygent, start_vllm

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "tools_peer.json"

PLAN = {
    "type": "object",
    "properties": {
        "pace": {"enum": ["relaxed", "balanced", "packed"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "outdoors": {"type": "boolean"},
    },
    "required": ["pace", "days", "outdoors"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Today's weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"enum": ["Oslo", "Paris", "Lima", "Kyoto"]},
                    "unit": {"enum": ["C", "F"]},
                },
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert",
            "description": "Convert money between currencies.",
            "parameters": {
                "type": "object",
                "properties": {
                    "amount": {"type": "integer", "minimum": 0, "maximum": 1000},
                    "target": {"enum": ["EUR", "USD", "NOK"]},
                },
                "required": ["amount", "target"],
            },
        },
    },
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def body(kind: str, model: str, i: int) -> dict[str, Any]:
    turns = [{"role": "user", "content": f"Request {i}: plan a trip and check the weather."}]
    out: dict[str, Any] = {"model": model, "messages": turns, "max_tokens": 96, "seed": i}
    if kind == "json_schema":
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "plan", "schema": PLAN, "strict": True},
        }
    elif kind == "named_tool":
        out["tools"] = TOOLS
        out["tool_choice"] = {"type": "function", "function": {"name": "weather"}}
    else:
        out["tools"] = TOOLS
        out["tool_choice"] = "required"
        out["parallel_tool_calls"] = False
    return out


def well_formed(kind: str, answer: dict[str, Any]) -> bool:
    message = answer["choices"][0]["message"]
    try:
        if kind == "json_schema":
            jsonschema.validate(json.loads(message["content"]), PLAN)
            return True
        calls = message.get("tool_calls") or []
        if not calls:
            return False
        for call in calls:
            fn = call["function"]
            jsonschema.validate(json.loads(fn["arguments"]), SCHEMAS[fn["name"]])
        return kind != "named_tool" or calls[0]["function"]["name"] == "weather"
    except (ValueError, KeyError, jsonschema.ValidationError):
        return False


async def run_kind(url: str, model: str, kind: str, n: int, c: int) -> dict[str, Any]:
    latencies: list[float] = []
    good = errors = 0
    queue = iter(range(n))
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def worker() -> None:
            nonlocal good, errors
            for i in queue:
                t0 = time.perf_counter()
                r = await client.post(
                    "/v1/chat/completions",
                    json=body(kind, model, i),
                    headers={"Cache-Control": "no-store"},
                )
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                elif well_formed(kind, r.json()):
                    good += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "req_s": n / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "well_formed": good / n,
        "errors": errors,
    }


def measure(server: ManagedServer, model: str, a: argparse.Namespace) -> dict[str, Any]:
    with server:
        ready_s = server.wait_ready(a.ready_timeout)
        print(f"{server.name}: ready in {ready_s:.1f} s", flush=True)
        out: dict[str, Any] = {"ready_s": ready_s}
        for kind in a.kinds:
            asyncio.run(run_kind(server.base_url, model, kind, 2 * a.concurrency, a.concurrency))
            out[kind] = asyncio.run(
                run_kind(server.base_url, model, kind, a.requests, a.concurrency)
            )
            print(f"{server.name}: {kind}: {out[kind]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--requests", type=int, default=60, help="per kind and server")
    p.add_argument("--kinds", default="json_schema,named_tool,required")
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    a.kinds = a.kinds.split(",")
    from runtime.models import ensure_tiny_model

    tiny = str(ensure_tiny_model())
    extra = [
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]
    peer = measure(start_vllm(tiny, extra=extra, flags=raygent_engine_flags()), tiny, a)
    ours = measure(start_raygent(), "default", a)
    print(f"\nclosed loop, concurrency {a.concurrency}, {a.requests} requests per kind:")
    print(f"{'kind':<12}{'metric':<14}{'plain vLLM':>12}{'raygent':>12}{'ratio':>8}")
    for kind in a.kinds:
        for metric in ("req_s", "p50_ms", "p95_ms", "well_formed"):
            v, r = peer[kind][metric], ours[kind][metric]
            ratio = f"{r / v:.2f}" if v else "-"
            print(f"{kind:<12}{metric:<14}{v:>12.2f}{r:>12.2f}{ratio:>8}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
    a.out.write_text(json.dumps({"vllm": peer, "raygent": ours, "args": args}, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
