"""Answers of each run: greedy, batched decoding of the base model in the run's final checkpoint.

Prompts are rendered as :class:`swiftstudy.generate.HFGenerator` (the probes command's generator)
renders them: the tokenizer's chat template with ``add_generation_prompt=True``, the same
rendering as the training prompt, so the model is asked exactly as it was trained. The model is
put in a checkpoint's state (the base model loaded once for all runs, and only when some answer is
not cached), its LoRA adapter merged into the weights for the decoding and taken out bit-exactly
after (:mod:`swiftstudy.model.merging`), and the prompts decoded greedily with continuous
batching (:mod:`swiftstudy.generate.greedy`): in order of token length, each answer ending at its
end-of-turn token or ``max_new_tokens``, its row refilled at once. Models whose cache rows cannot
join and leave (sliding-window, hybrid) are decoded with ``HFGenerator``'s ``model.generate``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from swiftstudy.constants import EVAL_BACKEND_HF
from swiftstudy.generate import Generator, HFGenerator, HFSettings, Prompt
from swiftstudy.generate.greedy import DecodingStats, generate_greedy, supports_continuous_batching
from swiftstudy.model import Checkpoint, LoadOptions, ModelStates, load_base_model
from swiftstudy.model.merging import merged_lora

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings(HFSettings):
    """How answers are decoded: the hf generator's settings (``model``, ``max_new_tokens``,
    ``batch_size``, ``dtype``), on ``device`` ``cpu``, ``cuda`` or ``cuda:N`` (already resolved
    from ``auto``)."""

    device: str = "cpu"


class BaseModelStates:
    """The base model and tokenizer, loaded on first use, with :class:`ModelStates` over it.

    Args:
        settings: Which model, dtype and device.
    """

    def __init__(self, settings: GenerationSettings) -> None:
        self.settings = settings
        self._states: ModelStates | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        #: True while an adapter is merged for decoding: swapping adapters then would corrupt it.
        self.merged = False

    def load(self, checkpoint: Checkpoint) -> tuple[torch.nn.Module, Any]:
        """The model in ``checkpoint``'s state, and the tokenizer.

        Raises:
            RuntimeError: An adapter is merged (a decoding is under way).
        """
        if self.merged:
            raise RuntimeError("cannot load a checkpoint while an adapter is merged for decoding")
        model, _ = self._ensure().load(checkpoint)
        return model, self._tokenizer

    def base(self) -> tuple[torch.nn.Module, Any]:
        """The model, in the state last loaded, and the tokenizer: for what no checkpoint
        changes (the tokenizer, the generation config)."""
        self._ensure()
        return self._model, self._tokenizer

    def _ensure(self) -> ModelStates:
        if self._states is None:
            self._model, self._tokenizer = load_base_model(
                self.settings.model,
                dtype=getattr(torch, self.settings.dtype),
                device=self.settings.device,
                options=LoadOptions.of(self.settings),
            )
            self._states = ModelStates(self._model)
        return self._states


def answers_key(backend: str, config: GenerationSettings, fingerprint: str) -> dict[str, Any]:
    """What determines a checkpoint's greedy answers: their cache key.

    Device and batch size only change rounding, not what is asked: they stay out. The backend
    stays in (as ``generator``): vLLM's kernels round otherwise than transformers', so answers of
    one are never served as the other's.
    """
    return {
        "generator": backend,
        "model": config.model,
        "checkpoint_sha256": fingerprint,
        "dtype": config.dtype,
        "decoding": "greedy",
        "max_new_tokens": config.max_new_tokens,
    }


class CheckpointGenerator(Generator):
    """Greedy answers of the base model in one checkpoint's state.

    Args:
        states: Loads the model in a checkpoint's state (shared by every run).
        checkpoint: The checkpoint.
        fingerprint: The SHA-256 of the checkpoint's weights: the answers' cache key.

    Attributes:
        stats: Answers, tokens and seconds decoded so far; ``stats.tokens_per_second`` is the
            decoding speed to record.
    """

    #: The answers' cache key says which backend decoded them (``answers_key``).
    backend = EVAL_BACKEND_HF

    def __init__(self, states: BaseModelStates, checkpoint: Checkpoint, fingerprint: str) -> None:
        self.states = states
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.stats = DecodingStats()

    @property
    def settings(self) -> dict[str, Any]:
        return answers_key(self.backend, self.states.settings, self.fingerprint)

    def iter_generate(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        if not prompts:
            return
        model, tokenizer = self.states.load(self.checkpoint)
        config = self.states.settings
        self.states.merged = True
        try:
            with merged_lora(model) as layers:
                logger.info("decoding with the adapter merged into %d layers", layers)
                if supports_continuous_batching(model):
                    yield from generate_greedy(
                        model,
                        tokenizer,
                        prompts,
                        max_new_tokens=config.max_new_tokens,
                        batch_size=config.batch_size,
                        stats=self.stats,
                    )
                else:
                    yield from self._generate_batched(model, tokenizer, prompts)
        finally:
            self.states.merged = False

    def _generate_batched(
        self, model: torch.nn.Module, tokenizer: Any, prompts: Sequence[Prompt]
    ) -> Iterator[tuple[int, str]]:
        """``model.generate`` a batch at a time, for caches rows cannot join or leave."""
        generator = HFGenerator(self.states.settings, model=model, tokenizer=tokenizer)
        started = time.perf_counter()
        for index, text in generator.iter_generate(prompts):
            self.stats.seconds += time.perf_counter() - started
            self.stats.answers += 1
            self.stats.tokens += len(tokenizer(text, add_special_tokens=False).input_ids)
            yield index, text
            started = time.perf_counter()
