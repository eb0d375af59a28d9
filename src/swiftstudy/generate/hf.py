"""A generator backed by a local transformers model: batched greedy decoding, on a GPU if any.

Prompts are rendered with the tokenizer's chat template (a generation prompt appended), sorted by
length so batches pad little, left-padded, and decoded greedily until the end-of-turn token or
``max_new_tokens``. The model loads on the first prompt that is not cached, not before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from swiftstudy.config.fields import torch_dtype
from swiftstudy.config.generators import HFSettings
from swiftstudy.generate.base import Generator, Prompt, messages_to_json


class HFGenerator(Generator):
    """Answers prompts with a local causal LM, greedily, a batch at a time.

    Args:
        settings: The model and decoding settings.
        model: An already loaded model to use instead of loading ``settings.model`` (tests pass a
            tiny one); ``settings.model`` then only names it in the cache key.
        tokenizer: Its tokenizer; required with ``model``.
    """

    def __init__(self, settings: HFSettings, *, model: Any = None, tokenizer: Any = None) -> None:
        if (model is None) != (tokenizer is None):
            raise ValueError("pass both model and tokenizer, or neither")
        torch_dtype(settings.dtype)  # a ValueError for an unknown name, before any loading
        if settings.max_new_tokens < 1 or settings.batch_size < 1 or (settings.threads or 1) < 1:
            raise ValueError("max_new_tokens, batch_size and threads must be at least 1")
        self.config = settings
        self._model = model
        self._tokenizer = tokenizer

    @property
    def settings(self) -> dict[str, Any]:
        # Device, batch size and the attention kernel only change rounding, not what is asked:
        # they stay out of the key. A revision is other weights (in the key only when set).
        model = self.config.model
        if Path(model).expanduser().exists():  # a local file or folder, wherever it is run from
            model = os.path.abspath(Path(model).expanduser())
        revision = {"revision": self.config.revision} if self.config.revision else {}
        return {
            "generator": "hf",
            "model": model,
            **revision,
            "dtype": self.config.dtype,
            "decoding": "greedy",
            "max_new_tokens": self.config.max_new_tokens,
        }

    @property
    def device(self) -> str | None:
        return None if self._model is None else str(self._model.device)

    def iter_generate(self, prompts: Sequence[Prompt]) -> Iterator[tuple[int, str]]:
        if not prompts:
            return
        model, tokenizer = self._load()
        texts = [render_prompt(tokenizer, prompt) for prompt in prompts]
        lengths = [len(tokenizer(text, add_special_tokens=False).input_ids) for text in texts]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        size = self.config.batch_size
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            answers = self._generate_batch(model, tokenizer, [texts[i] for i in batch])
            yield from zip(batch, answers, strict=True)

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from swiftstudy.model import LoadOptions, load_base_model

            self._model, self._tokenizer = load_base_model(
                self.config.model,
                dtype=torch_dtype(self.config.dtype),
                device=self.config.device,
                options=LoadOptions.of(self.config),
            )
        return self._model, self._tokenizer

    def _generate_batch(self, model: Any, tokenizer: Any, texts: list[str]) -> list[str]:
        from transformers import GenerationConfig

        encoded = tokenizer(
            texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False
        ).to(model.device)
        config = GenerationConfig(
            max_new_tokens=self.config.max_new_tokens,
            do_sample=False,
            eos_token_id=stop_token_ids(model, tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        threads = torch.get_num_threads()
        try:
            if self.config.threads is not None:
                torch.set_num_threads(self.config.threads)
            with torch.inference_mode():
                output = model.generate(**encoded, generation_config=config)
        finally:
            torch.set_num_threads(threads)
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        return [
            text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        ]


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """The prompt as the model sees it: the chat template, or the contents one per line."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages_to_json(prompt), tokenize=False, add_generation_prompt=True
        )
    return "\n".join(message.content for message in prompt) + "\n"


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The tokens that end an answer: the tokenizer's EOS and the model's configured EOS ids."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        for token_id in value if isinstance(value, list) else [value]:
            if token_id is not None and token_id not in ids:
                ids.append(int(token_id))
    return ids
