"""Seconds per example of the gradient engine, the naive loop and the training floor, side by side.

Run alone on a quiet machine (torch's threads collapse under load; threads and load average are
printed beside every figure)::

    python benchmarks/engine.py                 # 48 examples, all methods, float64 reference
    python benchmarks/engine.py --examples 32 --no-reference --batch-tokens 1 512 2048
    python benchmarks/engine.py --device cuda --methods naive engine floor engine-bf16

Each method runs in its own process, so its peak resident memory (``ru_maxrss``) is its own:

- ``engine``: ``compute_gradients`` (per-example gradients, length-bucketed batches).
- ``naive``: ``compute_naive_gradients`` (one example at a time, plain autograd, full logits).
- ``engine-bf16``: the engine on a bfloat16 model (products still accumulated in float32).
- ``floor``: a plain LoRA training forward and backward over the engine's batches (summed
  gradient, same completion loss): what any exact method must at least spend.

Model: the bundled SmolLM2-135M-Instruct, LoRA r=64, alpha=512 on up_proj/down_proj. With
``--device cuda`` every method runs on the GPU (the clock waits for the device; the memory column
is then the peak GPU memory allocated) and the default token budget is CUDA's.
``--json PATH`` also writes the table's rows (``benchmarks/gpu.sh`` reads them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe_machine, measure, peak_gib, scaled_error, setup_model, time_run

from swiftstudy.gradients import (
    collate,
    compute_completion_nll,
    compute_gradients,
    compute_naive_gradients,
    default_batch_tokens,
    plan_batches,
)
from swiftstudy.model import load_base_model
from swiftstudy.scores import compute_dot_products


def _run_floor(model, sequences, pad_id, batches, device) -> None:
    for indices in batches:
        batch = collate(sequences, indices, pad_id=pad_id, device=device)
        losses = compute_completion_nll(
            model, batch.input_ids, batch.attention_mask, batch.completion_mask
        )
        losses.sum().backward()
    model.zero_grad(set_to_none=True)


def _child(method: str, args: dict, result_path: str) -> None:
    torch.set_num_threads(args["threads"])
    dtype = {"reference": torch.float64, "engine-bf16": torch.bfloat16}.get(method, torch.float32)
    device = args["device"]
    model, modules, sequences, pad_id = setup_model(
        dtype, args["examples"], method == "floor", device=device
    )
    batch_tokens, batch_size = args["batch_tokens"], args["batch_size"]
    batches = plan_batches(
        [len(ids) for ids, _ in sequences], max_examples=batch_size, max_tokens=batch_tokens
    )

    def run(seqs):
        if method in ("engine", "engine-bf16"):
            return compute_gradients(
                model,
                modules,
                seqs,
                pad_id=pad_id,
                max_examples=batch_size,
                max_tokens=batch_tokens,
                device=device,
            )
        if method in ("naive", "reference"):
            return compute_naive_gradients(model, modules, seqs, device=device)
        warmup = [tuple(range(len(seqs)))]
        _run_floor(model, seqs, pad_id, batches if seqs is sequences else warmup, device)
        return None

    grads, out = time_run(run, sequences, device=device)
    out["batches"] = torch.tensor(len(batches))
    if grads is not None:
        out["gram"] = compute_dot_products(grads).cpu()
    torch.save(out, result_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--batch-tokens",
        type=int,
        nargs="+",
        help="engine/floor token budgets to compare (each one a run; default: the device's)",
    )
    parser.add_argument("--methods", nargs="+", default=["naive", "engine", "floor"])
    parser.add_argument("--no-reference", action="store_true", help="skip the float64 reference")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--json", type=Path, help="also write the table's rows to this file")
    opts = parser.parse_args()
    opts.batch_tokens = opts.batch_tokens or [default_batch_tokens(opts.device)]

    load_base_model("smollm2")  # convert the GGUF once, outside the timed children
    machine = describe_machine(opts.threads, opts.device)
    memory = _memory_kind(opts)
    print(machine)
    rows = []  # (method, budget, result)
    args = {
        "examples": opts.examples,
        "threads": opts.threads,
        "batch_size": opts.batch_size,
        "device": opts.device,
    }
    for method in opts.methods:
        for budget in opts.batch_tokens if method in ("engine", "engine-bf16", "floor") else [None]:
            result = measure(_child, method, {**args, "batch_tokens": budget or 1})
            rows.append((method, budget, result))
            print(
                f"  {_label(method, budget):<30} {_per_example(result, opts):6.3f} s/example  "
                f"peak {memory} {peak_gib(result):5.2f} GiB  "
                f"load {result['load'][0].item():.2f}->{result['load'][1].item():.2f}",
                flush=True,
            )
    first = rows[0][2]
    print(
        f"workload: {opts.examples} examples, {first['tokens'].item()} tokens, "
        f"{first['completion'].item()} completion tokens"
    )
    reference = None
    if not opts.no_reference:
        reference = measure(_child, "reference", {**args, "batch_tokens": 1})
    table = _table_rows(rows, reference, opts)
    print(
        f"\n| method | s/example | speed-up vs naive | time vs floor | peak {memory} GiB | "
        "max Gram error vs float64 |"
    )
    print("|---|---|---|---|---|---|")
    for row in table:
        print(
            f"| {row['label']} | {row['per_example']:.3f} | {_ratio(row['speedup_vs_naive'])} | "
            f"{_ratio(row['time_vs_floor'])} | {row['peak_gib']:.2f} | "
            f"{_error(row['gram_error'])} |"
        )
    print(f"\n{machine}, load average now {os.getloadavg()}")
    if opts.json is not None:
        summary = {
            "device": opts.device,
            "machine": machine,
            "threads": opts.threads,
            "examples": opts.examples,
            "tokens": first["tokens"].item(),
            "reference_seconds": None if reference is None else reference["seconds"].item(),
            "rows": table,
        }
        opts.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def _table_rows(rows: list, reference: dict | None, opts: argparse.Namespace) -> list[dict]:
    """Each method's figures, as the table shows them (and ``--json`` writes them)."""
    naive = next((r for m, _, r in rows if m == "naive"), None)
    floors = {b: r for m, b, r in rows if m == "floor"}
    table = []
    for method, budget, result in rows:
        seconds = result["seconds"].item()
        floor = floors.get(budget)
        error = None
        if reference is not None and "gram" in result:
            error = scaled_error(result["gram"], reference["gram"])
        table.append(
            {
                "method": method,
                "batch_tokens": budget,
                "label": _label(method, budget),
                "seconds": seconds,
                "per_example": _per_example(result, opts),
                "speedup_vs_naive": naive["seconds"].item() / seconds if naive else None,
                "time_vs_floor": seconds / floor["seconds"].item() if floor else None,
                "peak_gib": peak_gib(result),
                "gram_error": error,
            }
        )
    return table


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _error(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _memory_kind(opts: argparse.Namespace) -> str:
    return "GPU" if torch.device(opts.device).type == "cuda" else "RSS"


def _label(method: str, budget: int | None) -> str:
    return method if budget is None else f"{method} (batch_tokens={budget})"


def _per_example(result: dict, opts: argparse.Namespace) -> float:
    return result["seconds"].item() / opts.examples


if __name__ == "__main__":
    main()
