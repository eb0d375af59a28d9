"""``swiftstudy report DIR``: re-render a study's report from its saved tables."""

from __future__ import annotations

import argparse

from swiftstudy.constants import (
    DEFAULT_BOOTSTRAP_RESAMPLES,
    DEFAULT_BOOTSTRAP_SEED,
    DEFAULT_CONFIDENCE_LEVEL,
)

HELP = "write report.html, report.md and verdicts.json for a study's result folder"
DESCRIPTION = (
    "Compute bootstrap intervals, verdicts, trends and diagnostics from the tables a study saved "
    "(no gradients are recomputed), draw the figures, and write a self-contained report.html, "
    "report.md and verdicts.json into the folder."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``DIR`` and the bootstrap's settings."""
    parser.add_argument("dir", help="the study's result folder (its --out)")
    for flag, kind, default, text in (
        ("--resamples", int, DEFAULT_BOOTSTRAP_RESAMPLES, "bootstrap resamples"),
        ("--seed", int, DEFAULT_BOOTSTRAP_SEED, "bootstrap seed"),
        ("--level", float, DEFAULT_CONFIDENCE_LEVEL, "coverage of the intervals"),
    ):
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")


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
