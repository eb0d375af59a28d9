"""``kill -9`` a real ``swiftstudy study`` process, rerun it: the same tables, for less work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

from conftest import build_tiny_llama, build_tiny_tokenizer
from test_study import REL_ACROSS_BATCHES, assert_same_tables

N_CHECKPOINTS, N_PER_SET = 4, 12
N_GRADIENTS = N_CHECKPOINTS * 2 * N_PER_SET
WORK = re.compile(r"gradients: (\d+) computed, (\d+) from the cache, (\d+) checkpoint\(s\) resumed")


def _base_model(vocab_size: int) -> LlamaForCausalLM:
    """A Llama larger than conftest's default, so the study runs long enough to be killed."""
    return build_tiny_llama(vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=4)


def build_long_study(root: Path) -> Path:
    """Four adapter checkpoints, two sets of 12 examples of varied length; returns the spec."""
    tokenizer = build_tiny_tokenizer()
    _base_model(len(tokenizer)).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["up_proj", "down_proj"], init_lora_weights=False
    )
    for k in range(N_CHECKPOINTS):
        model = _base_model(len(tokenizer))
        torch.manual_seed(100 + k)
        get_peft_model(model, lora).save_pretrained(root / "run" / f"checkpoint-{10 * (k + 1)}")
    for question, name in (("What is {i} plus {i}? ", "probes"), ("Add {i} and {i}. ", "evals")):
        rows = [
            {
                "id": f"{name[0]}{i}",
                "task": f"t{i}",
                "prompt": question.format(i=i) * (1 + i % 4),
                "response": f"The answer is {2 * i}. " * (1 + i % 3),
            }
            for i in range(N_PER_SET)
        ]
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "model": "base",
        "checkpoints": "run",
        "sets": {"probes": {"path": "probes.jsonl"}, "evals": {"path": "evals.jsonl"}},
        "metrics": [
            {"name": "in", "probes": "probes", "evals": "evals", "context": "in-task"},
            {"name": "cross", "probes": "probes", "evals": "evals", "context": "cross-task"},
        ],
        "dtype": "float64",
        "batch_size": 2,
    }
    (root / "study.yaml").write_text(yaml.safe_dump(spec))
    return root / "study.yaml"


def _study(spec: Path, out: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "swiftstudy", "-q", "study", str(spec), "--out", str(out)]
    return [*command, "--no-progress", *extra]


def _kill_when(process: subprocess.Popen, ready, timeout_s: float = 300) -> None:
    """SIGKILL ``process`` as soon as ``ready()``; fail if it ends first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert process.poll() is None, "the study ended before it could be killed"
        assert time.monotonic() < deadline, "nothing was saved in time"
        time.sleep(0.005)
    process.kill()
    process.wait()
    assert process.returncode == -9


@pytest.fixture(scope="module")
def long_study(tmp_path_factory) -> tuple[Path, Path]:
    """The spec, and the result folder of an uninterrupted run of it without the cache."""
    root = tmp_path_factory.mktemp("long-study")
    spec = build_long_study(root)
    fresh = subprocess.run(
        _study(spec, root / "fresh", "--no-cache"), capture_output=True, text=True, timeout=600
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert f"gradients: {N_GRADIENTS} computed, 0 from the cache" in fresh.stdout
    return spec, root / "fresh"


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", ["a gradient is cached", "a checkpoint is done"])
def test_a_killed_study_resumes_to_an_uninterrupted_runs_tables(long_study, kill_after):
    spec, fresh = long_study
    name = kill_after.split()[1]
    cache, out = spec.parent / f"cache-{name}", spec.parent / f"out-{name}"
    env = {**os.environ, "SWIFTSTUDY_CACHE": str(cache)}

    def saved_rows() -> list[Path]:
        """Gradient rows (not the dot products beside them)."""
        return [p for p in cache.rglob("*.safetensors") if "dots" not in p.parts]

    def ready() -> bool:
        if kill_after == "a gradient is cached":
            return bool(saved_rows())
        return any((out / ".partial").glob("*.safetensors"))

    with (spec.parent / f"killed-{name}.log").open("w") as log:
        process = subprocess.Popen(_study(spec, out), env=env, stdout=log, stderr=log)
        _kill_when(process, ready)
    assert not (out / "scores.csv").exists()
    n_saved = len(saved_rows())
    assert 0 < n_saved < N_GRADIENTS

    rerun = subprocess.run(_study(spec, out), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    computed, cached, resumed = map(int, WORK.search(rerun.stdout).groups())
    assert computed == N_GRADIENTS - n_saved  # less work: nothing saved is computed again
    assert computed + cached + resumed * 2 * N_PER_SET == N_GRADIENTS
    if kill_after == "a checkpoint is done":
        assert resumed >= 1
    assert not (out / ".partial").exists()
    # The rows are bit for bit an uninterrupted run's, but those read back from the cache take
    # their dot products in other groupings than their batch's: other matmul shapes.
    assert_same_tables(out, fresh, rel=REL_ACROSS_BATCHES)
