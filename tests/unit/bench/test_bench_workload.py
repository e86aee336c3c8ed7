"""Workloads: lengths, repeats, datasets, request bodies."""

from __future__ import annotations

import json

import pytest

from bench.harness import ConfigError, DatasetError, WorkloadConfig, make_workload
from bench.harness.workload import Job, build_body


def test_synthetic_prompt_lengths_and_uniqueness():
    wl = make_workload(WorkloadConfig(input_len=12, output_len=7, seed=1))
    jobs = [wl.next_job() for _ in range(20)]
    assert all(len(j.turns[0].split()) == 12 and j.max_tokens == 7 for j in jobs)
    assert len({j.turns[0] for j in jobs}) == 20


def test_same_seed_same_prompts():
    a = make_workload(WorkloadConfig(seed=5)).next_job()
    b = make_workload(WorkloadConfig(seed=5)).next_job()
    assert a.turns == b.turns


def test_repeats_come_only_from_completed_jobs():
    wl = make_workload(WorkloadConfig(repeat_fraction=0.9, seed=0))
    first = [wl.next_job() for _ in range(5)]
    assert not any(j.repeated for j in first)  # nothing completed yet
    wl.completed(first[0])
    again = [wl.next_job() for _ in range(50)]
    reps = [j for j in again if j.repeated]
    assert len(reps) > 30 and all(j.turns == first[0].turns for j in reps)


def test_models_round_robin():
    wl = make_workload(WorkloadConfig(models=["agent:a", "agent:b"]))
    assert [wl.next_job().model for _ in range(4)] == ["agent:a", "agent:b"] * 2


def test_dataset(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [
        {"prompt": "hi", "max_tokens": 3},
        {"messages": [{"role": "user", "content": "yo"}]},
        {"turns": ["a", "b"], "system": "be brief"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    wl = make_workload(WorkloadConfig(dataset=path, seed=0))
    jobs = [wl.next_job() for _ in range(3)]
    assert sorted(len(j.turns) for j in jobs) == [1, 1, 2]
    assert {j.max_tokens for j in jobs} >= {3}


def test_dataset_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt"}\n')
    with pytest.raises(DatasetError, match="bad.jsonl:1"):
        make_workload(WorkloadConfig(dataset=bad))
    with pytest.raises(DatasetError):
        make_workload(WorkloadConfig(dataset=tmp_path / "missing.jsonl"))


def test_invalid_configs():
    with pytest.raises(ConfigError, match="turns"):
        make_workload(WorkloadConfig(endpoint="completions", turns=2))
    with pytest.raises(ConfigError, match="repeat"):
        make_workload(WorkloadConfig(repeat_fraction=1.0))


def test_build_body():
    job = Job(0, "agent:x", ["hello"], 5, system="sys")
    body, msgs = build_body(job, 0, [], "chat", True, True, {"temperature": 0})
    d = json.loads(body)
    assert d["model"] == "agent:x" and d["max_tokens"] == 5 and d["ignore_eos"] is True
    assert d["stream"] is True and d["stream_options"] == {"include_usage": True}
    assert d["temperature"] == 0
    assert msgs == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]
    body, _ = build_body(job, 0, [], "completions", False, False)
    d = json.loads(body)
    assert d["prompt"] == "hello" and "stream" not in d
