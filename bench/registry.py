"""``python -m bench.registry``: what one Registry actor costs as the application grows.

The registry (``runtime.cluster.registry``) is one actor that every replica long-polls twice
(membership and state). Two costs grow with the number of replicas R, and this measures both
on the machine it runs on, for ``docs/SCALING.md``:

* **state fan-out** -- R state feeds wait on a real ``Registry`` actor; one ``put_state``
  answers all of them. The time until every feed has its answer, divided by R, is the cost
  of one feed answer (the registry's reply and the client's receipt, on this machine);
* **membership size** -- the size of a membership answer, serialized as Ray does: the whole
  list of M members (what a new client, or one of an earlier registry incarnation, gets) and
  one change (what every replica gets when one replica starts or stops).

Each figure is the median of ``--trials``. The feeds are held by this one process, so the
per-feed figure includes a client's receipt; spread over R replicas' processes it would be
the registry's side alone, about half of it on this 2-core machine's profile.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import ray
from ray import cloudpickle

from runtime.cluster.registry import Member, Registry, StateUpdate


async def fan_out(registry, feeds: int, trials: int) -> float:
    """Seconds from one ``put_state`` until ``feeds`` waiting state feeds have their answer."""
    times = []
    for trial in range(trials):
        epoch, seq, _ = await registry.state_since.remote(0, 0.0, "")
        polls = [registry.state_since.remote(seq, 120.0, epoch) for _ in range(feeds)]
        await asyncio.sleep(1.0 + feeds / 500)  # every poll has reached the actor and waits
        start = time.perf_counter()
        await registry.put_state.remote([StateUpdate(f"k{trial}", (seq + 1, "w"), b"x" * 64)])
        await asyncio.gather(*polls)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def membership_bytes(members: int) -> int:
    """The serialized size of a membership answer of ``members`` (slot, member) changes (a
    56-hex node id, no ring): ``members`` = all of them for a snapshot, 1 for one change."""
    ms = [
        Member(f"agent{i % 50}/{i}/abcdef12", f"agent{i % 50}", i, "f" * 56, None, None)
        for i in range(members)
    ]
    return len(cloudpickle.dumps([(m.slot, m) for m in ms]))  # what Ray serializes a dataclass with


async def main(args: argparse.Namespace) -> None:
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        registry = ray.remote(Registry).options(num_cpus=0, max_concurrency=100_000).remote()
        print("STATE FAN-OUT  one write, every waiting feed answered")
        for feeds in args.feeds:
            t = await fan_out(registry, feeds, args.trials)
            print(f"  {feeds:6d} feeds  {t * 1e3:8.1f} ms  {t / feeds * 1e6:7.1f} us per feed")
        print("MEMBERSHIP  one answer, serialized")
        print(f"  one change          {membership_bytes(1) / 1e3:9.2f} kB  (to every replica)")
        for members in args.members:
            kb = membership_bytes(members) / 1e3
            print(f"  snapshot of {members:6d}  {kb:9.1f} kB  (to a new client)")
    finally:
        ray.shutdown()


def cli(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.registry", description=__doc__)
    p.add_argument("--feeds", type=int, nargs="+", default=[100, 400, 1000, 2000])
    p.add_argument("--members", type=int, nargs="+", default=[100, 1000, 10000])
    p.add_argument("--trials", type=int, default=3)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(cli()))
