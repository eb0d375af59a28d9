"""The ``swiftstudy`` command: parse arguments, call the library, turn bad input into exit 2.

Each subcommand is the module of its name, with ``HELP`` and ``DESCRIPTION`` for its ``--help``,
``add_arguments(parser)``, and ``run(args, command) -> int``, its handler.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import warnings
from collections.abc import Sequence

from swiftstudy.cli import demo, init, probes, report, study, train, validate
from swiftstudy.errors import InputError

EXIT_BAD_INPUT = 2
SUBCOMMANDS = (study, train, probes, report, validate, init, demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from swiftstudy.provenance import package_version

    parser = argparse.ArgumentParser(
        prog="swiftstudy",
        description="Will a kind of instruction-tuning data help your model? "
        "Trace the relative influence of probe examples over a run's checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"swiftstudy {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        name = module.__name__.rpartition(".")[2]
        command = commands.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def _quiet_libraries(verbose: bool) -> None:
    """Keep the terminal to our own progress bars and messages, unless --verbose."""
    if verbose:
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars of every from_pretrained
    # PEFT asks transformers a deprecated question on every adapter load; nothing to act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # KEY=VALUE overrides may come before or after the options: collect them wherever they are.
    args, extra = parser.parse_known_args(argv)
    unknown = [
        w for w in extra if "=" not in w or w.startswith("-") or not hasattr(args, "overrides")
    ]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries(args.verbose)
    try:
        return args.run(args, shlex.join(["swiftstudy", *argv]))
    except InputError as err:
        print(f"swiftstudy: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("swiftstudy: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
