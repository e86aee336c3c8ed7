"""vLLM-backed models on Ray Serve: lazy or background or eager loads, warm-up before traffic,
streaming, health checks that catch a hung engine, idle unload, fallback models.

vLLM (and torch/transformers) is imported only by :mod:`runtime.models.engine` and
:mod:`runtime.models.tiny`, and only inside a model replica; importing this package needs Ray but
not vLLM. (:mod:`runtime.serve.engine_procs` reaches into vLLM at one point only: the function
that picks how vLLM starts its engine's processes.)

* :class:`ModelHost` -- one model's engine, lifecycle and fallback, in whichever process holds
  it: a ``ModelServer`` replica or a gateway replica (``placement: gateway``);
* :func:`model_deployments` / :func:`model_deployment` -- where each model is served: bound
  ``ModelServer`` deployments, or :class:`ModelAt` the gateway;
* :class:`ModelServerClient` -- ``ctx.llm`` over a deployment handle, or over
  :class:`LocalModel` / :class:`RoutedModel` (:mod:`runtime.models.routes`);
* :class:`ModelDelta` -- one streamed piece of an answer (:class:`ToolCallDelta`: of a tool call);
* :class:`AdmissionGate` -- bounded work per engine, a queue bounded by predicted wait, 429s;
* :func:`check_params` -- request parameters -> validated ``SamplingParams`` within limits;
* :func:`ensure_tiny_model` -- generate ``builtin:tiny`` (needs torch and transformers).

Example:
    >>> from ray import serve  # doctest: +SKIP
    >>> from runtime import load_config  # doctest: +SKIP
    >>> app = model_deployments(load_config())["default"]  # doctest: +SKIP
    >>> serve.run(app, name="models", route_prefix=None)  # doctest: +SKIP
    >>> llm = ModelServerClient.for_model("default", app_name="models")  # doctest: +SKIP
"""

from runtime.models._params import check_params
from runtime.models._wire import ModelDelta, ToolCallDelta, join_tool_calls, pieces_of
from runtime.models.admission import AdmissionGate, Priority
from runtime.models.client import ModelServerClient, deployment_name
from runtime.models.router import WarmFirstRequestRouter
from runtime.models.routes import LocalModel, ModelAt, RoutedModel, resolve_model
from runtime.models.server import (
    ModelHost,
    ModelServer,
    health_options,
    model_deployment,
    model_deployments,
    warm_first_router,
)
from runtime.models.tiny import TINY_SOURCE, ensure_tiny_model

__all__ = [
    "TINY_SOURCE",
    "AdmissionGate",
    "LocalModel",
    "ModelAt",
    "ModelDelta",
    "ModelHost",
    "ModelServer",
    "ModelServerClient",
    "Priority",
    "RoutedModel",
    "ToolCallDelta",
    "WarmFirstRequestRouter",
    "check_params",
    "deployment_name",
    "ensure_tiny_model",
    "health_options",
    "join_tool_calls",
    "model_deployment",
    "model_deployments",
    "pieces_of",
    "resolve_model",
    "warm_first_router",
]
