"""Tests for swiftstudy.data.render: which tokens are the completion, truncation and overflow."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import replace
from types import SimpleNamespace

import pytest

from conftest import build_tiny_tokenizer
from swiftstudy.constants import BUNDLED_MODEL_GGUF, BUNDLED_MODEL_PACKAGE
from swiftstudy.data import Example, Message, TokenizedExample, tokenize_example, tokenize_examples
from swiftstudy.errors import InputError

END = "<|im_end|>"


def _example(prompt: str | list[Message], response: str, id_: str = "0") -> Example:
    turns = (Message("user", prompt),) if isinstance(prompt, str) else tuple(prompt)
    return Example(id=id_, task=id_, prompt=turns, response=response, origin=f"ex.jsonl:{id_}")


def _completion_text(tokenized: TokenizedExample, tokenizer) -> str:
    ids = [i for i, m in zip(tokenized.input_ids, tokenized.completion_mask, strict=True) if m]
    return tokenizer.decode(ids)


def _completion_positions(tokenized: TokenizedExample) -> list[int]:
    return [t for t, m in enumerate(tokenized.completion_mask) if m]


def _assert_contiguous_tail(tokenized: TokenizedExample) -> None:
    """The completion is one run of tokens ending the sequence, after at least one prompt token."""
    positions = _completion_positions(tokenized)
    assert positions == list(range(positions[0], len(tokenized.input_ids)))
    assert tokenized.completion_mask[0] == 0
    assert len(tokenized.input_ids) == len(tokenized.completion_mask)


def test_completion_is_response_plus_end_of_turn(tiny_tokenizer):
    example = _example("What is two plus two?", "The answer is 4.")
    tokenized = tokenize_example(example, tiny_tokenizer)
    assert _completion_text(tokenized, tiny_tokenizer) == "The answer is 4." + END
    assert tokenized.n_prompt_truncated == 0
    assert tokenized.n_completion_tokens == sum(tokenized.completion_mask)
    _assert_contiguous_tail(tokenized)
    # The prompt tokens are exactly the template up to the assistant header.
    prompt_ids = tokenized.input_ids[: _completion_positions(tokenized)[0]]
    assert tiny_tokenizer.decode(prompt_ids) == (
        "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_trailing_newline_is_dropped(tiny_tokenizer):
    example = _example("Hi", "Give the words.")
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Give the words."}],
        tokenize=False,
    )
    assert text.endswith(END + "\n")
    tokenized = tokenize_example(example, tiny_tokenizer)
    assert tokenized.input_ids[-1] == tiny_tokenizer.convert_tokens_to_ids(END)
    assert tiny_tokenizer.decode(tokenized.input_ids) == text.removesuffix("\n")


def test_multi_turn_only_last_assistant_is_completion(tiny_tokenizer):
    prompt = [
        Message("system", "Be brief."),
        Message("user", "What is two plus two?"),
        Message("assistant", "The answer is 4."),
        Message("user", "And again?"),
    ]
    tokenized = tokenize_example(_example(prompt, "The answer is 4."), tiny_tokenizer)
    assert _completion_text(tokenized, tiny_tokenizer) == "The answer is 4." + END
    _assert_contiguous_tail(tokenized)
    start_id = tiny_tokenizer.convert_tokens_to_ids("<|im_start|>")
    last_header = max(t for t, i in enumerate(tokenized.input_ids) if i == start_id)
    assert _completion_positions(tokenized)[0] > last_header


def test_response_text_also_in_prompt(tiny_tokenizer):
    example = _example("Say: the answer is 4. Then the answer is 4.", "the answer is 4.")
    tokenized = tokenize_example(example, tiny_tokenizer)
    assert _completion_text(tokenized, tiny_tokenizer) == "the answer is 4." + END
    _assert_contiguous_tail(tokenized)
    assert (
        tokenized.n_completion_tokens
        == len(tiny_tokenizer("the answer is 4.", add_special_tokens=False)["input_ids"]) + 1
    )


def test_response_inside_a_special_token_name_is_not_matched(tiny_tokenizer):
    # "m" and "end" occur inside "<|im_end|>", after the real response: rfind must skip them.
    for response in ("m", "end", "im_end"):
        tokenized = tokenize_example(_example("Hi", response), tiny_tokenizer)
        assert _completion_text(tokenized, tiny_tokenizer) == response + END


def test_template_that_strips_content():
    tokenizer = build_tiny_tokenizer(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] | trim"
        " + '<|im_end|>\n' }}{% endfor %}"
    )
    tokenized = tokenize_example(_example("Hi", "  The answer is 4.\n"), tokenizer)
    assert _completion_text(tokenized, tokenizer) == "The answer is 4." + END


def test_template_that_does_not_reproduce_response_is_an_error():
    tokenizer = build_tiny_tokenizer(
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] | upper }}{% endfor %}"
    )
    with pytest.raises(InputError, match="does not reproduce") as err:
        tokenize_example(_example("Hi", "the answer"), tokenizer)
    assert err.value.key == "response"
    assert "ex.jsonl:0" in str(err.value)


def test_no_special_token_after_content_adds_nothing():
    tokenizer = build_tiny_tokenizer(
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    )
    tokenized = tokenize_example(_example("Hi", "The answer is 4."), tokenizer)
    # Byte-level BPE merges the separating space into " The": a token that straddles the start
    # of the response overlaps it, so it is completion.
    assert _completion_text(tokenized, tokenizer) == " The answer is 4."
    _assert_contiguous_tail(tokenized)


def test_no_template_completion_is_response_plus_eos():
    tokenizer = build_tiny_tokenizer(chat_template=None)
    prompt = [Message("system", "Be brief."), Message("user", "What is two plus two?")]
    tokenized = tokenize_example(_example(prompt, "The answer is 4."), tokenizer)
    assert tokenizer.eos_token == END
    assert _completion_text(tokenized, tokenizer) == "The answer is 4." + END
    assert tokenizer.decode(tokenized.input_ids) == (
        "Be brief.\nWhat is two plus two?\nThe answer is 4." + END
    )
    _assert_contiguous_tail(tokenized)


def test_no_template_and_no_eos_is_an_error():
    tokenizer = build_tiny_tokenizer(chat_template=None)
    stub = SimpleNamespace(is_fast=True, chat_template=None, eos_token_id=None)
    assert tokenizer.eos_token_id is not None
    with pytest.raises(ValueError, match="EOS"):
        tokenize_example(_example("Hi", "Yo"), stub)


def test_completion_at_position_zero_overflows():
    tokenizer = build_tiny_tokenizer("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    example = _example("", "The answer is 4.")
    with pytest.raises(InputError, match="first token") as err:
        tokenize_example(example, tokenizer)
    assert err.value.key == "response"
    assert tokenize_example(example, tokenizer, on_overflow="drop") is None


def test_prompt_is_truncated_from_the_left(tiny_tokenizer):
    example = _example("Please output the reason first and then the final answer.", "It is 4.")
    full = tokenize_example(example, tiny_tokenizer)
    n_completion = full.n_completion_tokens
    assert len(full.input_ids) > n_completion + 5
    for max_length in (len(full.input_ids) - 3, n_completion + 1):
        cut = tokenize_example(example, tiny_tokenizer, max_length=max_length)
        n_cut = len(full.input_ids) - max_length
        assert cut.n_prompt_truncated == n_cut
        assert len(cut.input_ids) == max_length
        assert cut.input_ids == full.input_ids[n_cut:]
        assert cut.completion_mask == full.completion_mask[n_cut:]
        assert cut.n_completion_tokens == n_completion
        _assert_contiguous_tail(cut)
    exact = tokenize_example(example, tiny_tokenizer, max_length=len(full.input_ids))
    assert exact == full


def test_completion_that_does_not_fit(tiny_tokenizer):
    example = _example("Hi", "Rewrite the sentence with correct spelling and grammar.")
    n_completion = tokenize_example(example, tiny_tokenizer).n_completion_tokens
    with pytest.raises(InputError) as err:
        tokenize_example(example, tiny_tokenizer, max_length=n_completion)
    assert err.value.key == "response"
    assert f"completion is {n_completion} tokens, does not fit max_length={n_completion}" in str(
        err.value
    )
    dropped = tokenize_example(example, tiny_tokenizer, max_length=n_completion, on_overflow="drop")
    assert dropped is None


def test_tokenize_examples_drops_and_warns_once(tiny_tokenizer, caplog):
    short = _example("Please output the reason first and then the final answer.", "4.", "short")
    long = _example("Hi", "Rewrite the sentence with correct spelling and grammar.", "long")
    fits = _example("Hi", "4.", "fits")  # 21 tokens exactly
    with caplog.at_level(logging.WARNING, logger="swiftstudy.data.render"):
        out = tokenize_examples(
            [short, long, fits], tiny_tokenizer, max_length=21, on_overflow="drop"
        )
    assert [t.example.id for t in out] == ["short", "fits"]
    assert out[0].n_prompt_truncated > 0 and out[1].n_prompt_truncated == 0
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "truncated the prompt of 1 example(s)" in message and "short" in message
    assert "dropped 1 example(s)" in message and "long" in message


def test_tokenize_examples_is_quiet_when_everything_fits(tiny_tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        out = tokenize_examples([_example("Hi", "4.")], tiny_tokenizer)
    assert len(out) == 1 and not caplog.records


def test_bad_arguments(tiny_tokenizer):
    example = _example("Hi", "Yo")
    with pytest.raises(ValueError, match="on_overflow"):
        tokenize_example(example, tiny_tokenizer, on_overflow="truncate")
    with pytest.raises(ValueError, match="max_length"):
        tokenize_example(example, tiny_tokenizer, max_length=1)
    slow = SimpleNamespace(is_fast=False, chat_template=None, eos_token_id=2)
    with pytest.raises(ValueError, match="fast tokenizer"):
        tokenize_example(example, slow)
    with pytest.raises(InputError, match="empty completion"):
        tokenize_example(_example("Hi", " "), tiny_tokenizer)


# -- TRL's formats: rendered as SFTTrainer renders them (tests/test_trl.py compares with TRL) ----


def _trl(format: str, prompt: str | list[Message], response: str) -> Example:
    return replace(_example(prompt, response), format=format)


def _prompt_text(tokenized: TokenizedExample, tokenizer) -> str:
    return tokenizer.decode(tokenized.input_ids[: _completion_positions(tokenized)[0]])


def test_trl_conversational_completion_ends_with_the_template_newline(tiny_tokenizer):
    turns = [Message("system", "Be brief."), Message("user", "What is two plus two?")]
    ours = tokenize_example(_example(turns, "The answer is 4."), tiny_tokenizer)
    trl = tokenize_example(_trl("trl-conversational", turns, "The answer is 4."), tiny_tokenizer)
    assert _completion_text(trl, tiny_tokenizer) == "The answer is 4." + END + "\n"
    assert _prompt_text(trl, tiny_tokenizer) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n"
    )
    _assert_contiguous_tail(trl)
    # The same tokens as swiftstudy's own rendering, plus the newline SFTTrainer trains on.
    assert trl.input_ids[:-1] == ours.input_ids
    assert trl.completion_mask == (*ours.completion_mask, 1)


def test_trl_standard_is_plain_text_plus_eos(tiny_tokenizer):
    trl = tokenize_example(_trl("trl-standard", "What is two plus two?", " 4."), tiny_tokenizer)
    assert tiny_tokenizer.decode(trl.input_ids) == "What is two plus two? 4." + END
    assert _completion_text(trl, tiny_tokenizer).endswith(" 4." + END)
    _assert_contiguous_tail(trl)
    # A completion that already ends with EOS gets no second one.
    again = tokenize_example(
        _trl("trl-standard", "What is two plus two?", " 4." + END), tiny_tokenizer
    )
    assert again.input_ids == trl.input_ids


def test_trl_messages_put_every_token_in_the_loss(tiny_tokenizer):
    turns = [Message("system", "Be brief."), Message("user", "Hi")]
    trl = tokenize_example(_trl("trl-messages", turns, "Hello"), tiny_tokenizer)
    assert trl.completion_mask == (0, *[1] * (len(trl.input_ids) - 1))
    assert tiny_tokenizer.decode(trl.input_ids) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n"
    )


def test_trl_examples_are_never_cut(tiny_tokenizer):
    example = _trl("trl-conversational", "Please output the reason first.", "It is 4.")
    full = tokenize_example(example, tiny_tokenizer)
    short = len(full.input_ids) - 1
    with pytest.raises(InputError, match="not truncated") as err:
        tokenize_example(example, tiny_tokenizer, max_length=short)
    assert err.value.key == "response"
    assert tokenize_example(example, tiny_tokenizer, max_length=short, on_overflow="drop") is None
    assert tokenize_example(example, tiny_tokenizer, max_length=len(full.input_ids)) == full


def test_trl_conversational_needs_a_chat_template():
    tokenizer = build_tiny_tokenizer(chat_template=None)
    with pytest.raises(InputError, match="chat template") as err:
        tokenize_example(_trl("trl-messages", "Hi", "Yo"), tokenizer)
    assert err.value.key == "messages"
    standard = tokenize_example(_trl("trl-standard", "Hi", "Yo"), tokenizer)
    assert tokenizer.decode(standard.input_ids) == "HiYo" + END


@pytest.mark.integration
def test_bundled_smollm2_tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    assert spec is not None, f"{BUNDLED_MODEL_PACKAGE} is not installed (make test installs it)"
    path = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=BUNDLED_MODEL_GGUF)
    response = "The answer is 4, because two plus two makes four."
    tokenized = tokenize_example(_example("What is two plus two?", response), tokenizer)
    assert _completion_text(tokenized, tokenizer) == response + END
    _assert_contiguous_tail(tokenized)
    prompt_text = tokenizer.decode(tokenized.input_ids[: _completion_positions(tokenized)[0]])
    assert "You are a helpful AI assistant named SmolLM" in prompt_text
    assert prompt_text.endswith("<|im_start|>assistant\n")
