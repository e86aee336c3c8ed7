"""``shutdown_serve``: stop Serve and wait until its controller is gone, so that the next
module's ``serve.start()`` starts afresh (with its own proxy settings) instead of attaching to a
controller that outlived ``serve.shutdown()`` by a moment."""

from __future__ import annotations

import time


def shutdown_serve(timeout_s: float = 60.0) -> None:
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    serve.shutdown()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the Serve controller outlived serve.shutdown() by {timeout_s:g}s")
