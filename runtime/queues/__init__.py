"""Task queues behind ``submit``: one interface (:mod:`.base`), an in-process backend
(:mod:`.memory`) and a Redis Streams one (:mod:`.redis_streams`, imported only when used).

Semantics, identical for every backend so a worker agent behaves the same on both:

* ``put`` returns a task id at once; the task is ``PENDING``.
* A dispatcher ``claim``-s the next task of a queue (``RUNNING``, ``attempts += 1``), runs the
  worker's handler, then ``ack``-s it with the result (``DONE``) or ``fail``-s it: the task goes
  back to ``PENDING`` until ``max_attempts`` runs have failed, then it is ``DEAD`` (kept, with the
  last error, as the dead-letter record).
* ``info`` and ``wait`` read a task's state by id.

The in-process queue lives and dies with its process; durability across process death is what
the Redis Streams backend adds (at-least-once with redelivery after a visibility timeout).
"""

from __future__ import annotations

from typing import Any

from runtime.queues.base import QueueFull, TaskQueue, TaskRecord
from runtime.queues.memory import InProcessTaskQueue

__all__ = ["InProcessTaskQueue", "QueueFull", "TaskQueue", "TaskRecord", "make_task_queue"]


def make_task_queue(config: Any) -> TaskQueue:
    """The task queue a ``RaygentConfig`` asks for: Redis Streams when ``queues_url`` (or
    ``redis_url`` / ``REDIS_URL``) is set, otherwise in-process."""
    url = config.queues_url
    if url:
        from runtime.queues.redis_streams import RedisStreamsTaskQueue

        return RedisStreamsTaskQueue(url, config.queues)
    return InProcessTaskQueue(
        max_pending=config.queues.max_pending, max_attempts=config.queues.max_attempts
    )
