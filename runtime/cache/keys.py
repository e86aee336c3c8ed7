"""The cache key and the caching policy: pure functions, no I/O (see the package docstring)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from runtime.errors import RaygentRuntimeError

__all__ = [
    "POLICIES",
    "CacheDecision",
    "CacheKeyError",
    "Policy",
    "cache_decision",
    "cache_key",
    "cache_scope",
    "check_key",
    "is_deterministic",
]

Policy = Literal["deterministic", "always", "never"]

KEY_VERSION = 1
POLICIES = ("deterministic", "always", "never")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


class CacheKeyError(RaygentRuntimeError, ValueError):
    """An input of :func:`cache_key` cannot be encoded unambiguously (NaN, a non-string mapping
    key, an object that is not JSON data). A bug in the caller; fatal for that request."""


# -- key -----------------------------------------------------------------------------------------


def cache_key(
    *,
    target: str,
    revision: str | None,
    kind: str,
    prompt: Any,
    params: Mapping[str, Any] | Any,
    tenant: str | None,
    shared: bool = False,
) -> str:
    """The cache key of one request: a 64-character hex SHA-256 (see the module docstring).

    Args:
        target: the model or agent name (``"default"``, ``"agent:Writer"``).
        revision: the model revision (``ModelConfig.revision``) or an agent's version; None
            when there is none.
        kind: what sort of call (``"chat"``, ``"completion"``, ``"agent"``): the same text as a
            chat and as a raw prompt are different questions.
        prompt: the full message list, prompt string or agent payload (JSON data).
        params: every sampling parameter, resolved (``SamplingParams`` or its ``to_dict()``).
        tenant: the caller's scope: a fingerprint of the API key or a tenant id, never the raw
            key; None for anonymous callers (auth off).
        shared: the target's entries are shared across tenants (``cache.shared``); ``tenant``
            is then ignored.

    Raises:
        CacheKeyError: an argument is not a string where one is needed, or not JSON data.

    Example:
        >>> a = cache_key(target="m", revision=None, kind="chat", prompt="x",
        ...               params={"temperature": 0}, tenant="t")
        >>> a == cache_key(target="m", revision=None, kind="chat", prompt="x",
        ...                params={"temperature": 0.0}, tenant="t")
        True
    """
    _check_str("target", target)
    _check_str("kind", kind)
    if revision is not None:
        _check_str("revision", revision)
    if tenant is not None and not isinstance(tenant, str):
        raise CacheKeyError(f"tenant must be a string or None, got {type(tenant).__name__}")
    if not isinstance(params, Mapping) and callable(getattr(params, "to_dict", None)):
        params = params.to_dict()
    if not isinstance(params, Mapping):
        raise CacheKeyError(f"params must be a mapping, got {type(params).__name__}")
    doc = {
        "v": KEY_VERSION,
        "target": target,
        "revision": revision,
        "kind": kind,
        "prompt": _canonical(prompt, "prompt"),
        "params": _canonical(params, "params"),
        "shared": bool(shared),
        "tenant": cache_scope(tenant, shared=shared),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def cache_scope(tenant: str | None, *, shared: bool) -> str | None:
    """Who may reuse what a request leaves cached: its tenant, or None (everybody) for a
    shared target. The scope of the response cache's key, and the ``cache_salt`` the gateway
    gives vLLM, so that its prefix cache (KV blocks) is reused within the same scope only.

    Example:
        >>> cache_scope("key:1f2e", shared=False), cache_scope("key:1f2e", shared=True)
        ('key:1f2e', None)
    """
    return None if shared else tenant


def _check_str(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise CacheKeyError(f"{name} must be a non-empty string, got {value!r}")


def _canonical(value: Any, where: str) -> Any:
    """JSON data with one spelling per meaning (see the module docstring)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CacheKeyError(f"{where} = {value!r}: only finite numbers can be keyed")
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise CacheKeyError(f"{where}: mapping keys must be strings, got {k!r}")
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise CacheKeyError(f"{where}: cannot key a {type(value).__name__} ({value!r:.60})")


def check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"not a cache key (64 lowercase hex digits from cache_key()): {key!r}")


# -- policy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheDecision:
    """What the cache may do for one request.

    Attributes:
        lookup: may answer from the cache (and join a single flight).
        store: may store the response.
        reason: ``policy-never``, ``no-store``, ``non-deterministic``, ``no-cache`` or
            ``cacheable``.
    """

    lookup: bool
    store: bool
    reason: str

    @property
    def bypass(self) -> bool:
        """Neither read nor written: the cache plays no part."""
        return not self.lookup and not self.store


def cache_decision(
    *, policy: Policy, deterministic: bool, cache_control: str | None = None
) -> CacheDecision:
    """The policy table of the module docstring, for one request.

    Args:
        policy: the target's policy.
        deterministic: temperature 0 or a fixed seed.
        cache_control: the request's ``Cache-Control`` header, if any.

    Example:
        >>> cache_decision(policy="always", deterministic=False, cache_control="no-cache")
        CacheDecision(lookup=False, store=True, reason='no-cache')
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    directives = _directives(cache_control)
    if policy == "never":
        return CacheDecision(False, False, "policy-never")
    if "no-store" in directives:
        return CacheDecision(False, False, "no-store")
    if policy == "deterministic" and not deterministic:
        return CacheDecision(False, False, "non-deterministic")
    if "no-cache" in directives:
        return CacheDecision(False, True, "no-cache")
    return CacheDecision(True, True, "cacheable")


def _directives(header: str | None) -> set[str]:
    """Directive names of a ``Cache-Control`` header, lowercased; ``max-age=0`` (the client
    accepts nothing stored) reads as ``no-cache``."""
    out: set[str] = set()
    for part in (header or "").split(","):
        name, _, arg = part.partition("=")
        name = name.strip().lower()
        if name == "max-age" and arg.strip().strip('"') == "0":
            name = "no-cache"
        if name:
            out.add(name)
    return out


def is_deterministic(params: Mapping[str, Any] | None) -> bool:
    """``SamplingParams.is_deterministic`` for a params dict (a missing temperature is 1)."""
    if not params:
        return False
    return params.get("temperature", 1.0) == 0 or params.get("seed") is not None
