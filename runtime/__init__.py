"""raygent runtimes: where agents written with the SDK (``agents``) run.

``LocalRuntime`` runs them on one asyncio loop (tests, notebooks); the Ray runtime and the Serve
application build on the same config tree (``RaygentConfig``).
"""

from runtime.config import RaygentConfig, import_agent, load_config
from runtime.errors import ConfigError, RaygentRuntimeError
from runtime.local import LocalRuntime

__all__ = [
    "ConfigError",
    "LocalRuntime",
    "RaygentConfig",
    "RaygentRuntimeError",
    "import_agent",
    "load_config",
]
