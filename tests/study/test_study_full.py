"""A study over full-model checkpoints: gradients w.r.t. the weights named by ``params``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy.data import load_examples, tokenize_examples
from swiftstudy.gradients import compute_naive_gradients
from swiftstudy.study import run_study

PROBES = [
    {"prompt": "What is two plus two? Reason first.", "response": "Two and two: 4"},
    {"prompt": "Classify the review: great! Reason first.", "response": "Praise: positive"},
]
EVALS = [
    {"prompt": "What is three plus one?", "response": "4"},
    {"prompt": "Classify the review: awful!", "response": "negative"},
]


def test_full_checkpoints_use_the_params_regexes(tmp_path: Path):
    tokenizer = build_tiny_tokenizer()
    for step, seed in ((5, 1), (15, 2)):
        model = build_tiny_llama(len(tokenizer), seed=seed)
        model.save_pretrained(tmp_path / "run" / f"checkpoint-{step}")
    build_tiny_llama(len(tokenizer)).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    for name, rows in (("p", PROBES), ("e", EVALS)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "model": "base",
        "checkpoints": [{"path": "run/checkpoint-15"}, {"path": "run/checkpoint-5"}],
        "sets": {"p": {"path": "p.jsonl"}, "e": {"path": "e.jsonl"}},
        "metrics": [
            {"name": "in", "probes": "p", "evals": "e", "context": "in-task"},
            {"name": "cross", "probes": "p", "evals": "e", "context": "cross-task"},
        ],
        "params": [r"layers\.1\.mlp\.down_proj\.weight$"],
        "dtype": "float64",
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))

    result = run_study(tmp_path / "study.yaml", tmp_path / "out", progress=False)

    assert [(r.step, r.metric) for r in result.scores] == [
        (5, "in"),
        (5, "cross"),
        (15, "in"),
        (15, "cross"),
    ]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "base")
    for step in (5, 15):
        model = AutoModelForCausalLM.from_pretrained(
            tmp_path / "run" / f"checkpoint-{step}", dtype=torch.float64
        ).eval()
        grads = {}
        for name in ("p", "e"):
            toks = tokenize_examples(load_examples(tmp_path / f"{name}.jsonl"), tokenizer)
            grads[name] = compute_naive_gradients(
                model,
                [model.model.layers[1].mlp.down_proj],
                [(t.input_ids, t.completion_mask) for t in toks],
            )
        expected = (grads["p"] @ grads["e"].T) / (grads["e"] ** 2).sum(dim=1)
        rows = [r for r in result.relinf if r.step == step]
        assert len(rows) == 4
        for r in rows:
            got = r.relinf
            assert got == pytest.approx(expected[int(r.probe_id), int(r.eval_id)].item(), rel=1e-9)
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert [c["kind"] for c in config["checkpoints"]] == ["full", "full"]
    assert [c["gradient_dim"] for c in config["checkpoints"]] == [32 * 48, 32 * 48]
