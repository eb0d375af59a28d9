"""Generators without a server: the answer cache, and the hf generator on a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import build_tiny_llama, build_tiny_tokenizer
from swiftstudy.data import Message
from swiftstudy.generate import (
    CachedGenerator,
    FunctionGenerator,
    GenerationCache,
    HFGenerator,
    HFSettings,
)

PROMPTS = [
    [Message("user", "What is two plus two?")],
    [Message("user", "Hi")],
    [Message("system", "Classify."), Message("user", "Classify the sentiment of the review")],
]


def _echo(prompt) -> str:
    return prompt[-1].content.upper()


def test_function_generator_answers_in_order():
    generator = FunctionGenerator(_echo, name="echo")
    assert generator.generate(PROMPTS) == [p[-1].content.upper() for p in PROMPTS]
    assert generator.calls == 3


def test_cache_key_depends_on_settings_and_every_message():
    key = GenerationCache.key
    base = key({"generator": "x"}, PROMPTS[2])
    assert base == key({"generator": "x"}, list(PROMPTS[2]))
    assert base != key({"generator": "y"}, PROMPTS[2])
    assert base != key({"generator": "x"}, PROMPTS[2][1:])
    assert base != key({"generator": "x"}, [Message("user", "Classify."), PROMPTS[2][1]])


def test_cached_generator_asks_once_and_resumes_a_partial_run(tmp_path):
    cache = GenerationCache(tmp_path / "cache")
    first = CachedGenerator(FunctionGenerator(_echo, name="echo"), cache)
    assert first.generate(PROMPTS[:2]) == ["WHAT IS TWO PLUS TWO?", "HI"]
    assert (first.hits, first.misses) == (0, 2)

    inner = FunctionGenerator(_echo, name="echo")
    second = CachedGenerator(inner, cache)
    assert second.generate(PROMPTS) == [p[-1].content.upper() for p in PROMPTS]
    assert inner.calls == 1  # only the prompt the first run did not ask
    assert (second.hits, second.misses) == (2, 1)

    entries = sorted(cache.root.rglob("*.json"))
    assert len(entries) == 3
    entry = json.loads(entries[0].read_text())
    assert entry["settings"] == {"generator": "function", "name": "echo"}
    assert {"messages", "text"} <= set(entry)
    assert not list(cache.root.rglob("*.tmp"))


def test_other_settings_miss_the_cache(tmp_path):
    cache = GenerationCache(tmp_path)
    CachedGenerator(FunctionGenerator(_echo, name="a"), cache).generate(PROMPTS)
    other = FunctionGenerator(_echo, name="b")
    CachedGenerator(other, cache).generate(PROMPTS)
    assert other.calls == 3


def test_unreadable_cache_entry_is_asked_again(tmp_path, caplog):
    cache = GenerationCache(tmp_path)
    CachedGenerator(FunctionGenerator(_echo, name="e"), cache).generate(PROMPTS[:1])
    [entry] = tmp_path.rglob("*.json")
    entry.write_text("{truncated")
    inner = FunctionGenerator(_echo, name="e")
    assert CachedGenerator(inner, cache).generate(PROMPTS[:1]) == ["WHAT IS TWO PLUS TWO?"]
    assert inner.calls == 1
    assert "unreadable cache entry" in caplog.text


def test_default_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SWIFTSTUDY_CACHE", str(tmp_path))
    assert GenerationCache().root == tmp_path / "generations"


def _scrambled_tiny_model(dtype=torch.float64):
    """A tiny random Llama whose greedy answers are varied text.

    With the small default init and tied embeddings, greedy decoding just repeats the last
    prompt token; larger random weights break that symmetry.
    """
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(len(tokenizer), seed=0, dtype=dtype)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(std=0.3)
    return model, tokenizer


def _naive_greedy(model, tokenizer, prompt, max_new_tokens: int) -> str:
    """One prompt at a time, no padding, no cache: argmax of the full forward, token by token."""
    text = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in prompt],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = int(
                model(torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], 1))
                .logits[0, -1]
                .argmax()
            )
            if next_id == tokenizer.eos_token_id:
                break
            new.append(next_id)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def test_hf_generator_batches_equal_a_naive_greedy_loop():
    model, tokenizer = _scrambled_tiny_model()
    settings = HFSettings(model="tiny", max_new_tokens=12, batch_size=2, dtype="float64")
    generator = HFGenerator(settings, model=model, tokenizer=tokenizer)

    answers = generator.generate(PROMPTS)

    expected = [_naive_greedy(model, tokenizer, p, 12) for p in PROMPTS]
    assert answers == expected
    assert len(set(answers)) == 3 and all(answers)


def test_hf_generator_settings_name_the_model_and_decoding():
    settings = HFGenerator(HFSettings(max_new_tokens=7)).settings
    assert settings == {
        "generator": "hf",
        "model": "smollm2",
        "dtype": "float32",
        "decoding": "greedy",
        "max_new_tokens": 7,
    }


def test_hf_generator_loads_no_model_when_everything_is_cached(tmp_path):
    model, tokenizer = _scrambled_tiny_model(torch.float32)
    settings = HFSettings(model="/nonexistent/model", max_new_tokens=4)
    cache = GenerationCache(tmp_path)
    loaded = HFGenerator(settings, model=model, tokenizer=tokenizer)
    answers = CachedGenerator(loaded, cache).generate(PROMPTS)

    lazy = HFGenerator(settings)  # would fail to load: the path does not exist
    assert CachedGenerator(lazy, cache).generate(PROMPTS) == answers
    assert lazy._model is None


def test_hf_generator_without_chat_template_joins_the_messages():
    model, tokenizer = _scrambled_tiny_model()
    tokenizer.chat_template = None
    generator = HFGenerator(HFSettings(max_new_tokens=3), model=model, tokenizer=tokenizer)
    [answer] = generator.generate([[Message("user", "Hi")]])
    assert isinstance(answer, str)


def test_hf_generator_threads_apply_while_decoding_only():
    model, tokenizer = _scrambled_tiny_model()
    before = torch.get_num_threads()
    seen = []
    generate = model.generate

    def spy(**kwargs):
        seen.append(torch.get_num_threads())
        return generate(**kwargs)

    model.generate = spy
    settings = HFSettings(max_new_tokens=2, threads=1)
    HFGenerator(settings, model=model, tokenizer=tokenizer).generate(PROMPTS[:1])
    assert seen == [1] and torch.get_num_threads() == before


def test_hf_generator_checks_its_settings():
    with pytest.raises(ValueError, match="dtype"):
        HFGenerator(HFSettings(dtype="float8"))
    with pytest.raises(ValueError, match="both"):
        HFGenerator(HFSettings(), model=object())
