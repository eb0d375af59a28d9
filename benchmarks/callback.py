"""SwiftStudyCallback's overhead: an SFTTrainer run timed without and with the callback.

Run alone on a quiet machine (threads and load average are printed beside the figures)::

    python benchmarks/callback.py                       # 8 steps, saves at 4 and 8
    python benchmarks/callback.py --steps 16 --save-steps 8 --probes 16 --evals 8

The run is the README's "Study your SFTTrainer run": TRL's ``SFTTrainer`` on the bundled
SmolLM2-135M-Instruct with LoRA r=8 on up/down_proj, ``--batch`` conversational examples a step
(the benchmark workload's chain-of-thought and one-number answers), on the CPU in float32. With
the callback, a study of ``--probes`` training examples against ``--evals`` other examples (one
cross-task metric) is computed from the live model at each save. Each method runs in its own
spawned process; ``train()`` is timed whole, model and data already loaded.

The overhead is per studied step, not per training step: each save costs one per-example
gradient of every probe and eval example (about what a training step on as many examples costs,
forward and backward), so it scales with (probes + evals) / (batch x save_steps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe_machine, measure


def _rows(n: int, seed: int) -> list[dict]:
    """``n`` workload examples as TRL conversational prompt/completion rows."""
    from workload import make_workload

    return [
        {
            "prompt": [{"role": "user", "content": e.prompt[-1].content}],
            "completion": [{"role": "assistant", "content": e.response}],
            "task": e.task,
        }
        for e in make_workload(n, seed=seed)
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _child(method: str, args: dict, result_path: str) -> None:
    torch.set_num_threads(args["threads"])
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from swiftstudy import SwiftStudyCallback
    from swiftstudy.model import load_base_model

    folder = Path(args["folder"])
    train = json.loads((folder / "train.json").read_text())
    model, tokenizer = load_base_model("smollm2")
    callbacks = []
    if method == "callback":
        spec = {
            "sets": {
                "probes": {"path": str(folder / "probes.jsonl")},
                "evals": {"path": str(folder / "evals.jsonl")},
            },
            "metrics": [
                {
                    "name": "probes → evals",
                    "probes": "probes",
                    "evals": "evals",
                    "context": "cross-task",
                }
            ],
            "batch_size": args["batch"],
        }
        callbacks.append(SwiftStudyCallback(spec, folder / f"study-{os.getpid()}"))
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=Dataset.from_list(
            [{k: r[k] for k in ("prompt", "completion")} for r in train]
        ),
        args=SFTConfig(
            output_dir=str(folder / f"run-{method}"),
            max_steps=args["steps"],
            save_steps=args["save_steps"],
            per_device_train_batch_size=args["batch"],
            logging_steps=1,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        ),
        peft_config=LoraConfig(r=8, target_modules=["up_proj", "down_proj"]),
        callbacks=callbacks,
    )
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    torch.save(
        {
            "seconds": torch.tensor(seconds),
            "study_seconds": torch.tensor(callbacks[0].seconds if callbacks else 0.0),
            "losses": torch.tensor(losses, dtype=torch.float64),
            "load": torch.tensor([load_before, os.getloadavg()[0]]),
            "threads": torch.tensor(torch.get_num_threads()),
        },
        result_path,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--save-steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4, help="training examples a step")
    parser.add_argument("--probes", type=int, default=8, help="training examples studied")
    parser.add_argument("--evals", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    opts = parser.parse_args()
    if opts.probes > opts.steps * opts.batch:
        parser.error("--probes must not exceed the training examples (steps x batch)")

    print(describe_machine(opts.threads))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train = _rows(opts.steps * opts.batch, seed=0)
        (folder / "train.json").write_text(json.dumps(train))
        _write_jsonl(folder / "probes.jsonl", train[: opts.probes])
        _write_jsonl(folder / "evals.jsonl", _rows(opts.evals, seed=1))
        args = {**vars(opts), "folder": tmp}
        results = {method: measure(_child, method, args) for method in ("plain", "callback")}
    plain, traced = results["plain"], results["callback"]
    saves = opts.steps // opts.save_steps
    print(
        f"\nSFTTrainer, SmolLM2-135M LoRA r=8 on up/down_proj, {opts.steps} steps of {opts.batch} "
        f"examples, saves every {opts.save_steps}; the callback studies {opts.probes} probes x "
        f"{opts.evals} evals at each of the {saves} saves\n"
    )
    print("| method | train() s | of which study s | load avg |")
    print("|---|---|---|---|")
    for method, result in results.items():
        print(
            f"| {method} | {result['seconds'].item():.1f} | {result['study_seconds'].item():.1f} "
            f"| {result['load'][0].item():.2f}->{result['load'][1].item():.2f} |"
        )
    ratio = traced["seconds"].item() / plain["seconds"].item()
    per_save = traced["study_seconds"].item() / max(saves, 1)
    per_step = plain["seconds"].item() / opts.steps
    print(f"\nwith / without the callback: {ratio:.2f}x run time")
    print(
        f"per save: {per_save:.1f} s of study ({opts.probes + opts.evals} examples), "
        f"{per_save / per_step:.2f} training steps of {opts.batch} examples"
    )
    print(f"losses identical: {torch.equal(plain['losses'], traced['losses'])}")
    print(f"threads {opts.threads}, load average now {os.getloadavg()}")


if __name__ == "__main__":
    main()
