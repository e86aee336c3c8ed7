"""raygent runtimes: where agents written with the SDK (``agents``) run.

``LocalRuntime`` runs them on one asyncio loop (tests, notebooks); ``RayRuntime`` runs them as
Ray actors; both, and the Serve application, build on the same config tree (``RaygentConfig``).

One way in: ``from runtime import LocalRuntime, RayRuntime``. ``RayRuntime`` is exported lazily
(PEP 562 module ``__getattr__``): importing this package does not import Ray (seconds, and a
hard dependency) for code that only uses ``LocalRuntime`` or the config.

Example:
    >>> from runtime import LocalRuntime, RayRuntime
    >>> RayRuntime.__module__
    'runtime.cluster.ray_runtime'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runtime.config import RaygentConfig, import_agent, load_config
from runtime.core.local import LocalRuntime
from runtime.errors import ConfigError, RaygentRuntimeError

if TYPE_CHECKING:
    from runtime.cluster.ray_runtime import RayRuntime

__all__ = [
    "ConfigError",
    "LocalRuntime",
    "RayRuntime",
    "RaygentConfig",
    "RaygentRuntimeError",
    "import_agent",
    "load_config",
]

# name -> the module that defines it, imported on first access (it imports Ray).
_LAZY = {"RayRuntime": "runtime.cluster.ray_runtime"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
