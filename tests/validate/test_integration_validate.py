"""``swiftstudy validate`` on the bundled model: two short runs, answered and graded end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

import swiftstudy
from conftest import run_in_vllm

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cot-mini"


def _write_two_runs(tmp_path: Path) -> dict:
    """The cot-mini data, four eval queries and a spec of two 2-step runs (written, returned)."""
    shutil.copytree(EXAMPLE / "data", tmp_path / "data")
    evals = [
        {
            "id": f"e{n}",
            "task": "after",
            "prompt": f"What number comes after {n}?",
            "response": n + 1,
        }
        for n in (7, 33, 71, 90)
    ]
    lines = "".join(json.dumps({**r, "response": str(r["response"])}) + "\n" for r in evals)
    (tmp_path / "eval.jsonl").write_text(lines)
    spec = {
        "model": "smollm2",
        "eval": {"path": "eval.jsonl", "evaluator": "numeric", "max_new_tokens": 8},
        "train": {
            "lr": 1e-4,
            "min_lr": 1e-6,
            "warmup_steps": 0,
            "max_steps": 2,
            "batch_size": 4,
            "micro_batch_size": 4,
            "lora": {"r": 8, "alpha": 16},
            "device": "cpu",
        },
        "runs": [
            {"name": "base", "data": ["data/base.jsonl"]},
            {"name": "base+cot", "data": ["data/base.jsonl", "data/cot.jsonl"]},
        ],
        "device": "cpu",
    }
    (tmp_path / "validate.yaml").write_text(yaml.safe_dump(spec))
    return spec


def test_validate_two_short_runs_on_the_bundled_model(tmp_path: Path):
    _write_two_runs(tmp_path)

    result = swiftstudy.run_validation(tmp_path / "validate.yaml", tmp_path / "out", progress=False)

    assert [row.run for row in result.accuracy] == ["base", "base+cot"]
    assert all(row.n == 4 for row in result.accuracy)
    assert any(p.answer for p in result.predictions)  # the model says something
    with (tmp_path / "out" / "accuracy.csv").open() as handle:
        assert [r["run"] for r in csv.DictReader(handle)] == ["base", "base+cot"]
    for name in ("predictions.jsonl", "table.md", "config.yaml", "figures/accuracy.png"):
        assert (tmp_path / "out" / name).is_file()


def test_validate_answers_with_vllm_as_with_transformers(tmp_path: Path, vllm_python):
    """The same two checkpoints answered with eval.backend vllm (vLLM, LoRA per request) and hf
    (transformers, the adapter merged): the same answers, and vLLM's decoding speed recorded."""
    spec = _write_two_runs(tmp_path)
    spec["eval"]["max_new_tokens"] = 16
    (tmp_path / "validate.yaml").write_text(yaml.safe_dump(spec))
    by_hf = swiftstudy.run_validation(tmp_path / "validate.yaml", tmp_path / "hf", progress=False)
    spec["runs"] = [{"name": o.name, "checkpoint": str(o.checkpoint.path)} for o in by_hf.runs]
    spec["eval"]["backend"] = "vllm"
    (tmp_path / "vllm.yaml").write_text(yaml.safe_dump(spec))

    run_in_vllm(
        vllm_python, "-m", "swiftstudy", "validate", tmp_path / "vllm.yaml", "--out",
        tmp_path / "vllm",
    )  # fmt: skip

    def answers(out: str) -> dict[tuple[str, str], str]:
        lines = (tmp_path / out / "predictions.jsonl").read_text().splitlines()
        return {(r["run"], r["id"]): r["answer"] for r in map(json.loads, lines)}

    assert answers("vllm") == answers("hf")
    assert any(answers("hf").values())
    config = yaml.safe_load((tmp_path / "vllm" / "config.yaml").read_text())
    assert config["spec"]["eval"]["backend"] == "vllm"
    assert all(run["decoding"]["tokens_per_second"] > 0 for run in config["runs"])
