"""``swiftstudy init --recipe cot|clarify|eval DIR``: one of the paper's studies, ready to run."""

from __future__ import annotations

import argparse

HELP = "write one of the paper's studies (spec, data, base-run spec), ready to run"
DESCRIPTION = (
    "Write DIR/<recipe>.yaml (a study spec whose header shows the commands that run it and the "
    "`probes` commands that fill its sets), DIR/train.yaml (a short base run on the bundled model) "
    "and DIR/data/ (12 rule-made tasks with checkable answers, and the base-run data from other "
    "tasks). Runs offline as written."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--recipe``, ``DIR``, ``--seed`` and ``--overwrite``."""
    parser.add_argument("--recipe", required=True, help="cot, clarify or eval")
    parser.add_argument("dir", help="the folder to write")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data and the base run")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")


def run(args: argparse.Namespace, command: str) -> int:
    """Write the recipe and print what to run next; returns the exit status."""
    from swiftstudy.demo.recipes import write_recipes

    files = write_recipes(
        args.dir, [args.recipe], seed=args.seed, overwrite=args.overwrite, written_by=command
    )
    spec = files.specs[args.recipe]
    print(f"wrote {spec}, {files.train_spec} and {len(files.data)} data files; run them with:")
    for line in spec.read_text(encoding="utf-8").splitlines():
        if line.startswith(("#   swiftstudy train ", "#   swiftstudy study ")):
            print("  " + line.removeprefix("#").strip())
    return 0
