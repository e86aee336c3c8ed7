"""Shared fixtures. Every async test is checked for leaked asyncio tasks; Ray starts once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

RAY_TEST_AGENTS_DIR = Path(__file__).parent / "integration" / "ray"

# Behind HAProxy, Serve keeps an ingress replica that is stopping reachable for at least 30 s
# (Ray 2.60's RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S), so that load balancers outside
# Ray can deregister it first; every application a test deletes waited that out (each model
# test module's apps, the end-to-end gateway: about 4 of the suite's 16 minutes). The tests have
# no load balancer but Serve's own HAProxy, which sees a draining replica within one health
# check (every 5 s, then 250 ms), so 6 s keeps what the drain is for. Set before any Ray starts,
# so the session's cluster and every process a test starts inherit it.
os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "6")


@pytest.fixture(autouse=True)
async def _no_leaked_tasks():
    """Fail a test that leaves tasks running on its loop (every task needs an owner).
    Tasks that were already running when the test began (a module's runtime) are not its."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    leaked = [
        t for t in asyncio.all_tasks() if t is not current and t not in before and not t.done()
    ]
    for t in leaked:
        t.cancel()
    assert not leaked, f"test leaked asyncio tasks: {leaked}"


@pytest.fixture(scope="session")
def redis_cluster():
    """A Redis Cluster of 3 masters with a replica each (``tests.rediscluster``), started when a
    test first asks for it. Tests that kill nodes make their own instead."""
    from tests.rediscluster import LocalCluster

    with LocalCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (each start costs seconds on 2
    cores), with Serve's HAProxy ingress. Workers can import the test agent modules in
    tests/integration/ray."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # The ingress ``serve run serve_app:app`` picks by default (runtime.serve.options), so the
        # Serve tests cross what users' requests cross.
        os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
        path = os.pathsep.join(
            p for p in (str(RAY_TEST_AGENTS_DIR), os.environ.get("PYTHONPATH")) if p
        )
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    yield ray
    ray.shutdown()


class OpenAISpec:
    """OpenAI's response schemas (``tests/data/openai/schemas.json``, extracted from the official
    OpenAPI document) as JSON Schema validators.

    The document is OpenAPI 3.1 but still writes some nullable fields the 3.0 way
    (``nullable: true``, even beside a ``$ref``); those become ``anyOf [..., null]`` here.
    ``$ref``\\ s (``#/components/schemas/X``) resolve within the extracted document.

    ``TEXT_CHUNK`` is a streamed text completion's chunk: the spec has no schema of its own for
    it, and OpenAI streams ``CreateCompletionResponse`` bodies whose ``finish_reason`` is null
    until the choice ends; that one relaxation is all it differs by.
    """

    TEXT_CHUNK = "CreateCompletionResponse (stream chunk)"

    def __init__(self, doc: dict) -> None:
        import copy

        self.source = doc["source"]
        schemas = {name: _json_schema(s) for name, s in doc["schemas"].items()}
        chunk = copy.deepcopy(schemas["CreateCompletionResponse"])
        reason = chunk["properties"]["choices"]["items"]["properties"]["finish_reason"]
        chunk["properties"]["choices"]["items"]["properties"]["finish_reason"] = {
            "anyOf": [reason, {"type": "null"}]
        }
        schemas[self.TEXT_CHUNK] = chunk
        self._root = {"components": {"schemas": schemas}}
        self._validators: dict = {}

    def errors(self, name: str, instance: object) -> list[str]:
        """Every way ``instance`` violates schema ``name`` (empty: it is valid)."""
        from jsonschema import Draft202012Validator

        v = self._validators.get(name)
        if v is None:
            schema = {**self._root, "$ref": f"#/components/schemas/{name}"}
            v = self._validators[name] = Draft202012Validator(schema)
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in v.iter_errors(instance)
        ]

    def check(self, name: str, instance: object) -> None:
        """Assert that ``instance`` is a valid ``name``."""
        problems = self.errors(name, instance)
        assert not problems, f"not a valid {name}: {problems}\n{instance!r:.2000}"


def _json_schema(node: object) -> object:
    """OpenAPI's ``nullable: true`` as JSON Schema (a property *named* nullable is kept)."""
    if isinstance(node, dict):
        out = {k: _json_schema(v) for k, v in node.items() if not _nullable_keyword(k, v)}
        if node.get("nullable") is True:
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_json_schema(v) for v in node]
    return node


def _nullable_keyword(key: str, value: object) -> bool:
    return key == "nullable" and isinstance(value, bool)


@pytest.fixture(scope="session")
def openai_spec() -> OpenAISpec:
    """OpenAI's response schemas: ``openai_spec.check("ErrorResponse", body)``."""
    import json

    pytest.importorskip("jsonschema")
    doc = json.loads((Path(__file__).parent / "data" / "openai" / "schemas.json").read_text())
    return OpenAISpec(doc)
