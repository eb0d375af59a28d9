"""``swiftstudy train`` on the bundled model: the loss goes down and the series feeds a study."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from swiftstudy.study import run_study
from swiftstudy.train import run_training

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cot-mini"


def test_short_base_run_learns_and_its_series_is_studied(tmp_path: Path):
    shutil.copytree(EXAMPLE / "data", tmp_path / "data")
    spec = yaml.safe_load((EXAMPLE / "train.yaml").read_text())
    spec.update(max_steps=12, save_steps=4, batch_size=8, micro_batch_size=8, warmup_steps=2)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(spec))

    result = run_training(tmp_path / "train.yaml", tmp_path / "run", progress=False)

    assert [c.step for c in result.checkpoints] == [4, 8, 12]
    assert all((c.path / "adapter_model.safetensors").is_file() for c in result.checkpoints)
    losses = [loss for _, loss in result.losses]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3  # it learns the base tasks

    study = yaml.safe_load((EXAMPLE / "study.yaml").read_text())
    study["checkpoints"] = "run"
    study["metrics"] = study["metrics"][:2]
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, allow_unicode=True))
    scores = run_study(tmp_path / "study.yaml", tmp_path / "out", progress=False).scores
    assert [(r.step, r.n_pairs) for r in scores] == [
        (4, 8),
        (4, 56),
        (8, 8),
        (8, 56),
        (12, 8),
        (12, 56),
    ]
