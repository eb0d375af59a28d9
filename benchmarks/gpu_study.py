"""A small study folder for ``benchmarks/gpu.sh``: rule-made data, a train spec and a study spec.

The data is the benchmarks' workload (``workload.make_workload``): chain-of-thought and
one-number answers of mixed lengths, one task per line, so line *i* of the probe set pairs
in-task with line *i* of the eval set. Both specs use the bundled model (``model: smollm2``) and
the given device::

    python benchmarks/gpu_study.py DIR --device cuda --examples 48 --steps 20
    swiftstudy train DIR/train.yaml --out DIR/runs/base
    swiftstudy study DIR/study.yaml --out DIR/results --no-cache

The base run saves two checkpoints (half-way and at the end), which the study traces.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workload import make_workload

BASE_SEED, PROBE_SEED, EVAL_SEED = 1, 2, 3


def write_study_folder(
    folder: Path, *, device: str, examples: int, steps: int, batch_size: int
) -> None:
    """Write ``data/{base,probes,evals}.jsonl``, ``train.yaml`` and ``study.yaml`` in ``folder``.

    Args:
        folder: Where the files go (created).
        device: ``cpu`` or ``cuda``: both specs' ``device:``.
        examples: Examples in the probe set and in the eval set each (the base run's data has
            ``steps * batch_size`` examples, at least ``examples``).
        steps: The base run's optimizer steps.
        batch_size: The base run's global batch.
    """
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    sizes = {
        "base": (max(examples, steps * batch_size), BASE_SEED),
        "probes": (examples, PROBE_SEED),
        "evals": (examples, EVAL_SEED),
    }
    for name, (n, seed) in sizes.items():
        rows = [
            {"id": ex.id, "task": ex.task, "prompt": ex.prompt[0].content, "response": ex.response}
            for ex in make_workload(n, seed=seed)
        ]
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "train.yaml").write_text(
        "# The base run of benchmarks/gpu.sh: LoRA r=64, alpha=512 on up/down_proj (defaults)\n"
        "model: smollm2\n"
        "data: data/base.jsonl\n"
        "lr: 1.0e-4\n"
        "min_lr: 1.0e-6\n"
        "warmup_steps: 0\n"
        f"max_steps: {steps}\n"
        f"batch_size: {batch_size}\n"
        f"save_steps: {max(1, steps // 2)}\n"
        "seed: 0\n"
        f"device: {device}\n"
    )
    (folder / "study.yaml").write_text(
        "# The study of benchmarks/gpu.sh over its base run's checkpoints.\n"
        "model: smollm2\n"
        "checkpoints: runs/base\n"
        "sets:\n"
        "  probes: {path: data/probes.jsonl}\n"
        "  evals:  {path: data/evals.jsonl}\n"
        "metrics:\n"
        "  - {name: in-task, probes: probes, evals: evals, context: in-task}\n"
        "  - {name: cross-task, probes: probes, evals: evals, context: cross-task}\n"
        "batch_size: 8\n"
        "dtype: float32\n"
        f"device: {device}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--examples", type=int, default=48, help="probes, and evals")
    parser.add_argument("--steps", type=int, default=20, help="the base run's steps")
    parser.add_argument("--batch-size", type=int, default=16, help="the base run's batch")
    opts = parser.parse_args()
    write_study_folder(
        opts.folder,
        device=opts.device,
        examples=opts.examples,
        steps=opts.steps,
        batch_size=opts.batch_size,
    )


if __name__ == "__main__":
    main()
