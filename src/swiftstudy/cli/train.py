"""``swiftstudy train SPEC --out DIR [KEY=VALUE ...]``: train the base run from a spec file."""

from __future__ import annotations

import argparse

from swiftstudy.cli.config import add_print_config, add_spec_arguments


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``train`` subcommand."""
    parser = commands.add_parser(
        "train",
        help="fine-tune a model and save the checkpoint series a study traces",
        description="Train a LoRA adapter (or the full model) on the completion tokens of the "
        "spec's data, saving checkpoint-<step>/ folders every save_steps steps and at the end.",
    )
    add_spec_arguments(parser, "train", "run folder for the checkpoints", "max_steps=40")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a run of a different config in --out"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_print_config(parser, "swiftstudy.train.spec:TrainSpec")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, command: str) -> int:
    """Train and print the checkpoints written; returns the exit status."""
    from swiftstudy.train import run_training

    result = run_training(
        args.spec,
        args.out,
        overrides=args.overrides,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        command=command,
    )
    losses = dict(result.losses)
    for ckpt in result.checkpoints:
        loss = losses.get(ckpt.step)
        shown = "n/a" if loss is None else f"{loss:.4f}"
        print(f"step {ckpt.step:>6}  loss {shown:>8}  {ckpt.path}")
    print(f"checkpoints in {result.out_dir}")
    return 0
