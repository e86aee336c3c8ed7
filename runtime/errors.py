"""Errors of the runtime package itself (setup and configuration).

Errors that agents and callers see at run time (``Backpressure``, ``SendTimeout`` ...) are the
SDK's, in ``agents.errors``, so agent code never imports ``runtime``.
"""

from __future__ import annotations

__all__ = ["ConfigError", "RaygentRuntimeError"]


class RaygentRuntimeError(Exception):
    """Base of the runtime package's own errors."""


class ConfigError(RaygentRuntimeError, ValueError):
    """The configuration is invalid. Fatal at start: the message names each bad field, its value
    and what is allowed; fix the file or the environment variable it names."""
