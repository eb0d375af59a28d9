"""TRL's SFTTrainer, studied as it is: its data formats, its checkpoints and its loss.

The evidence that a study scores the tokens a TRL run trained on: token for token against the
dataset SFTTrainer prepares, the per-example loss against the trainer's own ``compute_loss``, and
a study of a real SFTTrainer run against the naive per-example gradient loop. TRL's loss is the
mean over the completion tokens, swiftstudy's the sum, so the sum is divided by the token count.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM
from trl import SFTConfig, SFTTrainer

from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy.data import load_examples, tokenize_example, tokenize_examples
from swiftstudy.gradients import compute_gradients, compute_naive_gradients
from swiftstudy.gradients.loss import compute_completion_nll
from swiftstudy.model import Checkpoint, ModelStates
from swiftstudy.model.loading import load_checkpoint_tokenizer
from swiftstudy.study import run_study

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

SYSTEM = "Be brief."
QA = [
    ("What is two plus two?", "The answer is 4."),
    ("Classify the review: great!", "positive"),
    ("Fix the spelling: speling", "It lacks an l: spelling"),
    ("Give the words formed by the initials.", "Words, in order."),
]
EVAL_QA = [("What is two plus 2?", "It is 4."), ("Rewrite the sentence.", "Rewritten.")]
FORMATS = ("standard", "conversational", "messages")
#: The LoRA of the runs: up/down projections, as the issue's run.
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["up_proj", "down_proj"]}


def trl_rows(format: str, pairs=QA) -> list[dict]:
    """The pairs as rows of one of TRL's dataset formats (with a system message when it can)."""
    rows = []
    for question, answer in pairs:
        system = {"role": "system", "content": SYSTEM}
        user = {"role": "user", "content": question}
        assistant = {"role": "assistant", "content": answer}
        if format == "standard":
            rows.append({"prompt": f"{question}\n", "completion": answer})
        elif format == "conversational":
            rows.append({"prompt": [system, user], "completion": [assistant]})
        else:
            rows.append({"messages": [system, user, assistant]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sft_config(out: Path, **overrides) -> SFTConfig:
    """A CPU, float32, log-free SFTConfig; the dataset keeps its order (no shuffling)."""
    kwargs = {
        "output_dir": str(out),
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "per_device_train_batch_size": 2,
        "gradient_checkpointing": False,
        "learning_rate": 5e-3,
        "seed": 0,
        "save_strategy": "no",
        "disable_tqdm": True,
    }
    return SFTConfig(**{**kwargs, **overrides})


def trl_losses(trainer: SFTTrainer) -> list[float]:
    """TRL's loss of each prepared training example alone: its training ``compute_loss``."""
    losses = []
    for row in trainer.train_dataset:
        batch = trainer.data_collator([{k: row[k] for k in ("input_ids", "labels")}])
        with torch.no_grad():
            losses.append(
                trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch)).item()
            )
    return losses


def swiftstudy_losses(model, tokenized) -> list[float]:
    """swiftstudy's summed completion NLL of each example, divided by its token count."""
    losses = []
    for t in tokenized:
        ids = torch.tensor([t.input_ids])
        mask = torch.tensor([t.completion_mask], dtype=torch.bool)
        with torch.no_grad():
            nll = compute_completion_nll(model, ids, torch.ones_like(ids), mask)
        losses.append(nll.item() / t.n_completion_tokens)
    return losses


def lora_modules(model) -> list[torch.nn.Linear]:
    return [m for n, m in model.named_modules() if n.endswith(("lora_A.default", "lora_B.default"))]


@pytest.mark.parametrize("format", FORMATS)
def test_tokens_match_sft_trainer(format, tmp_path):
    tokenizer = build_tiny_tokenizer()
    rows = trl_rows(format)
    trainer = SFTTrainer(
        model=build_tiny_llama(len(tokenizer)),
        args=sft_config(tmp_path / "out"),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    examples = load_examples(write_jsonl(tmp_path / "data.jsonl", rows), format="trl")
    for row, example in zip(trainer.train_dataset, examples, strict=True):
        ours = tokenize_example(example, tokenizer)
        assert list(ours.input_ids) == row["input_ids"]
        # Position 0 predicts nothing (the model shifts the labels); every other label agrees.
        trained = [int(label != -100) for label in row["labels"]]
        assert list(ours.completion_mask) == [0, *trained[1:]]
    if format == "conversational":
        # The completion ends with <|im_end|> and the newline the template writes after it.
        assert tokenizer.decode(trainer.train_dataset[0]["input_ids"][-2:]) == "<|im_end|>\n"


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory) -> dict:
    """A real SFTTrainer LoRA run (4 steps, saved at 2 and 4) on conversational prompt/completion
    data, its base model folder, and a study spec over it."""
    root = tmp_path_factory.mktemp("trl-run")
    tokenizer = build_tiny_tokenizer()
    base = build_tiny_llama(len(tokenizer))
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    train_rows = trl_rows("conversational")
    trainer = SFTTrainer(
        model=base,
        args=sft_config(root / "run", max_steps=4, save_strategy="steps", save_steps=2),
        train_dataset=datasets.Dataset.from_list(train_rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(**LORA),
    )
    trained = [(row["input_ids"], row["labels"]) for row in trainer.train_dataset]
    trainer.train()
    write_jsonl(root / "train.jsonl", train_rows)
    write_jsonl(root / "evals.jsonl", trl_rows("standard", EVAL_QA))
    spec = {
        "model": "base",
        "checkpoints": "run",
        "sets": {"train": {"path": "train.jsonl"}, "evals": {"path": "evals.jsonl"}},
        "metrics": [
            {"name": "train → evals", "probes": "train", "evals": "evals", "context": "cross-task"}
        ],
        "dtype": "float64",
        "batch_size": 2,
        "device": "cpu",
    }
    (root / "study.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    return {"root": root, "trained": trained}


@pytest.mark.slow
def test_study_of_an_sft_trainer_run_matches_the_naive_loop(trl_run, monkeypatch):
    root = trl_run["root"]
    monkeypatch.setenv("SWIFTSTUDY_CACHE", str(root / "cache"))
    assert sorted(p.name for p in (root / "run").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    result = run_study(root / "study.yaml", root / "out", progress=False)
    assert [c.step for c in result.checkpoints] == [2, 4]

    # The study scored exactly the tokens the run trained on.
    tokens = [json.loads(line) for line in (root / "out" / "tokens.jsonl").open()]
    studied = [(t["input_ids"], t["completion_mask"]) for t in tokens if t["set"] == "train"]
    for (ids, mask), (trained_ids, labels) in zip(studied, trl_run["trained"], strict=True):
        assert ids == trained_ids
        assert mask == [0] + [int(label != -100) for label in labels[1:]]

    relinf = list(csv.DictReader((root / "out" / "relinf.csv").open()))
    for step in (2, 4):
        ckpt = root / "run" / f"checkpoint-{step}"
        base = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float64)
        model = PeftModel.from_pretrained(base, ckpt).eval().requires_grad_(False)
        tokenizer = load_checkpoint_tokenizer([ckpt])

        def grads(name: str, model=model, tokenizer=tokenizer) -> torch.Tensor:
            toks = tokenize_examples(load_examples(root / f"{name}.jsonl"), tokenizer)
            sequences = [(t.input_ids, t.completion_mask) for t in toks]
            return compute_naive_gradients(model, lora_modules(model), sequences)

        probes, evals = grads("train"), grads("evals")
        reference = (probes @ evals.T) / (evals * evals).sum(dim=1)
        rows = [r for r in relinf if r["step"] == str(step)]
        # Cross-task: probe i and eval i share task "i" (the default), so they are no pair.
        assert len(rows) == len(QA) * len(EVAL_QA) - len(EVAL_QA)
        for r in rows:
            expected = reference[int(r["probe_id"]), int(r["eval_id"])].item()
            assert float(r["relinf"]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("format", FORMATS)
def test_per_example_loss_equals_the_trainers(trl_run, format, tmp_path):
    root = trl_run["root"]
    ckpt = Checkpoint(root / "run" / "checkpoint-4", 4, "adapter")
    tokenizer = load_checkpoint_tokenizer([ckpt.path])
    rows = trl_rows(format)
    trl_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(root / "base"), ckpt.path
    ).eval()
    trainer = SFTTrainer(
        model=trl_model,
        args=sft_config(tmp_path / "eval"),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    model, _ = ModelStates(AutoModelForCausalLM.from_pretrained(root / "base")).load(ckpt)
    examples = load_examples(write_jsonl(tmp_path / "data.jsonl", rows), format="trl")
    ours = swiftstudy_losses(model, tokenize_examples(examples, tokenizer))
    assert ours == pytest.approx(trl_losses(trainer), rel=1e-5)


@pytest.mark.slow
def test_run_with_added_chat_tokens_modules_to_save_and_its_tokenizer(tmp_path, caplog):
    """The usual variants of a real run: SFTTrainer clones another chat template, which adds
    tokens (embeddings resized, their rows trained as trainable tokens), trains lm_head fully
    (modules_to_save) and saves the new tokenizer in the checkpoint."""
    source = build_tiny_tokenizer(
        "{% for m in messages %}<|turn|>{{ m['role'] }}: {{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|turn|>assistant: {% endif %}"
    )
    source.add_special_tokens({"additional_special_tokens": ["<|turn|>", "<|end|>"]})
    source.eos_token = "<|end|>"
    source.save_pretrained(tmp_path / "template")
    tokenizer = build_tiny_tokenizer()
    vocab = len(tokenizer)  # SFTTrainer adds the chat tokens to this tokenizer in place

    def untied_base() -> torch.nn.Module:
        # TRL 1.16's fused LM head fails on a tied lm_head with trainable tokens: untie it.
        model = build_tiny_llama(vocab)
        model.config.tie_word_embeddings = False
        model.lm_head = torch.nn.Linear(32, vocab, bias=False)
        torch.nn.init.normal_(
            model.lm_head.weight, std=0.02, generator=torch.Generator().manual_seed(1)
        )
        return model

    rows = trl_rows("messages")
    trainer = SFTTrainer(
        model=untied_base(),
        args=sft_config(
            tmp_path / "run",
            max_steps=2,
            save_strategy="steps",
            save_steps=2,
            chat_template_path=str(tmp_path / "template"),
        ),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(**LORA),
    )
    trainer.train()
    ckpt = Checkpoint(tmp_path / "run" / "checkpoint-2", 2, "adapter")
    config = json.loads((ckpt.path / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["lm_head"] and config["trainable_token_indices"]

    studied_tokenizer = load_checkpoint_tokenizer([ckpt.path])
    assert len(studied_tokenizer) > vocab and "<|turn|>" in studied_tokenizer.chat_template
    base = untied_base()
    with caplog.at_level(logging.WARNING, logger="swiftstudy.model.states"):
        model, targets = ModelStates(base).load(ckpt)
    assert base.get_input_embeddings().weight.shape[0] == len(studied_tokenizer)
    assert len(targets) == 8  # LoRA A and B of up/down_proj in 2 layers: nothing else
    assert "lm_head" in caplog.text and "left out of the gradient" in caplog.text

    examples = load_examples(write_jsonl(tmp_path / "data.jsonl", rows), format="trl")
    tokenized = tokenize_examples(examples, studied_tokenizer)
    assert swiftstudy_losses(model, tokenized) == pytest.approx(trl_losses(trainer), rel=1e-5)

    # The engine's gradients through the resized, wrapped model agree with the naive loop.
    sequences = [(t.input_ids, t.completion_mask) for t in tokenized]
    modules = [t.module for t in targets]
    fast = compute_gradients(
        model,
        modules,
        sequences,
        pad_id=studied_tokenizer.pad_token_id,
        max_examples=2,
        max_tokens=4096,
    )
    torch.testing.assert_close(
        fast, compute_naive_gradients(model, modules, sequences), rtol=1e-4, atol=1e-7
    )


def test_spec_sets_take_the_trl_keys(tmp_path, monkeypatch):
    from swiftstudy.errors import InputError
    from swiftstudy.study import spec_from_dict

    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "qa.jsonl", [{"question": "Q?", "answer": "A."}])
    data = {
        "model": "base",
        "checkpoints": "run",
        "sets": {
            "qa": {"path": "qa.jsonl", "columns": {"prompt": "question", "completion": "answer"}},
            "hub": {"path": "trl-lib/Capybara", "split": "train", "name": "default"},
            "chat": {"path": "chat.jsonl", "format": "trl"},
        },
        "metrics": [{"name": "m", "probes": "qa", "evals": "hub", "context": "cross-task"}],
    }
    spec = spec_from_dict(data, base_dir=tmp_path)
    qa, hub, chat = spec.sets
    assert qa.path == tmp_path / "qa.jsonl" and qa.load_options()["columns"] == {
        "prompt": "question",
        "completion": "answer",
    }
    assert hub.path == "trl-lib/Capybara" and hub.load_options() == {
        "split": "train",
        "name": "default",
        "columns": {},
        "format": "auto",
    }
    assert chat.path == tmp_path / "chat.jsonl" and chat.format == "trl"
    assert spec_from_dict(spec.to_dict(), base_dir=tmp_path / "elsewhere") == spec
    (example,) = load_examples(qa.path, **qa.load_options())
    assert (example.response, example.format) == ("A.", "trl-standard")

    data["sets"]["chat"]["format"] = "sharegpt"
    with pytest.raises(InputError, match="unknown value 'sharegpt'"):
        spec_from_dict(data, base_dir=tmp_path)
    data["sets"]["chat"] = {"path": "chat.jsonl", "columns": {"answer": "x"}}
    with pytest.raises(InputError, match="unknown field 'answer'"):
        spec_from_dict(data, base_dir=tmp_path)
