"""``swiftstudy study`` on the bundled model and a two-checkpoint adapter series."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import add_random_lora
from swiftstudy.cli.main import main
from swiftstudy.model import load_base_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cot-mini"


def _save_series(root: Path) -> None:
    """Two LoRA states (r=64, alpha=512 on up/down) of the bundled model, steps 50 and 100."""
    for step, scale in ((50, 1e-3), (100, 2e-3)):
        model, _ = load_base_model("smollm2")
        peft_model, _ = add_random_lora(model, b_scale=scale, seed=step)
        peft_model.save_pretrained(root / f"checkpoint-{step}")


def test_study_on_bundled_model_writes_all_outputs(tmp_path: Path, capsys):
    _save_series(tmp_path / "run")
    shutil.copytree(EXAMPLE / "data", tmp_path / "data")
    spec = yaml.safe_load((EXAMPLE / "study.yaml").read_text())
    spec["checkpoints"] = "run"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    out = tmp_path / "out"

    status = main(["study", str(tmp_path / "study.yaml"), "--out", str(out), "--no-progress"])

    assert status == 0
    assert "results in" in capsys.readouterr().out
    scores = list(csv.DictReader((out / "scores.csv").open()))
    assert len(scores) == 2 * 4
    assert {int(r["n_pairs"]) for r in scores if r["context"] == "in-task"} == {8}
    assert {int(r["n_pairs"]) for r in scores if r["context"] == "cross-task"} == {56}
    assert all(math.isfinite(float(r["value"])) for r in scores)
    relinf = list(csv.DictReader((out / "relinf.csv").open()))
    assert len(relinf) == 2 * 2 * 64  # steps × probe sets × (8 × 8) pairs
    # An eval example's RelInf on itself would be 1; the in-task CoT probe is a different example,
    # so its values are finite and not all equal.
    assert len({r["relinf"] for r in relinf}) > 100
    tokens = [json.loads(line) for line in (out / "tokens.jsonl").open()]
    assert len(tokens) == 24
    for record in tokens:
        mask = record["completion_mask"]
        assert mask[0] == 0 and sum(mask) >= 2  # answer tokens plus <|im_end|>
        assert record["input_ids"][-1] == 2  # the completion ends with <|im_end|>
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert [c["gradient_dim"] for c in config["checkpoints"]] == [64 * (576 + 1536) * 2 * 30] * 2
    assert all(r["ci_low"] and r["ci_high"] for r in scores)
    assert all(float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) for r in scores)
    norms = list(csv.DictReader((out / "norms.csv").open()))
    assert len(norms) == 2 * 24 and all(float(r["sqnorm"]) > 0 for r in norms)
    # The report, rendered at the end of the study from the saved tables.
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert [m["metric"] for m in verdicts["metrics"]] == [m["name"] for m in spec["metrics"]]
    assert len(verdicts["comparisons"]) == 2  # CoT vs non-CoT, in-task and cross-task
    html = (out / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 5
    assert 'id="verdict-table"' in html and "Spearman" in html
    assert "## Summary" in (out / "report.md").read_text()
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        f"{stem}.{fmt}"
        for stem in (
            "metrics-by-step-similar",
            "relinf-heatmap-cot-on-similar",
            "relinf-heatmap-nocot-on-similar",
            "relinf-distribution-similar",
            "gradient-norms",
        )
        for fmt in ("png", "svg")
    )
