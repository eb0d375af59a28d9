"""``swiftstudy study SPEC --out DIR [KEY=VALUE ...]``: run a study from a spec file."""

from __future__ import annotations

import argparse

from swiftstudy.cli.config import add_print_config, add_spec_arguments


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``study`` subcommand."""
    parser = commands.add_parser(
        "study",
        help="compute RelInf over a checkpoint series",
        description="Compute the relative influence of each probe example on each evaluation "
        "example at every checkpoint, the in-task and cross-task scores, and their figures.",
    )
    add_spec_arguments(parser, "study", "output folder", "batch_size=4")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace results of a different config in --out"
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write the gradient cache (cache_dir, $SWIFTSTUDY_CACHE, or the "
        "user cache folder)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_print_config(parser, "swiftstudy.study.spec:StudySpec")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, command: str) -> int:
    """Run the study and print its scores; returns the exit status."""
    from swiftstudy.study import run_study

    result = run_study(
        args.spec,
        args.out,
        overrides=args.overrides,
        overwrite=args.overwrite,
        cache=not args.no_cache,
        progress=not args.no_progress,
        command=command,
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
