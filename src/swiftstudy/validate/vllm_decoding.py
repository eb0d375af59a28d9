"""Answers of each run by vLLM (``eval.backend: vllm``): one engine, each run's adapter per request.

The engine (:class:`swiftstudy.generate.vllm_lora.VLLMEngine`) runs over the base model's folder
with the transformers side's dtype, device and loading keys, and starts on the first answer that
is not cached. Prompts are rendered and answers decoded by the transformers side's tokenizer, so
the two backends ask the same tokens; their answers are cached apart (:func:`~swiftstudy.validate.
generation.answers_key`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from swiftstudy.constants import CHECKPOINT_KIND_ADAPTER, EVAL_BACKEND_VLLM, VLLM_CHUNK
from swiftstudy.errors import InputError
from swiftstudy.generate import Prompt
from swiftstudy.generate.hf import stop_token_ids
from swiftstudy.generate.vllm_lora import VLLMEngine, vllm_max_lora_rank
from swiftstudy.model import Checkpoint, LoadOptions, model_folder
from swiftstudy.validate.generation import BaseModelStates, CheckpointGenerator


class VLLMDecoder:
    """The vLLM engine of one validation, started on the first answer that is not cached.

    It runs over the base model's folder (the bundled model's converted one), with the same
    dtype, device and loading keys as the transformers side, and serves the runs' adapters up
    to ``max_lora_rank``.

    Args:
        states: The transformers side: its tokenizer renders prompts and decodes answers, its
            generation config gives the end-of-turn tokens.
        ranks: The ranks of the runs' adapters.
    """

    def __init__(self, states: BaseModelStates, ranks: Sequence[int]) -> None:
        self.states = states
        self.max_lora_rank = vllm_max_lora_rank(ranks)
        self._engine: VLLMEngine | None = None

    def engine(self) -> VLLMEngine:
        """The engine (built on the first call)."""
        if self._engine is None:
            config = self.states.settings
            model, tokenizer = self.states.base()
            self._engine = VLLMEngine(
                model_folder(config.model, options=LoadOptions.of(config)),
                tokenizer,
                stop_token_ids(model, tokenizer),
                dtype=config.dtype,
                max_lora_rank=self.max_lora_rank,
                device=config.device,
                # vLLM takes revision and trust_remote_code; attn_implementation is transformers'.
                engine_options=LoadOptions(config.revision, config.trust_remote_code).given(),
            )
        return self._engine


class VLLMCheckpointGenerator(CheckpointGenerator):
    """Greedy answers of one LoRA checkpoint, decoded by vLLM with the adapter per request.

    Args:
        decoder: The validation's vLLM engine (shared by every run).
        checkpoint: The checkpoint: a PEFT LoRA adapter.
        fingerprint: The SHA-256 of the checkpoint's weights: the answers' cache key.

    Attributes:
        stats: Answers, tokens and seconds decoded so far.
    """

    backend = EVAL_BACKEND_VLLM

    def __init__(self, decoder: VLLMDecoder, checkpoint: Checkpoint, fingerprint: str) -> None:
        if checkpoint.kind != CHECKPOINT_KIND_ADAPTER:
            raise InputError(
                "eval.backend vllm decodes LoRA adapters, and this checkpoint is a full model: "
                "use eval.backend: hf",
                path=checkpoint.path,
            )
        super().__init__(decoder.states, checkpoint, fingerprint)
        self.decoder = decoder

    def iter_generate(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        if not prompts:
            return
        engine = self.decoder.engine()
        # vLLM batches a whole call itself; calls of VLLM_CHUNK prompts let the cache keep each
        # chunk's answers (a crash loses one chunk at most) and the progress bar move.
        for start in range(0, len(prompts), VLLM_CHUNK):
            started = time.perf_counter()
            answers = engine.generate(
                prompts[start : start + VLLM_CHUNK],
                adapter=self.checkpoint.path,
                max_new_tokens=self.states.settings.max_new_tokens,
            )
            self.stats.seconds += time.perf_counter() - started
            self.stats.answers += len(answers)
            self.stats.tokens += sum(len(answer.token_ids) for answer in answers)
            yield from enumerate((answer.text for answer in answers), start)
