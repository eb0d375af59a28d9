"""``swiftstudy validate``: the device ``auto`` resolved to in ``config.yaml``, and the model's
loading keys (``revision``, ``trust_remote_code``, ``attn_implementation``) reaching training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import swiftstudy.validate.run as run_module
from swiftstudy.validate import run_validation
from test_validate_run import _write_spec, write_base_and_data

ONE_RUN = [{"name": "base", "data": ["add.jsonl"]}]


@pytest.fixture()
def validate_dir(tmp_path: Path) -> Path:
    """A tiny base model folder, training data, an eval set and a spec (``device: cpu``)."""
    write_base_and_data(tmp_path, evals=3)
    _write_spec(tmp_path, runs=ONE_RUN)
    return tmp_path


def test_config_records_the_device_auto_resolved_to(validate_dir: Path):
    spec = _write_spec(validate_dir, device="auto", runs=ONE_RUN)
    out = validate_dir / "out"
    run_validation(spec, out, loss_only=True, progress=False)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["spec"]["device"] == "auto"  # the spec as written: the run's identity
    assert config["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_a_named_device_is_recorded_as_named(validate_dir: Path):
    out = validate_dir / "out"
    run_validation(validate_dir / "validate.yaml", out, loss_only=True, progress=False)
    assert yaml.safe_load((out / "config.yaml").read_text())["device"] == "cpu"


def test_loading_keys_reach_each_runs_training_and_config(validate_dir: Path, monkeypatch):
    loaded: list[str | None] = []
    real = run_module.run_training

    def recording(spec, out_dir, **kwargs):
        loaded.append(spec.attn_implementation)
        return real(spec, out_dir, **kwargs)

    monkeypatch.setattr(run_module, "run_training", recording)
    runs = [*ONE_RUN, {"name": "cont", "init_from": "base", "data": ["more.jsonl"]}]
    spec = _write_spec(validate_dir, attn_implementation="eager", runs=runs)
    out = validate_dir / "out"
    run_validation(spec, out, loss_only=True, progress=False)
    assert loaded == ["eager", "eager"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["spec"]["attn_implementation"] == "eager"
    train_config = yaml.safe_load((out / "runs" / "cont" / "train_config.yaml").read_text())
    assert train_config["spec"]["attn_implementation"] == "eager"


def test_loading_keys_reach_the_model_that_scores_answers(validate_dir: Path, monkeypatch):
    import swiftstudy.validate.generation as generation_module

    options = []
    real = generation_module.load_base_model

    def recording(name, **kwargs):
        options.append(kwargs["options"])
        return real(name, **kwargs)

    monkeypatch.setattr(generation_module, "load_base_model", recording)
    spec = _write_spec(validate_dir, attn_implementation="eager", runs=ONE_RUN)
    run_validation(spec, validate_dir / "out", loss_only=True, progress=False)
    assert [o.attn_implementation for o in options] == ["eager"]
