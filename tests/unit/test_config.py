"""The config tree: defaults, YAML, environment overrides, and messages that name the field."""

from __future__ import annotations

import pytest

from runtime import ConfigError, load_config
from runtime.config import import_agent


def write(tmp_path, text):
    path = tmp_path / "raygent.yaml"
    path.write_text(text)
    return path


def test_defaults_serve_the_examples_on_the_tiny_model_with_in_process_cache():
    cfg = load_config(env={})
    assert [a.import_path for a in cfg.agents] == [
        "examples.research:Researcher",
        "examples.research:Writer",
        "examples.research:Critic",
        "examples.research:Archivist",
        "examples.assistant:Assistant",
    ]
    assert cfg.models["default"].source == "builtin:tiny"
    assert cfg.models["default"].load == "background"
    assert cfg.cache_url is None and cfg.queues_url is None
    for entry in cfg.agents:  # every default agent imports
        import_agent(entry.import_path)


def test_yaml_file_then_environment_win_in_that_order(tmp_path):
    path = write(
        tmp_path,
        """
models:
  default: {source: builtin:tiny, load: lazy, engine_args: {max_model_len: 512, dtype: float32}}
  big: {source: Qwen/Qwen2.5-0.5B-Instruct, fallback: default}
agents:
  - {import_path: examples.research:Writer, model: big, replicas: 2}
cache: {ttl_s: 60}
""",
    )
    env = {
        "RAYGENT_CONFIG": str(path),
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "RAYGENT__CACHE__TTL_S": "30",
        "RAYGENT_API_KEYS": "k1, k2",
    }
    cfg = load_config(env=env)
    assert cfg.models["default"].load == "lazy"
    assert cfg.models["default"].engine_args == {"max_model_len": 512, "dtype": "float32"}
    assert cfg.models["big"].fallback == "default"
    assert cfg.agents[0].replicas == 2 and cfg.agents[0].model == "big"
    assert cfg.cache.ttl_s == 30
    assert cfg.cache_url == cfg.queues_url == "redis://127.0.0.1:6379/0"
    assert [k.get_secret_value() for k in cfg.auth.api_keys] == ["k1", "k2"]
    assert "k1" not in repr(cfg)  # secrets do not leak into logs


def test_explicit_path_argument_beats_environment_variable(tmp_path):
    path = write(tmp_path, "limits: {max_tokens: 7}")
    cfg = load_config(path, env={"RAYGENT_CONFIG": "/nonexistent.yaml"})
    assert cfg.limits.max_tokens == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "models: {default: {load: sometimes}}",
            "models.default.load: Input should be 'lazy', 'background' or 'eager' "
            "(got 'sometimes')",
        ),
        (
            "limits: {max_tokens: 0}",
            "limits.max_tokens: Input should be greater than or equal to 1 (got 0)",
        ),
        ("cache: {ttl: 5}", "cache.ttl: unknown field; allowed: breaker_cooldown_s, breaker"),
        ("agents: [{import_path: 'not a path'}]", "agents[0].import_path: String should match"),
        (
            "agents: [{import_path: 'a:B', mailbox_size: -1}]",
            "agents[0].mailbox_size: Input should be greater than or equal to 1 (got -1)",
        ),
        (
            "models: {default: {warmup: {requests: many}}}",
            "models.default.warmup.requests: Input should be a valid integer",
        ),
        (
            "models: {default: {fallback: nope}}",
            "models.default.fallback = 'nope' is not a configured model; configured: ['default']",
        ),
        (
            "agents: [{import_path: 'a:B', model: gpt}]",
            "agents[0].model = 'gpt' is not a configured",
        ),
        (
            "agents: [{import_path: 'a:B', autoscaling: {min_replicas: 3, max_replicas: 2}}]",
            "min_replicas (3) must be <= max_replicas (2)",
        ),
        (
            "agents: [{import_path: 'a:B', nonsense: 1}]",
            "agents[0].nonsense: unknown field; allowed:",
        ),
    ],
)
def test_invalid_file_names_field_value_and_allowed(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert expected in str(e.value)
    assert str(path) in str(e.value)  # says where the bad value came from


def test_environment_errors_say_they_came_from_the_environment():
    with pytest.raises(ConfigError, match="environment: limits.max_body_bytes"):
        load_config(env={"RAYGENT__LIMITS__MAX_BODY_BYTES": "10"})


def test_unreadable_or_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", env={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "models: [unclosed"), env={})
    with pytest.raises(ConfigError, match="mapping at the top level, got list"):
        load_config(write(tmp_path, "- a\n- b"), env={})
    assert load_config(write(tmp_path, ""), env={}).models  # empty file: defaults


def test_import_agent_errors():
    with pytest.raises(ConfigError, match="cannot be imported"):
        import_agent("no_such_module:X")
    with pytest.raises(ConfigError, match="cannot be imported"):
        import_agent("examples.research:Nope")
    with pytest.raises(ConfigError, match="not an Agent subclass"):
        import_agent("examples.research:Report")


def test_every_field_is_documented():
    from pydantic import BaseModel

    from runtime import config

    sections = [
        v
        for v in vars(config).values()
        if isinstance(v, type)
        and issubclass(v, BaseModel)
        and v.__module__ == config.__name__
        and v.__name__ != "_Section"
    ]
    for section in sections:
        for name, field in section.model_fields.items():
            assert field.description, f"{section.__name__}.{name} has no docstring"
