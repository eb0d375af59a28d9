"""``swiftstudy validate SPEC --out DIR [--quick] [KEY=VALUE ...]``: the retraining validation."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``validate`` subcommand."""
    parser = commands.add_parser(
        "validate",
        help="retrain with each strategy's data and check the swift study's prediction",
        description="Train every run of the spec (unchanged runs are reused), answer the eval "
        "set greedily with each, grade the answers, and write accuracy.csv, predictions.jsonl, "
        "table.md, agreement.json (with swift:) and figures.",
    )
    parser.add_argument("spec", help="the validate spec (YAML)")
    parser.add_argument("--out", required=True, help="output folder (also holds the runs)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="override spec keys, e.g. train.lr=1e-4"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short runs on the first queries (the spec's quick: section), for a first look",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, command: str) -> int:
    """Run the validation and print its table; returns the exit status."""
    from swiftstudy.validate import run_validation

    result = run_validation(
        args.spec,
        args.out,
        overrides=args.overrides,
        quick=args.quick,
        progress=not args.no_progress,
        command=command,
    )
    reused = {outcome.name for outcome in result.runs if not outcome.trained}
    width = max(len(row.run) for row in result.accuracy)
    for row in result.accuracy:
        p_value = "" if row.p_value is None else f"  p={row.p_value:.3f}"
        note = "  (reused)" if row.run in reused else ""
        print(
            f"{row.run:<{width}}  {100 * row.accuracy:5.1f}%  "
            f"[{100 * row.ci_low:5.1f}, {100 * row.ci_high:5.1f}]  "
            f"Δ {100 * row.delta:+5.1f}{p_value}{note}"
        )
    if result.agreement is not None:
        agreement = result.agreement
        rho = "n/a" if agreement.spearman is None else f"{agreement.spearman:+.2f}"
        print(
            f"swift study vs gains: Spearman {rho}, signs agree "
            f"{agreement.sign_agreements} of {len(agreement.strategies)}"
        )
    print(f"results in {result.out_dir}")
    return 0
