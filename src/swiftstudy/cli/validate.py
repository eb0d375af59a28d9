"""``swiftstudy validate SPEC --out DIR [--quick] [--loss-only] [KEY=VALUE ...]``: retraining."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from swiftstudy.cli.config import add_spec_arguments, run_from_spec

if TYPE_CHECKING:
    from swiftstudy.generate.greedy import DecodingStats
    from swiftstudy.validate import AccuracyRow

HELP = "retrain with each strategy's data and check the swift study's prediction"
DESCRIPTION = (
    "Train every run of the spec (unchanged runs are reused), compute the NLL of the eval set's "
    "reference responses with each (what the swift study predicts), answer the eval set greedily "
    "with each, grade the answers, and write accuracy.csv, predictions.jsonl, table.md, "
    "agreement.json (with swift:) and figures."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The spec, ``--out``, the overrides and the validation's flags."""
    add_spec_arguments(
        parser,
        "validate",
        "swiftstudy.validate.spec:ValidateSpec",
        "output folder (also holds the runs)",
        "train.lr=1e-4",
        {
            "--quick": "short runs on the first queries (the spec's quick: section), for a first "
            "look",
            "--loss-only": "only the reference NLL: no decoding, no grading (accuracy columns left "
            "empty)",
            "--no-progress": "hide the progress bars",
        },
    )


def run(args: argparse.Namespace, command: str) -> int:
    """Run the validation and print its table; returns the exit status."""
    from swiftstudy.validate import run_validation

    result = run_from_spec(
        run_validation, args, command, quick=args.quick, loss_only=args.loss_only
    )
    reused = {outcome.name for outcome in result.runs if not outcome.trained}
    width = max(len(row.run) for row in result.accuracy)
    for row in result.accuracy:
        note = "  (reused)" if row.run in reused else ""
        decoding = _decoding_text(result.decoding.get(row.run))
        print(f"{row.run:<{width}}{_accuracy_text(row)}{_nll_text(row)}{decoding}{note}")
    if result.agreement is not None:
        agreement = result.agreement
        n = len(agreement.strategies)
        for against, rho, signs in (
            ("gains", agreement.spearman, agreement.sign_agreements),
            ("-Δnll", agreement.spearman_nll, agreement.sign_agreements_nll),
        ):
            if signs is not None:
                rho_text = "n/a" if rho is None else f"{rho:+.2f}"
                print(f"swift study vs {against}: Spearman {rho_text}, signs agree {signs} of {n}")
    print(f"results in {result.out_dir}")
    return 0


def _accuracy_text(row: AccuracyRow) -> str:
    if row.accuracy is None or row.ci_low is None or row.ci_high is None or row.delta is None:
        return ""
    p_value = "" if row.p_value is None else f"  p={row.p_value:.3f}"
    return (
        f"  {100 * row.accuracy:5.1f}%  [{100 * row.ci_low:5.1f}, {100 * row.ci_high:5.1f}]  "
        f"Δ {100 * row.delta:+5.1f}{p_value}"
    )


def _decoding_text(stats: DecodingStats | None) -> str:
    """The run's decoding speed in this call; nothing when its answers all came from the cache."""
    if stats is None or stats.answers == 0:
        return ""
    return (
        f"  decoding {stats.tokens_per_second:.1f} tokens/s "
        f"({stats.tokens} tokens in {stats.seconds:.1f} s)"
    )


def _nll_text(row: AccuracyRow) -> str:
    if row.nll is None or row.delta_nll is None:
        return ""
    interval = ""
    if row.delta_nll_low is not None and row.delta_nll_high is not None:
        interval = f" [{row.delta_nll_low:+.3f}, {row.delta_nll_high:+.3f}]"
    return f"  nll {row.nll:.3f}  Δnll {row.delta_nll:+.3f}{interval}"
