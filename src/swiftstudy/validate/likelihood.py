"""The eval set's reference completions' NLL under each run: the quantity RelInf predicts.

RelInf is a first-order prediction of how training on a probe changes the study's loss of an eval
example, ℓ(z; θ) = Σ_{t : m_t = 1} −log p_θ(x_t | x_<t) summed over the completion tokens of the
chat-rendered example. So each query's golden response is rendered and masked exactly as the study
renders it (:func:`swiftstudy.data.tokenize_examples`, the study's default ``max_length``) and
scored with the study's own loss (:func:`swiftstudy.gradients.loss.compute_completion_nll`): one
forward pass per length-bucketed, right-padded batch, no gradient, no decoding.

Per-query results are cached in ``<out>/nll/<key>.json``, one file per checkpoint and setting
(model, checkpoint SHA-256, dtype, ``max_length``), keyed inside by what the query renders (its
prompt and response), so a rerun, or a longer eval set, computes only what it has not seen.
Device and batch size only change rounding and stay out of the key, as for the answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from swiftstudy.constants import DEFAULT_MAX_LENGTH, ON_OVERFLOW_ERROR
from swiftstudy.data import Example, TokenizedExample, tokenize_examples
from swiftstudy.fileio import json_sha256, write_text_atomic
from swiftstudy.gradients.batching import collate, default_batch_tokens, plan_batches
from swiftstudy.gradients.loss import compute_completion_nll
from swiftstudy.model import Checkpoint
from swiftstudy.validate.generation import BaseModelStates

logger = logging.getLogger(__name__)

#: The folder of ``<out>`` that holds the per-checkpoint NLL caches.
VALIDATE_NLL_DIR = "nll"
#: Bumped when a change makes cached NLLs wrong (the rendering or the loss).
_NLL_FORMAT = 1
#: Fields of an example that name it or say where it came from, not what is rendered (the
#: ``record`` it was read from is rendered through ``prompt`` and ``response`` alone).
_NAMING_FIELDS = ("id", "task", "origin", "record")


@dataclass(frozen=True)
class QueryNll:
    """A query's reference completion under one model.

    Attributes:
        nll: Summed NLL of its completion tokens (nats), the study's loss.
        n_tokens: Completion tokens in that sum.
    """

    nll: float
    n_tokens: int


def compute_completion_nlls(
    model: torch.nn.Module,
    tokenized: Sequence[TokenizedExample],
    *,
    pad_id: int,
    device: str | torch.device,
    max_examples: int,
    max_tokens: int | None = None,
) -> list[QueryNll]:
    """The summed completion NLL of each tokenized example, in order.

    Args:
        model: A causal LM (optionally PEFT-wrapped), in eval mode.
        tokenized: The examples, rendered and masked by :func:`tokenize_examples`.
        pad_id: The id right padding is filled with (never scored).
        device: Where the batches go (the model's device).
        max_examples: The most examples in one forward pass.
        max_tokens: The most padded tokens in one forward pass; the device's default if ``None``.
    """
    budget = default_batch_tokens(device) if max_tokens is None else max_tokens
    sequences = [(t.input_ids, t.completion_mask) for t in tokenized]
    lengths = [len(ids) for ids, _ in sequences]
    results: dict[int, QueryNll] = {}
    with torch.no_grad():
        for indices in plan_batches(lengths, max_examples=max_examples, max_tokens=budget):
            batch = collate(sequences, indices, pad_id=pad_id, device=device)
            losses = compute_completion_nll(
                model, batch.input_ids, batch.attention_mask, batch.completion_mask
            )
            for index, loss in zip(indices, losses.double().tolist(), strict=True):
                results[index] = QueryNll(loss, tokenized[index].n_completion_tokens)
    return [results[index] for index in range(len(tokenized))]  # plan_batches covers each once


class NllCache:
    """Per-query NLLs of each checkpoint, one JSON file per checkpoint and setting.

    Args:
        folder: ``<out>/nll``; created on the first save.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def read(self, settings: dict[str, Any]) -> dict[str, QueryNll]:
        """The cached NLLs under ``settings``, by query key; empty when there are none."""
        path = self._path(settings)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = {key: QueryNll(float(v[0]), int(v[1])) for key, v in data["queries"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            logger.warning("ignoring the unreadable NLL cache %s (%s)", path, err)
            return {}
        return entries if data.get("settings") == settings else {}

    def write(self, settings: dict[str, Any], entries: dict[str, QueryNll]) -> None:
        """Replace the file of ``settings`` with ``entries``, atomically."""
        payload = {
            "settings": settings,
            "queries": {key: [e.nll, e.n_tokens] for key, e in sorted(entries.items())},
        }
        write_text_atomic(self._path(settings), json.dumps(payload, indent=0) + "\n")

    def _path(self, settings: dict[str, Any]) -> Path:
        return self.folder / f"{json_sha256(settings)}.json"


def score_checkpoint(
    states: BaseModelStates,
    checkpoint: Checkpoint,
    fingerprint: str,
    examples: Sequence[Example],
    cache: NllCache,
) -> tuple[list[QueryNll], int]:
    """Each example's reference-completion NLL in ``checkpoint``'s state (cached ones read back).

    The base model is loaded, and put in the checkpoint's state, only when some NLL is not cached.

    Returns:
        The NLLs in example order, and how many were computed (not read from the cache).

    Raises:
        InputError: A reference completion does not fit the study's ``max_length``.
    """
    config = states.settings
    settings = {
        "format": _NLL_FORMAT,
        "loss": "summed completion NLL",
        "model": config.model,
        "checkpoint_sha256": fingerprint,
        "dtype": config.dtype,
        "max_length": DEFAULT_MAX_LENGTH,
    }
    keys = [_query_key(example) for example in examples]
    entries = cache.read(settings)
    missing = list(dict.fromkeys(key for key in keys if key not in entries))
    if missing:
        model, tokenizer = states.load(checkpoint)
        first = {key: example for key, example in zip(keys, examples, strict=True)}
        tokenized = tokenize_examples(
            [first[key] for key in missing],
            tokenizer,
            max_length=DEFAULT_MAX_LENGTH,
            on_overflow=ON_OVERFLOW_ERROR,
        )
        computed = compute_completion_nlls(
            model,
            tokenized,
            pad_id=tokenizer.pad_token_id,
            device=config.device,
            max_examples=config.batch_size,
        )
        entries.update(zip(missing, computed, strict=True))
        cache.write(settings, entries)
    return [entries[key] for key in keys], len(missing)


def _query_key(example: Example) -> str:
    """What the NLL depends on besides the model: every field the rendering may read."""
    plain = asdict(replace(example, record={}))  # not rendered: not worth asdict's deep copy
    return json_sha256({k: v for k, v in plain.items() if k not in _NAMING_FIELDS})
