"""validate's decoding, old against new, on the same CPU in one run: seconds, tokens/s, same text?

Run alone on a quiet machine (threads and load average are printed beside the figures)::

    python benchmarks/decoding.py                       # 48 prompts, 256 new tokens, batch 8
    python benchmarks/decoding.py --prompts 32 --paths old batching new

Model: the bundled SmolLM2-135M-Instruct in float32 with a random LoRA adapter (r=64, alpha=512
on up_proj/down_proj, B scaled by 1e-3 so the model still answers sensibly, as after training),
saved as a checkpoint and loaded the way validate loads it (``BaseModelStates``). Prompts: 48 (as
many as the eval set of ``make validate``) from the demo's task families, every other one asking
for the reasons first, so answers run from a few tokens to ``max_new_tokens``; validate's default
``max_new_tokens`` and batch size. Paths, all greedy over the same loaded model:

- ``old``: what validate did before: ``HFGenerator`` (``model.generate`` a batch at a time, in
  order of prompt length) on the PEFT model with the adapter unmerged.
- ``batching`` (not run by default): continuous batching (``generate_greedy``) with the adapter
  unmerged, to tell the merge's share from the batching's.
- ``new``: what validate does now (``CheckpointGenerator``): the adapter merged into the weights,
  continuous batching, the weights restored exactly after.
- ``vllm`` (not run by default; run from the vLLM environment, ``.venv-vllm/bin/python``):
  ``eval.backend: vllm``, vLLM with the adapter per request (``VLLMEngine``), on the same CPUs
  (``VLLM_CPU_OMP_THREADS_BIND`` set to ``--threads`` cores unless given). The engine's start is
  timed apart, in the warm-up.

    .venv-vllm/bin/python benchmarks/decoding.py --paths new vllm

Tokens/s counts the answers' tokens (the text re-tokenized, end-of-turn excluded) over the same
seconds for every path, so the columns compare; ``new`` also prints its own count.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_random_lora, describe_machine

from swiftstudy.constants import DEFAULT_EVAL_BATCH_SIZE, DEFAULT_EVAL_MAX_NEW_TOKENS
from swiftstudy.data import Message
from swiftstudy.demo.families import BASE_FAMILIES, STUDY_FAMILIES
from swiftstudy.generate import HFGenerator, HFSettings, Prompt
from swiftstudy.generate.greedy import generate_greedy
from swiftstudy.generate.hf import render_prompt, stop_token_ids
from swiftstudy.generate.vllm_lora import VLLMEngine
from swiftstudy.model import Checkpoint, load_base_model, model_folder
from swiftstudy.validate.generation import (
    BaseModelStates,
    CheckpointGenerator,
    GenerationSettings,
)

COT_SUFFIX = " Please output the reason first and then the final answer."


def make_prompts(n: int, seed: int = 0) -> list[Prompt]:
    """``n`` one-turn prompts from the demo's families; every other one asks for reasons first."""
    rng = random.Random(seed)
    families = [*STUDY_FAMILIES, *BASE_FAMILIES]
    prompts = []
    for i in range(n):
        query = families[i % len(families)].make(rng).query
        prompts.append([Message("user", query + (COT_SUFFIX if i % 2 == 0 else ""))])
    return prompts


def save_random_adapter(folder: Path) -> Checkpoint:
    """A random LoRA adapter (r=64, alpha=512, up/down_proj; B scaled 1e-3) of the bundled model."""
    model, _ = load_base_model("smollm2")
    peft_model = add_random_lora(model)
    peft_model.save_pretrained(folder)
    return Checkpoint(folder, 0, "adapter")


_ENGINES: dict[str, VLLMEngine] = {}


def vllm_engine(states: BaseModelStates) -> VLLMEngine:
    """The vLLM engine over the bundled model (started once, on its first answers)."""
    if "engine" not in _ENGINES:
        model, tokenizer = states.base()
        _ENGINES["engine"] = VLLMEngine(
            model_folder("smollm2"), tokenizer, stop_token_ids(model, tokenizer), max_lora_rank=64
        )
    return _ENGINES["engine"]


def run_path(path: str, states: BaseModelStates, ckpt: Checkpoint, prompts: list[Prompt]):
    """``(answers, seconds, own token count or None)`` of one decoding path."""
    config = states.settings
    model, tokenizer = states.load(ckpt)
    started = time.perf_counter()
    own_tokens = None
    if path == "vllm":
        results = vllm_engine(states).generate(
            prompts, adapter=ckpt.path, max_new_tokens=config.max_new_tokens
        )
        answers = [answer.text for answer in results]
        own_tokens = sum(len(answer.token_ids) for answer in results)
    elif path == "old":
        settings = HFSettings(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
        answers = HFGenerator(settings, model=model, tokenizer=tokenizer).generate(prompts)
    elif path == "batching":
        answers = [""] * len(prompts)
        for index, text in generate_greedy(
            model,
            tokenizer,
            prompts,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
        ):
            answers[index] = text
    else:
        generator = CheckpointGenerator(states, ckpt, "benchmark")
        answers = generator.generate(prompts)
        own_tokens = generator.stats.tokens
    return answers, time.perf_counter() - started, own_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_EVAL_MAX_NEW_TOKENS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_EVAL_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--paths", nargs="+", default=["old", "new"])
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{opts.threads - 1}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB
    print(describe_machine(opts.threads))

    prompts = make_prompts(opts.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_random_adapter(Path(tmp) / "adapter")
        settings = GenerationSettings(
            model="smollm2", max_new_tokens=opts.max_new_tokens, batch_size=opts.batch_size
        )
        states = BaseModelStates(settings)
        _, tokenizer = states.load(ckpt)
        for path in opts.paths:  # warm up every path on two short prompts
            started = time.perf_counter()
            run_path(path, states, ckpt, make_prompts(2, seed=1))
            if path == "vllm":
                print(f"  vLLM engine start and warm-up: {time.perf_counter() - started:.1f} s")
        results = {}
        for path in opts.paths:
            load = os.getloadavg()[0]
            answers, seconds, own = run_path(path, states, ckpt, prompts)
            tokens = sum(len(tokenizer(a, add_special_tokens=False).input_ids) for a in answers)
            results[path] = Result(answers, seconds, tokens, own, (load, os.getloadavg()[0]))
            print(f"  {path:<9} {seconds:7.1f} s  {tokens / seconds:6.1f} tokens/s", flush=True)

    texts = [render_prompt(tokenizer, p) for p in prompts]
    prompt_tokens = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    print(
        f"\n{len(prompts)} prompts ({min(prompt_tokens)}-{max(prompt_tokens)} tokens), "
        f"max_new_tokens {opts.max_new_tokens}, batch size {opts.batch_size}"
    )
    print_table(results)
    loads = ", ".join(f"{p} {r.load[0]:.2f}->{r.load[1]:.2f}" for p, r in results.items())
    print(f"\n{describe_machine(opts.threads)}; load average {loads}")


@dataclass
class Result:
    """One path's answers, seconds, answer tokens, own token count and load average around it."""

    answers: list[str]
    seconds: float
    tokens: int
    own_tokens: int | None
    load: tuple[float, float]


def print_table(results: dict[str, Result]) -> None:
    """Seconds, tokens/s and speed-up against the first path; answers that differ from it."""
    first, reference = next(iter(results.items()))
    print(f"\n| path | seconds | answer tokens | tokens/s | speed-up | same text as {first} |")
    print("|---|---|---|---|---|---|")
    for path, r in results.items():
        same = sum(a == b for a, b in zip(r.answers, reference.answers, strict=True))
        note = f" ({r.own_tokens} with end-of-turn)" if r.own_tokens is not None else ""
        print(
            f"| {path} | {r.seconds:.1f} | {r.tokens}{note} | {r.tokens / r.seconds:.1f} | "
            f"{reference.seconds / r.seconds:.2f}x | {same}/{len(r.answers)} |"
        )
    for path, r in results.items():
        for i, (a, b) in enumerate(zip(r.answers, reference.answers, strict=True)):
            if a != b:
                at = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
                at = min(len(a), len(b)) if at is None else at
                print(f"  {path} differs on prompt {i} from character {at}: {a[at : at + 60]!r}")


if __name__ == "__main__":
    main()
