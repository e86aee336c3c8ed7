"""The gateway replica that hosts a model starts vLLM's chain as its process starts."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_gateway_ran_engine_host_setup_before_building_the_model_host(gateway_url, model_stats):
    stats = model_stats()
    started = next(t for t, e in stats["events"] if e == "replica_started")
    assert stats["engine_host_setup_at"] is not None
    assert stats["engine_host_setup_at"] <= started
