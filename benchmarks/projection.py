"""What a study's random projection (``projection_dim: k``) costs per batch on this machine.

A batch's rows are projected by generating P's rows (a counter hash, D·k signs) and multiplying;
both scale linearly with D, so this times a slice of D columns for each k and batch size and
scales the time to the full gradient dimensions of SmolLM2-135M and a 7B Llama (LoRA r=64 on
up/down_proj). Prints torch threads and the load average beside the figures: run it alone.

    python benchmarks/projection.py [--threads 1] [--columns 131072]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from swiftstudy.gradients import project_gradients

#: Gradient dimensions of LoRA r=64 on up/down_proj (see README, Large models).
DIMENSIONS = {"SmolLM2-135M": 8_110_080, "7B Llama": 61_865_984}


def _time(columns: int, k: int, batch: int) -> float:
    """Best of two: seconds to project ``batch`` rows of ``columns`` values to ``k``."""
    rows = torch.randn(batch, columns)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        project_gradients(rows, k, seed=0)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--columns", type=int, default=1 << 17, help="D slice timed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"load average {os.getloadavg()[0]:.2f}, {args.columns:,} columns timed"
    )
    header = ["k", "batch", "M signs/s", *(f"s/batch at {name}" for name in DIMENSIONS)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for k in (1024, 8192):
        for batch in (1, 8):
            seconds = _time(args.columns, k, batch)
            scaled = [seconds * d / args.columns for d in DIMENSIONS.values()]
            rate = args.columns * k / seconds / 1e6
            cells = [f"{k:,}", str(batch), f"{rate:.0f}", *(f"{s:,.0f}" for s in scaled)]
            print("| " + " | ".join(cells) + " |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
