"""The test command provides a real Redis server (Debian's redis-server) at $REDIS_URL."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.integration


def test_redis_url_points_at_a_live_redis_server():
    import redis

    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL not set: run through `make test`, which starts redis-server")
    client = redis.Redis.from_url(url, socket_timeout=2)
    info = client.info("server")
    assert int(info["redis_version"].split(".")[0]) >= 6
    client.set("raygent:test:probe", b"1", ex=5)
    assert client.get("raygent:test:probe") == b"1"
