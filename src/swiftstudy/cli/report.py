"""``swiftstudy report DIR``: re-render a study's report from its saved tables."""

from __future__ import annotations

import argparse

from swiftstudy.constants import (
    DEFAULT_BOOTSTRAP_RESAMPLES,
    DEFAULT_BOOTSTRAP_SEED,
    DEFAULT_CONFIDENCE_LEVEL,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``report`` subcommand."""
    parser = commands.add_parser(
        "report",
        help="write report.html, report.md and verdicts.json for a study's result folder",
        description="Compute bootstrap intervals, verdicts, trends and diagnostics from the tables "
        "a study saved (no gradients are recomputed), draw the figures, and write a "
        "self-contained report.html, report.md and verdicts.json into the folder.",
    )
    parser.add_argument("dir", help="the study's result folder (its --out)")
    parser.add_argument(
        "--resamples",
        type=int,
        default=DEFAULT_BOOTSTRAP_RESAMPLES,
        help=f"bootstrap resamples (default {DEFAULT_BOOTSTRAP_RESAMPLES})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_BOOTSTRAP_SEED,
        help=f"bootstrap seed (default {DEFAULT_BOOTSTRAP_SEED})",
    )
    parser.add_argument(
        "--level",
        type=float,
        default=DEFAULT_CONFIDENCE_LEVEL,
        help=f"coverage of the intervals (default {DEFAULT_CONFIDENCE_LEVEL})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, command: str) -> int:
    """Render the report and print the files written; returns the exit status."""
    from swiftstudy.errors import InputError
    from swiftstudy.report import render_report
    from swiftstudy.scores import BootstrapSettings

    if args.resamples < 1:
        raise InputError("must be at least 1", key="--resamples")
    if not 0 < args.level < 1:
        raise InputError("must be between 0 and 1, e.g. 0.95", key="--level")
    settings = BootstrapSettings(args.resamples, args.seed, args.level)
    files = render_report(args.dir, settings=settings)
    print(f"report in {files.html}")
    print(f"          {files.markdown}")
    print(f"verdicts in {files.verdicts}")
    return 0
