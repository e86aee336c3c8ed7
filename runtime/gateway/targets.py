"""The route step of a completion: which model, agent or variant arm answers a ``model`` name.

A ``model`` value names one of three things:

* a configured model (``"default"``);
* an agent, ``agent:<name>``, which answers a chat as a :class:`~agents.ChatRequest` message;
* a name with variants (:mod:`runtime.gateway.variants`), which resolves to one arm -- the
  caller's sticky arm under the weights in force, or the arm its override header names -- and
  the arm to a model or an agent, with the arm's system prompt.

Anything else is a 404 (``UnknownModel``) listing the names this gateway answers. The weights
in force come from, in this order: the admin route (replicated shared state, read locally),
the Serve config (the Gateway's ``user_config``), the app config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agents.errors import UnknownModel
from runtime.cluster.client import ClusterClient
from runtime.config import RaygentConfig
from runtime.errors import ConfigError
from runtime.gateway.edge import ANONYMOUS
from runtime.gateway.errors import ApiError
from runtime.gateway.variants import VARIANT_HEADER, WEIGHTS_KEY, Arm, VariantRouter

__all__ = ["AGENT_PREFIX", "Target", "Targets", "with_system_prompt"]

AGENT_PREFIX = "agent:"
"""``model`` values naming an agent: ``agent:<name>``."""


@dataclass(frozen=True)
class Target:
    """What answers a request: a model, or an agent."""

    name: str  # as the client wrote it: "default" or "agent:assistant"
    model: str | None = None
    agent: str | None = None
    revision: str | None = None  # part of the cache key: a new model or agent code misses
    variant: str | None = None  # the arm, when ``name`` has variants
    system_prompt: str | None = None  # the arm's prompt, sent before the client's


class Targets:
    """The names a gateway answers, and what each resolves to.

    Args:
        config: the application config (its models and variants).
        models: the names of the models this gateway has a client for.
        runtime: the gateway's cluster client (its app spec names the agents; its shared state
            holds the admin route's weights).
    """

    def __init__(self, config: RaygentConfig, models: list[str], runtime: ClusterClient) -> None:
        self._cfg = config
        self._models = set(models)
        self._runtime = runtime
        self.variants: dict[str, VariantRouter] = {
            n: VariantRouter(n, v) for n, v in config.variants.items()
        }
        """The routers of the names with variants."""
        self._serve_weights: dict[str, dict[str, float]] = {}
        self.names: tuple[str, ...] = tuple(
            dict.fromkeys(
                [*models, *(AGENT_PREFIX + a for a in runtime.spec.classes), *self.variants]
            )
        )
        """Every ``model`` value this gateway answers (fixed for the app's life)."""
        for router in self.variants.values():
            for arm in router.arms.values():
                if arm.target not in self.names:
                    raise ConfigError(
                        f"variants.{router.name}.arms.{arm.name}.target = {arm.target!r} is "
                        f"not a model or agent of this application; known: {list(self.names)}"
                    )

    def route(
        self, name: str, *, tenant: str, user: str | None, session: str | None, variant: str | None
    ) -> Target:
        """The target of a request for ``name``: for a name with variants, the arm of the
        caller's sticky key (its session, else its user, else its tenant when it has one)."""
        router = self.variants.get(name)
        key = None
        if router is not None:
            named = tenant if tenant != ANONYMOUS else None
            key = router.sticky_key(session=session, user=user, tenant=named)
        return self.resolve(name, key=key, variant=variant)

    def resolve(self, name: str, *, key: str | None = None, variant: str | None = None) -> Target:
        """The target ``name`` denotes; 404 (``UnknownModel``) if nothing does. A name with
        variants resolves to the arm of the sticky ``key`` under the current weights, or to
        the arm ``variant`` (the request's override header) names."""
        router = self.variants.get(name)
        if router is not None:
            return self.arm(router, router.pick(key, variant, self.weights_set(name)))
        if variant is not None:
            raise ApiError(
                400,
                f"header {VARIANT_HEADER}: {name!r} has no variants "
                f"(names with variants: {sorted(self.variants)})",
                param=VARIANT_HEADER,
                code="invalid_header",
            )
        return self._direct(name)

    def arm(self, router: VariantRouter, arm: Arm) -> Target:
        """The target of one arm of ``router``: its model or agent, under the variant's name."""
        base = self._direct(arm.target)
        return Target(
            router.name,
            model=base.model,
            agent=base.agent,
            revision=f"{base.revision}#{arm.name}",
            variant=arm.name,
            system_prompt=arm.system_prompt,
        )

    def _direct(self, name: str) -> Target:
        if name.startswith(AGENT_PREFIX):
            agent = name[len(AGENT_PREFIX) :]
            cls = self._runtime.spec.classes.get(agent)
            if cls is None:
                raise UnknownModel(name, list(self.names))
            return Target(name, agent=agent, revision=f"{cls.__module__}:{cls.__qualname__}")
        cfg = self._cfg.models.get(name)
        if cfg is None or name not in self._models:
            raise UnknownModel(name, list(self.names))
        return Target(name, model=name, revision=f"{cfg.source}@{cfg.revision or ''}")

    # -- weights -------------------------------------------------------------------------------

    def weights_set(self, name: str) -> dict[str, float] | None:
        """The weights in force for ``name`` other than the app config's, or None: those the
        admin route set (replicated shared state; a local read), else the Serve config's
        (:meth:`set_serve_weights`)."""
        value = self._runtime.state.get(WEIGHTS_KEY.format(name=name))
        return value if isinstance(value, dict) else self._serve_weights.get(name)

    def weights_source(self, name: str) -> str:
        """Where ``name``'s weights come from: ``admin``, ``serve_config`` or ``config``."""
        if isinstance(self._runtime.state.get(WEIGHTS_KEY.format(name=name)), dict):
            return "admin"
        return "serve_config" if name in self._serve_weights else "config"

    def set_serve_weights(self, by_name: Mapping[str, Any]) -> None:
        """Weights from the Serve config: the Gateway deployment's ``user_config``
        ``variant_weights``, which Serve hands to every replica (and to each replacement)
        when it changes, without restarting any. They replace the app config's weights; an
        admin override still wins until it is cleared. A name left out goes back to the app
        config's weights.

        Raises:
            ConfigError: a name without variants, or weights the admin route would refuse
                (Serve then reports the update as failed and keeps the replica's weights).
        """
        checked: dict[str, dict[str, float]] = {}
        for name, weights in by_name.items():
            router = self.variants.get(name)
            if router is None:
                raise ConfigError(
                    f"user_config.variant_weights: {name!r} has no variants; names with "
                    f"variants: {sorted(self.variants)}"
                )
            try:
                checked[name] = router.weights(router.check_weights(weights))
            except ApiError as exc:
                raise ConfigError(f"user_config.variant_weights.{name}: {exc.message}") from None
        self._serve_weights = checked

    async def set_weights(self, name: str, weights: dict[str, float] | None) -> None:
        """Set (None: clear) ``name``'s weights on every gateway replica: written to the
        shared state, which the registry's feed brings to every replica within a poll."""
        key = WEIGHTS_KEY.format(name=name)
        if weights is None:
            await self._runtime.state.delete(key)
        else:
            await self._runtime.state.set(key, weights)


def with_system_prompt(prompt: Any, system: str) -> Any:
    """A prompt variant's prompt before the client's: a system message first in a chat, a
    first paragraph of a text completion's prompt."""
    if isinstance(prompt, str):
        return f"{system}\n\n{prompt}"
    return [{"role": "system", "content": system}, *prompt]
