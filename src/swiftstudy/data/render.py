"""Chat rendering: an Example becomes token ids and a mask of the completion tokens in the loss.

With a chat template, the whole conversation (prompt turns plus the assistant response) is rendered
with ``tokenizer.apply_chat_template`` and tokenized once; the completion is every token that
overlaps the response text, plus the end-of-turn token right after it when that is a special token
(``<|im_end|>`` for ChatML). A token that straddles the start of the response (byte-level BPE's
" The" after ": ") overlaps it, so it is completion too. Without a template, the prompt contents
and the response are joined with newlines and the EOS token is appended, as completion.

TRL-format examples (``Example.format`` in ``TRL_FORMATS``) are rendered as TRL 1.16's SFTTrainer
renders them for training, so a study scores the tokens the run trained on:

* standard prompt/completion: ``tokenizer(prompt)`` and ``tokenizer(prompt + completion + EOS)``
  (EOS appended unless the completion ends with it), no chat template;
* conversational prompt/completion: the chat template applied to the prompt with the generation
  prompt, and to prompt plus completion; the completion is everything after their common prefix,
  so it includes the end-of-turn token and the newline a ChatML template writes after it;
* conversational ``messages`` (language modeling): every token is in the loss.

They are never cut: one longer than ``max_length`` overflows. SFTTrainer keeps the first tokens of
an example longer than its own ``max_length`` (1024 by default); with the study's ``max_length`` set
to the run's, such examples overflow instead of being scored on tokens the run never saw.

``completion_mask[t] == 1`` means the negative log-likelihood of ``input_ids[t]`` given
``input_ids[:t]`` is in the loss, so position 0 is never in it. Tokens after the last completion
token (the template's trailing newline) carry no loss and are always dropped. When the sequence
is longer than ``max_length``, the prompt is cut from the left, keeping at least one prompt token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from swiftstudy.constants import DEFAULT_MAX_LENGTH, ON_OVERFLOW_DROP, ON_OVERFLOW_ERROR
from swiftstudy.data.examples import (
    FORMAT_TRL_CONVERSATIONAL,
    FORMAT_TRL_STANDARD,
    TRL_FORMATS,
    Example,
)
from swiftstudy.errors import InputError

logger = logging.getLogger(__name__)

_ON_OVERFLOW = (ON_OVERFLOW_ERROR, ON_OVERFLOW_DROP)
_MAX_IDS_LOGGED = 10


@dataclass(frozen=True)
class TokenizedExample:
    """An example rendered to token ids, with the mask of the tokens whose loss we study.

    Attributes:
        example: The example it was rendered from.
        input_ids: The token ids of the whole sequence, prompt then completion.
        completion_mask: ``completion_mask[t] == 1`` when the NLL of ``input_ids[t]`` given
            ``input_ids[:t]`` is in the loss; ``completion_mask[0]`` is always 0.
        n_prompt_truncated: Prompt tokens dropped from the left to fit ``max_length`` (usually 0).
    """

    example: Example
    input_ids: tuple[int, ...]
    completion_mask: tuple[int, ...]
    n_prompt_truncated: int

    @property
    def n_completion_tokens(self) -> int:
        """The number of tokens in the loss."""
        return sum(self.completion_mask)


def tokenize_example(
    example: Example,
    tokenizer: Any,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    on_overflow: str = ON_OVERFLOW_ERROR,
) -> TokenizedExample | None:
    """Render and tokenize one example, marking its completion tokens.

    Args:
        example: The example.
        tokenizer: A fast Hugging Face tokenizer; its ``chat_template``, if set, is used.
        max_length: The most tokens a sequence may have; longer prompts are cut from the left.
        on_overflow: What to do when the completion (plus one prompt token) does not fit
            ``max_length``: ``"error"`` raises, ``"drop"`` returns ``None``.

    Returns:
        The tokenized example, or ``None`` when it overflows and ``on_overflow == "drop"``.

    Raises:
        ValueError: ``on_overflow`` or ``max_length`` is invalid, or the tokenizer is not fast
            (offsets are needed) or has no EOS token when there is no chat template (or the
            example is in TRL's standard format).
        InputError: The chat template does not reproduce the response, a conversational TRL
            example meets a tokenizer without a chat template, or the completion does not fit
            and ``on_overflow == "error"``.
    """
    _check_arguments(tokenizer, max_length, on_overflow)
    if not example.response.strip():
        raise InputError("empty completion", path=example.origin, key="response")
    if example.format in TRL_FORMATS:
        input_ids, mask = render_trl(example, tokenizer)
    elif tokenizer.chat_template:
        input_ids, mask = _render_with_template(example, tokenizer)
    else:
        input_ids, mask = _render_without_template(example, tokenizer)
    return _fit(example, input_ids, mask, max_length, on_overflow)


def tokenize_examples(
    examples: Iterable[Example],
    tokenizer: Any,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    on_overflow: str = ON_OVERFLOW_ERROR,
) -> list[TokenizedExample]:
    """Tokenize examples with :func:`tokenize_example`, leaving out the dropped ones.

    Logs one warning summarising the examples whose prompt was truncated and those dropped.

    Args:
        examples: The examples.
        tokenizer: A fast Hugging Face tokenizer.
        max_length: The most tokens a sequence may have.
        on_overflow: ``"error"`` or ``"drop"``, see :func:`tokenize_example`.

    Returns:
        The tokenized examples, in order, without the dropped ones.
    """
    examples = list(examples)
    results = [
        tokenize_example(e, tokenizer, max_length=max_length, on_overflow=on_overflow)
        for e in examples
    ]
    kept = [t for t in results if t is not None]
    dropped = [e.id for e, t in zip(examples, results, strict=True) if t is None]
    truncated = [t.example.id for t in kept if t.n_prompt_truncated]
    if truncated or dropped:
        logger.warning(
            "max_length=%d: truncated the prompt of %d example(s) on the left%s; "
            "dropped %d example(s) whose completion does not fit%s",
            max_length,
            len(truncated),
            _format_ids(truncated),
            len(dropped),
            _format_ids(dropped),
        )
    return kept


def _check_arguments(tokenizer: Any, max_length: int, on_overflow: str) -> None:
    """Refuse arguments that can never work, before touching the example."""
    if on_overflow not in _ON_OVERFLOW:
        raise ValueError(f"on_overflow must be one of {_ON_OVERFLOW}, got {on_overflow!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "a fast tokenizer is needed (character offsets locate the completion), "
            f"got {type(tokenizer).__name__}"
        )


def render_trl(example: Example, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids and completion mask of a TRL-format example, as SFTTrainer builds them.

    Mirrors ``SFTTrainer._prepare_dataset`` of TRL 1.16 (its EOS step and ``tokenize_fn``): the
    completion starts where the tokenized prompt and the tokenized prompt + completion diverge.

    Args:
        example: An example whose ``format`` is one of ``TRL_FORMATS``.
        tokenizer: A Hugging Face tokenizer.

    Returns:
        The input ids and the mask of the tokens SFTTrainer puts in the loss (position 0 never).
    """
    if example.format == FORMAT_TRL_STANDARD:
        eos = tokenizer.eos_token
        if eos is None:
            raise ValueError("TRL's standard format appends the EOS token; the tokenizer has none")
        prompt = example.prompt[0].content
        completion = example.response if example.response.endswith(eos) else example.response + eos
        prompt_ids = list(tokenizer(text=prompt)["input_ids"])
        input_ids = list(tokenizer(text=prompt + completion)["input_ids"])
    else:
        if not tokenizer.chat_template:
            raise InputError(
                "a conversational TRL example needs a tokenizer with a chat template",
                path=example.origin,
                key="prompt" if example.format == FORMAT_TRL_CONVERSATIONAL else "messages",
            )
        messages = [{"role": m.role, "content": m.content} for m in example.prompt]
        messages.append({"role": "assistant", "content": example.response})
        input_ids = _chat_ids(tokenizer, messages)
        if example.format == FORMAT_TRL_CONVERSATIONAL:
            prompt_ids = _chat_ids(tokenizer, messages[:-1], add_generation_prompt=True)
        else:
            # Language modeling: every token is a label; the first one has nothing to predict it.
            prompt_ids = input_ids[:1]
    # The number of leading tokens both share (TRL's ``common_prefix_length``).
    n_prompt = next(
        (i for i, (a, b) in enumerate(zip(prompt_ids, input_ids, strict=False)) if a != b),
        min(len(prompt_ids), len(input_ids)),
    )
    return input_ids, [0] * n_prompt + [1] * (len(input_ids) - n_prompt)


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> list[int]:
    """``apply_chat_template`` tokenized, as TRL calls it (no special tokens added on top)."""
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(encoded["input_ids"])


def _render_with_template(example: Example, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Render the conversation with the chat template; the completion is the response's tokens."""
    messages = [{"role": m.role, "content": m.content} for m in example.prompt]
    messages.append({"role": "assistant", "content": example.response})
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    start, end = _locate_response(text, example, tokenizer)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    mask = _overlap_mask(encoding["offset_mapping"], start, end)
    last = _last_index(mask)
    # The end-of-turn token teaches the model to stop: it belongs to the completion.
    if last + 1 < len(input_ids) and input_ids[last + 1] in set(tokenizer.all_special_ids):
        mask[last + 1] = 1
    return input_ids, mask


def _render_without_template(example: Example, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Join prompt contents and response with newlines, tokenize, and append EOS as completion."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither a chat template nor an EOS token")
    text = "\n".join([*(m.content for m in example.prompt), example.response])
    start = len(text) - len(example.response)
    encoding = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    mask = _overlap_mask(encoding["offset_mapping"], start, len(text))
    # Some tokenizers already append EOS themselves: mark that one rather than adding a second.
    if not input_ids or input_ids[-1] != tokenizer.eos_token_id:
        input_ids.append(tokenizer.eos_token_id)
        mask.append(0)
    mask[-1] = 1
    return input_ids, mask


def _locate_response(text: str, example: Example, tokenizer: Any) -> tuple[int, int]:
    """Find the response in the rendered text: its last occurrence outside special tokens."""
    special = [re.escape(t) for t in tokenizer.all_special_tokens if t]
    special_spans = [m.span() for m in re.finditer("|".join(special), text)] if special else []
    for content in dict.fromkeys((example.response, example.response.strip())):
        hi = len(text)
        while (start := text.rfind(content, 0, hi)) >= 0:
            end = start + len(content)
            if not any(s < end and e > start for s, e in special_spans):
                return start, end
            hi = end - 1
    raise InputError(
        "the chat template does not reproduce the response", path=example.origin, key="response"
    )


def _overlap_mask(offsets: Sequence[Sequence[int]], start: int, end: int) -> list[int]:
    """1 for each token whose character span overlaps ``[start, end)``, else 0."""
    return [int(s < end and e > start) for s, e in offsets]


def _last_index(mask: Sequence[int]) -> int:
    """The index of the last 1 in the mask (the mask must hold one)."""
    return len(mask) - 1 - list(reversed(mask)).index(1)


def _fit(
    example: Example, input_ids: list[int], mask: list[int], max_length: int, on_overflow: str
) -> TokenizedExample | None:
    """Drop trailing non-loss tokens, then cut the prompt from the left to fit ``max_length``.

    TRL-format examples are never cut (SFTTrainer trained on another context than a left cut).
    """
    if 1 not in mask:
        raise InputError("no completion tokens", path=example.origin, key="response")
    last = _last_index(mask)
    input_ids, mask = input_ids[: last + 1], mask[: last + 1]
    first = mask.index(1)
    n_completion = len(mask) - first
    message = None
    if first == 0:
        message = "the completion starts at the first token: there is no prompt to condition on"
    elif example.format in TRL_FORMATS and len(input_ids) > max_length:
        message = (
            f"is {len(input_ids)} tokens, does not fit max_length={max_length}; TRL-format "
            "examples are not truncated (set max_length to SFTConfig's, and on_overflow: drop "
            "for the examples SFTTrainer cut)"
        )
    elif n_completion + 1 > max_length:
        message = (
            f"completion is {n_completion} tokens, does not fit max_length={max_length} "
            "(with at least one prompt token before it)"
        )
    if message is not None:
        if on_overflow == ON_OVERFLOW_DROP:
            return None
        raise InputError(message, path=example.origin, key="response")
    n_cut = max(0, len(input_ids) - max_length)
    return TokenizedExample(
        example=example,
        input_ids=tuple(input_ids[n_cut:]),
        completion_mask=tuple(mask[n_cut:]),
        n_prompt_truncated=n_cut,
    )


def _format_ids(ids: Sequence[str]) -> str:
    """`` (ids: a, b, ...)`` for a log line, at most a few ids."""
    if not ids:
        return ""
    shown = ", ".join(ids[:_MAX_IDS_LOGGED])
    more = f", ... ({len(ids) - _MAX_IDS_LOGGED} more)" if len(ids) > _MAX_IDS_LOGGED else ""
    return f" (ids: {shown}{more})"
