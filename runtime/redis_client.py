"""A Redis URL to a redis-py asyncio client: one server, or a Redis Cluster.

The URL's scheme picks the topology, the way a SQLAlchemy URL picks its driver:

* ``redis://``, ``rediss://``, ``unix://``: one server (:class:`redis.asyncio.Redis`);
* ``redis+cluster://host:port`` (TLS: ``rediss+cluster://``): a Redis Cluster reached through
  any one of its nodes. redis-py's :class:`~redis.asyncio.cluster.RedisCluster` finds the others,
  follows ``MOVED`` and ``ASK`` redirections, and reloads its slot map when a master fails over.
  What comes after the ``+cluster`` scheme is exactly the URL ``RedisCluster.from_url`` takes.

Why a scheme and not discovery (``INFO cluster`` on connect): the choice is made where the URL
is written, costs no round trip, and a wrong URL fails at once ("Cluster mode is not enabled on
this node") instead of quietly running in the other mode.

What the callers do to run on a cluster (both document it): every key a script or a
multi-key command touches carries the same hash tag (``{...}``), so it lives in one slot. A
cluster has one database: a ``/<db>`` other than 0 is refused here, not ignored.

The cache (:mod:`runtime.cache.backends`) and the durable queues
(:mod:`runtime.queues.redis_streams`) are the two modules that import ``redis``; both build their
clients here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

__all__ = ["CLUSTER_SCHEMES", "AnyRedis", "cluster_url", "connect", "is_cluster", "ready"]

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

AnyRedis = aioredis.Redis | RedisCluster


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def cluster_url(url: str) -> str:
    """The ``redis://`` (or ``rediss://``) URL that ``RedisCluster.from_url`` takes.

    Raises:
        ValueError: not a cluster URL, or one that names a database other than 0.
    """
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"not a Redis Cluster URL (redis+cluster://host:port): {url!r}")
    db = parts.path.strip("/")
    if db not in ("", "0"):
        raise ValueError(f"a Redis Cluster has one database (0); the URL names {db!r}: {url!r}")
    return urlunsplit(parts._replace(scheme=scheme, path=""))


def connect(url: str, **kwargs: Any) -> AnyRedis:
    """A client for ``url``; ``kwargs`` go to ``Redis.from_url`` or ``RedisCluster.from_url``
    (connection options such as ``socket_timeout``, ``retry``, ``client_name`` and
    ``max_connections`` -- per node for a cluster). Connects on first use."""
    if is_cluster(url):
        # reinitialize_steps=0: on MOVED, patch the one slot's owner and go on. redis-py's
        # default (5) closes the whole client every fifth MOVED -- every node's connections,
        # those other calls are using too. In the reshard test that failed 28-36 calls of the
        # other eleven queues, on every master ("Connection closed by server"); with 0, none.
        kwargs.setdefault("reinitialize_steps", 0)
        return RedisCluster.from_url(cluster_url(url), **kwargs)
    return aioredis.Redis.from_url(url, **kwargs)


async def ready(client: AnyRedis) -> None:
    """Connect a cluster client before it is used concurrently; nothing for one server.

    ``RedisCluster`` loads its slot map on its first command. With several first commands at
    once (a dozen queue workers starting), redis-py 8.1 ends up reloading it while the others'
    connections open, and they fail ("Connection closed by server", ``AttributeError`` in
    ``send_packed_command``); measured on the test cluster: 9 of 120 blocking reads failed
    from 12 concurrent first callers, none after one ``initialize``. Once connected this is a
    flag check.
    """
    if isinstance(client, RedisCluster):
        await client.initialize()
