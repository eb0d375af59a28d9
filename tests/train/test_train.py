"""The base run on a tiny random Llama: loss, schedule, determinism, resume, checkpoint layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainingArguments

import swiftstudy.train.trainer as trainer_module
from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy.cli.main import main
from swiftstudy.data import Example, Message, tokenize_examples
from swiftstudy.errors import InputError
from swiftstudy.gradients import collate
from swiftstudy.model import discover_checkpoints
from swiftstudy.study import run_study
from swiftstudy.train import run_training
from swiftstudy.train.data import CompletionCollator, EpochSampler, choose_micro_batch_size
from swiftstudy.train.trainer import CompletionLossModel, CompletionTrainer, LinearWarmupDecay

SPEC = {
    "model": "base",
    "data": ["add.jsonl"],
    "lora": {"r": 4, "alpha": 8},
    "lr": 0.01,
    "min_lr": 0.001,
    "warmup_steps": 1,
    "max_steps": 4,
    "batch_size": 2,
    "micro_batch_size": 1,
    "save_steps": 2,
    "device": "cpu",
}


def _rows(prefix: str, n: int) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "task": f"t{i % 3}",
            "prompt": f"What is {i} plus {i}?" + " Please output the reason first." * (i % 2),
            "response": f"The answer is {2 * i}.",
        }
        for i in range(n)
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_spec(root: Path, name: str = "train.yaml", **changes) -> Path:
    spec = {**SPEC, **changes}
    spec = {k: v for k, v in spec.items() if v is not None}
    (root / name).write_text(yaml.safe_dump(spec))
    return root / name


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


@pytest.fixture()
def train_dir(tmp_path: Path) -> Path:
    """A tiny base model folder, two data files and a spec."""
    tokenizer = build_tiny_tokenizer()
    base = build_tiny_llama(len(tokenizer), seed=0)
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    _write_jsonl(tmp_path / "add.jsonl", _rows("a", 6))
    _write_jsonl(tmp_path / "more.jsonl", _rows("b", 2))
    _write_spec(tmp_path)
    return tmp_path


# -- loss and data ---------------------------------------------------------------------------


def _tokenized(tokenizer, n: int = 4):
    examples = [
        Example(
            str(i), "t", (Message("user", f"What is {i} plus {i}?" * (i + 1)),), f"{2 * i}", "x"
        )
        for i in range(n)
    ]
    return tokenize_examples(examples, tokenizer)


def test_collator_pads_like_the_study_engine(tiny_tokenizer):
    toks = _tokenized(tiny_tokenizer)
    batch = CompletionCollator(pad_id=0)(toks)
    reference = collate([(t.input_ids, t.completion_mask) for t in toks], range(4), pad_id=0)
    assert set(batch) == {"input_ids", "attention_mask", "completion_mask"}
    assert torch.equal(batch["input_ids"], reference.input_ids)
    assert torch.equal(batch["attention_mask"], reference.attention_mask)
    assert torch.equal(batch["completion_mask"], reference.completion_mask)


def test_loss_is_the_completion_token_mean_of_a_naive_reference(tiny_tokenizer, tmp_path):
    """Only completion tokens count: the loss equals cross-entropy on exactly those positions."""
    model = build_tiny_llama(len(tiny_tokenizer), dtype=torch.float64)
    toks = _tokenized(tiny_tokenizer)
    batch = CompletionCollator(pad_id=tiny_tokenizer.pad_token_id)(toks)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = CompletionTrainer(
        model=CompletionLossModel(model),
        args=args,
        sampler=EpochSampler([4], "mixed", 0),
        warmup_steps=0,
        min_lr=0.0,
    )
    loss = trainer.compute_loss(trainer.model, batch)

    total, count = 0.0, 0
    for t in toks:
        ids = torch.tensor([t.input_ids])
        logprobs = F.log_softmax(model(input_ids=ids).logits[0], dim=-1)
        for pos, scored in enumerate(t.completion_mask):
            if scored:
                total -= logprobs[pos - 1, t.input_ids[pos]].item()
                count += 1
    assert count == sum(t.n_completion_tokens for t in toks) < sum(len(t.input_ids) for t in toks)
    assert loss.item() == pytest.approx(total / count, rel=1e-12)


def test_step_does_not_depend_on_how_the_batch_is_split(train_dir):
    """Token-mean over the whole step: 1 micro-batch of 4 equals 4 accumulated micro-batches."""
    common = {"max_steps": 1, "warmup_steps": 0, "batch_size": 4, "save_steps": 1}
    whole = _write_spec(train_dir, "whole.yaml", micro_batch_size=4, **common)
    split = _write_spec(train_dir, "split.yaml", micro_batch_size=1, **common)
    run_training(whole, train_dir / "whole", progress=False)
    run_training(split, train_dir / "split", progress=False)
    a, b = _adapter(train_dir / "whole/checkpoint-1"), _adapter(train_dir / "split/checkpoint-1")
    assert any(key.endswith("lora_B.weight") and a[key].abs().max() > 0 for key in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7)


def test_epoch_sampler_orders():
    mixed = EpochSampler([4, 3], "mixed", seed=1)
    assert sorted(mixed.order(0)) == list(range(7))
    assert mixed.order(0) == EpochSampler([4, 3], "mixed", seed=1).order(0)
    assert mixed.order(0) != mixed.order(1)
    assert any(i >= 4 for i in mixed.order(0)[:4]) or any(i >= 4 for i in mixed.order(1)[:4])
    sequential = EpochSampler([4, 3], "sequential", seed=1)
    for epoch in range(3):
        order = sequential.order(epoch)
        assert sorted(order[:4]) == [0, 1, 2, 3] and sorted(order[4:]) == [4, 5, 6]
    assert sequential.order(0) != sequential.order(1)
    sequential.set_epoch(2)
    assert list(sequential) == sequential.order(2)


def test_choose_micro_batch_size():
    assert choose_micro_batch_size(32, longest=60, batch_tokens=2048, cap=8) == 8
    assert choose_micro_batch_size(32, longest=600, batch_tokens=2048, cap=8) == 2
    assert choose_micro_batch_size(12, longest=60, batch_tokens=2048, cap=8) == 6
    assert choose_micro_batch_size(7, longest=5000, batch_tokens=2048, cap=8) == 1


def test_lr_warms_up_then_decays_linearly_to_min_lr():
    factor = LinearWarmupDecay(warmup_steps=2, total_steps=6, floor=0.1)
    assert [factor(s) for s in range(6)] == pytest.approx([0, 0.5, 1, 0.7, 0.4, 0.1])


# -- training runs ---------------------------------------------------------------------------


def test_run_writes_a_series_that_peft_and_the_study_read(train_dir):
    result = run_training(train_dir / "train.yaml", train_dir / "out", progress=False)
    out = train_dir / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint-2",
        "checkpoint-4",
        "train_config.yaml",
    ]
    series = discover_checkpoints(out)
    assert [(c.step, c.kind) for c in series] == [(2, "adapter"), (4, "adapter")]
    assert [c.step for c in result.checkpoints] == [2, 4]
    assert [step for step, _ in result.losses] == [1, 2, 3, 4]

    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    history = [e for e in state["log_history"] if "loss" in e]
    assert [e["step"] for e in history] == [1, 2, 3, 4]
    # Warm-up from 0 for one step, then linear decay reaching min_lr on the last update.
    assert [e["learning_rate"] for e in history] == pytest.approx([0, 0.01, 0.0055, 0.001])
    assert all(e["epoch"] > 0 for e in history)

    config = yaml.safe_load((out / "train_config.yaml").read_text())
    assert config["spec"]["lora"] == {
        "r": 4,
        "alpha": 8,
        "dropout": 0.0,
        "targets": ["up_proj", "down_proj"],
    }
    assert config["gradient_accumulation_steps"] == 2 and len(config["data_sha256"][0]) == 64
    assert config["device"] == "cpu" and config["spec"]["device"] == "cpu"

    base = AutoModelForCausalLM.from_pretrained(train_dir / "base")
    peft_model = PeftModel.from_pretrained(base, out / "checkpoint-4")
    saved = _adapter(out / "checkpoint-4")
    loaded = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(saved) == 8
    for name, tensor in saved.items():
        torch.testing.assert_close(loaded[name.replace(".weight", ".default.weight")], tensor)

    study = {
        "model": "base",
        "checkpoints": "out",
        "sets": {"add": {"path": "add.jsonl"}},
        "metrics": [{"name": "in", "probes": "add", "evals": "add", "context": "in-task"}],
    }
    (train_dir / "study.yaml").write_text(yaml.safe_dump(study))
    scores = run_study(train_dir / "study.yaml", train_dir / "study", progress=False).scores
    assert [row.step for row in scores] == [2, 4]
    assert all(row.value is not None for row in scores)


def test_same_seed_gives_the_same_losses_and_weights(train_dir):
    first = run_training(train_dir / "train.yaml", train_dir / "one", progress=False)
    second = run_training(train_dir / "train.yaml", train_dir / "two", progress=False)
    assert first.losses == second.losses
    a, b = _adapter(train_dir / "one/checkpoint-4"), _adapter(train_dir / "two/checkpoint-4")
    assert all(torch.equal(a[key], b[key]) for key in a)
    other = run_training(
        _write_spec(train_dir, "seed.yaml", seed=7), train_dir / "3", progress=False
    )
    assert other.losses != first.losses


@pytest.mark.parametrize("stop_after", [2, 3])
def test_resume_equals_an_uninterrupted_run(train_dir, monkeypatch, stop_after):
    """6 examples, 2 per step: stopped mid-epoch (2) or at its end (3), resumed to step 5."""
    spec = _write_spec(train_dir, max_steps=5, save_steps=1)
    straight = run_training(spec, train_dir / "straight", progress=False)

    real_step = trainer_module.CompletionTrainer.training_step
    calls = []

    def interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2 * stop_after:  # 2 micro-batches a step
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.CompletionTrainer, "training_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_training(spec, train_dir / "resumed", progress=False)
    monkeypatch.setattr(trainer_module.CompletionTrainer, "training_step", real_step)
    saved = [c.step for c in discover_checkpoints(train_dir / "resumed")]
    assert saved == list(range(1, stop_after + 1))

    resumed = run_training(spec, train_dir / "resumed", resume=True, progress=False)
    assert resumed.resumed_from == train_dir / "resumed" / f"checkpoint-{stop_after}"
    assert resumed.losses == straight.losses
    for step in range(stop_after + 1, 6):
        a = _adapter(train_dir / f"straight/checkpoint-{step}")
        b = _adapter(train_dir / f"resumed/checkpoint-{step}")
        assert all(torch.equal(a[key], b[key]) for key in a)

    # Resuming a finished run changes nothing (the Trainer alone would take one more step).
    again = run_training(spec, train_dir / "resumed", resume=True, progress=False)
    assert [c.step for c in again.checkpoints] == [1, 2, 3, 4, 5]
    assert again.losses == straight.losses


def test_sequential_schedule_visits_the_data_files_in_order(train_dir, monkeypatch):
    seen: list[str] = []
    real_call = CompletionCollator.__call__

    def record(self, examples):
        seen.extend(t.example.id for t in examples)
        return real_call(self, examples)

    monkeypatch.setattr(CompletionCollator, "__call__", record)
    spec = _write_spec(
        train_dir, data=["add.jsonl", "more.jsonl"], schedule="sequential", max_steps=None, epochs=2
    )
    run_training(spec, train_dir / "out", progress=False)
    assert len(seen) == 16
    for epoch in (seen[:8], seen[8:]):
        assert sorted(epoch[:6]) == [f"a{i}" for i in range(6)]
        assert sorted(epoch[6:]) == ["b0", "b1"]
    assert seen[:6] != seen[8:14]

    seen.clear()
    mixed = _write_spec(
        train_dir, "mixed.yaml", data=["add.jsonl", "more.jsonl"], max_steps=None, epochs=2
    )
    run_training(mixed, train_dir / "mixed", progress=False)
    assert sorted(seen) == sorted([f"a{i}" for i in range(6)] * 2 + ["b0", "b1"] * 2)
    assert any(i.startswith("b") for i in seen[:6] + seen[8:14])


def test_init_from_continues_an_adapter(train_dir):
    run_training(train_dir / "train.yaml", train_dir / "first", progress=False)
    # Warm-up gives the first update learning rate 0, so one step keeps the loaded weights.
    spec = _write_spec(train_dir, "next.yaml", init_from="first", max_steps=1, save_steps=1)
    run_training(spec, train_dir / "next", progress=False)
    start = _adapter(train_dir / "first/checkpoint-4")
    after = _adapter(train_dir / "next/checkpoint-1")
    assert all(torch.equal(start[key], after[key]) for key in start)

    other = _write_spec(train_dir, "other.yaml", init_from="first/checkpoint-2", lora={"r": 8})
    with pytest.raises(InputError, match=r"other.yaml:\d+: lora: init_from .* settings \(r: 4"):
        run_training(other, train_dir / "other", progress=False)
    assert not (train_dir / "other").exists()


def test_full_finetune_writes_full_model_checkpoints(train_dir):
    spec = _write_spec(train_dir, "full.yaml", full_finetune=True, lora=None, max_steps=2)
    run_training(spec, train_dir / "full", progress=False)
    series = discover_checkpoints(train_dir / "full")
    assert [(c.step, c.kind) for c in series] == [(2, "full")]
    folder = series[0].path
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not (folder / "adapter_config.json").exists()
    trained = AutoModelForCausalLM.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(train_dir / "base")
    changed = [
        name
        for (name, p), q in zip(trained.named_parameters(), base.parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert any("up_proj" in n for n in changed) and any("q_proj" in n for n in changed)

    again = _write_spec(
        train_dir, "again.yaml", full_finetune=True, lora=None, init_from="full", max_steps=1
    )
    run_training(again, train_dir / "again", progress=False)
    continued = AutoModelForCausalLM.from_pretrained(train_dir / "again/checkpoint-1")
    for p, q in zip(continued.parameters(), trained.parameters(), strict=True):
        assert torch.equal(p, q)  # lr 0 on the first warm-up step


def test_out_dir_holding_another_run_is_refused_unless_overwrite(train_dir):
    spec = train_dir / "train.yaml"
    out = train_dir / "out"
    run_training(spec, out, overrides=["max_steps=2"], progress=False)
    with pytest.raises(InputError, match=r"already holds checkpoints of this run .*--resume"):
        run_training(spec, out, overrides=["max_steps=2"], progress=False)
    with pytest.raises(InputError, match=r"different train config \(lr, max_steps\)"):
        run_training(spec, out, overrides=["max_steps=3", "lr=0.1"], progress=False)
    with pytest.raises(InputError, match="resume and overwrite contradict"):
        run_training(spec, out, resume=True, overwrite=True, progress=False)
    _write_jsonl(train_dir / "add.jsonl", _rows("c", 6))
    with pytest.raises(InputError, match=r"different train config \(the contents of data\)"):
        run_training(spec, out, overrides=["max_steps=2"], resume=True, progress=False)

    result = run_training(spec, out, overrides=["max_steps=3"], overwrite=True, progress=False)
    assert [c.step for c in result.checkpoints] == [2, 3]
    assert yaml.safe_load((out / "train_config.yaml").read_text())["spec"]["max_steps"] == 3

    foreign = train_dir / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"is not empty and has no train_config\.yaml"):
        run_training(spec, foreign, progress=False)


# -- command line ----------------------------------------------------------------------------


def test_cli_trains_and_lists_checkpoints(train_dir, capsys):
    out = train_dir / "out"
    status = main(
        ["-q", "train", str(train_dir / "train.yaml"), "--out", str(out), "--no-progress"]
    )
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("step      2  loss") and lines[-1] == f"checkpoints in {out}"
    config = yaml.safe_load((out / "train_config.yaml").read_text())
    assert config["command"].startswith("swiftstudy -q train ")


@pytest.mark.parametrize(
    ("args", "mutate", "expected"),
    [
        (["micro_batch_size=3"], None, "micro_batch_size: must divide batch_size (2)"),
        (["schedule=random"], None, "schedule: unknown value 'random'"),
        ([], lambda d: (d / "add.jsonl").write_text('{"prompt": "x"}\n'), "add.jsonl:1: response"),
        ([], lambda d: (d / "add.jsonl").unlink(), "add.jsonl: no such file"),
        (["init_from=nowhere"], None, "nowhere: init_from: no such folder"),
        (["model=./missing"], None, "missing: model: no such path"),
        (["lora.targets=[gate]"], None, "lora.targets: cannot apply LoRA"),
        (["max_length=2", "on_overflow=drop"], None, "data[0]: every example of"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(
    train_dir, capsys, args, mutate, expected
):
    if mutate is not None:
        mutate(train_dir)
    out = train_dir / "out"
    status = main(
        ["train", str(train_dir / "train.yaml"), "--out", str(out), "--no-progress", *args]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("swiftstudy: error: ") and expected in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not out.exists()


@pytest.mark.slow
def test_torchrun_with_two_processes_equals_one_process(train_dir):
    """DDP on CPU (gloo): 2 processes × 2 accumulated micro-batches = 1 process × 4."""
    spec = _write_spec(train_dir, batch_size=4, warmup_steps=0)
    single = run_training(spec, train_dir / "single", progress=False)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["-m", "swiftstudy", "-q", "train", str(spec), "--out", str(train_dir / "ddp")]
    done = subprocess.run(
        [*command, "--no-progress"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    config = yaml.safe_load((train_dir / "ddp" / "train_config.yaml").read_text())
    assert (config["world_size"], config["gradient_accumulation_steps"]) == (2, 2)
    for step in (2, 4):
        a = _adapter(train_dir / f"single/checkpoint-{step}")
        b = _adapter(train_dir / f"ddp/checkpoint-{step}")
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7)
    state = json.loads((train_dir / "ddp/checkpoint-4/trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert losses == pytest.approx([loss for _, loss in single.losses], rel=1e-6)
