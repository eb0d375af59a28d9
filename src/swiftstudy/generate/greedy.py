"""Greedy decoding with continuous batching: a row whose answer has ended is refilled at once.

``model.generate`` decodes a batch until its longest answer ends, so one answer that runs to
``max_new_tokens`` keeps every finished row of its batch decoding padding. On a CPU a decoding
step streams every weight and costs about as much for one row as for eight, so that waste is most
of the time. Here at most ``batch_size`` rows decode together; a row leaves at its end-of-turn
token (or after ``max_new_tokens``) and the next prompts, in order of token length, are prefilled
and join. All rows share one left-padded KV cache: joining rows are prefilled into a cache of
their own, both caches are left-padded to one length and stacked, and columns that no row attends
to any more are cut from the left. The tokens all prompts start with (the chat template's system
turn) are prefilled once and copied into each joining row's cache.

The greedy choices are ``model.generate``'s over the same prompts (:class:`HFGenerator`, kept as
the reference) up to the rounding of other batch shapes: an argmax within rounding of a tie can
flip. ``benchmarks/decoding.py`` counts how often on the bundled model.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from swiftstudy.generate.base import Prompt
from swiftstudy.generate.hf import render_prompt, stop_token_ids

logger = logging.getLogger(__name__)


@dataclass
class DecodingStats:
    """What a decoder has done so far.

    Attributes:
        answers: Answers finished.
        prompt_tokens: Tokens of their prompts.
        tokens: Tokens generated, each answer's end-of-turn token included.
        seconds: Time spent decoding (prefill included), not waiting on the caller.
    """

    answers: int = 0
    prompt_tokens: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of decoding; 0 before any."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Rows:
    """The rows decoding together and the KV cache they share.

    Attributes:
        indices: Each row's prompt index.
        tokens: Each row's generated tokens so far.
        cache: The KV cache, one column per position, rows left-padded to a common length.
        mask: ``(rows, columns)``, 1 where a cache column holds one of the row's tokens (so a
            row's sum is the position of its next token).
        last: ``(rows,)``, each row's newest token, not yet in the cache.
    """

    indices: list[int]
    tokens: list[list[int]]
    cache: Any
    mask: torch.Tensor
    last: torch.Tensor


def supports_continuous_batching(model: torch.nn.Module) -> bool:
    """Whether the model's KV cache is a plain growing cache, which rows can join and leave.

    Sliding-window, hybrid and recurrent caches are not: decode those with ``model.generate``.
    """
    cache = _new_cache(_causal_lm(model))
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def generate_greedy(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    batch_size: int,
    stats: DecodingStats | None = None,
) -> Iterator[tuple[int, str]]:
    """Answer chat prompts greedily, yielding ``(index into prompts, answer)`` as answers end.

    Prompts are rendered as :class:`HFGenerator` renders them (chat template, generation prompt)
    and answers decoded as it decodes them (special tokens dropped, stripped).

    Args:
        model: A causal LM for which :func:`supports_continuous_batching` holds, or a PEFT model
            over one (merge its adapter first for speed, with
            :func:`swiftstudy.model.merging.merged_lora`).
        tokenizer: Its tokenizer.
        prompts: The chat prompts.
        max_new_tokens: The most tokens of an answer.
        batch_size: The most rows decoding together.
        stats: Counts tokens and seconds, if given.
    """
    stats = DecodingStats() if stats is None else stats
    started = time.perf_counter()
    texts = [render_prompt(tokenizer, prompt) for prompt in prompts]
    ids = [tokenizer(text, add_special_tokens=False).input_ids for text in texts]
    stats.seconds += time.perf_counter() - started
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    for index, tokens in decode_greedy(
        model,
        ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        stop_ids=stops,
        pad_id=pad_id,
        stats=stats,
    ):
        yield index, tokenizer.decode(tokens, skip_special_tokens=True).strip()


def decode_greedy(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    stop_ids: Sequence[int],
    pad_id: int,
    stats: DecodingStats | None = None,
) -> Iterator[tuple[int, list[int]]]:
    """Decode token prompts greedily, yielding ``(index, generated tokens)`` as each one ends.

    The generated tokens end with a stop token, or number ``max_new_tokens``.

    Args:
        model: The causal LM.
        prompts: Each prompt's token ids (none empty).
        max_new_tokens: The most tokens generated per prompt.
        batch_size: The most rows decoding together.
        stop_ids: Tokens that end an answer (end of turn, EOS).
        pad_id: The token that pads prompts prefilled together (masked, so any token will do).
        stats: Counts tokens and seconds, if given.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    stats = DecodingStats() if stats is None else stats
    decoder = _Decoder(_causal_lm(model), pad_id)
    if len(prompts) > 1:
        started = time.perf_counter()
        with torch.inference_mode():
            decoder.share_prefix(prompts[0][: _shared_prefix_length(prompts)])
        stats.seconds += time.perf_counter() - started
    pending = deque(sorted(range(len(prompts)), key=lambda i: len(prompts[i])))
    stops = set(stop_ids)
    rows: _Rows | None = None
    while pending or rows is not None:
        started = time.perf_counter()
        with torch.inference_mode():
            free = batch_size - (len(rows.indices) if rows is not None else 0)
            if free and pending:
                joining = [pending.popleft() for _ in range(min(free, len(pending)))]
                joined = decoder.prefill(joining, [prompts[i] for i in joining])
                rows = joined if rows is None else _stack(rows, joined)
            else:
                decoder.step(rows)
            ended = [
                k
                for k, tokens in enumerate(rows.tokens)
                if tokens[-1] in stops or len(tokens) >= max_new_tokens
            ]
            finished = [(rows.indices[k], rows.tokens[k]) for k in ended]
            rows = _drop(rows, ended) if ended else rows
        stats.seconds += time.perf_counter() - started
        for index, tokens in finished:
            stats.answers += 1
            stats.prompt_tokens += len(prompts[index])
            stats.tokens += len(tokens)
            yield index, tokens
    logger.info(
        "decoded %d answers, %d tokens in %.1f s: %.1f tokens/s",
        stats.answers,
        stats.tokens,
        stats.seconds,
        stats.tokens_per_second,
    )


class _Decoder:
    """Runs the model's forward for prefill and for one decoding step.

    The tokens every prompt starts with (the chat template's system turn, a shared instruction)
    are prefilled once, by :meth:`share_prefix`, and their keys and values copied into each
    joining row's cache: a key or value depends only on the tokens up to its own position.
    """

    def __init__(self, lm: torch.nn.Module, pad_id: int) -> None:
        self.lm = lm
        self.pad_id = pad_id
        # The forward's cache argument: ``cache`` in newer transformers, ``past_key_values`` before.
        parameters = inspect.signature(lm.forward).parameters
        self.cache_keyword = "cache" if "cache" in parameters else "past_key_values"
        self.device = next(lm.parameters()).device
        self.shared = 0
        self._shared_states: list[tuple[torch.Tensor, torch.Tensor]] = []

    def share_prefix(self, prefix: Sequence[int]) -> None:
        """Prefill ``prefix``, which every later prompt starts with (and is longer than)."""
        if not prefix:
            return
        ids = torch.tensor([list(prefix)], dtype=torch.long, device=self.device)
        cache = _new_cache(self.lm)
        self._choose(ids, torch.ones_like(ids), torch.arange(len(prefix))[None].to(ids), cache)
        self.shared = len(prefix)
        self._shared_states = [(layer.keys, layer.values) for layer in cache.layers]

    def prefill(self, indices: list[int], prompts: list[Sequence[int]]) -> _Rows:
        """Rows for ``prompts`` (left-padded together), each with its first token chosen."""
        suffixes = [prompt[self.shared :] for prompt in prompts]
        width = max(len(p) for p in suffixes)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            ids[row, width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
            mask[row, width - len(suffix) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        # Each token's position counts from the prompt's start; the pads' (masked) do not matter.
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0) + self.shared
        cache = _new_cache(self.lm)
        for layer, (keys, values) in zip(cache.layers, self._shared_states, strict=False):
            layer.update(
                keys.expand(len(prompts), -1, -1, -1), values.expand(len(prompts), -1, -1, -1)
            )
        mask = torch.cat([mask.new_ones((len(prompts), self.shared)), mask], dim=1)
        last = self._choose(ids, mask, positions, cache)
        tokens = [[token] for token in last.tolist()]
        return _Rows(indices, tokens, cache, mask, last)

    def step(self, rows: _Rows) -> None:
        """Feed each row's newest token and choose its next one."""
        positions = rows.mask.sum(-1, keepdim=True)
        rows.mask = torch.cat([rows.mask, torch.ones_like(positions)], dim=1)
        rows.last = self._choose(rows.last[:, None], rows.mask, positions, rows.cache)
        for tokens, token in zip(rows.tokens, rows.last.tolist(), strict=True):
            tokens.append(token)

    def _choose(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """The greedy next token of each row (logits of the last position only)."""
        output = self.lm(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_keyword: cache},
        )
        return output.logits[:, -1].float().argmax(-1)


def _stack(first: _Rows, second: _Rows) -> _Rows:
    """Both row sets in one: caches and masks left-padded to one length, stacked by row."""
    width = max(first.mask.shape[1], second.mask.shape[1])
    for a, b in zip(first.cache.layers, second.cache.layers, strict=True):
        a.keys = torch.cat([_pad_columns(a.keys, width, 2), _pad_columns(b.keys, width, 2)])
        a.values = torch.cat([_pad_columns(a.values, width, 2), _pad_columns(b.values, width, 2)])
    return _Rows(
        first.indices + second.indices,
        first.tokens + second.tokens,
        first.cache,
        torch.cat([_pad_columns(first.mask, width, 1), _pad_columns(second.mask, width, 1)]),
        torch.cat([first.last, second.last]),
    )


def _drop(rows: _Rows, ended: list[int]) -> _Rows | None:
    """The rows without ``ended``, their cache cut to the columns some row still attends to."""
    gone = set(ended)
    keep = [k for k in range(len(rows.indices)) if k not in gone]
    if not keep:
        return None
    index = torch.tensor(keep, device=rows.mask.device)
    mask = rows.mask[index]
    start = int(mask.any(0).int().argmax())  # the first column some kept row attends to
    for layer in rows.cache.layers:
        layer.keys = layer.keys[index, :, start:]
        layer.values = layer.values[index, :, start:]
    return _Rows(
        [rows.indices[k] for k in keep],
        [rows.tokens[k] for k in keep],
        rows.cache,
        mask[:, start:],
        rows.last[index],
    )


def _shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all prompts share, leaving each at least one of its own."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    length = 0
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def _pad_columns(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``tensor`` left-padded with zeros along ``dim`` (the column axis) to ``width``."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    # F.pad's pairs run from the last dimension backwards.
    pad = [0, 0] * (tensor.ndim - 1 - dim) + [missing, 0]
    return F.pad(tensor, pad)


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PEFT wrapper (its LoRA layers stay in it), or the model."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def _new_cache(lm: torch.nn.Module) -> Any:
    """An empty KV cache for ``lm``, its layers shaped by the model's config where supported."""
    try:
        return DynamicCache(config=lm.config)
    except TypeError:  # transformers before the config argument
        return DynamicCache()
