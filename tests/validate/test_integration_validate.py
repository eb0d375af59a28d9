"""``swiftstudy validate`` on the bundled model: two short runs, answered and graded end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

import swiftstudy

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cot-mini"


def test_validate_two_short_runs_on_the_bundled_model(tmp_path: Path):
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

    result = swiftstudy.run_validation(tmp_path / "validate.yaml", tmp_path / "out", progress=False)

    assert [row.run for row in result.accuracy] == ["base", "base+cot"]
    assert all(row.n == 4 for row in result.accuracy)
    assert any(p.answer for p in result.predictions)  # the model says something
    with (tmp_path / "out" / "accuracy.csv").open() as handle:
        assert [r["run"] for r in csv.DictReader(handle)] == ["base", "base+cot"]
    for name in ("predictions.jsonl", "table.md", "config.yaml", "figures/accuracy.png"):
        assert (tmp_path / "out" / name).is_file()
