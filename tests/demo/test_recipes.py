"""The recipes: valid specs with the paper's metric names, wired to the right sets and contexts.

Each recipe runs on a tiny random model and two adapter checkpoints; every metric is recomputed
from the naive reference gradients (one example at a time, plain autograd) of the examples the
study scored.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy.cli.main import main
from swiftstudy.demo.recipes import RECIPES, write_recipes
from swiftstudy.gradients import compute_naive_gradients
from swiftstudy.study import load_study_spec, run_study
from swiftstudy.train import load_train_spec

EXPECTED = {
    "cot": [
        ("CoT → In-task non-CoT", "cot", "similar", "in-task"),
        ("CoT → Cross-task non-CoT", "cot", "similar", "cross-task"),
        ("non-CoT → In-task non-CoT", "nocot", "similar", "in-task"),
        ("non-CoT → Cross-task non-CoT", "nocot", "similar", "cross-task"),
    ],
    "clarify": [
        (f"{p} → {c} {e}", ps, es, ctx)
        for p, ps in (("Clarify", "clarify"), ("Pos", "pos"))
        for e, es in (("Pos", "similar_pos"), ("Neg", "similar_neg"))
        for c, ctx in (("In-task", "in-task"), ("Cross-task", "cross-task"))
    ],
    "eval": [
        (f"{p} → {c} {e}", ps, es, ctx)
        for p, ps in (("EvalPos", "eval_pos"), ("EvalNeg", "eval_neg"), ("Pos", "pos"))
        for e, es in (("Pos", "similar_pos"), ("Neg", "similar_neg"))
        for c, ctx in (("In-task", "in-task"), ("Cross-task", "cross-task"))
    ],
}
#: The paper's comparison set of each strategy: its metrics name it as their control.
CONTROLS = {
    "cot": {"cot": "nocot"},
    "clarify": {"clarify": "pos"},
    "eval": {"eval_pos": "pos", "eval_neg": "pos"},
}
SET_FILE_NAMES = {
    "nocot": "nocot.jsonl",
    "similar": "similar.jsonl",
    "similar_pos": "similar.jsonl",
    "similar_neg": "similar_neg.jsonl",
    "cot": "cot.jsonl",
    "pos": "pos.jsonl",
    "clarify": "pos.clarification.jsonl",
    "neg": "neg.jsonl",
    "eval_pos": "eval_pos.jsonl",
    "eval_neg": "eval_neg.jsonl",
}
STEPS = (5, 10)


@pytest.fixture(scope="module")
def recipes_dir(tmp_path_factory) -> Path:
    return write_recipes(tmp_path_factory.mktemp("recipes"), list(RECIPES)).directory


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_specs_name_the_papers_metrics_and_sets(recipes_dir: Path, name: str):
    spec = load_study_spec(recipes_dir / f"{name}.yaml")
    got = [(m.name, m.probes, m.evals, m.context) for m in spec.metrics]
    assert got == EXPECTED[name]
    assert [m.control for m in spec.metrics] == [CONTROLS[name].get(m.probes) for m in spec.metrics]
    for metric in spec.metrics:
        if metric.control is not None:
            control = spec.control_metric(metric)
            assert (control.probes, control.evals, control.context) == (
                metric.control,
                metric.evals,
                metric.context,
            )
    for set_spec in spec.sets:
        assert set_spec.path == recipes_dir / "data" / SET_FILE_NAMES[set_spec.name]
        assert set_spec.path.is_file()
    assert spec.model == "smollm2" and spec.checkpoints == recipes_dir / "runs" / "base"
    header = (recipes_dir / f"{name}.yaml").read_text(encoding="utf-8").split("\nmodel:")[0]
    assert all(line.startswith("#") for line in header.splitlines())
    assert f"swiftstudy study {recipes_dir}/{name}.yaml --out " in header
    assert f"swiftstudy train {recipes_dir}/train.yaml --out {recipes_dir}/runs/base" in header
    assert "swiftstudy probes --strategy" in header


def test_train_spec_is_a_short_lora_run_on_the_base_data(recipes_dir: Path):
    spec = load_train_spec(recipes_dir / "train.yaml")
    assert spec.model == "smollm2" and spec.data[0].path == recipes_dir / "data" / "base.jsonl"
    assert (spec.max_steps, spec.save_steps) == (20, 10)  # two checkpoints: 5 minutes
    assert (spec.lora.r, spec.lora.alpha, spec.lora.targets) == (64, 512, ("up_proj", "down_proj"))


def test_fewer_tasks_are_said_in_the_header_and_kept_in_every_set(
    recipes_dir: Path, tmp_path: Path
):
    files = write_recipes(tmp_path, ["eval"], tasks=4)
    assert "one example for each of 4 rule-made tasks" in files.specs["eval"].read_text("utf-8")
    assert "each of 12 rule-made tasks" in (recipes_dir / "eval.yaml").read_text("utf-8")
    for name in ("nocot", "eval_pos", "similar_neg"):
        assert len(files.data[name].read_text("utf-8").splitlines()) == 4, name


def test_init_writes_a_recipe_and_refuses_to_overwrite(tmp_path: Path, capsys):
    target = tmp_path / "my-study"
    assert main(["init", "--recipe", "clarify", str(target)]) == 0
    assert {p.name for p in target.iterdir()} == {"clarify.yaml", "train.yaml", "data"}
    header = (target / "clarify.yaml").read_text(encoding="utf-8")
    assert header.startswith("# The Clarify study")
    assert f"swiftstudy init --recipe clarify {target}" in header
    assert "swiftstudy study" in capsys.readouterr().out
    assert main(["init", "--recipe", "clarify", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["init", "--recipe", "clarify", str(target), "--overwrite"]) == 0
    assert main(["init", "--recipe", "cots", str(tmp_path / "other")]) == 2
    assert "unknown recipe 'cots'" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


# -- the wiring, on a tiny model ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny base model folder and a run of two adapter checkpoints."""
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(len(tokenizer), seed=0).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    config = LoraConfig(
        r=4, lora_alpha=32, target_modules=["up_proj", "down_proj"], init_lora_weights=False
    )
    for step in STEPS:
        model = build_tiny_llama(len(tokenizer), seed=0)
        torch.manual_seed(step)
        get_peft_model(model, config).save_pretrained(root / "run" / f"checkpoint-{step}")
    return root


def _naive_gradients(root: Path, step: int, sequences: dict) -> dict:
    model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float64)
    model = PeftModel.from_pretrained(model, root / "run" / f"checkpoint-{step}").eval()
    model.requires_grad_(False)
    modules = [
        m for n, m in model.named_modules() if n.endswith(("lora_A.default", "lora_B.default"))
    ]
    keys = list(sequences)
    grads = compute_naive_gradients(model, modules, [sequences[k] for k in keys])
    return dict(zip(keys, grads, strict=True))


@pytest.mark.slow  # 20-40 s each: a study and its report per recipe
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_metrics_equal_relinf_from_the_naive_reference(
    recipes_dir: Path, tiny_run: Path, tmp_path: Path, name: str
):
    out = tmp_path / name
    overrides = [f"model={tiny_run / 'base'}", f"checkpoints={tiny_run / 'run'}", "dtype=float64"]
    run_study(recipes_dir / f"{name}.yaml", out, overrides=overrides, progress=False)

    tokens = [json.loads(line) for line in (out / "tokens.jsonl").open(encoding="utf-8")]
    sequences = {(t["set"], t["id"]): (t["input_ids"], t["completion_mask"]) for t in tokens}
    task = {(t["set"], t["id"]): t["task"] for t in tokens}
    scores = list(csv.DictReader((out / "scores.csv").open(encoding="utf-8")))
    assert [(r["metric"], r["probes"], r["evals"], r["context"]) for r in scores] == [
        m for _ in STEPS for m in EXPECTED[name]
    ]
    for step in STEPS:
        grads = _naive_gradients(tiny_run, step, sequences)
        for row in (r for r in scores if r["step"] == str(step)):
            probes = [k for k in grads if k[0] == row["probes"]]
            evals = [k for k in grads if k[0] == row["evals"]]
            assert len(probes) == len(evals) == 12
            values = [
                float(grads[p] @ grads[e] / (grads[e] @ grads[e]))
                for p in probes
                for e in evals
                if (task[p] == task[e]) == (row["context"] == "in-task")
            ]
            assert (
                int(row["n_pairs"]) == len(values) == (12 if row["context"] == "in-task" else 132)
            )
            assert float(row["value"]) == pytest.approx(sum(values) / len(values), rel=1e-8)
    verdicts = json.loads((out / "verdicts.json").read_text(encoding="utf-8"))["headline"]
    expected = [(n, CONTROLS[name][p]) for n, p, _, _ in EXPECTED[name] if p in CONTROLS[name]]
    assert [(v["metric"], v["control"]) for v in verdicts["verdicts"]] == expected
    for verdict in verdicts["verdicts"]:
        assert verdict["verdict"] in {
            f"{word} than {verdict['control']}" for word in ("helps more", "no better", "worse")
        }
