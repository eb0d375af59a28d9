"""``swiftstudy train SPEC --out DIR [KEY=VALUE ...]``: train the base run from a spec file."""

from __future__ import annotations

import argparse

from swiftstudy.cli.config import add_spec_arguments, run_from_spec

HELP = "fine-tune a model and save the checkpoint series a study traces"
DESCRIPTION = (
    "Train a LoRA adapter (or the full model) on the completion tokens of the spec's data, saving "
    "checkpoint-<step>/ folders every save_steps steps and at the end."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The spec, ``--out``, the overrides and the training's flags."""
    add_spec_arguments(
        parser,
        "train",
        "swiftstudy.train.spec:TrainSpec",
        "run folder for the checkpoints",
        "max_steps=40",
        {
            "--resume": "continue from the newest checkpoint in --out",
            "--overwrite": "replace a run of a different config in --out",
            "--no-progress": "hide the progress bar",
        },
    )


def run(args: argparse.Namespace, command: str) -> int:
    """Train and print the checkpoints written; returns the exit status."""
    from swiftstudy.train import run_training

    result = run_from_spec(
        run_training, args, command, resume=args.resume, overwrite=args.overwrite
    )
    losses = dict(result.losses)
    for ckpt in result.checkpoints:
        loss = losses.get(ckpt.step)
        shown = "n/a" if loss is None else f"{loss:.4f}"
        print(f"step {ckpt.step:>6}  loss {shown:>8}  {ckpt.path}")
    print(f"checkpoints in {result.out_dir}")
    return 0
