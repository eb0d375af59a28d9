"""Seconds per checkpoint: swapping adapter weights into one model versus reloading everything.

Run alone on a quiet machine (threads and load average are printed beside the figures)::

    python benchmarks/checkpoints.py                  # 4 checkpoints, engine on 8 examples
    python benchmarks/checkpoints.py --checkpoints 8 --examples 0

The checkpoints are random LoRA adapters (r=64, alpha=512 on up_proj/down_proj, 8.1 M weights,
32 MB each) of the bundled SmolLM2-135M-Instruct, saved to a temporary folder. Each method runs in
its own spawned process and ends each checkpoint with the model ready for the gradient engine
(eval mode, nothing requiring a gradient):

- ``swap``: what a study does (``ModelStates.load``): the base model is loaded once, wrapped with
  PEFT at the first checkpoint; later checkpoints only copy their adapter tensors in.
- ``reload``: ``load_base_model`` and ``PeftModel.from_pretrained`` for every checkpoint.
- ``engine`` (scale): per-example gradients of ``--examples`` workload examples at one checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe_machine, measure

from swiftstudy.model import Checkpoint, ModelStates, discover_checkpoints, load_base_model


def make_checkpoints(folder: Path, count: int) -> list[Checkpoint]:
    """``count`` random LoRA adapters of the bundled model, as ``checkpoint-<k>/`` folders."""
    from peft import LoraConfig, get_peft_model

    model, _ = load_base_model("smollm2")
    config = LoraConfig(
        r=64, lora_alpha=512, target_modules=["up_proj", "down_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, config)
    for k in range(count):
        torch.manual_seed(k)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_" in name:
                    param.normal_(std=0.01 if "lora_A" in name else 1e-4)
        peft_model.save_pretrained(folder / f"checkpoint-{k + 1}")
    return discover_checkpoints(folder)


def _child(method: str, args: dict, result_path: str) -> None:
    torch.set_num_threads(args["threads"])
    checkpoints = discover_checkpoints(Path(args["folder"]))
    load_before = os.getloadavg()[0]
    if method == "engine":
        seconds = [_time_engine(checkpoints[0], args["examples"])]
        base_seconds = 0.0
    else:
        start = time.perf_counter()
        states = ModelStates(load_base_model("smollm2")[0]) if method == "swap" else None
        base_seconds = time.perf_counter() - start
        seconds = [_time_state(method, states, ckpt) for ckpt in checkpoints]
    torch.save(
        {
            "seconds": torch.tensor(seconds, dtype=torch.float64),
            "base_seconds": torch.tensor(base_seconds),
            "load": torch.tensor([load_before, os.getloadavg()[0]]),
            "threads": torch.tensor(torch.get_num_threads()),
        },
        result_path,
    )


def _time_state(method: str, states: ModelStates | None, ckpt: Checkpoint) -> float:
    """Seconds to put a model in ``ckpt``'s state, ready for the engine."""
    from peft import PeftModel

    start = time.perf_counter()
    if method == "swap":
        states.load(ckpt)
    else:
        base, _ = load_base_model("smollm2")
        PeftModel.from_pretrained(base, ckpt.path).eval().requires_grad_(False)
    return time.perf_counter() - start


def _time_engine(ckpt: Checkpoint, n_examples: int) -> float:
    """Seconds of the gradient engine on ``n_examples`` workload examples at ``ckpt``."""
    from workload import make_workload

    from swiftstudy.data import tokenize_examples
    from swiftstudy.gradients import compute_gradients, default_batch_tokens

    model, tokenizer = load_base_model("smollm2")
    state, targets = ModelStates(model).load(ckpt)
    toks = tokenize_examples(make_workload(n_examples), tokenizer)
    sequences = [(t.input_ids, t.completion_mask) for t in toks]
    start = time.perf_counter()
    compute_gradients(
        state,
        [t.module for t in targets],
        sequences,
        pad_id=tokenizer.pad_token_id,
        max_examples=8,
        max_tokens=default_batch_tokens("cpu"),
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--examples", type=int, default=8, help="engine examples (0: skip)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    opts = parser.parse_args()
    if opts.checkpoints < 2:
        parser.error("--checkpoints must be at least 2 (the first swap also wraps the model)")

    print(describe_machine(opts.threads))
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoints(Path(tmp), opts.checkpoints)
        args = {"folder": tmp, "threads": opts.threads, "examples": opts.examples}
        methods = ["swap", "reload"] + (["engine"] if opts.examples else [])
        results = {method: measure(_child, method, args) for method in methods}
    swap, reload = results["swap"], results["reload"]
    print(f"\n{opts.checkpoints} checkpoints, LoRA r=64 on up/down_proj of SmolLM2-135M\n")
    print("| method | base load s | first checkpoint s | later checkpoints s/ckpt | load avg |")
    print("|---|---|---|---|---|")
    for method in ("swap", "reload"):
        result = results[method]
        base = f"{result['base_seconds'].item():.3f}" if method == "swap" else "-"
        print(
            f"| {method} | {base} | "
            f"{result['seconds'][0].item():.3f} | {result['seconds'][1:].mean().item():.3f} | "
            f"{result['load'][0].item():.2f}->{result['load'][1].item():.2f} |"
        )
    later = reload["seconds"][1:].mean() / swap["seconds"][1:].mean()
    whole = reload["seconds"].sum() / (swap["base_seconds"] + swap["seconds"].sum())
    print(f"\nreload / swap, per later checkpoint: {later.item():.1f}x")
    print(f"reload / swap, whole series incl. the one base load: {whole.item():.2f}x")
    if "engine" in results:
        engine = results["engine"]["seconds"][0].item()
        print(
            f"for scale: the engine on {opts.examples} examples at one checkpoint: {engine:.2f} s "
            f"(swap is {100 * swap['seconds'][1:].mean().item() / engine:.1f}% of it, "
            f"reload {100 * reload['seconds'][1:].mean().item() / engine:.1f}%)"
        )
    print(f"threads {opts.threads}, load average now {os.getloadavg()}")


if __name__ == "__main__":
    main()
