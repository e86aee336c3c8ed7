"""Message types that travel by value: how ``__main__`` and notebook types work on Ray.

Agents and messages defined in a script or a notebook live in ``__main__``, which a Ray worker
cannot import (its own ``__main__`` is Ray's worker entry point). The codec names such a type
``__main__:Ping`` and decodes only from its registry (``agents.codec``: never an import), so the
replica must *have* the class, under that name, before the first message arrives.

The mechanism, end to end::

    driver (RayRuntime.start)                     replica (AgentHost.__init__)
    codec registry ──ship_by_value()──► AppSpec.message_types ──register_shipped()──► codec
                                        (pickled once, with the agent classes)

* **Which types.** Those cloudpickle pickles by value: ``__main__``'s, and those of modules
  passed to ``ray.cloudpickle.register_pickle_by_value``. Types of importable modules travel by
  reference as always, so a driver-only import is never forced on a worker.
* **Modules made at run time.** cloudpickle assumes that a module in ``sys.modules`` is
  importable everywhere, so a ``types.ModuleType`` that only the driver holds (no file, no
  import spec) would be pickled by reference and fail on the worker with
  ``ModuleNotFoundError``. :func:`ship_by_value` registers such modules by value first (Ray's own
  remedy, done for the user): nothing else can load them anyway.
* **Why with the spec.** The agent classes are in the same pickle (``AppSpec``), and a by-value
  class is rebuilt once per pickle: shipping the message types beside them is what makes the
  replica's ``Ping`` in a handler's route and the codec's ``__main__:Ping`` *the same class*,
  so routing by type works. A separate channel (``register_pickle_by_value`` on ``__main__``,
  or a second pickle) would rely on cloudpickle's class tracker to get identity back.
* **Why not import on decode.** Decoding that imports whatever module the bytes name is the
  pickle hazard the codec exists to avoid; the set of decodable types stays what the driver
  chose to ship.
* **Replies.** A reply type defined in ``__main__`` decodes on the driver because the driver is
  where it was defined (a handler's hint, or a message type's field, registered it); the
  replica encodes it as ``__main__:Pong``, the name the driver knows.

The types are collected when the runtime starts, so define them before ``RayRuntime.start``;
a type registered on the driver later is not on replicas that are already running.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterable

from ray import cloudpickle

# cloudpickle's own by-value rule (``__main__``, register_pickle_by_value), used rather than
# restated so the two can never disagree about a type.
from ray.cloudpickle.cloudpickle import _should_pickle_by_reference

from agents import codec

__all__ = ["register_shipped", "ship_by_value"]

log = logging.getLogger(__name__)


def ship_by_value(agent_classes: Iterable[type]) -> tuple[type, ...]:
    """Prepare what only this driver can define to travel by value; call before pickling.

    Registers with cloudpickle, by value, the modules made at run time that hold an agent class
    or a registered message type.

    Returns:
        The registered message types that workers cannot import: the ones a replica can only
        know from the driver (for ``AppSpec.message_types``).
    """
    message_types = codec.registered()
    shipped = cloudpickle.list_registry_pickle_by_value()
    for cls in (*agent_classes, *message_types):
        module = sys.modules.get(cls.__module__)
        if module is not None and module.__name__ not in shipped and _made_at_run_time(module):
            log.info("module %s was made at run time: shipping it by value", module.__name__)
            cloudpickle.register_pickle_by_value(module)
            shipped.add(module.__name__)
    return tuple(t for t in message_types if not _should_pickle_by_reference(t))


def _made_at_run_time(module: types.ModuleType) -> bool:
    """No file and no import spec: ``types.ModuleType(...)`` put in ``sys.modules`` by hand.
    (``__main__`` is left to cloudpickle, which always ships it by value.)"""
    return (
        module.__name__ != "__main__"
        and getattr(module, "__spec__", None) is None
        and not hasattr(module, "__file__")
    )


def register_shipped(types: Iterable[type]) -> None:
    """Make types shipped from the driver decodable here, under their driver-side names."""
    for t in types:
        codec.register(t)
