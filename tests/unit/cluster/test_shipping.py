"""runtime.cluster.shipping: which message types the driver ships by value (no Ray cluster
needed)."""

from __future__ import annotations

import dataclasses
import sys
import types

import msgpack
import pytest

from agents import codec

cloudpickle = pytest.importorskip("ray.cloudpickle")
shipping = pytest.importorskip("runtime.cluster.shipping")


@dataclasses.dataclass
class Importable:
    """Lives in an importable module: travels by reference, never in the spec."""

    n: int


@pytest.fixture
def scratch():
    """A module made at run time, as a notebook extension or an exec-ed config makes one."""
    module = types.ModuleType("raygent_scratch_types")
    sys.modules[module.__name__] = module
    exec("import dataclasses\n@dataclasses.dataclass\nclass Ping:\n    n: int\n", vars(module))
    yield module
    if module.__name__ in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.unregister_pickle_by_value(module)
    del sys.modules[module.__name__]


def test_main_and_run_time_types_are_shipped_importable_ones_are_not(scratch):
    main_type = dataclasses.make_dataclass("MainPing", [("n", int)])
    main_type.__module__ = "__main__"
    for t in (Importable, main_type, scratch.Ping):
        codec.register(t)
    shipped = shipping.ship_by_value([])
    assert main_type in shipped and scratch.Ping in shipped
    assert Importable not in shipped
    assert scratch.__name__ in cloudpickle.list_registry_pickle_by_value()
    # and cloudpickle now carries the run-time module's class itself, not a reference to it
    assert b"raygent_scratch_types" in cloudpickle.dumps(scratch.Ping)
    assert cloudpickle.loads(cloudpickle.dumps(scratch.Ping)).__qualname__ == "Ping"


def test_register_shipped_makes_the_names_decodable(scratch):
    shipping.register_shipped([scratch.Ping])
    # bytes as another process (the driver) made them: nothing encoded here
    body = msgpack.packb([codec.type_name(scratch.Ping), {"n": 3}], use_bin_type=True)
    value = codec.decode(msgpack.packb(msgpack.ExtType(1, body), use_bin_type=True))
    assert type(value) is scratch.Ping and value.n == 3
