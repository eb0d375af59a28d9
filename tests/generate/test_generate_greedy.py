"""Continuous-batching greedy decoding against a naive loop and against ``model.generate``."""

from __future__ import annotations

import pytest
import torch

from conftest import add_random_lora, build_tiny_llama, build_tiny_tokenizer
from swiftstudy.data import Message
from swiftstudy.generate import HFGenerator, HFSettings
from swiftstudy.generate.greedy import (
    DecodingStats,
    decode_greedy,
    generate_greedy,
    supports_continuous_batching,
)

#: Prompts of many lengths, so rows of different widths join one cache.
PROMPTS = [
    [Message("user", "What is two plus two?")],
    [Message("user", "Hi")],
    [Message("system", "Classify."), Message("user", "Classify the sentiment of the review")],
    [Message("user", "Rewrite the sentence with correct spelling and grammar. " * 3)],
    [Message("user", "0123456789")],
    [Message("user", "Give the words formed by the initials of each line.")],
    [Message("system", "Please output the reason first."), Message("user", "abc")],
]


def _scrambled_model(dtype: torch.dtype):
    """A tiny random Llama with a LoRA adapter whose greedy answers are varied text.

    Larger random weights than the default init break the repeat-the-last-token symmetry; the
    adapter's B is large enough to change the answers.
    """
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(len(tokenizer), seed=0, dtype=dtype)
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(std=0.3)
    peft_model, _ = add_random_lora(model, r=8, alpha=16, b_scale=0.3)
    return peft_model.to(dtype), tokenizer


def _token_prompts(tokenizer, prompts=PROMPTS) -> list[list[int]]:
    texts = [
        tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in p],
            tokenize=False,
            add_generation_prompt=True,
        )
        for p in prompts
    ]
    return [tokenizer(t, add_special_tokens=False).input_ids for t in texts]


def _naive(model, prompt: list[int], max_new_tokens: int, stops: set[int]) -> list[int]:
    """One prompt, no padding, no cache: the argmax of a full forward, token by token."""
    tokens: list[int] = []
    with torch.no_grad():
        while len(tokens) < max_new_tokens:
            logits = model(input_ids=torch.tensor([prompt + tokens])).logits
            tokens.append(int(logits[0, -1].argmax()))
            if tokens[-1] in stops:
                break
    return tokens


def _a_stop_token_mid_answer(model, prompts, max_new_tokens: int) -> int:
    """A token some answers emit early and others never do, to stand for end of turn."""
    answers = [_naive(model, p, max_new_tokens, set()) for p in prompts]
    counts: dict[int, int] = {}
    for answer in answers:
        for token in set(answer[1:-1]):
            counts[token] = counts.get(token, 0) + 1
    return max((c, t) for t, c in counts.items() if c < len(answers))[1]


def test_decoding_equals_a_naive_loop_stops_at_end_of_turn_and_answers_every_prompt():
    model, tokenizer = _scrambled_model(torch.float64)
    prompts = _token_prompts(tokenizer)
    stop = _a_stop_token_mid_answer(model, prompts, 10)
    stats = DecodingStats()

    decoded = list(
        decode_greedy(
            model, prompts, max_new_tokens=10, batch_size=3, stop_ids=[stop], pad_id=0, stats=stats
        )
    )

    assert sorted(i for i, _ in decoded) == list(range(len(prompts)))
    answers = dict(decoded)
    for i, prompt in enumerate(prompts):
        assert answers[i] == _naive(model, prompt, 10, {stop}), f"prompt {i}"
    lengths = [len(a) for a in answers.values()]
    assert min(lengths) < 10 and max(lengths) == 10  # some stopped at the stop token, some ran out
    assert all(a[-1] == stop for a in answers.values() if len(a) < 10)
    assert stats.answers == len(prompts) and stats.tokens == sum(lengths)
    assert stats.prompt_tokens == sum(len(p) for p in prompts)
    assert stats.seconds > 0 and stats.tokens_per_second > 0


def test_a_prefix_all_prompts_share_is_prefilled_once_with_the_same_answers():
    model, tokenizer = _scrambled_model(torch.float64)
    system = "Please output the reason first and then the final answer. " * 2
    prompts = _token_prompts(tokenizer, [[Message("system", system), *p[-1:]] for p in PROMPTS])
    calls: list[int] = []
    hook = model.get_base_model().register_forward_pre_hook(
        lambda _, args, kwargs: calls.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )

    decoded = dict(
        decode_greedy(model, prompts, max_new_tokens=6, batch_size=3, stop_ids=[], pad_id=0)
    )
    hook.remove()

    shared = len(tokenizer(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n").input_ids)
    assert calls[0] >= shared - 1  # the shared prefix, once (its last token may merge with more)
    assert max(calls[1:]) <= max(len(p) for p in prompts) - calls[0]  # then only what differs
    for i, prompt in enumerate(prompts):
        assert decoded[i] == _naive(model, prompt, 6, set()), f"prompt {i}"


def test_rows_leave_as_they_end_and_the_next_prompts_join():
    model, tokenizer = _scrambled_model(torch.float64)
    prompts = _token_prompts(tokenizer)
    stop = _a_stop_token_mid_answer(model, prompts, 10)
    by_length = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))

    order = [
        i
        for i, _ in decode_greedy(
            model, prompts, max_new_tokens=10, batch_size=2, stop_ids=[stop], pad_id=0
        )
    ]

    # Answers arrive as they end, not in prompt order; the longest prompt starts last.
    assert order != list(range(len(prompts)))
    assert order[-1] in by_length[-2:]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_text_answers_equal_model_generate_in_prompt_order(dtype):
    """The old path (``HFGenerator``: ``model.generate`` a batch at a time) answers the same."""
    model, tokenizer = _scrambled_model(dtype)
    stop = _a_stop_token_mid_answer(model, _token_prompts(tokenizer), 12)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    settings = HFSettings(model="tiny", max_new_tokens=12, batch_size=3, dtype=str(dtype)[6:])
    old = HFGenerator(settings, model=model, tokenizer=tokenizer).generate(PROMPTS)

    new: list[str | None] = [None] * len(PROMPTS)
    for index, text in generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=3):
        new[index] = text

    assert new == old
    assert len(set(old)) > 3  # varied answers, so the comparison means something


def test_a_plain_llama_supports_continuous_batching():
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(len(tokenizer))
    assert supports_continuous_batching(model)
    peft_model, _ = add_random_lora(model, r=4, alpha=8)
    assert supports_continuous_batching(peft_model)


def test_bad_settings_are_refused():
    model = build_tiny_llama(400)
    with pytest.raises(ValueError, match="at least 1"):
        list(decode_greedy(model, [[1, 2]], max_new_tokens=0, batch_size=1, stop_ids=[], pad_id=0))
