"""raygent on Ray Serve: the agent, registry and task-queue deployments (:mod:`.agents`), their
names, handles and shared options (:mod:`.options`), and the queue-depth autoscaling policy
(:mod:`.autoscaling`). The HTTP gateway and the model deployments are :mod:`runtime.gateway` and
:mod:`runtime.models`."""
