"""``swiftstudy demo [--out DIR] [--quick] [--seed N]``: the whole method end to end, offline."""

from __future__ import annotations

import argparse

HELP = "make data, train a base run and run the paper's three studies on the bundled model"
DESCRIPTION = (
    "On the bundled SmolLM2-135M-Instruct, offline: write rule-made data for 12 study tasks and 4 "
    "base tasks, train a short LoRA base run, run the CoT, Clarify and Eval studies over its "
    "checkpoints and write their reports. Rerun the same command to resume after an interruption."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--quick``, ``--seed`` and ``--no-progress``."""
    parser.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="train 10 steps (1 checkpoint) instead of 20 (2), and study 6 of the 12 tasks",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the data and the base run")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace, command: str) -> int:
    """Run the demo and print its summary and where the reports are; returns the exit status."""
    from swiftstudy.demo import run_demo

    result = run_demo(
        args.out,
        quick=args.quick,
        seed=args.seed,
        progress=not args.no_progress,
        command=command,
    )
    print(result.summary.read_text(encoding="utf-8"))
    for name, study in result.studies.items():
        print(f"{name} report: {study.out_dir / 'report.html'}")
    print(f"summary: {result.summary} ({result.seconds / 60:.1f} minutes)")
    return 0
