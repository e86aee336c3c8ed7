"""Queue-depth autoscaling (runtime.serve.autoscaling): the policy against Serve's own context and
config types, and the options raygent hands Serve."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.serve")

from ray.serve._private.common import DeploymentID, ReplicaID  # noqa: E402
from ray.serve.autoscaling_policy import _apply_autoscaling_config  # noqa: E402
from ray.serve.config import AutoscalingConfig as ServeAutoscaling  # noqa: E402
from ray.serve.config import AutoscalingContext  # noqa: E402

from runtime.config import AutoscalingConfig  # noqa: E402
from runtime.serve.autoscaling import BACKLOG, LOAD, POLICY, queue_depth_policy  # noqa: E402
from runtime.serve.options import scaling_options  # noqa: E402

DEPLOYMENT = DeploymentID(name="Agent_worker", app_name="raygent")


def context(
    current: int,
    *,
    metrics: dict[str, list[float]] | None = None,
    ongoing: float = 0.0,
    handle_queued: float = 0.0,
    target: float = 4.0,
) -> AutoscalingContext:
    """A context as Serve's controller builds it, with one value per running replica."""
    replicas = [ReplicaID(f"r{i}", DEPLOYMENT) for i in range(current)]
    aggregated = {
        name: dict(zip(replicas, values, strict=True)) for name, values in (metrics or {}).items()
    }
    config = ServeAutoscaling(
        min_replicas=1,
        max_replicas=8,
        target_ongoing_requests=target,
        upscale_delay_s=0,
        downscale_delay_s=0,
    )
    return AutoscalingContext(
        deployment_id=DEPLOYMENT,
        deployment_name=DEPLOYMENT.name,
        app_name=DEPLOYMENT.app_name,
        current_num_replicas=current,
        target_num_replicas=current,
        running_replicas=replicas,
        total_num_requests=ongoing,
        total_queued_requests=handle_queued,
        aggregated_metrics=aggregated,
        raw_metrics={},
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=8,
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=1000.0,
        config=config,
    )


def test_a_task_backlog_serve_cannot_see_scales_the_agent_out():
    # Serve counts no ongoing request (tasks are claimed, not sent); the replicas report
    # 1 running each and a shared backlog of 30 (reported by both: counted once).
    ctx = context(2, metrics={LOAD: [1.0, 1.0], BACKLOG: [30.0, 30.0]}, ongoing=0.0)
    desired, state = queue_depth_policy(ctx)
    assert desired == pytest.approx((1 + 1 + 30) / 4)
    assert state == {"demand": 32.0, "reported": 2}
    # through Serve's wrapper (scaling factors, delays 0): 8 replicas
    assert _apply_autoscaling_config(queue_depth_policy)(ctx)[0] == 8


def test_requests_queued_at_handles_add_to_the_reported_load():
    ctx = context(1, metrics={LOAD: [6.0]}, ongoing=6.0, handle_queued=2.0)
    assert queue_depth_policy(ctx)[0] == pytest.approx(8 / 4)


def test_an_idle_deployment_scales_in():
    ctx = context(4, metrics={LOAD: [0.0, 1.0, 0.0, 0.0], BACKLOG: [0.0] * 4})
    assert queue_depth_policy(ctx)[0] == pytest.approx(1 / 4)
    assert _apply_autoscaling_config(queue_depth_policy)(ctx)[0] < 4


def test_before_any_replica_reports_serves_own_count_stands_in():
    ctx = context(2, ongoing=12.0, handle_queued=3.0)  # 12 includes the 3 handle-queued
    desired, state = queue_depth_policy(ctx)
    assert desired == pytest.approx(12 / 4) and state["reported"] == 0


def test_scaling_options_name_the_policy_and_serve_accepts_them():
    cfg = AutoscalingConfig(
        min_replicas=1,
        max_replicas=3,
        target_ongoing_requests=8,
        upscale_delay_s=1,
        downscale_delay_s=5,
        look_back_period_s=4,
    )
    options = scaling_options(1, cfg)["autoscaling_config"]
    serve_cfg = ServeAutoscaling(**options)
    assert serve_cfg.policy.policy_function == POLICY
    policy = serve_cfg.policy.get_policy()  # what the controller runs (a cloudpickle of it)
    assert policy.__qualname__ == "queue_depth_policy"
    assert (
        policy(context(1, metrics={LOAD: [8.0]}))[0]
        == queue_depth_policy(context(1, metrics={LOAD: [8.0]}))[0]
    )
    assert (serve_cfg.upscale_delay_s, serve_cfg.downscale_delay_s) == (1, 5)
    # a window under 20 s: reports every half window (Serve's default is every 10 s)
    assert serve_cfg.look_back_period_s == 4 and serve_cfg.metrics_interval_s == 2
    # Serve's defaults leave Serve's (deprecated) report interval alone
    assert "metrics_interval_s" not in scaling_options(1, AutoscalingConfig())["autoscaling_config"]
    # the gateway keeps Serve's default policy
    gateway = scaling_options(1, cfg, queue_depth=False)["autoscaling_config"]
    assert "policy" not in gateway
    assert scaling_options(3, None) == {"num_replicas": 3}
