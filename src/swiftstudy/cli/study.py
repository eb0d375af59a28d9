"""``swiftstudy study SPEC --out DIR [KEY=VALUE ...]``: run a study from a spec file."""

from __future__ import annotations

import argparse

from swiftstudy.cli.config import add_spec_arguments, run_from_spec

HELP = "compute RelInf over a checkpoint series"
DESCRIPTION = (
    "Compute the relative influence of each probe example on each evaluation example at every "
    "checkpoint, the in-task and cross-task scores, and their figures."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The spec, ``--out``, the overrides and the study's flags."""
    add_spec_arguments(
        parser,
        "study",
        "swiftstudy.study.spec:StudySpec",
        "output folder",
        "batch_size=4",
        {
            "--overwrite": "replace results of a different config in --out",
            "--no-cache": "neither read nor write the gradient cache (cache_dir, "
            "$SWIFTSTUDY_CACHE, or the user cache folder)",
            "--no-progress": "hide the progress bar",
        },
    )


def run(args: argparse.Namespace, command: str) -> int:
    """Run the study and print its scores; returns the exit status."""
    from swiftstudy.study import run_study

    result = run_from_spec(
        run_study, args, command, overwrite=args.overwrite, cache=not args.no_cache
    )
    if result.rank != 0:
        return 0  # under torchrun / accelerate launch, rank 0 reports
    work = result.work
    print(
        f"gradients: {work.computed} computed, {work.cached} from the cache, "
        f"{work.resumed} checkpoint(s) resumed"
    )
    for row in result.scores:
        value = "n/a" if row.value is None else f"{row.value:+.4f}"
        print(f"step {row.step:>6}  {value:>9}  ({row.n_pairs} pairs)  {row.metric}")
    print(f"results in {result.out_dir}; report in {result.out_dir / 'report.html'}")
    return 0
