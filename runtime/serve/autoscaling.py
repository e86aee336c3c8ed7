"""Queue-depth autoscaling: a Serve autoscaling policy over the load each replica reports.

Serve's default policy scales on *ongoing requests*: the calls that reached a replica through
a Serve handle. Much of raygent's work never does. An agent's topic messages arrive through
its shm ring or the registry's feed and its tasks are claimed from a queue, so an agent
drowning in tasks shows Serve no ongoing request at all; a model replica that sheds load
refuses the excess at once (429), so the demand it turned away never counts as ongoing. So
each replica reports what it holds and what waits for it, through Serve's custom-metrics hook
(``record_autoscaling_stats``, every ``look_back_period_s / 5``), and this policy sizes the
deployment for that::

    demand  = Σ replicas' LOAD      agent: messages in its mailbox + handlers running;
                                    model: requests admitted + queued + refused demand
            + max of their BACKLOG  tasks no replica has claimed (every replica of an agent
                                    reports the same shared queues, so not a sum)
            + handle-queued         Serve's own count of requests not yet at any replica
    desired = demand / target_ongoing_requests

Serve then applies the config's bounds, delays and scaling factors, as it does for its own
policy. Until a replica has reported (its first seconds) Serve's ongoing-request count stands
in, so a deployment is never scaled on no data. A deployment at zero replicas reports nothing:
Serve's cold-start path wakes it for a handle request, but not for a task backlog, so keep
``min_replicas >= 1`` on an agent that only consumes tasks.

The gateway keeps Serve's default policy: everything it serves comes through Serve's proxy,
so its ongoing requests already are its depth.

Example (what :func:`runtime.serve.options.scaling_options` builds for an agent)::

    serve.deployment(...).options(autoscaling_config={
        "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8,
        "policy": {"policy_function": "runtime.serve.autoscaling:queue_depth_policy"},
    })
"""

from __future__ import annotations

from typing import Any

__all__ = ["BACKLOG", "LOAD", "POLICY", "queue_depth_policy"]

LOAD = "raygent_load"
"""Custom metric: the work one replica holds (waiting and running)."""

BACKLOG = "raygent_backlog"
"""Custom metric: work waiting outside every replica for any of them to take."""

POLICY = f"{__name__}:queue_depth_policy"
"""Import path of the policy. Serve imports it where the deployment is declared and pickles
this module *by value* into its controller, so the module stays self-contained: nothing from
the rest of raygent, only the standard library."""


def queue_depth_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Serve's custom autoscaling policy (``AutoscalingContext`` in, replicas out).

    Returns:
        The replicas the reported demand needs (a float: Serve rounds it up after its
        scaling factors), and the figures it used, which Serve keeps as the policy's state.
    """
    metrics = ctx.aggregated_metrics or {}
    loads = metrics.get(LOAD) or {}
    backlog = max((metrics.get(BACKLOG) or {}).values(), default=0.0)
    if loads:
        demand = sum(loads.values()) + backlog + (ctx.total_queued_requests or 0.0)
    else:  # nothing reported yet: Serve's count (running and handle-queued) stands in
        demand = ctx.total_num_requests + backlog
    target = ctx.config.get_target_ongoing_requests()
    return demand / target, {"demand": demand, "reported": len(loads)}
