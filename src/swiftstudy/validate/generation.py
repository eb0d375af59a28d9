"""Answers of each run: greedy, batched decoding of the base model in the run's final checkpoint.

The decoding itself is :class:`swiftstudy.generate.HFGenerator`'s, the one the probes command
uses: prompts rendered with the tokenizer's chat template and ``add_generation_prompt=True`` (the
same rendering as the training prompt, so the model is asked exactly as it was trained), sorted by
length, left-padded (decoder-only models continue from the last position) and decoded greedily to
the end-of-turn token or ``max_new_tokens``. This module puts the model in a checkpoint's state
first, loading the base model once for all runs and only when some answer is not cached.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from swiftstudy.generate import Generator, HFGenerator, HFSettings, Prompt
from swiftstudy.model import Checkpoint, ModelStates, load_base_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """How answers are decoded.

    Attributes:
        model: The base model's name (alias, folder, hub id or ``.gguf``).
        max_new_tokens: The most tokens of an answer.
        batch_size: Prompts decoded together.
        dtype: ``float32`` | ``float64`` | ``bfloat16`` | ``float16``.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (already resolved from ``auto``).
    """

    model: str
    max_new_tokens: int
    batch_size: int
    dtype: str = "float32"
    device: str = "cpu"


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is available, else ``cpu``; others stay."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class BaseModelStates:
    """The base model and tokenizer, loaded on first use, with :class:`ModelStates` over it.

    Args:
        settings: Which model, dtype and device.
    """

    def __init__(self, settings: GenerationSettings) -> None:
        self.settings = settings
        self._states: ModelStates | None = None
        self._tokenizer: Any = None

    def load(self, checkpoint: Checkpoint) -> tuple[torch.nn.Module, Any]:
        """The model in ``checkpoint``'s state, and the tokenizer."""
        if self._states is None:
            model, self._tokenizer = load_base_model(
                self.settings.model,
                dtype=getattr(torch, self.settings.dtype),
                device=self.settings.device,
            )
            self._states = ModelStates(model)
        model, _ = self._states.load(checkpoint)
        return model, self._tokenizer


class CheckpointGenerator(Generator):
    """Greedy answers of the base model in one checkpoint's state.

    Args:
        states: Loads the model in a checkpoint's state (shared by every run).
        checkpoint: The checkpoint.
        fingerprint: The SHA-256 of the checkpoint's weights: the answers' cache key.
    """

    def __init__(self, states: BaseModelStates, checkpoint: Checkpoint, fingerprint: str) -> None:
        self.states = states
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint

    @property
    def settings(self) -> dict[str, Any]:
        # Device and batch size only change rounding, not what is asked: they stay out of the key.
        config = self.states.settings
        return {
            "generator": "hf",
            "model": config.model,
            "checkpoint_sha256": self.fingerprint,
            "dtype": config.dtype,
            "decoding": "greedy",
            "max_new_tokens": config.max_new_tokens,
        }

    def iter_generate(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        if not prompts:
            return
        model, tokenizer = self.states.load(self.checkpoint)
        config = self.states.settings
        generator = HFGenerator(
            HFSettings(
                model=config.model,
                max_new_tokens=config.max_new_tokens,
                batch_size=config.batch_size,
                dtype=config.dtype,
                device=config.device,
            ),
            model=model,
            tokenizer=tokenizer,
        )
        yield from generator.iter_generate(prompts)
