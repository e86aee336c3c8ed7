"""``serve_app`` is what ``serve run serve_app:app`` and the Serve config file import."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def test_serve_app_builds_the_whole_application_from_the_defaults():
    from ray.serve.deployment import Application

    import serve_app

    assert isinstance(serve_app.app, Application)
    gateway = serve_app.app._bound_deployment  # the ingress, bound with every other part
    spec, _registry, _queue, models, agents = gateway.init_args
    assert gateway.name == "Gateway"
    assert sorted(models) == ["default"]
    assert sorted(agents) == ["archivist", "assistant", "critic", "researcher", "writer"]
    assert sorted(spec.classes) == sorted(agents)


def test_the_serve_config_file_imports_serve_app():
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    schema = ServeDeploySchema.parse_obj(raw)
    (app,) = schema.applications
    assert app.import_path == "serve_app:app" and app.route_prefix == "/"
