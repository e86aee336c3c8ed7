"""Extract the schemas the gateway answers with from OpenAI's OpenAPI document.

The official document (github.com/openai/openai-openapi, ``openapi.yaml``) is 3 MB; the tests
need a few schemas of it. This script takes the roots below and every schema they reach through
``$ref`` (``#/components/schemas/...``), as the document writes them -- nothing is converted
here, so ``schemas.json`` is the spec's own text; the tests turn OpenAPI's dialect (``nullable``)
into JSON Schema when they load it (``tests/conftest.py``, fixture ``openai_spec``). The source
repository, path and commit are recorded in the output.

Run it again to move to a newer spec (a clone of the repository, bare or not)::

    python tests/data/openai/extract.py --git-dir /path/to/openai-openapi[/.git] --commit <sha>
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
)
"""What the gateway answers with: chat and text completions (whole and streamed), the model
list, and every error."""

REPOSITORY = "https://github.com/openai/openai-openapi"
SPEC_PATH = "openapi.yaml"
DEFAULT_GIT_DIR = "/work/.mirror/openai+openai-openapi/repo"
DEFAULT_COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"
OUT = Path(__file__).with_name("schemas.json")
_PREFIX = "#/components/schemas/"


def _git(git_dir: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", git_dir, *args], check=True, capture_output=True, text=True
    ).stdout


def _refs(node: Any) -> list[str]:
    """Names of the schemas ``node`` refers to, in document order."""
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                if not value.startswith(_PREFIX):
                    raise ValueError(f"a $ref outside components/schemas: {value}")
                found.append(value[len(_PREFIX) :])
            else:
                found.extend(_refs(value))
        return found
    if isinstance(node, list):
        return [name for item in node for name in _refs(item)]
    return []


def closure(schemas: dict[str, Any], roots: tuple[str, ...]) -> dict[str, Any]:
    """``roots`` and every schema they reach through ``$ref``, roots first."""
    out: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        out[name] = schemas[name]
        todo.extend(_refs(schemas[name]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--git-dir", default=DEFAULT_GIT_DIR, help="a clone of the spec's repo")
    parser.add_argument("--commit", default=DEFAULT_COMMIT, help="the commit to read")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    commit = _git(args.git_dir, "rev-parse", "--verify", f"{args.commit}^{{commit}}").strip()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader: seconds, not tens
    spec = yaml.load(_git(args.git_dir, "show", f"{commit}:{SPEC_PATH}"), Loader=loader)
    doc = {
        "source": {"repository": REPOSITORY, "path": SPEC_PATH, "commit": commit},
        "openapi": spec["openapi"],
        "info_version": spec["info"]["version"],
        "generated_by": "tests/data/openai/extract.py",
        "roots": list(ROOTS),
        "schemas": closure(spec["components"]["schemas"], ROOTS),
    }
    # default=str: YAML reads unquoted dates as dates; JSON has no such type.
    args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n")
    print(f"{args.out}: {len(doc['schemas'])} schemas from {REPOSITORY}@{commit[:12]}")


if __name__ == "__main__":
    main()
