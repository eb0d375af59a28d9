"""``swiftstudy validate`` on tiny random Llamas: files, caching, generation, bad input."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel

import swiftstudy
import swiftstudy.validate.run as run_module
from conftest import add_random_lora, build_tiny_llama, build_tiny_tokenizer
from swiftstudy.cli.main import main
from swiftstudy.data import Message
from swiftstudy.errors import InputError
from swiftstudy.model import Checkpoint
from swiftstudy.validate.generation import (
    BaseModelStates,
    CheckpointGenerator,
    GenerationSettings,
)

TRAIN = {
    "lr": 0.01,
    "min_lr": 0.001,
    "warmup_steps": 0,
    "max_steps": 2,
    "batch_size": 2,
    "micro_batch_size": 1,
    "lora": {"r": 4, "alpha": 8},
    "device": "cpu",
}


def _rows(prefix: str, n: int) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "task": f"t{i % 2}",
            "prompt": f"What is {i} plus {i}?",
            "response": f"The answer is {2 * i}.",
        }
        for i in range(n)
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_spec(root: Path, **changes) -> Path:
    spec = {
        "model": "base",
        "eval": {"path": "eval.jsonl", "evaluator": "numeric", "max_new_tokens": 6},
        "train": TRAIN,
        "runs": [
            {"name": "base", "data": ["add.jsonl"]},
            {"name": "base+more", "data": ["add.jsonl", "more.jsonl"]},
            {"name": "cont", "init_from": "base", "data": ["more.jsonl"], "lr": 0.001},
        ],
        "device": "cpu",
        **changes,
    }
    path = root / "validate.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def write_base_and_data(root: Path, *, more: int = 2, evals: int = 5) -> None:
    """A tiny base model folder, ``add.jsonl`` (4 rows), ``more.jsonl`` and ``eval.jsonl``."""
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(len(tokenizer), seed=0).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    _write_jsonl(root / "add.jsonl", _rows("a", 4))
    _write_jsonl(root / "more.jsonl", _rows("b", more))
    _write_jsonl(root / "eval.jsonl", _rows("e", evals))


@pytest.fixture()
def validate_dir(tmp_path: Path) -> Path:
    """A tiny base model folder, training data, an eval set and a spec."""
    write_base_and_data(tmp_path)
    _write_spec(tmp_path)
    return tmp_path


@pytest.fixture()
def trainings(monkeypatch) -> list[str]:
    """The run folders ``run_training`` is called for, in order."""
    calls: list[str] = []
    real = run_module.run_training

    def counting(spec, out_dir, **kwargs):
        calls.append(Path(out_dir).name)
        return real(spec, out_dir, **kwargs)

    monkeypatch.setattr(run_module, "run_training", counting)
    return calls


def test_validate_writes_every_file_and_reuses_unchanged_runs(validate_dir, trainings, capsys):
    out = validate_dir / "out"
    status = main(["validate", str(validate_dir / "validate.yaml"), "--out", str(out)])
    assert status == 0
    assert trainings == ["base", "base-more-427877ae", "cont"]
    printed = capsys.readouterr().out
    assert "base+more" in printed and "results in" in printed

    with (out / "accuracy.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "run",
        "n",
        "correct",
        "accuracy",
        "ci_low",
        "ci_high",
        "delta",
        "p_value",
        "nll",
        "nll_per_token",
        "delta_nll",
        "delta_nll_low",
        "delta_nll_high",
    ]
    assert [r["run"] for r in rows] == ["base", "base+more", "cont"]
    assert all(float(r["nll"]) > 0 and float(r["nll_per_token"]) > 0 for r in rows)
    assert rows[0]["delta_nll"] == "0.0" and rows[0]["delta_nll_low"] == ""
    assert float(rows[1]["delta_nll_low"]) <= float(rows[1]["delta_nll"])
    assert all(r["n"] == "5" for r in rows)
    assert rows[0]["delta"] == "0.0" and rows[0]["p_value"] == ""
    assert all(
        0 <= float(r["ci_low"]) <= float(r["accuracy"]) <= float(r["ci_high"]) <= 1 for r in rows
    )
    predictions = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
    ]
    assert len(predictions) == 15
    assert set(predictions[0]) == {
        "run",
        "id",
        "task",
        "query",
        "golden",
        "answer",
        "correct",
        "extracted",
    }
    assert predictions[0]["golden"] == "The answer is 0."
    table = (out / "table.md").read_text()
    assert "| base+more |" in table and "| t0 | t1 |" in table and "| ΔNLL |" in table
    assert (out / "figures" / "accuracy.png").stat().st_size > 0
    assert not (out / "agreement.json").exists()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert [r["trained"] for r in config["runs"]] == [True, True, True]
    assert config["n_queries"] == 5 and config["quick"] is False and config["loss_only"] is False
    # Each run's decoding speed: recorded per run, and printed on its line.
    for run in config["runs"]:
        decoding = run["decoding"]
        assert decoding["answers"] == 5 and decoding["seconds"] > 0
        # At least the end-of-turn token (or one token) per answer, at most max_new_tokens.
        assert 5 <= decoding["tokens"] <= 5 * 6
        # tokens / seconds, within the rounding of seconds (to 1 ms) and of the speed (to 0.1).
        seconds, speed = decoding["seconds"], decoding["tokens_per_second"]
        low, high = decoding["tokens"] / (seconds + 5e-4), decoding["tokens"] / (seconds - 5e-4)
        assert low - 0.05 <= speed <= high + 0.05
    speeds = re.findall(r"decoding (\d+\.\d) tokens/s \((\d+) tokens in", printed)
    assert [int(n) for _, n in speeds] == [r["decoding"]["tokens"] for r in config["runs"]]
    # `cont` continued from `base`'s final checkpoint, through `swiftstudy train`.
    cont_config = yaml.safe_load((out / "runs" / "cont" / "train_config.yaml").read_text())
    assert cont_config["spec"]["init_from"] == str(out / "runs" / "base" / "checkpoint-2")

    # Same spec again: nothing is trained, every answer comes from the cache, same results.
    first = (out / "accuracy.csv").read_text()
    result = swiftstudy.run_validation(validate_dir / "validate.yaml", out, progress=False)
    assert trainings == ["base", "base-more-427877ae", "cont"]
    assert [o.trained for o in result.runs] == [False, False, False]
    assert (out / "accuracy.csv").read_text() == first
    # Nothing decoded: no speed recorded.
    assert [stats.answers for stats in result.decoding.values()] == [0, 0, 0]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert [r["decoding"] for r in config["runs"]] == [None, None, None]

    # A changed run is trained again, alone.
    swiftstudy.run_validation(
        validate_dir / "validate.yaml", out, overrides=["runs.2.lr=0.002"], progress=False
    )
    assert trainings[3:] == ["cont"]
    # Changed data retrains its run and the runs that continue from it.
    _write_jsonl(validate_dir / "add.jsonl", _rows("a", 3))
    swiftstudy.run_validation(
        validate_dir / "validate.yaml", out, overrides=["runs.2.lr=0.002"], progress=False
    )
    assert trainings[4:] == ["base", "base-more-427877ae", "cont"]


def test_an_interrupted_run_is_resumed(validate_dir, trainings):
    out = validate_dir / "out"
    spec = _write_spec(
        validate_dir, runs=[{"name": "base", "data": ["add.jsonl"], "save_steps": 1}]
    )
    swiftstudy.run_validation(spec, out, progress=False)
    # Lose the last checkpoint, as a crash between the two saves would.
    last = out / "runs" / "base" / "checkpoint-2"
    for file in sorted(last.rglob("*"), reverse=True):
        file.unlink() if file.is_file() else file.rmdir()
    last.rmdir()
    result = swiftstudy.run_validation(spec, out, progress=False)
    assert trainings == ["base", "base"]
    assert result.runs[0].checkpoint.step == 2
    state = json.loads((last / "trainer_state.json").read_text())
    assert len([e for e in state["log_history"] if "loss" in e]) == 2


def _naive_greedy(model, tokenizer, prompt: list[Message], max_new_tokens: int) -> str:
    """One prompt at a time, no padding, the full forward pass each step, argmax."""
    messages = [{"role": m.role, "content": m.content} for m in prompt]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(
                input_ids=torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], 1)
            ).logits
            token = int(logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def _untied_llama(vocab_size: int):
    """A tiny Llama whose LM head is not its embedding, so greedy answers are not all one token.

    (With tied weights a random model's last hidden state is its input embedding plus noise, so
    it repeats its last input token, the newline, and every answer strips to nothing.)
    """
    model = build_tiny_llama(vocab_size, seed=3, dtype=torch.float64)
    model.config.tie_word_embeddings = False
    torch.manual_seed(4)
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight))
    return model


def test_batched_generation_equals_a_naive_one_at_a_time_loop(tmp_path: Path):
    """Left padding and batching change nothing: each answer is the unpadded greedy answer."""
    tokenizer = build_tiny_tokenizer()
    base = _untied_llama(len(tokenizer))
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    adapted, _ = add_random_lora(_untied_llama(len(tokenizer)), r=4, alpha=8, b_scale=0.5)
    adapted.save_pretrained(tmp_path / "adapter")
    prompts = [
        [Message("user", "What is two plus two?")],
        [Message("user", "Classify the sentiment of the review: positive or negative. " * 3)],
        [Message("system", "Please output the reason first."), Message("user", "0123")],
        [Message("user", "Rewrite the sentence.")],
    ]
    settings = GenerationSettings(
        model=str(tmp_path / "base"), max_new_tokens=12, batch_size=3, dtype="float64"
    )
    generator = CheckpointGenerator(
        BaseModelStates(settings), Checkpoint(tmp_path / "adapter", 0, "adapter"), "fingerprint"
    )
    answers = generator.generate(prompts)

    reference_model = PeftModel.from_pretrained(_untied_llama(len(tokenizer)), tmp_path / "adapter")
    reference_model.eval()
    expected = [_naive_greedy(reference_model, tokenizer, p, 12) for p in prompts]
    assert answers == expected
    assert any(answers)  # a random model says something, so the comparison means something


@pytest.mark.slow
def test_a_run_that_learns_its_answers_gives_them(validate_dir):
    """Generation asks exactly as training taught: a model fitted on the eval set answers it."""
    rows = [
        {"id": str(i), "prompt": f"What is {i} plus {i}?", "response": str(2 * i)}
        for i in range(1, 5)
    ]
    _write_jsonl(validate_dir / "eval.jsonl", rows)
    train = {**TRAIN, "full_finetune": True, "lr": 0.003, "min_lr": 0.003, "max_steps": 80}
    train["batch_size"] = train["micro_batch_size"] = 4
    spec = _write_spec(
        validate_dir,
        train=train,
        runs=[
            {"name": "untrained", "data": ["eval.jsonl"], "max_steps": 1, "lr": 1e-6, "min_lr": 0},
            {"name": "fitted", "data": ["eval.jsonl"]},
        ],
        eval={"path": "eval.jsonl", "evaluator": "exact", "max_new_tokens": 4},
    )
    result = swiftstudy.run_validation(spec, validate_dir / "out", progress=False)
    untrained, fitted = result.accuracy
    assert (untrained.correct, fitted.correct) == (0, 4)
    assert fitted.delta == 1.0
    assert fitted.p_value == pytest.approx(0.125)  # 4 discordant queries, all one way: 2 / 2^4


def test_agreement_with_a_swift_study(validate_dir):
    scores = validate_dir / "scores.csv"
    scores.write_text(
        "metric,context,probes,evals,step,checkpoint,value,n_pairs\n"
        "CoT in,in-task,more,similar,10,c10,0.5,8\n"
        "CoT in,in-task,more,similar,20,c20,0.3,8\n"
        "CoT cross,cross-task,more,similar,10,c10,-0.1,56\n"
        "CoT cross,cross-task,more,similar,20,c20,,0\n"
    )
    runs = [
        {"name": "base", "data": ["add.jsonl"]},
        {"name": "base+more", "data": ["add.jsonl", "more.jsonl"]},
        {"name": "more-cont", "init_from": "base", "data": ["more.jsonl"]},
        {"name": "other", "data": ["more.jsonl"]},
    ]
    spec = _write_spec(validate_dir, runs=runs, swift="scores.csv")
    result = swiftstudy.run_validation(spec, validate_dir / "out", progress=False)
    agreement = json.loads((validate_dir / "out" / "agreement.json").read_text())
    by_run = {s["run"]: s for s in agreement["strategies"]}
    assert by_run["base+more"]["metric"] == "CoT cross"  # trained from the pretrained model
    assert by_run["base+more"]["swift_score"] == pytest.approx(-0.1)
    assert by_run["more-cont"]["metric"] == "CoT in"  # continues from a run: in-task
    assert by_run["more-cont"]["swift_score"] == pytest.approx(0.4)
    assert by_run["more-cont"]["gain"] == pytest.approx(result.accuracy[2].delta)
    assert agreement["n"] == 2 and agreement["spearman"] is None  # two points say nothing
    assert agreement["spearman_nll"] is None and agreement["spearman_nll_interval"] is None
    assert agreement["spearman_interval"] is None
    assert agreement["sign_agreements_nll"] in (0, 1, 2)
    assert len(agreement["sign_agreements_nll_interval"]) == 2
    assert by_run["more-cont"]["delta_nll"] == pytest.approx(result.accuracy[2].delta_nll)
    assert isinstance(by_run["more-cont"]["sign_agrees_nll"], bool)
    assert agreement["unmatched"] == [
        {"run": "other", "reason": "its name names no probe set of the swift study"}
    ]
    assert "Swift study against retraining" in (validate_dir / "out" / "table.md").read_text()
    assert (validate_dir / "out" / "figures" / "swift-vs-gain.png").is_file()
    assert (validate_dir / "out" / "figures" / "swift-vs-nll.png").is_file()

    swift = {"scores": "scores.csv", "metrics": {"other": "nope"}}
    spec = _write_spec(validate_dir, runs=runs, swift=swift)
    with pytest.raises(InputError, match=r"swift.metrics.other: unknown metric 'nope'"):
        swiftstudy.run_validation(spec, validate_dir / "out2", progress=False)
    assert not (validate_dir / "out2").exists()


def test_bad_input_fails_before_any_training(validate_dir, trainings, capsys):
    _write_jsonl(validate_dir / "eval.jsonl", [{"prompt": "Say hi", "response": "hello"}])
    spec = _write_spec(validate_dir)
    out = validate_dir / "out"
    assert main(["validate", str(spec), "--out", str(out), "--no-progress"]) == 2
    assert (
        "eval.jsonl:1: response: the numeric evaluator finds no number" in capsys.readouterr().err
    )
    assert trainings == [] and not out.exists()

    _write_jsonl(validate_dir / "eval.jsonl", _rows("e", 2))
    (validate_dir / "more.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(InputError, match=r"more.jsonl:1: response: missing 'response'"):
        swiftstudy.run_validation(spec, out, progress=False)
    assert trainings == [] and not out.exists()


def test_quick_profile_and_a_checkpoint_run(validate_dir, trainings):
    out = validate_dir / "out"
    swiftstudy.run_validation(
        _write_spec(validate_dir, runs=[{"name": "base", "data": ["add.jsonl"]}]),
        out,
        progress=False,
    )
    spec = _write_spec(
        validate_dir,
        runs=[
            {"name": "given", "checkpoint": "out/runs/base"},
            {"name": "short", "data": ["add.jsonl"], "max_steps": 5},
        ],
        quick={"max_steps": 1, "eval_limit": 3, "max_new_tokens": 2},
    )
    result = swiftstudy.run_validation(spec, validate_dir / "quick", quick=True, progress=False)
    assert trainings == ["base", "short"]
    assert [o.trained for o in result.runs] == [False, True]
    assert result.runs[1].checkpoint.step == 1
    assert [row.n for row in result.accuracy] == [3, 3]
    config = yaml.safe_load((validate_dir / "quick" / "config.yaml").read_text())
    assert config["quick"] is True and config["spec"]["eval"]["max_new_tokens"] == 2
