"""``swiftstudy probes --strategy S --in REFS --out OUT --generator G``: build a probe set.

Applies a built-in or custom strategy to reference examples with an OpenAI-compatible endpoint
(``openai``), a local transformers model (``hf``) or answers the references supply (``none``).
The flags are the keys of :class:`~swiftstudy.config.probes.ProbesSpec`, which checks them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from swiftstudy.cli.config import add_print_config, add_spec_flags
from swiftstudy.config.probes import ProbesSpec, flag_name, probes_spec_from_flags
from swiftstudy.constants import BUILTIN_STRATEGIES

EXIT_FAILED = 1
_SHOWN_ANSWER_CHARS = 80


HELP = "build a probe set from reference examples with a strategy"
DESCRIPTION = (
    "Turn each reference example into probes with a strategy (built-in: "
    f"{', '.join(BUILTIN_STRATEGIES)}; or a YAML file of Jinja templates). Probes keep the "
    "reference's id and task, record source_id, strategy and kind, and load in a study unchanged. "
    "Every generator answer is cached, so a rerun resumes; answers that do not parse are reported "
    "and left out."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag per key of the spec, ``--no-cache``, ``--no-progress`` and ``--print-config``."""
    keys = add_spec_flags(parser, ProbesSpec, flag_name)
    parser.add_argument("--no-cache", action="store_true", help="neither read nor save answers")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_print_config(
        parser, "swiftstudy.config.probes:ProbesSpec", "swiftstudy.config.probes:describe_flag"
    )
    parser.set_defaults(spec_keys=keys)


def run(args: argparse.Namespace, command: str) -> int:
    """Build the probes and report them; returns the exit status."""
    from swiftstudy.generate import GenerationError, HFGenerator, OpenAIChatGenerator
    from swiftstudy.probes import build_probes

    if not args.verbose:  # one line per HTTP request otherwise
        for name in ("httpx", "httpx2", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
    flags = {key: getattr(args, key) for key in args.spec_keys if getattr(args, key) is not None}
    spec = probes_spec_from_flags(flags)
    make = {"openai": OpenAIChatGenerator, "hf": HFGenerator}.get(spec.generator)
    try:
        result = build_probes(
            spec.strategy,
            spec.references,
            spec.out,
            generator=None if make is None else make(spec.settings),
            generation_field=spec.generation_field,
            split=spec.split,
            limit=spec.limit,
            cache_dir=spec.cache_dir,
            use_cache=not args.no_cache,
            progress=not args.no_progress,
            command=command,
        )
    except GenerationError as error:
        print(f"swiftstudy: error: {error}", file=sys.stderr)
        print("swiftstudy: answers received so far are cached: rerun to resume", file=sys.stderr)
        return EXIT_FAILED
    for failure in result.failures:
        answer = " ".join(failure.answer.split())
        if len(answer) > _SHOWN_ANSWER_CHARS:
            answer = answer[: _SHOWN_ANSWER_CHARS - 3] + "..."
        print(
            f"left out {failure.origin} (id {failure.source_id}): {failure.reason}: {answer!r}",
            file=sys.stderr,
        )
    for kind, path in result.files.items():
        print(f"wrote {result.n_probes} {kind} probes to {path}")
    print(
        f"{result.n_probes} of {result.n_references} references made probes "
        f"({len(result.failures)} left out; answers: {result.n_cached} cached, "
        f"{result.n_generated} generated); details in {result.config_path}"
    )
    return 0 if result.n_probes else EXIT_FAILED
