"""Run a validation study: train each run, score and answer the eval set with it, grade, report.

The order of work: validate everything that can be checked without a model (spec, eval set and
its golden answers, every run's data, checkpoints, the swift study's scores), then train the runs
in dependency order, then with each run's final checkpoint (the base model is loaded once and the
adapters swapped in) compute the reference responses' NLL (:mod:`swiftstudy.validate.likelihood`)
and, unless ``loss_only``, answer the eval set, grade every answer, and write the result files,
each atomically.

Nothing is done twice. Each run trains in ``<out>/runs/<name>/`` with ``swiftstudy train``'s own
code; ``validate_run.json`` there records the key of its config (the resolved train spec, the
SHA-256 of its data and of the checkpoint it starts from), so a later call with the same key
reuses the finished run, resumes an interrupted one, and retrains only a run whose key changed
(and the runs that continue from it). Answers are cached in ``<out>/answers/`` under the
checkpoint's SHA-256 and the exact prompt, NLLs in ``<out>/nll/`` under the checkpoint's SHA-256,
the prompt and the response, judge verdicts in the generation cache.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from swiftstudy.constants import (
    ACCURACY_CSV,
    AGREEMENT_JSON,
    CHECKPOINT_KIND_ADAPTER,
    CONFIG_YAML,
    EVAL_BACKEND_HF,
    FIGURES_DIR,
    PREDICTIONS_JSONL,
    TABLE_MD,
    TRAIN_CONFIG_YAML,
    VALIDATE_ANSWERS_DIR,
    VALIDATE_RUN_RECORD,
    VALIDATE_RUNS_DIR,
)
from swiftstudy.data import load_examples
from swiftstudy.errors import InputError
from swiftstudy.fileio import json_sha256, sha256_hex, write_text_atomic
from swiftstudy.generate import CachedGenerator, GenerationCache
from swiftstudy.generate.vllm_lora import lora_rank
from swiftstudy.model import Checkpoint, discover_checkpoints, hash_checkpoint, resolve_device
from swiftstudy.rundir import check_folder, hash_input, hash_inputs, save_run_config
from swiftstudy.train import run_training
from swiftstudy.train.outputs import is_finished
from swiftstudy.validate.agreement import (
    Agreement,
    StrategyMatch,
    SwiftScore,
    compute_agreement,
    load_swift_scores,
    match_strategies,
)
from swiftstudy.validate.evaluators import build_evaluator
from swiftstudy.validate.generation import (
    BaseModelStates,
    CheckpointGenerator,
    DecodingStats,
    GenerationSettings,
)
from swiftstudy.validate.grading import EvalQuery, Grade, load_eval_queries
from swiftstudy.validate.likelihood import VALIDATE_NLL_DIR, NllCache, QueryNll, score_checkpoint
from swiftstudy.validate.outputs import (
    render_accuracy_csv,
    render_agreement_json,
    render_predictions_jsonl,
    render_table_md,
)
from swiftstudy.validate.results import (
    AccuracyRow,
    PredictionRow,
    build_prediction_rows,
    compute_accuracy_rows,
    compute_task_accuracies,
)
from swiftstudy.validate.spec import (
    RunSpec,
    ValidateSpec,
    apply_quick,
    dependency_order,
    load_validate_spec,
)
from swiftstudy.validate.vllm_decoding import VLLMCheckpointGenerator, VLLMDecoder

logger = logging.getLogger(__name__)

#: Bumped when a change makes older run folders unusable (their key no longer matches).
_RUN_KEY_FORMAT = 1


@dataclass(frozen=True)
class RunOutcome:
    """A run's final checkpoint, and whether this call trained it.

    Attributes:
        name: The run's name.
        checkpoint: The checkpoint its answers come from.
        fingerprint: The SHA-256 of the checkpoint's weights and config.
        trained: ``True`` when this call trained (or resumed) it, ``False`` when it was reused.
        seconds: Wall time spent training it in this call.
    """

    name: str
    checkpoint: Checkpoint
    fingerprint: str
    trained: bool
    seconds: float


@dataclass(frozen=True)
class ValidationResult:
    """What a validation study computed (also written to ``out_dir``).

    Attributes:
        out_dir: Where the files are.
        accuracy: One row per run, in spec order: accuracy (empty when ``loss_only``) and NLL.
        predictions: Every run's graded answer to every query (empty when ``loss_only``).
        agreement: The swift study against the retraining, or ``None`` without ``swift:``.
        runs: Each run's final checkpoint.
        nlls: Each run's per-query reference NLLs, in eval-set order.
        decoding: Each run's decoding in this call (answers, tokens, seconds, and
            ``tokens_per_second``); zero answers when all came from the cache or ``loss_only``.
    """

    out_dir: Path
    accuracy: tuple[AccuracyRow, ...]
    predictions: tuple[PredictionRow, ...]
    agreement: Agreement | None
    runs: tuple[RunOutcome, ...]
    nlls: dict[str, tuple[QueryNll, ...]] = field(default_factory=dict)
    decoding: dict[str, DecodingStats] = field(default_factory=dict)


@dataclass(frozen=True)
class _Inputs:
    """Everything read and checked before any training."""

    spec: ValidateSpec
    queries: list[EvalQuery]
    matches: list[StrategyMatch] | None
    scores: dict[str, SwiftScore] | None


def run_validation(
    spec: ValidateSpec | str | Path,
    out_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    quick: bool = False,
    loss_only: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> ValidationResult:
    """Retrain with each run's data; score, answer and grade the eval set; compare with a baseline.

    Every run (the baseline included) is scored by the NLL of the eval set's reference responses,
    rendered, masked and summed over completion tokens exactly as the swift study's loss: what
    RelInf predicts. Unless ``loss_only``, each run also answers the eval set greedily and the
    evaluator grades the answers.

    A spec can be built in Python with :func:`validate_spec_from_dict`; each run is a
    ``swiftstudy train`` spec, so a run that continues from an existing checkpoint with its own
    training seed is ``{"name": "cot-s1", "init_from": "<checkpoint or run folder>",
    "data": ["cot.jsonl"], "seed": 1}`` (``init_from`` may also name another run).

    Args:
        spec: A loaded spec, or the path of a validate spec YAML file.
        out_dir: Receives ``accuracy.csv``, ``predictions.jsonl``, ``table.md``,
            ``agreement.json`` (with ``swift:``), ``figures/``, ``config.yaml``, and the run
            folders ``runs/<name>/``, answer cache ``answers/`` and NLL cache ``nll/`` that later
            calls reuse.
        overrides: ``key=value`` overrides applied to a spec file (only with a path).
        quick: Use the spec's ``quick`` profile: short runs, the first queries, short answers.
        loss_only: Skip decoding and grading: only the NLL columns of ``accuracy.csv`` (``nll``,
            ``nll_per_token``, ``delta_nll``, ``delta_nll_low``, ``delta_nll_high``) and the NLL
            side of ``agreement.json`` are filled; the golden answers are still checked by the
            evaluator; no ``predictions.jsonl``.
        progress: Show progress bars for training, scoring and generation.
        command: The command line, recorded in ``config.yaml`` and each run's train config.

    Returns:
        The accuracy rows, every prediction, the agreement (or ``None``), the runs and their
        per-query NLLs.

    Raises:
        InputError: Bad input (spec, eval set, data, checkpoints, scores, evaluator); nothing is
            trained or written in that case.
    """
    started = time.monotonic()
    inputs = _read_inputs(spec, overrides, quick)
    spec = inputs.spec
    out_dir = Path(out_dir)
    check_folder(out_dir)
    base_dir = Path.cwd() if spec.spec_path is None else spec.spec_path.parent
    evaluator = build_evaluator(spec.eval.evaluator, base_dir=base_dir)
    evaluator.check(inputs.queries)

    outcomes: dict[str, RunOutcome] = {}
    for run in dependency_order(spec):
        outcomes[run.name] = _train_or_reuse(run, outcomes, out_dir, progress, command)
    ordered = [outcomes[run.name] for run in spec.runs]
    timings = {"train_s": time.monotonic() - started}

    states = BaseModelStates(_generation_settings(spec))
    nlls = _score(states, ordered, inputs.queries, out_dir, progress)
    timings["nll_s"] = time.monotonic() - started - sum(timings.values())
    grades = None
    predictions: list[PredictionRow] = []
    decoding: dict[str, DecodingStats] = {}
    if not loss_only:
        answers = _answer(
            states, spec.eval.backend, ordered, inputs.queries, out_dir, progress, decoding
        )
        timings["generate_s"] = time.monotonic() - started - sum(timings.values())
        grades = _grade(evaluator, inputs.queries, answers)
        timings["grade_s"] = time.monotonic() - started - sum(timings.values())
        predictions = build_prediction_rows(inputs.queries, answers, grades)

    accuracy = compute_accuracy_rows(grades, spec.baseline, nlls)
    agreement = None
    if inputs.matches is not None and inputs.scores is not None and spec.swift is not None:
        agreement = compute_agreement(
            inputs.matches, inputs.scores, accuracy, spec.baseline, spec.swift.scores
        )
    result = ValidationResult(
        out_dir,
        tuple(accuracy),
        tuple(predictions),
        agreement,
        tuple(ordered),
        {name: tuple(values) for name, values in nlls.items()},
        decoding,
    )
    timings = {key: round(value, 1) for key, value in timings.items()}
    _write_outputs(
        result,
        inputs,
        grades,
        quick=quick,
        device=states.settings.device,
        timings=timings,
        command=command,
    )
    logger.info("validation results in %s (%.0f s)", out_dir, time.monotonic() - started)
    return result


# -- before any training ----------------------------------------------------------------------


def _read_inputs(spec: ValidateSpec | str | Path, overrides: Sequence[str], quick: bool) -> _Inputs:
    if not isinstance(spec, ValidateSpec):
        spec = load_validate_spec(spec, overrides)
    elif overrides:
        raise ValueError("overrides apply to a spec file, not to a loaded ValidateSpec")
    if quick:
        spec = apply_quick(spec)
    queries = load_eval_queries(spec.eval.path, split=spec.eval.split, limit=spec.eval.limit)
    for run in spec.runs:
        _check_run_inputs(run)
    scores = matches = None
    if spec.swift is not None:
        scores = load_swift_scores(spec.swift.scores)
        matches = match_strategies(spec, scores)
    return _Inputs(spec, queries, matches, scores)


def _check_run_inputs(run: RunSpec) -> None:
    """Read every data file and find every checkpoint now, so a bad one fails before training."""
    if run.checkpoint is not None:
        discover_checkpoints(run.checkpoint, origin=f"{run.name}: checkpoint")
        return
    assert run.train is not None
    for source in run.train.data:
        load_examples(source.path, split=source.split)
    if run.init_run is None and run.train.init_from is not None:
        discover_checkpoints(run.train.init_from, origin=f"{run.name}: init_from")


# -- training ---------------------------------------------------------------------------------


def run_folder_name(name: str) -> str:
    """A run's folder name: the name itself when it is file-name safe, else a slug and a hash."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
    if slug == name:
        return name
    return f"{slug}-{sha256_hex(name)[:8]}"


def _train_or_reuse(
    run: RunSpec,
    done: dict[str, RunOutcome],
    out_dir: Path,
    progress: bool,
    command: str | None,
) -> RunOutcome:
    """The run's final checkpoint: reused when its key is unchanged, else trained (or resumed)."""
    if run.checkpoint is not None:
        checkpoint = discover_checkpoints(run.checkpoint, origin=f"{run.name}: checkpoint")[-1]
        return RunOutcome(run.name, checkpoint, hash_checkpoint(checkpoint), False, 0.0)
    assert run.train is not None
    train = run.train
    if run.init_run is not None:
        parent = done[run.init_run]
        train = replace(train, init_from=parent.checkpoint.path)
        init_fingerprint = parent.fingerprint
    elif train.init_from is not None:
        init = discover_checkpoints(train.init_from, origin=f"{run.name}: init_from")[-1]
        init_fingerprint = hash_checkpoint(init)
    else:
        init_fingerprint = None
    key = json_sha256(
        {
            "format": _RUN_KEY_FORMAT,
            "train": train.to_dict(),
            "data_sha256": [hash_input(s.path) for s in train.data],
            "init_sha256": init_fingerprint,
        }
    )
    run_dir = out_dir / VALIDATE_RUNS_DIR / run_folder_name(run.name)
    record = _read_record(run_dir)
    same = record.get("key") == key and (run_dir / TRAIN_CONFIG_YAML).is_file()
    finished = _finished_checkpoint(run_dir) if same else None
    if finished is not None:
        logger.info("run %r: unchanged, reusing %s", run.name, finished.path)
        fingerprint = record.get("checkpoint_sha256")
        if record.get("checkpoint") != finished.path.name or not isinstance(fingerprint, str):
            fingerprint = hash_checkpoint(finished)
        return RunOutcome(run.name, finished, fingerprint, False, 0.0)
    if same:
        logger.info("run %r: resuming in %s", run.name, run_dir)
    elif run_dir.exists():
        logger.info("run %r: its config or data changed; training it again", run.name)
    else:
        logger.info("run %r: training in %s", run.name, run_dir)
    record = {"name": run.name, "key": key, "format": _RUN_KEY_FORMAT}
    write_text_atomic(run_dir / VALIDATE_RUN_RECORD, json.dumps(record, indent=1) + "\n")
    started = time.monotonic()
    result = run_training(
        train, run_dir, resume=same, overwrite=not same, progress=progress, command=command
    )
    checkpoint = result.checkpoints[-1]
    seconds = time.monotonic() - started
    # Remembered so that reusing the run does not hash a (possibly multi-GB) checkpoint again.
    fingerprint = hash_checkpoint(checkpoint)
    record.update(checkpoint=checkpoint.path.name, checkpoint_sha256=fingerprint)
    write_text_atomic(run_dir / VALIDATE_RUN_RECORD, json.dumps(record, indent=1) + "\n")
    return RunOutcome(run.name, checkpoint, fingerprint, True, seconds)


def _read_record(run_dir: Path) -> dict[str, Any]:
    try:
        record = json.loads((run_dir / VALIDATE_RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _finished_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The run's last checkpoint if the run got to its last step, else ``None``."""
    try:
        newest = discover_checkpoints(run_dir)[-1]
    except InputError:
        return None
    return newest if is_finished(newest.path) else None


# -- answers and grades -----------------------------------------------------------------------


def _generation_settings(spec: ValidateSpec) -> GenerationSettings:
    return GenerationSettings(
        model=spec.model,
        max_new_tokens=spec.eval.max_new_tokens,
        batch_size=spec.eval.batch_size,
        dtype=spec.dtype,
        device=_answer_device(spec.device),
        revision=spec.revision,
        trust_remote_code=spec.trust_remote_code,
        attn_implementation=spec.attn_implementation,
    )


def _answer_device(name: str) -> str:
    """The device answers and NLLs are computed on, as recorded: ``device: auto`` resolved, and
    ``cuda`` as the GPU the model lands on (``cuda:0``)."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def _score(
    states: BaseModelStates,
    outcomes: Sequence[RunOutcome],
    queries: Sequence[EvalQuery],
    out_dir: Path,
    progress: bool,
) -> dict[str, list[QueryNll]]:
    """Each run's reference NLL of every query (cached ones read back, the rest computed)."""
    cache = NllCache(out_dir / VALIDATE_NLL_DIR)
    examples = [q.example for q in queries]
    nlls: dict[str, list[QueryNll]] = {}
    for outcome in tqdm(outcomes, desc="reference NLL", disable=not progress, leave=False):
        nlls[outcome.name], computed = score_checkpoint(
            states, outcome.checkpoint, outcome.fingerprint, examples, cache
        )
        logger.info(
            "run %r: %d reference NLLs computed, %d from the cache",
            outcome.name,
            computed,
            len(examples) - computed,
        )
    return nlls


def _answer(
    states: BaseModelStates,
    backend: str,
    outcomes: Sequence[RunOutcome],
    queries: Sequence[EvalQuery],
    out_dir: Path,
    progress: bool,
    decoding: dict[str, DecodingStats],
) -> dict[str, list[str]]:
    """Each run's answers (cached ones read back); its decoding stats go into ``decoding``."""
    cache = GenerationCache(out_dir / VALIDATE_ANSWERS_DIR)
    prompts = [q.example.prompt for q in queries]
    answers: dict[str, list[str]] = {}
    for outcome, decoder in zip(outcomes, _decoders(states, backend, outcomes), strict=True):
        generator = CachedGenerator(decoder, cache)
        bar = tqdm(
            total=len(prompts), desc=f"answers: {outcome.name}", disable=not progress, leave=False
        )
        with bar:
            answers[outcome.name] = generator.generate(prompts, on_answer=bar.update)
        decoding[outcome.name] = decoder.stats
        logger.info(
            "run %r: %d answers generated (%d tokens in %.1f s, %.1f tokens/s), %d from the cache",
            outcome.name,
            generator.misses,
            decoder.stats.tokens,
            decoder.stats.seconds,
            decoder.stats.tokens_per_second,
            generator.hits,
        )
    return answers


def _decoders(
    states: BaseModelStates, backend: str, outcomes: Sequence[RunOutcome]
) -> list[CheckpointGenerator | VLLMCheckpointGenerator]:
    """Each run's decoder; for vLLM one engine serves every run's adapter, and a run that saved
    a full model is refused before any run decodes."""
    if backend == EVAL_BACKEND_HF:
        return [CheckpointGenerator(states, o.checkpoint, o.fingerprint) for o in outcomes]
    ranks = [
        lora_rank(o.checkpoint.path)
        for o in outcomes
        if o.checkpoint.kind == CHECKPOINT_KIND_ADAPTER
    ]
    engine = VLLMDecoder(states, ranks)
    return [VLLMCheckpointGenerator(engine, o.checkpoint, o.fingerprint) for o in outcomes]


def _grade(
    evaluator: Any, queries: Sequence[EvalQuery], answers: dict[str, list[str]]
) -> dict[str, list[Grade]]:
    """Every run's grades, asked of the evaluator in one call (a judge then runs concurrently)."""
    runs = list(answers)
    flat_queries = [q for _ in runs for q in queries]
    flat_answers = [a for run in runs for a in answers[run]]
    flat = evaluator.grade_all(flat_queries, flat_answers)
    n = len(queries)
    return {run: flat[i * n : (i + 1) * n] for i, run in enumerate(runs)}


# -- result files -----------------------------------------------------------------------------


def _write_outputs(
    result: ValidationResult,
    inputs: _Inputs,
    grades: dict[str, list[Grade]] | None,
    *,
    quick: bool,
    device: str,
    timings: dict[str, float],
    command: str | None,
) -> None:
    """Write the result files and ``config.yaml`` (the spec, and the device it resolved to)."""
    spec, out_dir = inputs.spec, result.out_dir
    if grades is not None:
        write_text_atomic(out_dir / PREDICTIONS_JSONL, render_predictions_jsonl(result.predictions))
    else:
        _remove_stale(out_dir / PREDICTIONS_JSONL, "a loss-only validation grades no answers")
    write_text_atomic(out_dir / ACCURACY_CSV, render_accuracy_csv(result.accuracy))
    table = render_table_md(
        result.accuracy,
        baseline=spec.baseline,
        eval_name=spec.eval.path.name,
        evaluator=spec.eval.evaluator.kind,
        task_accuracy={} if grades is None else compute_task_accuracies(inputs.queries, grades),
        agreement=result.agreement,
    )
    write_text_atomic(out_dir / TABLE_MD, table)
    if result.agreement is not None:
        write_text_atomic(out_dir / AGREEMENT_JSON, render_agreement_json(result.agreement))
    else:
        _remove_stale(out_dir / AGREEMENT_JSON, "no swift study in the spec")
    # Imported here: matplotlib stays out of `import swiftstudy`.
    from swiftstudy.validate.figures import save_validation_figures

    save_validation_figures(result.accuracy, spec.baseline, result.agreement, out_dir / FIGURES_DIR)
    input_hashes = hash_inputs(
        [spec.eval.path, *(s.path for run in spec.runs if run.train for s in run.train.data)]
    )
    config = {
        "spec": spec.to_dict(),
        "device": device,
        "quick": quick,
        "loss_only": grades is None,
        "eval_sha256": input_hashes[str(spec.eval.path)],
        "n_queries": len(inputs.queries),
        "runs": [
            {
                "name": outcome.name,
                "checkpoint": str(outcome.checkpoint.path),
                "checkpoint_sha256": outcome.fingerprint,
                "trained": outcome.trained,
                "train_s": round(outcome.seconds, 1),
                "decoding": _decoding_record(result.decoding.get(outcome.name)),
            }
            for outcome in result.runs
        ],
        "timings": timings,
    }
    save_run_config(out_dir / CONFIG_YAML, config, command=command, inputs=input_hashes)


def _decoding_record(stats: DecodingStats | None) -> dict[str, Any] | None:
    """A run's decoding in this call, for ``config.yaml``; ``None`` when it decoded nothing."""
    if stats is None or stats.answers == 0:
        return None
    return {
        "answers": stats.answers,
        "tokens": stats.tokens,
        "seconds": round(stats.seconds, 3),
        "tokens_per_second": round(stats.tokens_per_second, 1),
    }


def _remove_stale(path: Path, why: str) -> None:
    if path.exists():
        logger.info("%s: removing the old %s", why, path)
        path.unlink()
