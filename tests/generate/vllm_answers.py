"""Run by the vLLM environment's Python: greedy answers of ``VLLMEngine``, as token ids.

Usage: ``python vllm_answers.py REQUEST.json ANSWERS.json``. The request names the base model
(``smollm2`` or a folder), the prompts (lists of ``{role, content}``), ``max_new_tokens`` and the
adapters (``null`` for the base model); the answers file maps each adapter's position to a list of
``{text, token_ids}``, one per prompt. The engine starts once for every adapter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from swiftstudy.data import Message
from swiftstudy.generate.hf import stop_token_ids
from swiftstudy.generate.vllm_lora import VLLMEngine, lora_rank, vllm_max_lora_rank
from swiftstudy.model import load_base_model, model_folder


def main(request_path: str, answers_path: str) -> None:
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    model, tokenizer = load_base_model(request["model"])
    adapters = request["adapters"]
    engine = VLLMEngine(
        model_folder(request["model"]),
        tokenizer,
        stop_token_ids(model, tokenizer),
        max_lora_rank=vllm_max_lora_rank([lora_rank(a) for a in adapters if a is not None]),
    )
    prompts = [[Message(**m) for m in prompt] for prompt in request["prompts"]]
    answers = [
        [
            {"text": answer.text, "token_ids": list(answer.token_ids)}
            for answer in engine.generate(
                prompts, adapter=adapter, max_new_tokens=request["max_new_tokens"]
            )
        ]
        for adapter in adapters
    ]
    Path(answers_path).write_text(json.dumps(answers), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:])
