"""``swiftstudy probes --strategy S --in REFS --out OUT --generator G``: build a probe set.

Applies a built-in or custom strategy to reference examples with an OpenAI-compatible endpoint
(``openai``), a local transformers model (``hf``) or answers the references supply (``none``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from swiftstudy.constants import (
    BUILTIN_STRATEGIES,
    DEFAULT_API_KEY_ENV,
    DEFAULT_CONCURRENCY,
    DEFAULT_GENERATION_FIELD,
    DEFAULT_GENERATOR_BATCH_SIZE,
    DEFAULT_GENERATOR_MODEL,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_RETRIES,
    DEFAULT_REQUEST_TIMEOUT_S,
    DTYPES,
)
from swiftstudy.errors import InputError

EXIT_FAILED = 1
GENERATORS = ("openai", "hf", "none")
#: Options that only one generator reads: giving them to another is a mistake worth reporting.
_ONLY_FOR = {
    "openai": ("base_url", "api_key_env", "temperature", "seed", "concurrency", "max_retries"),
    "hf": ("batch_size", "device", "dtype", "threads"),
    "none": ("generation_field",),
}
_SHOWN_ANSWER_CHARS = 80


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register the ``probes`` subcommand."""
    parser = commands.add_parser(
        "probes",
        help="build a probe set from reference examples with a strategy",
        description="Turn each reference example into probes with a strategy (built-in: "
        f"{', '.join(BUILTIN_STRATEGIES)}; or a YAML file of Jinja templates). Probes keep the "
        "reference's id and task, record source_id, strategy and kind, and load in a study "
        "unchanged. Every generator answer is cached, so a rerun resumes; answers that do not "
        "parse are reported and left out.",
    )
    parser.add_argument("--strategy", required=True, help="a built-in name or a strategy YAML")
    parser.add_argument("--in", dest="references", required=True, help="reference examples")
    parser.add_argument("--out", required=True, help="the probe JSONL file (main output kind)")
    parser.add_argument(
        "--generator",
        required=True,
        choices=GENERATORS,
        help="openai: an OpenAI-compatible server; hf: a local transformers model; none: each "
        "reference supplies the answer in a field (see --generation-field)",
    )
    parser.add_argument("--split", help="the split of a saved DatasetDict")
    parser.add_argument("--limit", type=int, help="use only the first N references")
    parser.add_argument("--cache-dir", help="answer cache (default: <cache>/generations)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor save answers")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    model = parser.add_argument_group("openai and hf generators")
    model.add_argument(
        "--model",
        help=f"hf: alias, .gguf, folder or hub id (default {DEFAULT_GENERATOR_MODEL}); "
        "openai: the model name (default: the server's only model)",
    )
    model.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    api = parser.add_argument_group("openai generator")
    api.add_argument("--base-url", help="API root, e.g. http://127.0.0.1:8000/v1")
    api.add_argument(
        "--api-key-env",
        help=f"environment variable holding the API key (default {DEFAULT_API_KEY_ENV})",
    )
    api.add_argument("--temperature", type=float, help="default 0 (greedy)")
    api.add_argument("--seed", type=int)
    api.add_argument("--concurrency", type=int, help=f"default {DEFAULT_CONCURRENCY}")
    api.add_argument("--max-retries", type=int, help=f"default {DEFAULT_MAX_RETRIES}")
    api.add_argument("--timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S, help="seconds")
    local = parser.add_argument_group("hf generator")
    local.add_argument("--batch-size", type=int, help=f"default {DEFAULT_GENERATOR_BATCH_SIZE}")
    local.add_argument("--device", help="cpu (default), cuda or cuda:N")
    local.add_argument("--dtype", choices=DTYPES, help="default float32")
    local.add_argument("--threads", type=int, help="CPU threads while decoding (default: torch's)")
    supplied = parser.add_argument_group("none generator")
    supplied.add_argument(
        "--generation-field",
        help=f"the reference field holding the answer (default {DEFAULT_GENERATION_FIELD})",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, command: str) -> int:
    """Build the probes and report them; returns the exit status."""
    from swiftstudy.generate import GenerationError
    from swiftstudy.probes import build_probes

    if not args.verbose:  # one line per HTTP request otherwise
        for name in ("httpx", "httpx2", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        result = build_probes(
            args.strategy,
            args.references,
            args.out,
            generator=_build_generator(args),
            generation_field=args.generation_field or DEFAULT_GENERATION_FIELD,
            split=args.split,
            limit=args.limit,
            cache_dir=args.cache_dir,
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


def _build_generator(args: argparse.Namespace):
    """The generator the options ask for (``None`` for ``none``), after checking the options."""
    for generator, names in _ONLY_FOR.items():
        for name in names:
            if generator != args.generator and getattr(args, name) is not None:
                option = "--" + name.replace("_", "-")
                raise InputError(f"applies to --generator {generator} only", key=option)
    if args.generator == "none":
        return None
    if args.generator == "hf":
        from swiftstudy.generate import HFGenerator, HFSettings

        settings = HFSettings(
            model=args.model or DEFAULT_GENERATOR_MODEL,
            max_new_tokens=_positive(args.max_new_tokens, "--max-new-tokens"),
            batch_size=_positive(args.batch_size or DEFAULT_GENERATOR_BATCH_SIZE, "--batch-size"),
            dtype=args.dtype or "float32",
            device=args.device or "cpu",
            threads=None if args.threads is None else _positive(args.threads, "--threads"),
        )
        return HFGenerator(settings)
    from swiftstudy.generate import OpenAIChatGenerator, OpenAISettings

    settings = OpenAISettings(
        model=args.model,
        base_url=args.base_url,
        api_key_env=args.api_key_env or DEFAULT_API_KEY_ENV,
        temperature=0.0 if args.temperature is None else args.temperature,
        max_new_tokens=_positive(args.max_new_tokens, "--max-new-tokens"),
        seed=args.seed,
        concurrency=_positive(args.concurrency or DEFAULT_CONCURRENCY, "--concurrency"),
        max_retries=DEFAULT_MAX_RETRIES if args.max_retries is None else args.max_retries,
        timeout_s=args.timeout,
    )
    if settings.max_retries < 0:
        raise InputError(f"must be at least 0, got {settings.max_retries}", key="--max-retries")
    if settings.timeout_s <= 0:
        raise InputError(f"must be positive, got {settings.timeout_s}", key="--timeout")
    return OpenAIChatGenerator(settings)


def _positive(value: int, option: str) -> int:
    if value < 1:
        raise InputError(f"must be at least 1, got {value}", key=option)
    return value
