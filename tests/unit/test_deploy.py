"""The deployment files in deploy/: the KubeRay RayService manifest has what KubeRay's RayService
v1 requires, runs the same Serve application as deploy/serve.yaml, and names the Ray version
installed here (and so does its Dockerfile).

The RayService schema below is a subset of KubeRay's CRD (``ray.io_rayservices.yaml``, v1),
written from it by hand (the CRD itself is 1 MB, nearly all of it the Pod template schema): the
required fields at every level the manifest uses, and at the RayService levels the full list of
known keys, so that a misspelt field fails here instead of being dropped by the API server.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"

_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_CONTAINER = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string"},
        "env": {
            "type": "array",
            "items": {"type": "object", "required": ["name"]},
        },
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["containerPort"],
                "properties": {"containerPort": {"type": "integer"}, "name": {"type": "string"}},
            },
        },
        "resources": {
            "type": "object",
            "properties": {"requests": {"type": "object"}, "limits": {"type": "object"}},
        },
    },
}
_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {"containers": {"type": "array", "minItems": 1, "items": _CONTAINER}},
        }
    },
}


def _closed(properties: dict, required: list[str]) -> dict:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


_ANY = {}
RAYSERVICE_V1 = _closed(
    {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayService"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": _closed(
            {
                "serveConfigV2": {"type": "string"},
                "rayClusterConfig": _closed(
                    {
                        "headGroupSpec": _closed(
                            {
                                "rayStartParams": _STRINGS,
                                "template": _TEMPLATE,
                                **dict.fromkeys(
                                    ["enableIngress", "headService", "ingressOptions", "labels"]
                                    + ["resources", "serviceType"],
                                    _ANY,
                                ),
                            },
                            ["template"],
                        ),
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": _closed(
                                {
                                    "groupName": {"type": "string"},
                                    "replicas": {"type": "integer", "minimum": 0},
                                    "minReplicas": {"type": "integer", "minimum": 0},
                                    "maxReplicas": {"type": "integer", "minimum": 0},
                                    "rayStartParams": _STRINGS,
                                    "template": _TEMPLATE,
                                    **dict.fromkeys(
                                        ["idleTimeoutSeconds", "labels", "numOfHosts"]
                                        + ["priority", "resources", "scaleStrategy", "suspend"],
                                        _ANY,
                                    ),
                                },
                                ["groupName", "maxReplicas", "minReplicas", "template"],
                            ),
                        },
                        "rayVersion": {"type": "string"},
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        **dict.fromkeys(
                            ["authOptions", "autoscalerOptions", "gcsFaultToleranceOptions"]
                            + ["headServiceAnnotations", "historyServerOptions", "managedBy"]
                            + ["networkPolicy", "suspend", "tlsOptions", "upgradeStrategy"],
                            _ANY,
                        ),
                    },
                    ["headGroupSpec"],
                ),
                **dict.fromkeys(
                    ["deploymentUnhealthySecondThreshold", "excludeHeadPodFromServeSvc"]
                    + ["managedBy", "rayClusterDeletionDelaySeconds", "serveService"]
                    + ["serviceUnhealthySecondThreshold", "suspend", "upgradeStrategy"],
                    _ANY,
                ),
            },
            ["rayClusterConfig"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((DEPLOY / "kuberay" / "rayservice.yaml").read_text())


def test_the_rayservice_manifest_has_what_kuberay_requires(manifest):
    jsonschema.validate(manifest, RAYSERVICE_V1)
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no replicas there
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "groupName"), None),  # required
        (("spec", "rayClusterConfig", "headGroupSpec", "rayStartParams", "num-cpus"), 0),
        (("spec", "rayClusterConfig", "headGroupSpec", "templat"), {}),  # misspelt
        (("spec", "serveConfigV2"), {"applications": []}),  # a string of YAML, not a mapping
    ],
)
def test_the_schema_refuses_what_kuberay_would(manifest, path, value):
    broken = copy.deepcopy(manifest)
    node = broken
    for step in path[:-1]:
        node = node[step]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, RAYSERVICE_V1)


def test_serve_config_v2_is_deploy_serve_yaml_application(manifest):
    from ray.serve.schema import ServeDeploySchema

    embedded = ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    local = ServeDeploySchema.model_validate(yaml.safe_load((DEPLOY / "serve.yaml").read_text()))
    assert [a.model_dump() for a in embedded.applications] == [
        a.model_dump() for a in local.applications
    ]


def test_the_manifest_and_its_image_name_the_installed_ray(manifest):
    import ray

    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__
    base = re.search(
        r"^FROM rayproject/ray:(\S+)", (DEPLOY / "kuberay" / "Dockerfile").read_text(), re.M
    )
    assert base is not None and base.group(1).startswith(ray.__version__ + "-py311")
