"""validate's answers: decoded with the adapter merged, equal to the old ``model.generate`` path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer

from conftest import add_random_lora, build_tiny_llama, build_tiny_tokenizer
from swiftstudy.data import Message
from swiftstudy.errors import InputError
from swiftstudy.generate import HFGenerator, HFSettings
from swiftstudy.model import Checkpoint
from swiftstudy.validate.generation import (
    BaseModelStates,
    CheckpointGenerator,
    GenerationSettings,
)
from swiftstudy.validate.vllm_decoding import VLLMCheckpointGenerator, VLLMDecoder

PROMPTS = [
    [Message("user", "What is two plus two?")],
    [Message("user", "Classify the sentiment of the review: positive or negative. " * 3)],
    [Message("system", "Please output the reason first."), Message("user", "0123")],
    [Message("user", "Rewrite the sentence.")],
    [Message("user", "Hi")],
]


def _scrambled_llama(vocab_size: int):
    """A tiny Llama with large random weights, whose greedy answers are varied text."""
    model = build_tiny_llama(vocab_size, seed=0)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(std=0.3)
    return model


@pytest.fixture()
def checkpoint(tmp_path: Path) -> tuple[GenerationSettings, Checkpoint]:
    tokenizer = build_tiny_tokenizer()
    _scrambled_llama(len(tokenizer)).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    adapted, _ = add_random_lora(_scrambled_llama(len(tokenizer)), r=8, alpha=16, b_scale=0.3)
    adapted.save_pretrained(tmp_path / "adapter")
    settings = GenerationSettings(model=str(tmp_path / "base"), max_new_tokens=12, batch_size=2)
    return settings, Checkpoint(tmp_path / "adapter", 0, "adapter")


def test_answers_equal_the_old_path_in_prompt_order_and_report_tokens_per_second(checkpoint):
    settings, ckpt = checkpoint
    states = BaseModelStates(settings)
    model, tokenizer = states.load(ckpt)
    old = HFGenerator(
        HFSettings(model=settings.model, max_new_tokens=12, batch_size=2),
        model=model,
        tokenizer=tokenizer,
    ).generate(PROMPTS)

    generator = CheckpointGenerator(states, ckpt, "fingerprint")
    assert generator.stats.tokens_per_second == 0
    assert generator.generate(PROMPTS) == old
    assert len(set(old)) > 2
    assert generator.stats.answers == len(PROMPTS) and generator.stats.tokens > len(PROMPTS)
    assert generator.stats.tokens_per_second > 0


def test_decoding_runs_merged_and_leaves_the_weights_exactly_as_loaded(checkpoint):
    settings, ckpt = checkpoint
    states = BaseModelStates(settings)
    model, _ = states.load(ckpt)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    seen: list[bool] = []
    hook = layers[0].register_forward_pre_hook(lambda m, _: seen.append(m.merged))

    generator = CheckpointGenerator(states, ckpt, "fingerprint")
    answers = generator.iter_generate(PROMPTS)
    next(answers)
    assert states.merged and all(m.merged for m in layers)
    with pytest.raises(RuntimeError, match="merged"):
        states.load(ckpt)  # swapping adapters under a merged one would corrupt the weights
    list(answers)
    hook.remove()

    assert seen and all(seen)
    assert not states.merged and not any(m.merged for m in layers)
    reloaded, _ = states.load(ckpt)
    for name, param in reloaded.named_parameters():
        assert torch.equal(param, before[name]), name


def test_an_abandoned_decoding_still_unmerges(checkpoint):
    settings, ckpt = checkpoint
    states = BaseModelStates(settings)
    model, _ = states.load(ckpt)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    answers = CheckpointGenerator(states, ckpt, "fingerprint").iter_generate(PROMPTS)
    next(answers)
    answers.close()
    assert not states.merged
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_models_whose_cache_rows_cannot_join_fall_back_to_model_generate(checkpoint, monkeypatch):
    settings, ckpt = checkpoint
    expected = CheckpointGenerator(BaseModelStates(settings), ckpt, "fingerprint").generate(PROMPTS)
    monkeypatch.setattr(
        "swiftstudy.validate.generation.supports_continuous_batching", lambda model: False
    )
    generator = CheckpointGenerator(BaseModelStates(settings), ckpt, "fingerprint")
    assert generator.generate(PROMPTS) == expected
    assert generator.stats.answers == len(PROMPTS) and generator.stats.tokens_per_second > 0


def test_vllm_answers_are_cached_apart_and_full_models_are_refused_before_decoding(tmp_path):
    states = BaseModelStates(GenerationSettings(model="m", max_new_tokens=4))
    adapter = Checkpoint(tmp_path, 3, "adapter")
    decoder = VLLMDecoder(states, ranks=[12, 8])
    assert decoder.max_lora_rank == 16  # the smallest rank vLLM serves that covers 12
    by_vllm = VLLMCheckpointGenerator(decoder, adapter, "abc").settings
    by_hf = CheckpointGenerator(states, adapter, "abc").settings
    assert by_vllm == {**by_hf, "generator": "vllm"}  # one key apart: never each other's answers
    with pytest.raises(InputError, match=r"decodes LoRA adapters.*eval\.backend: hf"):
        VLLMCheckpointGenerator(decoder, Checkpoint(tmp_path, 3, "full"), "abc")
    assert states._states is None  # nothing loaded, nothing started


def test_vllm_answers_come_a_chunk_at_a_time_in_prompt_order(tmp_path, monkeypatch):
    import swiftstudy.validate.vllm_decoding as vllm_decoding
    from swiftstudy.generate.vllm_lora import VLLMAnswer

    monkeypatch.setattr(vllm_decoding, "VLLM_CHUNK", 2)
    calls = []

    class Engine:  # records each call; answers with the prompt's last message, upper-cased
        def generate(self, prompts, *, adapter, max_new_tokens):
            calls.append((len(prompts), adapter, max_new_tokens))
            return [VLLMAnswer(p[-1].content.upper(), (7, 8)) for p in prompts]

    decoder = VLLMDecoder(BaseModelStates(GenerationSettings(model="m", max_new_tokens=4)), [8])
    decoder._engine = Engine()
    generator = VLLMCheckpointGenerator(decoder, Checkpoint(tmp_path, 1, "adapter"), "f")
    assert generator.generate(PROMPTS) == [p[-1].content.upper() for p in PROMPTS]
    assert calls == [(2, tmp_path, 4), (2, tmp_path, 4), (1, tmp_path, 4)]
    assert (generator.stats.answers, generator.stats.tokens) == (5, 10)
