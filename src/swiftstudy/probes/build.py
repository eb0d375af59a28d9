"""Build probe sets: apply a strategy to reference examples, through a generator, into JSONL files.

The order of work: load and check the strategy and the references and render every template
context (bad input fails here, before any generation); ask the generator for each distinct prompt
not already in the cache (each answer is cached the moment it arrives, so a crashed run resumes);
parse every answer into probes, reporting and leaving out those that do not parse; then write
each output kind's JSONL file and ``<out stem>.config.yaml`` (what made the files, and the
failures), each atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from swiftstudy.config.reader import absolute_path
from swiftstudy.constants import DEFAULT_GENERATION_FIELD, PROBES_CONFIG_SUFFIX
from swiftstudy.data.examples import Example, Message, load_examples
from swiftstudy.data.strategies import (
    ParseFailure,
    Probe,
    Strategy,
    build_context,
    load_strategy,
    render_generation_prompt,
    render_probes,
)
from swiftstudy.errors import InputError
from swiftstudy.fileio import sha256_hex, write_text_atomic
from swiftstudy.generate import CachedGenerator, GenerationCache, Generator
from swiftstudy.rundir import save_run_config

logger = logging.getLogger(__name__)

#: How much of an unparseable answer the failure report keeps.
_ANSWER_EXCERPT_CHARS = 500


@dataclass(frozen=True)
class ProbeFailure:
    """A reference whose generator answer could not be turned into probes.

    Attributes:
        source_id: The reference's id.
        origin: Where the reference is, ``path:line``.
        reason: What was wrong with the answer.
        answer: The answer (its first 500 characters).
    """

    source_id: str
    origin: str
    reason: str
    answer: str


@dataclass(frozen=True)
class ProbesResult:
    """What :func:`build_probes` wrote.

    Attributes:
        strategy: The strategy applied.
        files: Each output kind's JSONL file, main kind first (empty when nothing parsed).
        n_probes: Probes per file (one per reference that parsed).
        n_references: References read (after ``limit``).
        failures: The references left out, in file order.
        n_cached: Answers read from the cache.
        n_generated: Answers asked of the generator.
        config_path: The ``<out stem>.config.yaml`` written beside the probes.
    """

    strategy: Strategy
    files: dict[str, Path]
    n_probes: int
    n_references: int
    failures: tuple[ProbeFailure, ...]
    n_cached: int
    n_generated: int
    config_path: Path


def output_paths(out: str | Path, strategy: Strategy) -> dict[str, Path]:
    """Where each output kind goes: the main kind to ``out``, others to ``<stem>.<kind><suffix>``.

    ``output_paths("clar.jsonl", clarify)`` is ``{"clarified": clar.jsonl,
    "clarification": clar.clarification.jsonl}``.
    """
    out = Path(out)
    main, *extra = (output.kind for output in strategy.outputs)
    suffix = out.suffix or ".jsonl"
    return {main: out, **{kind: out.with_name(f"{out.stem}.{kind}{suffix}") for kind in extra}}


def build_probes(
    strategy: str | Path | Strategy,
    references: str | Path,
    out: str | Path,
    *,
    generator: Generator | None = None,
    generation_field: str = DEFAULT_GENERATION_FIELD,
    split: str | None = None,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
    command: str | None = None,
) -> ProbesResult:
    """Apply a strategy to every reference example and write the probes as example JSONL.

    Each probe keeps its reference's ``id``, ``task`` and earlier prompt messages, and records
    ``source_id``, ``strategy`` and ``kind`` (and ``label`` when the reference has one); the files
    load with :func:`swiftstudy.data.load_examples` and feed a study unchanged.

    Args:
        strategy: A built-in name (``cot``, ``clarify``, ``eval``, ``similar``), a strategy YAML
            file, or a loaded :class:`~swiftstudy.data.strategies.Strategy`.
        references: The reference examples: a JSONL file or a saved dataset.
        out: The main output kind's JSONL file; other kinds go beside it (see
            :func:`output_paths`), and ``<stem>.config.yaml`` records the run and its failures.
        generator: Answers the strategy's generation prompts. ``None`` (the ``none`` generator):
            each reference supplies the answer in its ``generation_field`` field, so no model is
            needed. Unused by a strategy without a generation step.
        generation_field: With ``generator=None``, the reference field holding the answer.
        split: The split of a saved ``DatasetDict``.
        limit: Use only the first ``limit`` references (try a strategy on a handful first).
        cache_dir: Where answers are cached (default ``<cache dir>/generations``).
        use_cache: Read and write the answer cache.
        progress: Show a progress bar over generations.
        command: The command line, recorded in the config file.

    Returns:
        The files written, their size, and the references left out with the reason.

    Raises:
        InputError: Bad strategy, references or options (nothing is written), or a generator
            refused the request for a reason the user can fix (key, model name).
        GenerationError: The generator failed (retries used up, server error); answers received
            before the failure are cached, so rerunning resumes.
    """
    if not isinstance(strategy, Strategy):
        strategy = load_strategy(strategy)
    if limit is not None and limit < 1:
        raise InputError(f"must be at least 1, got {limit}", key="limit")
    refs = load_examples(references, split=split)[:limit]
    for path in output_paths(out, strategy).values():
        if absolute_path(path) == absolute_path(Path(references)):
            raise InputError("is also the input: choose another output file", path=path, key="out")
    contexts = [build_context(strategy, ref) for ref in refs]
    if strategy.generation is None:
        answers = _Answers([None] * len(refs))
        generated_by: dict[str, Any] = {"generator": None}
    elif generator is None:
        answers = _Answers([_supplied_answer(ref, generation_field) for ref in refs])
        generated_by = {"generator": "none", "generation_field": generation_field}
    else:
        cache = GenerationCache(cache_dir) if use_cache else None
        pairs = zip(refs, contexts, strict=True)
        prompts = [render_generation_prompt(strategy, ref, context) for ref, context in pairs]
        answers = _generate(generator, cache, prompts, progress)
        # What the answers depend on, and the device a local model answered on (when one loaded).
        device = {} if generator.device is None else {"device": generator.device}
        generated_by = {**generator.settings, **device}
    probes, failures = _render_all(strategy, refs, contexts, answers.texts)
    result = ProbesResult(
        strategy=strategy,
        files=_write_probes(out, strategy, probes, refs),
        n_probes=len(refs) - len(failures),
        n_references=len(refs),
        failures=tuple(failures),
        n_cached=answers.n_cached,
        n_generated=answers.n_generated,
        config_path=Path(out).with_name(Path(out).stem + PROBES_CONFIG_SUFFIX),
    )
    inputs = {"path": str(Path(references).resolve()), "split": split, "limit": limit}
    # A saved dataset folder has no single file to check with sha256sum: None.
    inputs["sha256"] = sha256_hex(Path(references)) if Path(references).is_file() else None
    config = _describe(result, inputs, generated_by)
    save_run_config(result.config_path, config, command=command, nested=True)
    return result


def _render_all(
    strategy: Strategy,
    refs: list[Example],
    contexts: list[dict[str, Any]],
    answers: list[str | None],
) -> tuple[list[Probe], list[ProbeFailure]]:
    """The probes of every reference whose answer parses, and a failure for each other one."""
    probes: list[Probe] = []
    failures: list[ProbeFailure] = []
    for ref, context, answer in zip(refs, contexts, answers, strict=True):
        try:
            probes.extend(render_probes(strategy, ref, context, answer))
        except ParseFailure as failure:
            excerpt = (answer or "")[:_ANSWER_EXCERPT_CHARS]
            failures.append(ProbeFailure(ref.id, ref.origin, str(failure), excerpt))
            logger.debug("%s: left out: %s", ref.origin, failure)
    if failures:
        logger.warning(
            "%d of %d references left out: their answers did not parse", len(failures), len(refs)
        )
    return probes, failures


@dataclass(frozen=True)
class _Answers:
    """Each reference's answer (``None`` without a generation step), and where they came from."""

    texts: list[str | None]
    n_cached: int = 0
    n_generated: int = 0


def _supplied_answer(reference: Example, field: str) -> str:
    """With the ``none`` generator: the answer the reference supplies in ``field``."""
    value = reference.record.get(field)
    if not isinstance(value, str):
        got = "missing" if value is None else f"must be a string, not {type(value).__name__}"
        raise InputError(
            f"{got} (with --generator none, each reference supplies the answer to the "
            f"strategy's generation prompt in this field)",
            path=reference.origin,
            key=field,
        )
    return value


def _generate(
    generator: Generator,
    cache: GenerationCache | None,
    prompts: Sequence[tuple[Message, ...]],
    progress: bool,
) -> _Answers:
    """Answer each distinct prompt once (from the cache when there), in the prompts' order."""
    distinct = list(dict.fromkeys(prompts))
    asked = generator if cache is None else CachedGenerator(generator, cache)
    with tqdm(total=len(distinct), desc="generating", unit="answer", disable=not progress) as bar:
        texts = dict(zip(distinct, asked.generate(distinct, on_answer=bar.update), strict=True))
    if isinstance(asked, CachedGenerator):
        return _Answers([texts[p] for p in prompts], asked.hits, asked.misses)
    return _Answers([texts[p] for p in prompts], 0, len(distinct))


def _write_probes(
    out: str | Path, strategy: Strategy, probes: list[Probe], refs: list[Example]
) -> dict[str, Path]:
    """Write each kind's JSONL file (nothing when no reference parsed); returns the files."""
    if not probes:
        logger.warning("no probes: no file written")
        return {}
    labels = {ref.id: ref.record.get("label") for ref in refs}
    files = output_paths(out, strategy)
    for kind, path in files.items():
        lines = [
            json.dumps(probe_record(p, labels.get(p.source_id)), ensure_ascii=False) + "\n"
            for p in probes
            if p.kind == kind
        ]
        write_text_atomic(path, "".join(lines))
        logger.debug("wrote %d %s probes to %s", len(lines), kind, path)
    return files


def probe_record(probe: Probe, label: Any = None) -> dict[str, Any]:
    """A probe as a JSON record in the example format (``prompt``/``response`` or ``messages``)."""
    example = probe.example
    record: dict[str, Any] = {
        "id": example.id,
        "task": example.task,
        "source_id": probe.source_id,
        "strategy": probe.strategy,
        "kind": probe.kind,
    }
    if label is not None:
        record["label"] = label
    if len(example.prompt) == 1 and example.prompt[0].role == "user":
        record["prompt"] = example.prompt[0].content
        record["response"] = example.response
    else:
        turns = [{"role": m.role, "content": m.content} for m in example.prompt]
        record["messages"] = [*turns, {"role": "assistant", "content": example.response}]
    return record


def _describe(
    result: ProbesResult, inputs: dict[str, Any], generator: dict[str, Any]
) -> dict[str, Any]:
    """The config file: the strategy, input, generator, outputs, failures and provenance."""
    strategy = result.strategy
    return {
        "strategy": {
            "name": strategy.name,
            "path": str(strategy.source),
            "sha256": strategy.sha256,
        },
        "input": {**inputs, "n_references": result.n_references},
        "generator": generator,
        "outputs": {kind: str(absolute_path(path)) for kind, path in result.files.items()},
        "n_probes": result.n_probes,
        "n_cached": result.n_cached,
        "n_generated": result.n_generated,
        "failures": [asdict(failure) for failure in result.failures],
    }
