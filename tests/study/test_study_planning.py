"""The memory plan logged before a study, and the batch budget chosen for ``max_memory_gb``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from swiftstudy.cli.main import main
from swiftstudy.model import GradientWorkload, ModelShape, plan_memory
from swiftstudy.study import run_study
from test_study import _count_engine_calls, build_study_dir

# The tiny model of build_study_dir: conftest's build_tiny_llama with LoRA r=4 on up/down_proj.
_GIB = 1 << 30


def _with(root: Path, name: str, **keys) -> Path:
    spec = yaml.safe_load((root / "study.yaml").read_text())
    spec.update(keys)
    (root / name).write_text(yaml.safe_dump(spec, allow_unicode=True))
    return root / name


def _tiny_plan(root: Path, batch_tokens: int):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(root / "base")
    from transformers import AutoModelForCausalLM

    n_params = sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(root / "base").parameters()
    )
    shape = ModelShape.from_config(config, n_params, 8)  # the spec's float64
    # Six unique examples, of which the three evals are kept.
    return shape, plan_memory(
        shape, GradientWorkload(6, 4, ("down_proj", "up_proj"), 2, n_kept=3), batch_tokens
    )


def test_the_plan_is_logged_and_max_memory_picks_the_batch_budget(tmp_path, caplog, monkeypatch):
    root = build_study_dir(tmp_path)
    shape, at_64 = _tiny_plan(root, 64)
    # Room for a batch of 64 tokens but not 65: the study must batch under 64 padded tokens.
    limit = (
        at_64.peak
        + plan_memory(shape, GradientWorkload(6, 4, ("down_proj", "up_proj"), 2, n_kept=3), 65).peak
    ) / 2
    spec = _with(root, "fit.yaml", max_memory_gb=limit / _GIB)
    calls = _count_engine_calls(monkeypatch)
    with caplog.at_level(logging.INFO, logger="swiftstudy.study.planning"):
        run_study(spec, root / "fit", cache=False, progress=False)
    text = caplog.text
    assert "memory plan (gradient dimension" in text and "64 tokens" in text
    assert "of max_memory" in text
    assert sum(calls) == 2 * 6  # two checkpoints, six unique examples
    # Without max_memory_gb the plan is still logged, at the CPU default budget.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="swiftstudy.study.planning"):
        run_study(root / "study.yaml", root / "default", progress=False)
    assert "512 tokens" in caplog.text


def test_max_memory_too_small_names_the_key(tmp_path, capsys):
    root = build_study_dir(tmp_path)
    spec = _with(root, "small.yaml", max_memory_gb=1e-6)
    capsys.readouterr()  # building the model folder printed progress
    assert main(["study", str(spec), "--out", str(root / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swiftstudy: error:") and "\n" not in err
    assert "small.yaml" in err and "max_memory_gb" in err
    assert not (root / "out").exists()


@pytest.mark.parametrize("value", [0, -1, "lots"])
def test_bad_max_memory_is_refused(tmp_path, capsys, value):
    root = build_study_dir(tmp_path)
    spec = _with(root, "bad.yaml", max_memory_gb=value)
    assert main(["study", str(spec), "--out", str(root / "out")]) == 2
    assert "max_memory_gb" in capsys.readouterr().err
