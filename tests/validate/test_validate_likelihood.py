"""Reference NLL: batched scoring against a plain forward pass; loss-only validation end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoTokenizer, LlamaForCausalLM

import swiftstudy
import swiftstudy.validate.likelihood as likelihood_module
import swiftstudy.validate.run as run_module
from conftest import add_random_lora, build_tiny_llama, build_tiny_tokenizer
from swiftstudy.cli.main import main
from swiftstudy.data import Example, Message, tokenize_examples
from swiftstudy.errors import InputError
from swiftstudy.validate import compute_completion_nlls, validate_spec_from_dict
from swiftstudy.validate.stats import compute_paired_mean_interval
from test_validate_run import _rows, _write_jsonl, write_base_and_data

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


def _plain_nll(model, tokenized) -> float:
    """``model(input_ids).logits`` of one unpadded sequence, cross-entropy on its completion."""
    ids = torch.tensor([tokenized.input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].to(torch.float64)
    log_probs = torch.log_softmax(logits, dim=-1)
    return -sum(
        float(log_probs[t - 1, tokenized.input_ids[t]])
        for t, scored in enumerate(tokenized.completion_mask)
        if scored
    )


def _examples() -> list[Example]:
    prompts = [
        (Message("user", "What is two plus two?"),),
        (Message("user", "Classify the sentiment of the review: positive or negative. " * 3),),
        (Message("system", "Please output the reason first."), Message("user", "0123")),
        (Message("user", "Rewrite the sentence."),),
        (Message("user", "Give the words formed by the initials of each line."),),
    ]
    responses = ["The answer is 4.", "positive", "Because 0123. The answer is 6.", "Done.", "abc"]
    return [
        Example(str(i), "t", prompt, response, f"e.jsonl:{i + 1}")
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True))
    ]


def test_batched_nlls_equal_a_plain_forward_pass():
    """Padding, length bucketing and the LM head on scored positions only change nothing."""
    tokenizer = build_tiny_tokenizer()
    model, _ = add_random_lora(
        build_tiny_llama(len(tokenizer), dtype=torch.float64), r=4, alpha=8, b_scale=0.5
    )
    tokenized = tokenize_examples(_examples(), tokenizer)
    assert len({len(t.input_ids) for t in tokenized}) > 2  # batches really are padded
    nlls = compute_completion_nlls(
        model, tokenized, pad_id=tokenizer.pad_token_id, device="cpu", max_examples=3
    )
    for query, example in zip(nlls, tokenized, strict=True):
        assert query.n_tokens == example.n_completion_tokens > 0
        assert query.nll == pytest.approx(_plain_nll(model, example), rel=1e-10)


def _spec(root: Path, runs: list[dict], **changes):
    data = {
        "model": "base",
        "eval": {"path": "eval.jsonl", "evaluator": "numeric", "max_new_tokens": 4},
        "train": TRAIN,
        "runs": runs,
        "device": "cpu",
        "dtype": "float64",
        **changes,
    }
    return validate_spec_from_dict(data, base_dir=root)


@pytest.fixture()
def base_run(tmp_path: Path) -> Path:
    """A tiny base model folder, data, an eval set, and a trained base run in ``first/``."""
    write_base_and_data(tmp_path, more=4, evals=6)
    spec = _spec(tmp_path, [{"name": "base", "data": ["add.jsonl"]}])
    swiftstudy.run_validation(spec, tmp_path / "first", loss_only=True, progress=False)
    return tmp_path


@pytest.fixture()
def counted(monkeypatch) -> dict[str, int]:
    """How many NLLs were computed and answers generated; generating is refused when asked."""
    calls = {"nll": 0, "answers": 0}
    real = likelihood_module.compute_completion_nlls

    def counting(model, tokenized, **kwargs):
        calls["nll"] += len(tokenized)
        return real(model, tokenized, **kwargs)

    monkeypatch.setattr(likelihood_module, "compute_completion_nlls", counting)
    real_answer = run_module._answer

    def answering(*args, **kwargs):
        calls["answers"] += 1
        return real_answer(*args, **kwargs)

    monkeypatch.setattr(run_module, "_answer", answering)
    return calls


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_loss_only_runs_from_a_checkpoint_with_seeds_match_a_plain_forward_pass(
    base_run: Path, counted
):
    """Δnll of runs continued from a checkpoint, one per seed, equals a plain forward pass."""
    root, start = base_run, base_run / "first" / "runs" / "base"
    runs = [{"name": "start", "checkpoint": str(start)}] + [
        {"name": f"more-s{seed}", "init_from": str(start), "data": ["more.jsonl"], "seed": seed}
        for seed in (1, 2)
    ]
    out = root / "out"
    result = swiftstudy.run_validation(_spec(root, runs), out, loss_only=True, progress=False)
    assert counted == {"nll": 18, "answers": 0}
    fingerprints = [o.fingerprint for o in result.runs]
    assert len(set(fingerprints)) == 3  # the seeds trained different adapters

    tokenizer = AutoTokenizer.from_pretrained(root / "base")
    queries = swiftstudy.validate.load_eval_queries(root / "eval.jsonl")
    tokenized = tokenize_examples([q.example for q in queries], tokenizer)
    plain = {}
    for outcome in result.runs:
        model = LlamaForCausalLM.from_pretrained(root / "base", dtype=torch.float64)
        model = PeftModel.from_pretrained(model, outcome.checkpoint.path).eval()
        plain[outcome.name] = [_plain_nll(model, t) for t in tokenized]
    tokens = sum(t.n_completion_tokens for t in tokenized)
    rows = {row["run"]: row for row in _read_csv(out / "accuracy.csv")}
    for name, nlls in plain.items():
        row = rows[name]
        assert row["correct"] == row["accuracy"] == row["delta"] == row["p_value"] == ""
        assert float(row["nll"]) == pytest.approx(sum(nlls) / len(nlls), rel=1e-10)
        assert float(row["nll_per_token"]) == pytest.approx(sum(nlls) / tokens, rel=1e-10)
        differences = [a - b for a, b in zip(nlls, plain["start"], strict=True)]
        assert float(row["delta_nll"]) == pytest.approx(
            sum(differences) / len(differences), rel=1e-10, abs=1e-12
        )
        if name != "start":
            low, high = compute_paired_mean_interval(differences)
            assert float(row["delta_nll_low"]) == pytest.approx(low, rel=1e-9)
            assert float(row["delta_nll_high"]) == pytest.approx(high, rel=1e-9)
    assert rows["more-s1"]["delta_nll"] != rows["more-s2"]["delta_nll"]
    assert not (out / "predictions.jsonl").exists() and not (out / "answers").exists()
    table = (out / "table.md").read_text()
    assert "Accuracy" not in table and "| ΔNLL |" in table and "loss only" in table
    assert not (out / "figures" / "accuracy.png").exists()
    assert yaml.safe_load((out / "config.yaml").read_text())["loss_only"] is True

    # Again: every NLL comes from the cache; then a full validation decodes but scores nothing.
    first = (out / "accuracy.csv").read_text()
    swiftstudy.run_validation(_spec(root, runs), out, loss_only=True, progress=False)
    assert (out / "accuracy.csv").read_text() == first
    full = swiftstudy.run_validation(_spec(root, runs), out, progress=False)
    assert counted == {"nll": 18, "answers": 1}
    assert all(row.accuracy is not None for row in full.accuracy)
    assert [row.nll for row in full.accuracy] == [float(rows[n]["nll"]) for n in plain]
    assert (out / "predictions.jsonl").is_file() and (out / "figures" / "accuracy.png").is_file()


def test_loss_only_from_the_command_line_checks_the_eval_set(base_run: Path, counted, capsys):
    root = base_run
    spec = {
        "model": "base",
        "eval": {"path": "eval.jsonl", "evaluator": "numeric"},
        "runs": [{"name": "start", "checkpoint": "first/runs/base"}],
        "device": "cpu",
    }
    (root / "validate.yaml").write_text(yaml.safe_dump(spec))
    out = root / "cli"
    assert main(["validate", str(root / "validate.yaml"), "--out", str(out), "--loss-only"]) == 0
    printed = capsys.readouterr().out
    assert "start  nll " in printed and "%" not in printed
    assert counted["answers"] == 0 and (out / "accuracy.csv").is_file()

    # The evaluator still reads every golden answer, although nothing is graded.
    _write_jsonl(root / "eval.jsonl", [{"prompt": "Say hi", "response": "hello"}])
    argv = ["validate", str(root / "validate.yaml"), "--out", str(root / "bad"), "--loss-only"]
    assert main(argv) == 2
    assert "eval.jsonl:1: response: the numeric evaluator finds no number" in (
        capsys.readouterr().err
    )
    assert not (root / "bad").exists()


def test_a_reference_longer_than_the_study_renders_is_refused(base_run: Path):
    root = base_run
    rows = [*_rows("e", 2), {"prompt": "What is 1 plus 1?", "response": "2 " * 3000}]
    _write_jsonl(root / "eval.jsonl", rows)
    spec = _spec(root, [{"name": "start", "checkpoint": "first/runs/base"}])
    with pytest.raises(InputError, match=r"eval.jsonl:3: response: completion is \d+ tokens"):
        swiftstudy.run_validation(spec, root / "out", loss_only=True, progress=False)
    assert not (root / "out" / "accuracy.csv").exists()
