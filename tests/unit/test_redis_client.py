"""The URL scheme picks one server or a Redis Cluster (no server needed: clients connect on
first use)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from runtime.redis_client import cluster_url, connect, is_cluster


@pytest.mark.parametrize(
    ("url", "cluster"),
    [
        ("redis://127.0.0.1:6379/0", False),
        ("rediss://cache.example:6380", False),
        ("unix:///run/redis.sock?db=2", False),
        ("redis+cluster://127.0.0.1:7000", True),
        ("REDISS+CLUSTER://cache.example:7000", True),
    ],
)
def test_the_scheme_says_whether_the_url_is_a_cluster(url, cluster):
    assert is_cluster(url) is cluster


async def test_connect_builds_the_client_the_scheme_names():
    one = connect("redis://127.0.0.1:6379/3", socket_timeout=1.5)
    many = connect("rediss+cluster://user:pw@127.0.0.1:7000", socket_timeout=1.5)
    try:
        assert type(one) is aioredis.Redis
        assert one.connection_pool.connection_kwargs["db"] == 3
        assert isinstance(many, RedisCluster)
        assert [(n.host, n.port) for n in many.startup_nodes] == [("127.0.0.1", 7000)]
        kwargs = many.connection_kwargs
        assert (kwargs["username"], kwargs["password"]) == ("user", "pw")
        assert kwargs["socket_timeout"] == 1.5
        assert kwargs["connection_class"].__name__ == "SSLConnection"  # rediss: TLS
        assert many.reinitialize_steps == 0  # MOVED patches one slot, never closes the client
    finally:
        await one.aclose()
        await many.aclose()


def test_cluster_urls_lose_only_the_cluster_mark():
    assert cluster_url("redis+cluster://u:p@h:7000") == "redis://u:p@h:7000"
    assert cluster_url("rediss+cluster://h:7000/0?ssl_cert_reqs=none") == (
        "rediss://h:7000?ssl_cert_reqs=none"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h:7000/2", "one database"),
        ("redis://h:6379", "not a Redis Cluster URL"),
    ],
)
def test_a_cluster_url_that_cannot_be_one_is_refused(url, message):
    with pytest.raises(ValueError, match=message):
        cluster_url(url)
    if "one database" in message:
        with pytest.raises(ValueError, match=message):
            connect(url)
