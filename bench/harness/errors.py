"""The harness's one exception tree: every failure a user can cause or meet is a BenchError.

Errors of the endpoint under test are *not* exceptions: they are counted per request by kind
(see :mod:`bench.harness.metrics`) because a load test must survive them and report them.
"""

from __future__ import annotations

__all__ = ["BenchError", "ConfigError", "DatasetError", "ServerStartError"]


class BenchError(Exception):
    """Base of every harness error."""


class ConfigError(BenchError, ValueError):
    """An option or a combination of options is invalid. Fatal: fix the command line; the
    message names the option, the value and what would be accepted."""


class DatasetError(BenchError):
    """A ``--dataset`` file cannot be read or a line has no prompt, messages or turns. Fatal;
    the message names the file and the line."""


class ServerStartError(BenchError):
    """A server the harness was asked to start (``--start``, calibration, self-check) exited
    or did not become ready in time. Fatal; the message names the timeout setting and the log
    file with the server's output."""
