"""What the benchmarks share: the model and workload, a timed run in a child process, Gram errors.

Every benchmark builds the same model (the bundled SmolLM2-135M-Instruct with a LoRA r=64,
alpha=512 on up_proj/down_proj, random init with seed 0 and lora_B scaled by 1e-3) and the same
examples (``workload.make_workload``), times each method in its own spawned process so that its
peak resident memory (``ru_maxrss``) is its own, and scores a Gram matrix by its largest error
against a float64 reference, scaled by the two gradient norms.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

WARMUP_EXAMPLES = 2

Sequences = list[tuple[Sequence[int], Sequence[int]]]


def setup_model(dtype: torch.dtype, n_examples: int, trainable: bool = False, device: str = "cpu"):
    """The LoRA model, its LoRA linear layers, the tokenized workload and the pad id.

    Args:
        dtype: The model's dtype.
        n_examples: How many workload examples.
        trainable: Whether the LoRA weights require gradients (a plain training step needs them).
        device: Where the model goes (``cpu``, ``cuda``, ``cuda:N``). The adapter is drawn on
            the CPU first, so every device starts from the same weights.

    Returns:
        ``(model, modules, sequences, pad_id)``; ``sequences`` are ``(input_ids, completion_mask)``.
    """
    # Imported here, not at the top, so that a script can check its environment before
    # transformers is first imported (see peers.py).
    from workload import make_workload

    from swiftstudy.data import tokenize_examples
    from swiftstudy.model import load_base_model

    model, tokenizer = load_base_model("smollm2", dtype=dtype)
    model = add_random_lora(model).to(device)
    model.eval().requires_grad_(False)
    names = ("lora_A.default", "lora_B.default")
    modules = [m for n, m in model.named_modules() if n.endswith(names)]
    if trainable:
        for m in modules:
            m.weight.requires_grad_(True)
    toks = tokenize_examples(make_workload(n_examples), tokenizer)
    sequences = [(t.input_ids, t.completion_mask) for t in toks]
    return model, modules, sequences, tokenizer.pad_token_id


def add_random_lora(model: torch.nn.Module) -> torch.nn.Module:
    """The benchmarks' adapter on ``model``: LoRA r=64, alpha=512 on up/down_proj, random init
    with seed 0 and lora_B scaled by 1e-3 (so the model still answers sensibly)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(
        r=64, lora_alpha=512, target_modules=["up_proj", "down_proj"], init_lora_weights=False
    )
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(1e-3)
    return model


def time_run(
    run: Callable[[Sequences], Any], sequences: Sequences, device: str = "cpu"
) -> tuple[Any, dict]:
    """``run`` once on the first examples to warm up, then timed on all of them.

    On CUDA the clock stops only once the device has finished (kernels run asynchronously), and
    the peak GPU memory of the timed run is recorded.

    Returns:
        ``(result, stats)``: what ``run`` returned, and a dict of tensors (``seconds``, ``load``
        average before and after, peak RSS ``maxrss_kb``, torch ``threads``, ``tokens`` and
        ``completion`` tokens, and on CUDA ``cuda_peak_bytes``), ready for ``torch.save``.
    """
    cuda = torch.device(device).type == "cuda"
    run(sequences[:WARMUP_EXAMPLES])
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    result = run(sequences)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    stats = {
        "seconds": torch.tensor(seconds),
        "load": torch.tensor([load_before, os.getloadavg()[0]]),
        "maxrss_kb": torch.tensor(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "threads": torch.tensor(torch.get_num_threads()),
        "tokens": torch.tensor(sum(len(ids) for ids, _ in sequences)),
        "completion": torch.tensor(sum(sum(mask) for _, mask in sequences)),
    }
    if cuda:
        stats["cuda_peak_bytes"] = torch.tensor(torch.cuda.max_memory_allocated(device))
    return result, stats


def measure(child: Callable[[str, dict, str], None], method: str, args: dict) -> dict:
    """Run ``child(method, args, result_path)`` in a spawned process and load what it saved."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "result.pt")
        proc = ctx.Process(target=child, args=(method, args, path))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"{method} failed with exit code {proc.exitcode}")
        return torch.load(path, weights_only=True)


def scaled_error(gram: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest ``|gram - ref|`` over the product of the two reference gradient norms."""
    norms = ref.diagonal().sqrt()
    return ((gram - ref).abs() / torch.outer(norms, norms)).max().item()


def describe_machine(threads: int, device: str = "cpu") -> str:
    """One line: CPU model, CPUs, vector extensions, torch version and each method's threads; on
    CUDA also the GPU's name, its memory and the CUDA version torch was built with."""
    from swiftstudy.provenance import describe_machine as describe

    line = f"machine: {describe(threads)}"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        line += "; GPU: none visible to torch"
    elif torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        line += (
            f"; GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
        )
    return line


def peak_gib(result: dict) -> float:
    """A timed run's peak memory in GiB: GPU memory allocated on CUDA, else resident memory."""
    if "cuda_peak_bytes" in result:
        return result["cuda_peak_bytes"].item() / 2**30
    return result["maxrss_kb"].item() / 2**20
