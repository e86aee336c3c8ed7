"""The durable task queue: Redis Streams with one consumer group per queue.

At-least-once: a task is acked only after its handler returned; a worker that dies with a task
claimed stops renewing its claim, and another worker reclaims the task after
``visibility_timeout_s``; ``max_attempts`` runs that all failed (or never acked) make it ``DEAD``
with a dead-letter entry. The semantics are those of :mod:`runtime.queues`; this module is the
only one of them that imports ``redis`` (its client comes from :mod:`runtime.redis_client`), and
every Redis error leaves it as :class:`~agents.errors.QueueUnavailable`.

Key layout (``P`` is the key prefix, default ``raygent``; ``t`` is the queue's tag, 8 hex
digits of a hash of its name; :func:`stream_key`, :func:`dlq_key`, :func:`task_key`)::

    P:q:{t}:<queue>    stream   one entry per runnable task {task: <id>}; group "workers"
    P:dlq:{t}:<queue>  stream   one entry per dead task {task, queue, attempts, error}; entries
                                older than finished_ttl_s are trimmed as new ones arrive
    P:task:{t}:<id>    hash     the task: queue state attempts payload traceparent entry lease
                                consumer error result created_ms claimed_ms finished_ms;
                                expires finished_ttl_s after it became DONE or DEAD
    P:done             channel  a task id, published when that task becomes DONE or DEAD

A task id is 32 hex digits: the queue's tag, then 24 random ones. ``{t}`` is a Redis Cluster
hash tag, so a queue's streams and its tasks live in one slot -- every script touches only keys
of one queue -- and :meth:`~RedisStreamsTaskQueue.info` finds a task's hash from its id alone.
Queues spread over the cluster's masters by tag; one queue is one master's load.

The stream orders and delivers; the hash is the truth. Each transition is one Lua script, so it
is atomic on the server and safe to retry (redis-py retries once after a dropped connection):

    state    stream entry (``entry`` field)          set by
    pending  in P:q, not yet delivered               put; fail with attempts left; release
    running  in the group's pending list (PEL),       claim: a new entry, or one idle for more
             ``lease`` = the claim's random token     than visibility_timeout_s (worker lost)
    done     deleted; ``result`` kept                 ack (first one wins; later ones no-op)
    dead     deleted; a P:dlq entry; last ``error``   fail at max_attempts; claim of a task whose
                                                      max_attempts runs all ended without an ack

Why it is built this way:

* **Claiming is one script** — reclaim an idle entry (``XPENDING IDLE`` then ``XCLAIM``), else
  read a new one (``XREADGROUP >``), then count the attempt (``HINCRBY``) or dead-letter it. An
  entry is never delivered without its attempt counted. ``XPENDING ... IDLE`` finds an idle entry
  anywhere in the PEL in one pass, where ``XAUTOCLAIM`` scans at most 10 x COUNT entries per call
  from a cursor and would sit on long-running, healthy claims at the head of the PEL.
* **Waiting for work does not deliver it.** With nothing to claim, ``claim`` blocks in a plain
  ``XREAD BLOCK`` on ids after the newest entry, then runs the claim script again. A claim that
  is cancelled while it waits (runtime shutdown) therefore strands nothing in the PEL. The block
  is short (the least of 1 s, a quarter of the visibility timeout and half the socket timeout)
  so that lost claims are picked up.
  Only a cancel that lands while the claim script's reply is in flight loses the claim; the
  task is then reclaimed after the visibility timeout and that costs it one attempt.
* **Leases fence stale workers.** Each claim stores a random token in the hash; renewing,
  ``fail`` and ``release`` act only with the current token, so a worker whose claim expired
  (paused, partitioned) cannot requeue or dead-letter a task another worker now runs. ``ack`` is
  accepted from whichever run finishes first; ``DONE`` and ``DEAD`` never change again. That is
  "exactly once in effect": the result is written once.
* **Claims are renewed by the queue itself**, every ``visibility_timeout_s / 3``, for every task
  this object has claimed and not yet settled (``XCLAIM ... JUSTID`` to the same consumer resets
  the idle time). A runtime calls nothing extra, however long a handler or a mailbox wait takes;
  a process that dies stops renewing. :meth:`RedisStreamsTaskQueue.renew` does one round by hand.
  The claimer decides what counts as idle, so every process serving a queue must use the same
  ``visibility_timeout_s`` (it comes from the one config tree).
* **Consumers are per queue object** (``<consumer>@<host>:<pid>:<random>``), so two processes
  that pass the same consumer name stay two consumers; ``close`` deletes those holding nothing.
* **wait()** listens on one pub/sub connection per queue object (only while somebody waits) and
  re-reads the hash on every notification, plus a slow backstop poll (0.25 s doubling to 5 s) in
  case a notification was missed while reconnecting. A waiter costs no connection of its own.
* **max_pending** is the stream's length: waiting plus claimed-but-unsettled tasks.
* **Cancels are honoured even when redis-py loses them** (``asyncio.wait_for`` before Python
  3.12, see :func:`_honouring_cancel`); a claim whose cancel was lost after the script had
  claimed a task gives the task straight back.

Redis Cluster (``redis+cluster://``, :mod:`runtime.redis_client`): the same scripts, each on
the master of its queue's slot; ``P:done`` is classic pub/sub, which a cluster delivers to
subscribers on every node. A master's failover fails the calls it catches with a retryable
:class:`~agents.errors.QueueUnavailable` (``claim`` rides it out with backoff) until its replica
is promoted. Redis replicates asynchronously: a write acknowledged in the last moment before its
master died can be lost with it (``min-replicas-to-write`` on the servers bounds that window).

Needs Redis 6.2 or later (``XPENDING ... IDLE``). The v1 layout had no tags; tasks queued under
it are not read by this one.

Example:
    >>> from runtime.config import QueuesConfig
    >>> q = RedisStreamsTaskQueue("redis://127.0.0.1:6379/0", QueuesConfig(max_attempts=5))
    >>> q.max_attempts
    5
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import socket
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterError,
    ConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from agents import codec
from agents.errors import QueueUnavailable, RuntimeClosed, TaskNotFound
from agents.runtime_api import TaskInfo, TaskState
from agents.tracing import TraceContext
from runtime.config import QueuesConfig
from runtime.core.loops import backoff
from runtime.queues.base import QueueFull, TaskQueue, TaskRecord
from runtime.redis_client import connect, ready

__all__ = ["RedisStreamsTaskQueue", "dlq_key", "stream_key", "task_key"]

log = logging.getLogger(__name__)

T = TypeVar("T")

GROUP = "workers"
_TASK_ID = re.compile(r"^[0-9a-f]{32}$")
_TRANSIENT = (
    ConnectionError,
    TimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    OutOfMemoryError,
    TryAgainError,
    ClusterError,  # a master failed and its replica is not promoted yet; redirects exhausted
    SlotNotCoveredError,
)
_ERRORS = (RedisError, RedisClusterException)  # the second is not a RedisError
_WAIT_POLL_FIRST_S = 0.25
_WAIT_POLL_MAX_S = 5.0
_CLAIM_BACKOFF_MAX_S = 2.0
_RENEW_BATCH = 256

# -- keys --------------------------------------------------------------------------------------


def queue_tag(queue: str) -> str:
    """8 hex digits of a hash of ``queue``: the hash tag its keys and its task ids carry."""
    return hashlib.blake2b(queue.encode(), digest_size=4).hexdigest()


def stream_key(prefix: str, queue: str) -> str:
    return f"{prefix}:q:{{{queue_tag(queue)}}}:{queue}"


def dlq_key(prefix: str, queue: str) -> str:
    return f"{prefix}:dlq:{{{queue_tag(queue)}}}:{queue}"


def task_key(prefix: str, task_id: str) -> str:
    """The task's hash; its id begins with its queue's tag (:func:`_new_task_id`)."""
    return f"{prefix}:task:{{{task_id[:8]}}}:{task_id}"


def _new_task_id(queue: str) -> str:
    return queue_tag(queue) + secrets.token_hex(12)


# -- Lua ---------------------------------------------------------------------------------------
# Every script reads the server clock, so timestamps and DLQ trimming do not depend on clients.

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Mark a task DEAD: dead-letter entry (trimming those older than the TTL), state, expiry, notice.
_KILL = """
local function kill(key, tid, queue, attempts, err, dlq, ttl, channel)
  redis.call('XADD', dlq, 'MINID', '~', tostring(math.max(now - ttl, 0)), '*',
             'task', tid, 'queue', queue, 'attempts', attempts, 'error', err)
  redis.call('HSET', key, 'state', 'dead', 'error', err, 'finished_ms', now)
  redis.call('HDEL', key, 'lease')
  redis.call('PEXPIRE', key, ttl)
  redis.call('PUBLISH', channel, tid)
end
"""

# KEYS: stream, task.  ARGV: task id, queue, payload, traceparent, max_pending.
# Returns the stream entry id, or nil when the stream holds max_pending entries.
_PUT = (
    _NOW
    + """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[5]) then return false end
local entry = redis.call('XADD', KEYS[1], '*', 'task', ARGV[1])
redis.call('HSET', KEYS[2], 'queue', ARGV[2], 'state', 'pending', 'attempts', 0,
           'payload', ARGV[3], 'traceparent', ARGV[4], 'entry', entry, 'created_ms', now)
return entry
"""
)

# KEYS: stream, dlq.  ARGV: group, consumer, visibility ms, max attempts, lease token, ttl ms,
# task key prefix, done channel, queue.
# Returns {1, entry, task id, payload, traceparent, attempts} for a claimed task,
# {0, newest entry id} when there is nothing to claim, {2} when called again is worthwhile.
_CLAIM = (
    _NOW
    + _KILL
    + """
local stream, dlq = KEYS[1], KEYS[2]
local group, consumer, vt, maxa, token = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local ttl, prefix, channel, queue = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]

local function drop(id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
end

local function next_entry()
  local idle = redis.pcall('XPENDING', stream, group, 'IDLE', vt, '-', '+', 1)
  if idle.err then  -- no stream or no group yet: create both, then ask again (or fail loudly)
    redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
    idle = redis.call('XPENDING', stream, group, 'IDLE', vt, '-', '+', 1)
  end
  if #idle > 0 then
    local id, owner, deliveries = idle[1][1], idle[1][2], idle[1][4] + 1
    local got = redis.call('XCLAIM', stream, group, consumer, vt, id)
    if #got == 0 then  -- the entry was deleted under the PEL; XCLAIM dropped it
      redis.call('XACK', stream, group, id)
      return 'skip'
    end
    return got[1], owner, deliveries
  end
  local new = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
                         'STREAMS', stream, '>')
  if not new then return nil end
  return new[1][2][1], nil, 1
end

for _ = 1, 32 do
  local entry, owner, deliveries = next_entry()
  if entry == nil then
    local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    return {0, newest[1] and newest[1][1] or '0-0'}
  end
  if entry ~= 'skip' then
    local id, fields = entry[1], entry[2]
    local tid = nil
    for i = 1, #fields, 2 do
      if fields[i] == 'task' then tid = fields[i + 1] end
    end
    local key = prefix .. '{' .. string.sub(tid or '', 1, 8) .. '}:' .. (tid or '')
    local h = redis.call('HMGET', key, 'state', 'entry', 'attempts', 'payload', 'traceparent')
    if tid and not h[1] then
      -- No task hash: deleted or evicted, or (its slot migrating between cluster masters) not
      -- moved here yet. The entry stays claimed and idle, to be looked at again after the
      -- visibility timeout; it is dropped once delivered more often than a task ever runs.
      if deliveries > maxa + 1 then drop(id) end
    elseif not tid or h[2] ~= id or h[1] == 'done' or h[1] == 'dead' then
      drop(id)  -- an orphan: finished, or re-queued under a newer entry
    else
      local attempts = tonumber(h[3])
      if owner then
        redis.call('HSET', key, 'error', 'WorkerLost: consumer ' .. owner ..
                   ' neither acked nor renewed its claim within the visibility timeout')
      end
      if attempts >= maxa then
        drop(id)
        local err = redis.call('HGET', key, 'error') or 'max_attempts reached'
        kill(key, tid, queue, attempts, err, dlq, ttl, channel)
      else
        attempts = redis.call('HINCRBY', key, 'attempts', 1)
        redis.call('HSET', key, 'state', 'running', 'lease', token, 'consumer', consumer,
                   'claimed_ms', now)
        return {1, id, tid, h[4], h[5], attempts}
      end
    end
  end
end
return {2}
"""
)

# KEYS: stream, task.  ARGV: group, entry, lease token, result, ttl ms, channel, task id.
# Returns 1 (DONE by this lease), 2 (DONE by a run whose claim had expired), 0 (ignored: the
# task is already DONE or DEAD, or unknown).
_ACK = (
    _NOW
    + """
local stream, key, group, entry = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
redis.call('XACK', stream, group, entry)
redis.call('XDEL', stream, entry)
local h = redis.call('HMGET', key, 'state', 'entry', 'lease')
if not h[1] or h[1] == 'done' or h[1] == 'dead' then return 0 end
if h[2] and h[2] ~= entry then  -- another run holds a newer entry: it has nothing left to do
  redis.call('XACK', stream, group, h[2])
  redis.call('XDEL', stream, h[2])
end
redis.call('HSET', key, 'state', 'done', 'result', ARGV[4], 'finished_ms', now)
redis.call('HDEL', key, 'lease', 'error')
redis.call('PEXPIRE', key, tonumber(ARGV[5]))
redis.call('PUBLISH', ARGV[6], ARGV[7])
if h[3] == ARGV[3] then return 1 end
return 2
"""
)

# KEYS: stream, task, dlq.  ARGV: group, entry, lease token, error, max attempts, ttl ms,
# channel, task id, queue.  Returns 1 (pending again), 2 (DEAD), 0 (ignored: not our lease).
_FAIL = (
    _NOW
    + _KILL
    + """
local stream, key, dlq, group, entry = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
local h = redis.call('HMGET', key, 'state', 'lease', 'attempts')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return 0 end
redis.call('XACK', stream, group, entry)
redis.call('XDEL', stream, entry)
if tonumber(h[3]) >= tonumber(ARGV[5]) then
  kill(key, ARGV[8], ARGV[9], h[3], ARGV[4], dlq, tonumber(ARGV[6]), ARGV[7])
  return 2
end
local fresh = redis.call('XADD', stream, '*', 'task', ARGV[8])
redis.call('HSET', key, 'state', 'pending', 'entry', fresh, 'error', ARGV[4])
redis.call('HDEL', key, 'lease', 'consumer')
return 1
"""
)

# KEYS: stream, task.  ARGV: group, entry, lease token, task id.
# Returns 1 (pending again, attempt not counted), 0 (ignored: not our lease).
_RELEASE = """
local stream, key, group, entry = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local h = redis.call('HMGET', key, 'state', 'lease')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return 0 end
redis.call('XACK', stream, group, entry)
redis.call('XDEL', stream, entry)
local fresh = redis.call('XADD', stream, '*', 'task', ARGV[4])
redis.call('HINCRBY', key, 'attempts', -1)
redis.call('HSET', key, 'state', 'pending', 'entry', fresh)
redis.call('HDEL', key, 'lease', 'consumer')
return 1
"""

# KEYS: stream, task 1..n.  ARGV: group, consumer, then entry and lease token per task.
# Resets the idle time of each entry still claimed under that lease; returns 1/0 per task.
_RENEW = """
local out = {}
for i = 2, #KEYS do
  local entry, token = ARGV[2 * i - 1], ARGV[2 * i]
  local h = redis.call('HMGET', KEYS[i], 'state', 'lease')
  local ok = 0
  if h[1] == 'running' and h[2] == token then
    local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry, 'JUSTID')
    if #got > 0 then ok = 1 end
  end
  out[i - 1] = ok
end
return out
"""

# KEYS: stream.  ARGV: group, consumer.  Deletes the consumer if it holds no entry.
_FORGET = """
local held = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if held.err or #held > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""

# KEYS: stream.  ARGV: group.  Entries not delivered to the group yet: the stream holds one
# entry per runnable task (acked ones are deleted) and the PEL the claimed ones.
_BACKLOG = """
local n = redis.call('XLEN', KEYS[1])
local pel = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if not pel.err then n = n - pel[1] end
return n
"""


@dataclass(frozen=True)
class _Lease:
    """``TaskRecord.ref`` of a claimed task: where it is and which claim this is."""

    entry: str
    token: str
    consumer: str


class RedisStreamsTaskQueue(TaskQueue):
    """Durable named task queues on Redis Streams (at-least-once, see the module docstring).

    Args:
        url: Redis URL (``redis://``, ``rediss://``, ``unix://``; ``redis+cluster://`` for a
            Redis Cluster, see :mod:`runtime.redis_client`).
        settings: visibility timeout, attempts, bound, retention and socket timeout.
        key_prefix: first part of every key and of the channel, so that several applications
            (or tests) can share one Redis.

    Example:
        >>> async def submit_and_wait(q: RedisStreamsTaskQueue) -> TaskInfo:
        ...     task_id = await q.put("archive", codec.encode("report"), TraceContext.new_root())
        ...     return await q.wait(task_id, timeout_s=10)
    """

    def __init__(
        self, url: str, settings: QueuesConfig | None = None, *, key_prefix: str = "raygent"
    ) -> None:
        if not key_prefix or any(c.isspace() or c in "{}" for c in key_prefix):
            raise ValueError(
                f"key_prefix must be non-empty, without spaces or braces: {key_prefix!r}"
            )
        settings = settings or QueuesConfig()
        self.max_pending = settings.max_pending
        self.max_attempts = settings.max_attempts
        self.visibility_timeout_s = settings.visibility_timeout_s
        self._vt_ms = max(1, round(settings.visibility_timeout_s * 1000))
        self._ttl_ms = max(1, round(settings.finished_ttl_s * 1000))
        timeout = settings.socket_timeout_s
        # Waiting for new work blocks in XREAD; it has to return well inside the socket timeout.
        self._block_ms = max(
            1, round(1000 * min(1.0, settings.visibility_timeout_s / 4, timeout / 2))
        )
        self._renew_s = settings.visibility_timeout_s / 3
        self._prefix = key_prefix
        self._channel = f"{key_prefix}:done"
        self._redis = connect(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One quick retry rides over a dropped connection (the scripts are safe to repeat);
            # more would turn "Redis is down" into a long wait.
            retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.2), retries=1),
            client_name=f"{key_prefix}:queue",  # names the connections in CLIENT LIST
        )
        self._put_script = self._redis.register_script(_PUT)
        self._claim_script = self._redis.register_script(_CLAIM)
        self._ack_script = self._redis.register_script(_ACK)
        self._fail_script = self._redis.register_script(_FAIL)
        self._release_script = self._redis.register_script(_RELEASE)
        self._renew_script = self._redis.register_script(_RENEW)
        self._forget_script = self._redis.register_script(_FORGET)
        self._backlog_script = self._redis.register_script(_BACKLOG)
        self._instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._consumers: set[tuple[str, str]] = set()
        self._held: dict[str, TaskRecord] = {}  # lease token -> record, renewed until settled
        self._renewer: asyncio.Task[None] | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # renewer and listeners, until done
        self._listening = asyncio.Event()
        self._closed = False

    # -- keys ----------------------------------------------------------------------------------

    def _stream(self, queue: str) -> str:
        return stream_key(self._prefix, queue)

    def _dlq(self, queue: str) -> str:
        return dlq_key(self._prefix, queue)

    def _task_key(self, task_id: str) -> str:
        return task_key(self._prefix, task_id)

    # -- TaskQueue -----------------------------------------------------------------------------

    async def put(self, queue: str, payload: bytes, trace: TraceContext) -> str:
        self._check_open()
        task_id = _new_task_id(queue)
        entry = await self._call(
            queue,
            self._put_script(
                keys=[self._stream(queue), self._task_key(task_id)],
                args=[task_id, queue, payload, trace.traceparent, self.max_pending],
            ),
        )
        if entry is None:
            raise QueueFull(queue)
        return task_id

    async def claim(self, queue: str, consumer: str = "") -> TaskRecord:
        """Wait for the next task of ``queue``: first one whose claim expired (its worker is
        gone), else a new one. Transient Redis errors are logged and retried with backoff until
        Redis answers again, so a worker loop survives an outage; cancel to stop waiting."""
        self._check_open()
        name = f"{consumer or 'worker'}@{self._instance}"
        self._consumers.add((queue, name))
        stream = self._stream(queue)
        delays = None  # jittered backoff while Redis fails; None once it answers
        while True:
            try:
                rec = await self._claim_once(queue, stream, name)
                if rec is not None:
                    return rec
            except QueueUnavailable as exc:
                if not exc.retryable:
                    raise
                delays = delays or backoff(0.05, _CLAIM_BACKOFF_MAX_S)
                delay = next(delays)
                log.warning("claim on %r: %s; retrying in %.2fs", queue, exc, delay)
                await asyncio.sleep(delay)
                continue
            if delays is not None:
                log.info("claim on %r: Redis answers again", queue)
                delays = None

    async def _claim_once(self, queue: str, stream: str, consumer: str) -> TaskRecord | None:
        token = secrets.token_hex(8)
        res, swallowed = await self._call_noting_cancel(
            queue,
            self._claim_script(
                keys=[stream, self._dlq(queue)],
                args=[
                    GROUP,
                    consumer,
                    self._vt_ms,
                    self.max_attempts,
                    token,
                    self._ttl_ms,
                    f"{self._prefix}:task:",  # the script adds {tag}:<id> (task_key)
                    self._channel,
                    queue,
                ],
            ),
        )
        if res[0] == 1:
            _, entry, task_id, payload, traceparent, attempts = res
            rec = TaskRecord(
                id=task_id.decode(),
                queue=queue,
                payload=payload,
                trace=_parse_trace(traceparent),
                attempts=int(attempts),
                ref=_Lease(entry.decode(), token, consumer),
            )
            if swallowed:  # nobody will take this record: give the task straight back
                self._spawn(self._release_quietly(rec), "release")
                raise asyncio.CancelledError
            self._hold(rec)
            return rec
        if swallowed:
            raise asyncio.CancelledError
        if res[0] == 0:
            # Nothing to claim: sleep until an entry newer than the newest one arrives, or the
            # block times out and we look for expired claims again. XREAD delivers nothing.
            await self._call(
                queue, self._redis.xread({stream: res[1]}, count=1, block=self._block_ms)
            )
        return None

    async def ack(self, rec: TaskRecord, result: bytes) -> None:
        lease = self._release_hold(rec)
        outcome = await self._call(
            rec.queue,
            self._ack_script(
                keys=[self._stream(rec.queue), self._task_key(rec.id)],
                args=[GROUP, lease.entry, lease.token, result, self._ttl_ms, self._channel, rec.id],
            ),
        )
        if outcome == 0:
            log.warning(
                "task %s on %r: result of attempt %d ignored; the task had already finished",
                rec.id,
                rec.queue,
                rec.attempts,
            )
        elif outcome == 2:
            log.info(
                "task %s on %r: attempt %d finished after its claim expired; its result stands",
                rec.id,
                rec.queue,
                rec.attempts,
            )
        self._wake(rec.id)

    async def fail(self, rec: TaskRecord, error: str) -> None:
        lease = self._release_hold(rec)
        outcome = await self._call(
            rec.queue,
            self._fail_script(
                keys=[self._stream(rec.queue), self._task_key(rec.id), self._dlq(rec.queue)],
                args=[
                    GROUP,
                    lease.entry,
                    lease.token,
                    error,
                    self.max_attempts,
                    self._ttl_ms,
                    self._channel,
                    rec.id,
                    rec.queue,
                ],
            ),
        )
        if outcome == 0:
            log.warning(
                "task %s on %r: failure of attempt %d ignored; its claim had expired and the "
                "task was handed to another worker",
                rec.id,
                rec.queue,
                rec.attempts,
            )
        elif outcome == 2:
            self._wake(rec.id)

    async def release(self, rec: TaskRecord) -> None:
        lease = self._release_hold(rec)
        outcome = await self._call(
            rec.queue,
            self._release_script(
                keys=[self._stream(rec.queue), self._task_key(rec.id)],
                args=[GROUP, lease.entry, lease.token, rec.id],
            ),
        )
        if outcome == 1:
            rec.attempts -= 1

    async def _release_quietly(self, rec: TaskRecord) -> None:
        try:
            await self.release(rec)
        except (QueueUnavailable, RuntimeClosed) as exc:
            log.warning(
                "task %s on %r: could not give back an unused claim: %s", rec.id, rec.queue, exc
            )

    async def info(self, task_id: str) -> TaskInfo:
        self._check_open()
        if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
            raise TaskNotFound(task_id)
        queue, state, attempts, result, error = await self._call(
            None,
            self._redis.hmget(
                self._task_key(task_id), ["queue", "state", "attempts", "result", "error"]
            ),
        )
        if queue is None or state is None:
            raise TaskNotFound(task_id)
        st = TaskState(state.decode())
        return TaskInfo(
            id=task_id,
            queue=queue.decode(),
            state=st,
            attempts=int(attempts or 0),
            result=codec.decode(result) if st is TaskState.DONE and result is not None else None,
            error=error.decode(errors="replace") if error is not None else None,
        )

    async def backlog(self, queue: str) -> int:
        self._check_open()
        n = await self._call(queue, self._backlog_script(keys=[self._stream(queue)], args=[GROUP]))
        return max(0, int(n))

    async def wait(self, task_id: str, timeout_s: float | None = None) -> TaskInfo:
        return await _honouring_cancel(asyncio.wait_for(self._wait(task_id), timeout_s))

    async def _wait(self, task_id: str) -> TaskInfo:
        info = await self.info(task_id)
        if info.state.final:
            return info
        woken = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(woken)
        try:
            if self._listener is None:
                self._listener = self._spawn(
                    _listen(weakref.ref(self), self._redis, self._channel), "listener"
                )
            try:  # a notification sent before we listen would be missed: wait to listen
                await _honouring_cancel(
                    asyncio.wait_for(self._listening.wait(), _WAIT_POLL_FIRST_S)
                )
            except asyncio.TimeoutError:
                pass  # Redis is slow or down: the backstop poll below still finds the end
            poll = _WAIT_POLL_FIRST_S
            while True:
                woken.clear()
                info = await self.info(task_id)
                if info.state.final:
                    return info
                try:
                    await _honouring_cancel(asyncio.wait_for(woken.wait(), poll))
                except asyncio.TimeoutError:
                    poll = min(_WAIT_POLL_MAX_S, poll * 2)
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[task_id]

    async def close(self) -> None:
        """Stop renewing claims and listening, delete this object's idle consumers, close the
        connection pool. Claims still held are left to expire (another worker reclaims them
        after the visibility timeout). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._background)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._renewer = self._listener = None
        self._held.clear()
        for queue, consumer in sorted(self._consumers):
            try:
                await self._forget_script(keys=[self._stream(queue)], args=[GROUP, consumer])
            except _ERRORS as exc:  # Redis is gone: the others would fail the same way
                log.debug("could not delete consumer %s of %r: %s", consumer, queue, exc)
                break
        await self._redis.aclose()

    # -- claim renewal -------------------------------------------------------------------------

    async def renew(self) -> int:
        """Reset the idle time of every claim this object holds (the background renewer calls
        this every ``visibility_timeout_s / 3``). Claims found lost — reclaimed by another
        worker after they expired, or already settled — stop being renewed. Returns how many
        were renewed."""
        by_queue: dict[tuple[str, str], list[TaskRecord]] = {}
        for rec in list(self._held.values()):
            by_queue.setdefault((rec.queue, rec.ref.consumer), []).append(rec)
        renewed = 0
        for (queue, consumer), recs in by_queue.items():
            for i in range(0, len(recs), _RENEW_BATCH):
                batch = recs[i : i + _RENEW_BATCH]
                args: list[Any] = [GROUP, consumer]
                for rec in batch:
                    args += [rec.ref.entry, rec.ref.token]
                keys = [self._stream(queue)] + [self._task_key(r.id) for r in batch]
                flags = await self._call(queue, self._renew_script(keys=keys, args=args))
                for rec, ok in zip(batch, flags, strict=True):
                    if ok:
                        renewed += 1
                    elif self._held.pop(rec.ref.token, None) is not None:
                        log.warning(
                            "task %s on %r: claim of attempt %d lost (not renewed within "
                            "visibility_timeout_s=%g, another worker took it over)",
                            rec.id,
                            queue,
                            rec.attempts,
                            self.visibility_timeout_s,
                        )
        return renewed

    def _hold(self, rec: TaskRecord) -> None:
        self._held[rec.ref.token] = rec
        if self._renewer is None:
            self._renewer = self._spawn(_renew_forever(weakref.ref(self), self._renew_s), "renewer")

    def _release_hold(self, rec: TaskRecord) -> _Lease:
        self._check_open()
        lease = rec.ref
        if not isinstance(lease, _Lease):
            raise TypeError(f"task {rec.id} was not claimed from a RedisStreamsTaskQueue")
        self._held.pop(lease.token, None)
        return lease

    # -- helpers -------------------------------------------------------------------------------

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"raygent-queue-{what}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _stop_listening(self) -> None:
        self._listener = None  # the next waiter starts a new listener
        self._listening.clear()

    def _wake(self, task_id: str) -> None:
        for ev in self._waiters.get(task_id, ()):
            ev.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for ev in events:
                ev.set()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosed("the task queue is closed")

    async def _call(self, queue: str | None, op: Awaitable[T]) -> T:
        """Await one Redis operation; Redis errors leave as ``QueueUnavailable``, and a cancel
        that arrived meanwhile is honoured even if redis-py swallowed it (see
        :func:`_honouring_cancel`)."""
        result, swallowed = await self._call_noting_cancel(queue, op)
        if swallowed:
            raise asyncio.CancelledError
        return result

    async def _call_noting_cancel(self, queue: str | None, op: Awaitable[T]) -> tuple[T, bool]:
        """Like :meth:`_call`, but return ``(result, cancel_was_swallowed)`` so the caller can
        undo what the operation did before it honours the cancel."""
        task = asyncio.current_task()
        before = _cancel_requests(task)
        try:
            try:
                await ready(self._redis)
            except BaseException:
                getattr(op, "close", lambda: None)()  # a coroutine never to be awaited
                raise
            result = await op
        except _ERRORS as exc:
            retryable = not isinstance(exc, (AuthenticationError, AuthorizationError)) and (
                isinstance(exc, _TRANSIENT)
                or str(exc).startswith(("BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN"))
                # a script met a key its slot's migration moved away: try again (ASK, then MOVED)
                or "non local key" in str(exc)
            )
            raise QueueUnavailable(
                queue, f"{type(exc).__name__}: {exc}", retryable=retryable
            ) from exc
        swallowed = _cancel_requests(task) > before
        if swallowed:
            log.debug("honouring a cancel that redis-py returned through (queue %r)", queue)
        return result, swallowed


def _cancel_requests(task: asyncio.Task[Any] | None) -> int:
    """How many cancels ``task`` has been asked for and not yet consumed (Python 3.11+)."""
    counter = getattr(task, "cancelling", None)
    return counter() if counter is not None else 0


async def _honouring_cancel(op: Awaitable[T]) -> T:
    """Await ``op``; raise ``CancelledError`` if a cancel arrived meanwhile but ``op`` returned
    anyway.

    On Python before 3.12, ``asyncio.wait_for`` returns the inner result instead of raising
    when a cancel lands while the inner awaitable has just finished, and redis-py sends every
    command under ``wait_for(writer.drain(), socket_timeout)``: a cancel during a send was lost
    (in about half of the claims cancelled within 2 ms, with redis-py 8.1 on Python 3.11.7), so
    a cancelled ``claim`` went on claiming and a runtime's shutdown hung waiting for it. The
    task still counts the request (``Task.cancelling()``), so every Redis call and every
    ``wait_for`` here compares that count before and after and re-raises.

    The count has once risen with no caller's cancel, mid-failover of a Redis Cluster (not seen
    again in 23 later runs of that failover): the call then ends as cancelled. The runtime's loops
    that call the queue are owned by :class:`~runtime.core.loops.Loops`, which starts again a
    loop that ends on a cancel its owner did not send.
    """
    task = asyncio.current_task()
    before = _cancel_requests(task)
    result = await op
    if _cancel_requests(task) > before:
        raise asyncio.CancelledError
    return result


def _parse_trace(raw: bytes | None) -> TraceContext:
    try:
        return TraceContext.parse(raw.decode()) if raw else TraceContext.new_root()
    except ValueError:
        return TraceContext.new_root()


async def _renew_forever(ref: weakref.ref[RedisStreamsTaskQueue], period_s: float) -> None:
    """Renew the claims of the queue ``ref`` points to until it is closed or collected."""
    while True:
        await asyncio.sleep(period_s)
        q = ref()
        if q is None:
            return
        if q._held:
            try:
                await q.renew()
            except QueueUnavailable as exc:
                log.warning("renewing task claims failed: %s", exc)
            except Exception:
                log.exception("renewing task claims failed")
        del q


async def _listen(ref: weakref.ref[RedisStreamsTaskQueue], client: Any, channel: str) -> None:
    """Wake the waiters of the queue ``ref`` points to when their task finishes. Stops after a
    second without waiters; reconnects with backoff while somebody waits."""
    loop = asyncio.get_running_loop()
    wanted = loop.time()
    delays = backoff(0.1, 2.0)
    while True:
        pubsub = client.pubsub()
        try:
            await _honouring_cancel(pubsub.subscribe(channel))
            if (q := ref()) is None:
                return
            q._listening.set()
            q._wake_all()  # whatever finished while we were not listening is seen now
            del q
            delays = backoff(0.1, 2.0)
            while True:
                msg = await _honouring_cancel(
                    pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                )
                if (q := ref()) is None:
                    return
                if msg is not None and msg.get("type") == "message":
                    q._wake(msg["data"].decode())
                if q._waiters:
                    wanted = loop.time()
                elif loop.time() - wanted > 1.0:
                    q._stop_listening()
                    return
                del q
        except _ERRORS as exc:
            if (q := ref()) is None:
                return
            q._listening.clear()
            if not q._waiters:
                q._stop_listening()
                return
            del q
            delay = next(delays)
            log.warning("task queue listener: %s; reconnecting in %.1fs", exc, delay)
            await asyncio.sleep(delay)
        finally:
            await pubsub.aclose()
