"""SwiftStudyCallback: a study traced while SFTTrainer trains, from the live model.

Two proofs: the run with the callback is the run without it (final weights and logged losses
bit for bit on a CPU, with LoRA dropout on so a model left in eval mode or a consumed random
number would show), and the callback's tables are those of ``swiftstudy study`` on the
checkpoints the run saved at the same steps (a float64 run, to the engine's tolerance).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from peft import LoraConfig
from transformers import AutoModelForCausalLM, TrainerCallback
from trl import SFTTrainer

import swiftstudy
from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy.errors import InputError
from swiftstudy.study import run_study
from test_trl import EVAL_QA, LORA, sft_config, trl_rows, write_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

#: The study the callback traces: no model and no checkpoints, the run provides both.
METRICS = [
    {"name": "train → evals", "probes": "train", "evals": "evals", "context": "cross-task"},
    {"name": "train → train", "probes": "train", "evals": "train", "context": "in-task"},
]
#: Files a study writes (the report's figures aside).
STUDY_FILES = ("config.yaml", "norms.csv", "relinf.csv", "scores.csv", "tokens.jsonl")


def write_data(root: Path) -> dict:
    """The run's training data and the evals, as files, and the callback's spec over them."""
    # Tasks, so the in-task metric has pairs: 0 and 1 share one, 2 and 3 another.
    rows = [{**row, "task": "ab"[i // 2]} for i, row in enumerate(trl_rows("conversational"))]
    write_jsonl(root / "train.jsonl", rows)
    write_jsonl(root / "evals.jsonl", trl_rows("standard", EVAL_QA))
    return {
        "sets": {
            "train": {"path": str(root / "train.jsonl")},
            "evals": {"path": str(root / "evals.jsonl")},
        },
        "metrics": METRICS,
        "batch_size": 2,
    }


def sft_trainer(root: Path, name: str, *, dtype=torch.float32, callbacks=(), **config):
    """A tiny SFTTrainer LoRA run on the conversational rows (4 steps unless told)."""
    tokenizer = build_tiny_tokenizer()
    if not (root / "base").exists():
        build_tiny_llama(len(tokenizer), dtype=dtype).save_pretrained(root / "base")
        tokenizer.save_pretrained(root / "base")
    # Loaded from its folder, as a user's run loads its base: the callback names it by that path.
    base = AutoModelForCausalLM.from_pretrained(root / "base", dtype=dtype)
    settings = {"max_steps": 4, "logging_steps": 1, **config}
    return SFTTrainer(
        model=base,
        args=sft_config(root / name, **settings),
        train_dataset=datasets.Dataset.from_list(trl_rows("conversational")),
        processing_class=tokenizer,
        peft_config=LoraConfig(**LORA, lora_dropout=0.3),
        callbacks=list(callbacks),
    )


def trained_state(trainer: SFTTrainer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The trained weights and the log entries of the training steps (no timings)."""
    weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora" in n}
    logs = [
        {k: v for k, v in entry.items() if k in ("loss", "grad_norm", "learning_rate", "step")}
        for entry in trainer.state.log_history
        if "loss" in entry
    ]
    return weights, logs


class ReportWatcher(TrainerCallback):
    """Records, as each step begins (keyed by the steps done), the steps in scores.csv so far."""

    def __init__(self, out: Path) -> None:
        self.out, self.seen = out, {}

    def on_step_begin(self, args, state, control, **kwargs):
        scores = self.out / "scores.csv"
        rows = list(csv.DictReader(scores.open())) if scores.is_file() else []
        self.seen[state.global_step] = sorted({int(r["step"]) for r in rows})


@pytest.mark.slow
def test_the_run_is_unchanged_by_the_callback(tmp_path):
    spec = write_data(tmp_path)
    plain = sft_trainer(tmp_path, "plain")
    plain.train()
    callback = swiftstudy.SwiftStudyCallback(spec, tmp_path / "live", every_n_steps=1)
    traced = sft_trainer(tmp_path, "traced", callbacks=[callback])
    traced.train()

    weights, logs = trained_state(plain)
    traced_weights, traced_logs = trained_state(traced)
    assert len(logs) == 4 and logs == traced_logs
    assert weights.keys() == traced_weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, traced_weights[name]), name
    # The study happened at every step, on the model as it trained.
    assert [c.step for c in callback.result.checkpoints] == [1, 2, 3, 4]
    assert {r.step for r in callback.result.scores} == {1, 2, 3, 4}
    assert all(r.value is not None for r in callback.result.scores)
    assert callback.seconds > 0
    assert traced.model.training and any(p.requires_grad for p in traced.model.parameters())


@pytest.mark.slow
def test_the_callback_equals_a_study_of_the_saved_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = write_data(tmp_path)
    out = tmp_path / "live"
    callback = swiftstudy.SwiftStudyCallback(spec, out, update_report=True)
    watcher = ReportWatcher(out)
    trainer = sft_trainer(
        tmp_path,
        "run",
        dtype=torch.float64,
        callbacks=[callback, watcher],
        save_strategy="steps",
        save_steps=2,
    )
    trainer.train()
    # The report was updated as the run went: step 2's tables were there before step 3 began.
    assert watcher.seen == {0: [], 1: [], 2: [2], 3: [2]}
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    for name in (*STUDY_FILES, "report.html", "report.md", "verdicts.json"):
        assert (out / name).is_file(), name

    study_spec = {**spec, "model": str(tmp_path / "base"), "checkpoints": "run"}
    study_spec |= {"dtype": "float64", "device": "cpu"}
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump(study_spec, allow_unicode=True, sort_keys=False)  # the callback's set order
    )
    result = run_study(tmp_path / "study.yaml", tmp_path / "study", cache=False, progress=False)

    assert [c.step for c in callback.result.checkpoints] == [2, 4]
    assert [c.path for c in callback.result.checkpoints] == [c.path for c in result.checkpoints]
    tokens = [(d / "tokens.jsonl").read_text().splitlines() for d in (out, tmp_path / "study")]
    assert sorted(tokens[0]) == sorted(tokens[1])  # the same examples and tokens, any set order
    for ours, theirs in zip(callback.result.scores, result.scores, strict=True):
        assert (ours.metric, ours.step, ours.n_pairs) == (
            theirs.metric,
            theirs.step,
            theirs.n_pairs,
        )
        assert ours.value == pytest.approx(theirs.value, rel=1e-9)
    assert len(callback.result.relinf) == len(result.relinf) > 0
    for ours, theirs in zip(callback.result.relinf, result.relinf, strict=True):
        assert (ours.step, ours.probe_id, ours.eval_id) == (
            theirs.step,
            theirs.probe_id,
            theirs.eval_id,
        )
        assert ours.relinf == pytest.approx(theirs.relinf, rel=1e-9, abs=1e-12)
        assert ours.dot == pytest.approx(theirs.dot, rel=1e-9, abs=1e-15)

    # config.yaml records the run as a study of its checkpoints would, with the callback's time.
    config = yaml.safe_load((out / "config.yaml").read_text())
    study_config = yaml.safe_load((tmp_path / "study" / "config.yaml").read_text())
    assert config["spec"]["model"] == str(tmp_path / "base")
    assert config["spec"]["checkpoints"] == str(tmp_path / "run")
    assert config["spec"]["dtype"] == "float64"
    for key in ("step", "path", "kind", "sha256", "gradient_dim", "learning_rate"):
        assert [c[key] for c in config["checkpoints"]] == [
            c[key] for c in study_config["checkpoints"]
        ], key
    assert config["callback"]["every_n_steps"] is None and config["callback"]["seconds"] > 0
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert verdicts == json.loads((tmp_path / "study" / "verdicts.json").read_text())


def test_spec_without_model_and_checkpoints(tmp_path):
    spec = write_data(tmp_path)
    callback = swiftstudy.SwiftStudyCallback(spec, tmp_path / "out")
    assert [m.name for m in callback.spec.metrics] == [m["name"] for m in METRICS]
    # The study's own spec file, with its model and checkpoints, is taken as well.
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**spec, "model": "base", "checkpoints": "run"}))
    assert swiftstudy.SwiftStudyCallback(path, tmp_path / "out").spec.model == "base"


def test_bad_input_is_refused_before_training(tmp_path):
    spec = write_data(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**spec, "preconditioner": "adam"}))
    with pytest.raises(InputError, match=r"study\.yaml:\d+: preconditioner: adam needs"):
        swiftstudy.SwiftStudyCallback(path, tmp_path / "out")
    with pytest.raises(InputError, match="every_n_steps: must be a positive integer"):
        swiftstudy.SwiftStudyCallback(spec, tmp_path / "out", every_n_steps=0)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "config.yaml").write_text("spec: {}\n")
    with pytest.raises(InputError, match="out_dir: holds the results of a study"):
        swiftstudy.SwiftStudyCallback(spec, tmp_path / "done")
    swiftstudy.SwiftStudyCallback(spec, tmp_path / "done", overwrite=True)
    bad = {**spec, "metrics": [{**METRICS[1], "evals": "evals"}]}  # in-task: no shared task
    with pytest.raises(InputError, match=r"metrics\[0\]: metric 'train → train' has no pairs"):
        swiftstudy.SwiftStudyCallback(bad, tmp_path / "out")


def test_a_run_that_never_saves_needs_every_n_steps(tmp_path):
    spec = write_data(tmp_path)
    callback = swiftstudy.SwiftStudyCallback(spec, tmp_path / "out")
    trainer = sft_trainer(tmp_path, "run", callbacks=[callback], max_steps=1)
    with pytest.raises(InputError, match="save_strategy: the run never saves"):
        trainer.train()


_DDP_RUN = """
import json, os, sys
from pathlib import Path

import torch

sys.path.insert(0, sys.argv[2])
import conftest  # noqa: F401  (puts every test folder on sys.path)
from test_callback import sft_trainer
from swiftstudy import SwiftStudyCallback

root, rank = Path(sys.argv[1]), int(os.environ["RANK"])
spec = json.loads((root / "spec.json").read_text())
callback = SwiftStudyCallback(spec, root / f"live-rank{rank}")
trainer = sft_trainer(
    root, "run", dtype=torch.float64, callbacks=[callback], save_strategy="steps", save_steps=2,
    ddp_backend="gloo",
)
trainer.train()
rows = [[r.metric, r.step, r.value] for r in callback.result.scores]
(root / f"scores-rank{rank}.json").write_text(json.dumps(rows))
"""


@pytest.mark.slow
def test_under_torchrun_every_rank_studies_and_rank_0_writes(tmp_path):
    spec = write_data(tmp_path)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(len(tokenizer), dtype=torch.float64).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    script = tmp_path / "ddp_run.py"
    script.write_text(_DDP_RUN)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += [str(script), str(tmp_path), str(Path(__file__).parents[1])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0, rank1 = (json.loads((tmp_path / f"scores-rank{r}.json").read_text()) for r in (0, 1))
    assert rank0 == rank1 and {step for _, step, _ in rank0} == {2, 4}
    assert sorted(p.name for p in (tmp_path / "live-rank0").glob("*.*")) == sorted(
        (*STUDY_FILES, "report.html", "report.md", "verdicts.json")
    )
    assert not (tmp_path / "live-rank1").exists()
    # The same tables as a study of the checkpoints the run saved.
    study_spec = {**spec, "model": str(tmp_path / "base"), "checkpoints": str(tmp_path / "run")}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**study_spec, "dtype": "float64"}))
    result = run_study(tmp_path / "study.yaml", tmp_path / "study", cache=False, progress=False)
    assert len(result.scores) == len(rank0)
    for (metric, step, value), row in zip(rank0, result.scores, strict=True):
        assert (metric, step) == (row.metric, row.step)
        assert value == pytest.approx(row.value, rel=1e-9)
