"""Projected and Adam-preconditioned studies, checked against the naive reference gradients.

The references are built here from the naive loop, a dense projection matrix and Adam's formula
written out by hand on the moments read straight from each ``optimizer.pt``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from swiftstudy.cli.main import main
from swiftstudy.data import load_examples, tokenize_examples
from swiftstudy.gradients import compute_naive_gradients, rademacher_rows
from swiftstudy.study import StudyWork, run_study
from test_study import REL_ACROSS_BATCHES, assert_same_tables, build_study_dir, edit_spec
from test_study_distributed import _torchrun

BETAS, EPS = (0.9, 0.999), 1e-8


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SWIFTSTUDY_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def study_dir(tmp_path: Path) -> Path:
    """``test_study``'s float64 study, its checkpoints given an AdamW state of two steps."""
    root = build_study_dir(tmp_path)
    for step, seed in ((10, 3), (20, 4)):
        _write_optimizer(root, step, seed)
    return root


def _peft(root: Path, step: int) -> PeftModel:
    model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float64)
    return PeftModel.from_pretrained(model, root / "run" / f"checkpoint-{step}").eval()


def _write_optimizer(root: Path, step: int, seed: int) -> None:
    """An AdamW state over the adapter's weights in parameter order, as the Trainer saves it."""
    params = [p for n, p in _peft(root, step).named_parameters() if "lora_" in n]
    optimizer = torch.optim.AdamW([p.requires_grad_() for p in params], lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype) * 1e-2
        optimizer.step()
    torch.save(optimizer.state_dict(), root / "run" / f"checkpoint-{step}" / "optimizer.pt")


def _reference(root: Path, step: int) -> dict[str, torch.Tensor]:
    """Naive float64 gradients of both sets, the probes' token counts and Adam directions."""
    model = _peft(root, step)
    model.requires_grad_(False)
    modules = [
        m for n, m in model.named_modules() if n.endswith(("lora_A.default", "lora_B.default"))
    ]
    tokenizer = AutoTokenizer.from_pretrained(root / "base")
    out = {}
    for name in ("cot", "nocot"):
        toks = tokenize_examples(load_examples(root / f"{name}.jsonl"), tokenizer)
        sequences = [(t.input_ids, t.completion_mask) for t in toks]
        out[name] = compute_naive_gradients(model, modules, sequences)
        out[f"{name}_tokens"] = torch.tensor(
            [sum(m[1:]) for _, m in sequences], dtype=torch.float64
        )
    state = torch.load(root / "run" / f"checkpoint-{step}" / "optimizer.pt", weights_only=True)
    order = state["param_groups"][0]["params"]
    m = torch.cat([state["state"][i]["exp_avg"].reshape(-1) for i in order]).double()
    v = torch.cat([state["state"][i]["exp_avg_sq"].reshape(-1) for i in order]).double()
    g = out["cot"] / out["cot_tokens"][:, None]
    m_new = BETAS[0] * m + (1 - BETAS[0]) * g
    v_new = BETAS[1] * v + (1 - BETAS[1]) * g * g
    out["cot_adam"] = m_new / torch.sqrt(v_new + EPS)
    return out


def _relinf(out: Path) -> dict[tuple[int, int, int], dict[str, float]]:
    return {
        (int(r["step"]), int(r["probe_id"]), int(r["eval_id"])): {
            k: float(r[k]) for k in ("dot", "eval_sqnorm", "relinf")
        }
        for r in csv.DictReader((out / "relinf.csv").open())
    }


def _check(out: Path, root: Path, probe_key: str, projection: tuple[int, int] | None) -> None:
    """Every relinf.csv row equals the reference built from ``probe_key`` rows."""
    rows = _relinf(out)
    assert len(rows) == 2 * 9
    for step in (10, 20):
        ref = _reference(root, step)
        probes, evals = ref[probe_key], ref["nocot"]
        if projection is not None:
            k, seed = projection
            matrix = rademacher_rows(seed, k, 0, probes.shape[1], dtype=torch.float64)
            probes, evals = probes @ matrix, evals @ matrix
        dots, sqnorms = probes @ evals.T, (evals * evals).sum(1)
        for i in range(3):
            for j in range(3):
                row = rows[step, i, j]
                assert row["dot"] == pytest.approx(float(dots[i, j]), rel=1e-9)
                assert row["eval_sqnorm"] == pytest.approx(float(sqnorms[j]), rel=1e-9)
                assert row["relinf"] == pytest.approx(float(dots[i, j] / sqnorms[j]), rel=1e-9)


def test_projected_study_equals_the_projected_reference(study_dir: Path):
    spec = edit_spec(study_dir, "projected.yaml", projection_dim=64, projection_seed=5)
    result = run_study(spec, study_dir / "projected", progress=False)
    assert result.work == StudyWork(computed=12)
    _check(study_dir / "projected", study_dir, "cot", (64, 5))
    config = yaml.safe_load((study_dir / "projected" / "config.yaml").read_text())
    assert config["projection"] == {
        "kind": "rademacher",
        "dim": 64,
        "seed": 5,
        "relative_error_bound": pytest.approx(2**-2.5),  # √(2/64)
    }
    assert [c["row_dim"] for c in config["checkpoints"]] == [64, 64]
    report = (study_dir / "projected" / "report.md").read_text()
    assert "k = 64 dimensions (seed 5)" in report and "18% of |a||b|" in report

    # The cache is keyed by the projection: the same one reads every row back, another computes.
    again = run_study(spec, study_dir / "again", progress=False)
    assert again.work == StudyWork(cached=12)
    assert_same_tables(study_dir / "again", study_dir / "projected", rel=0)  # as cached
    other = edit_spec(study_dir, "seed.yaml", projection_dim=64, projection_seed=6)
    assert run_study(other, study_dir / "seed", progress=False).work == StudyWork(computed=12)
    exact = run_study(study_dir / "study.yaml", study_dir / "exact", progress=False)
    assert exact.work == StudyWork(computed=12)
    projected = _relinf(study_dir / "projected")
    differences = [
        abs(v["dot"] - projected[k]["dot"]) for k, v in _relinf(study_dir / "seed").items()
    ]
    assert max(differences) > 0


def test_adam_study_preconditions_probes_only(study_dir: Path):
    spec = edit_spec(study_dir, "adam.yaml", preconditioner="adam")
    result = run_study(spec, study_dir / "adam", progress=False)
    assert result.work == StudyWork(computed=12)
    _check(study_dir / "adam", study_dir, "cot_adam", None)
    # Norms stay those of the raw gradients.
    ref = _reference(study_dir, 20)
    norms = {
        (r["set"], int(r["id"])): float(r["sqnorm"])
        for r in csv.DictReader((study_dir / "adam" / "norms.csv").open())
        if r["step"] == "20"
    }
    for i in range(3):
        assert norms["cot", i] == pytest.approx(float(ref["cot"][i] @ ref["cot"][i]), rel=1e-9)
    config = yaml.safe_load((study_dir / "adam" / "config.yaml").read_text())
    assert all(len(c["optimizer_key"]) == 64 for c in config["checkpoints"])
    assert "Adam update directions" in (study_dir / "adam" / "report.md").read_text()

    # Raw rows were cached on the way: the unpreconditioned study computes nothing.
    plain = run_study(study_dir / "study.yaml", study_dir / "plain", progress=False)
    assert plain.work == StudyWork(cached=12)
    # Another optimizer state at step 20 invalidates that step's adam rows, not the raw ones.
    _write_optimizer(study_dir, 20, seed=9)
    rerun = run_study(spec, study_dir / "adam-2", progress=False)
    assert rerun.work == StudyWork(computed=3, cached=9)
    _check(study_dir / "adam-2", study_dir, "cot_adam", None)


def test_adam_and_projection_together(study_dir: Path):
    spec = edit_spec(study_dir, "both.yaml", preconditioner="adam", projection_dim=32)
    run_study(spec, study_dir / "both", progress=False)
    _check(study_dir / "both", study_dir, "cot_adam", (32, 0))


def test_adam_without_optimizer_state_is_refused(study_dir: Path, capsys):
    (study_dir / "run" / "checkpoint-20" / "optimizer.pt").unlink()
    spec = edit_spec(study_dir, "adam.yaml", preconditioner="adam")
    out = study_dir / "out"
    assert main(["study", str(spec), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "adam.yaml" in err and "preconditioner" in err and "optimizer.pt" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"projection_dim": 0}, "projection_dim: must be at least 1"),
        ({"projection_dim": 8, "projection_seed": -1}, "projection_seed: must be at least 0"),
        ({"projection_seed": 2**64}, "projection_seed: must be below 2**64"),
        ({"preconditioner": "sgd"}, "preconditioner: unknown value 'sgd'"),
    ],
)
def test_bad_settings_name_their_key(study_dir: Path, capsys, changes, expected):
    spec = edit_spec(study_dir, "bad.yaml", **changes)
    assert main(["study", str(spec), "--out", str(study_dir / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "bad.yaml:" in err and expected in err


@pytest.mark.slow
def test_two_processes_with_adam_and_projection(study_dir: Path):
    spec = edit_spec(study_dir, "both.yaml", preconditioner="adam", projection_dim=32)
    run_study(spec, study_dir / "single", cache=False, progress=False)
    env = {**os.environ, "SWIFTSTUDY_CACHE": str(study_dir / "ddp-cache")}
    _torchrun(spec, study_dir / "ddp", env)
    assert_same_tables(study_dir / "ddp", study_dir / "single", rel=REL_ACROSS_BATCHES)  # ranks
    # At each step: 6 raw rows and 3 adam rows, each with its dot products with the 3 evals.
    files = list((study_dir / "ddp-cache").rglob("*.safetensors"))
    dots = [f for f in files if "dots" in f.parts]
    assert len(files) - len(dots) == len(dots) == 2 * (6 + 3)
