"""Shadow arms: a copy of a request, sent to an arm the client never hears from.

A name with variants may mark arms as shadows (``variants.<name>.arms.<arm>.shadow``): once the
client's answer is done, each shadow arm answers the same prompt as a ``batch`` request (a
model's admission sheds it before any client's), uncached, and the outcome -- the same texts as
the client's answer, different ones, or an error -- and its time are recorded per arm. The copies
are bounded per name (``shadow_max_inflight``; past it a copy is counted as dropped), so the
client's answer never waits on a shadow and a slow arm cannot pile up work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from agents.model import SamplingParams
from agents.tracing import TraceContext
from runtime.gateway.calls import Backends, TargetCall
from runtime.gateway.openai_format import Completed, Kind
from runtime.gateway.targets import Targets, with_system_prompt
from runtime.gateway.variants import Arm, VariantRouter
from runtime.observability.metrics import ShadowOutcome

__all__ = ["Shadows"]

log = logging.getLogger(__name__)


class Shadows:
    """The copies to shadow arms of one gateway replica."""

    def __init__(self, targets: Targets, backends: Backends) -> None:
        self._targets = targets
        self._backends = backends
        self._inflight = dict.fromkeys(targets.variants, 0)
        self._tasks: set[asyncio.Task[None]] = set()

    def copier(
        self,
        router: VariantRouter,
        kind: Kind,
        prompt: Any,
        sp: SamplingParams,
        salt: str | None,
        trace: TraceContext,
    ) -> Callable[[Completed | None], None] | None:
        """What copies this request to ``router``'s shadow arms once its answer is done (None:
        the name has none): a task per copy, started only while fewer than
        ``shadow_max_inflight`` of the name's copies run (else counted as dropped)."""
        arms = router.shadows()
        if not arms:
            return None

        def copy(primary: Completed | None) -> None:
            for arm in arms:
                if self._inflight[router.name] >= router.shadow_max_inflight:
                    self._backends.metrics.observe_shadow(router.name, arm.name, "dropped")
                    continue
                self._inflight[router.name] += 1
                task = asyncio.create_task(
                    self._shadow(router, arm, kind, prompt, sp, salt, trace, primary)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        return copy

    async def _shadow(
        self,
        router: VariantRouter,
        arm: Arm,
        kind: Kind,
        prompt: Any,
        sp: SamplingParams,
        salt: str | None,
        trace: TraceContext,
        primary: Completed | None,
    ) -> None:
        started = time.monotonic()
        outcome: ShadowOutcome
        try:
            if arm.system_prompt is not None:
                prompt = with_system_prompt(prompt, arm.system_prompt)
            target = self._targets.arm(router, arm)
            call = TargetCall(self._backends, target, kind, prompt, sp, trace, salt, "batch")
            done = await call.whole()
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is its outcome
            log.debug("shadow %s/%s failed: %r", router.name, arm.name, exc)
            outcome = "error"
        else:
            same = primary is not None and done.texts == primary.texts
            outcome = "same" if same else "different"
        finally:
            self._inflight[router.name] -= 1
        self._backends.metrics.observe_shadow(
            router.name, arm.name, outcome, time.monotonic() - started
        )
